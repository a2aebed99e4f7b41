"""Neuron addresses and statuses, shared by every stage after the IR.

A neuron is addressed as (layer, index): `layer` is the 0-based index of the affine layer that
computes its pre-activation, `index` its row in that layer.

Soundness rule encoded here: only `STABLY_ACTIVE`/`STABLY_INACTIVE` may be compressed, and only
certification produces them. Claims from bounds or search stay claims until proved; anything not
proved and not refuted by a witness is `UNKNOWN`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Neuron(NamedTuple):
    layer: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the neuron's row

    def __str__(self) -> str:
        return f"({self.layer},{self.index})"


class Phase(enum.Enum):
    """The sign of a pre-activation: ACTIVE means g >= 0 everywhere, INACTIVE g <= 0."""

    ACTIVE = "active"
    INACTIVE = "inactive"

    @property
    def opposite(self) -> Phase:
        return Phase.INACTIVE if self is Phase.ACTIVE else Phase.ACTIVE


class Status(enum.Enum):
    STABLY_ACTIVE = "stably_active"
    STABLY_INACTIVE = "stably_inactive"
    UNSTABLE = "unstable"
    UNKNOWN = "unknown"

    @staticmethod
    def stable(phase: Phase) -> Status:
        return Status.STABLY_ACTIVE if phase is Phase.ACTIVE else Status.STABLY_INACTIVE

    @property
    def is_stable(self) -> bool:
        return self in (Status.STABLY_ACTIVE, Status.STABLY_INACTIVE)
