"""The one owner of time: the job's limit, the shares of its stages and what is held back.

Every stage asks the `Budget` for its deadline; no other module computes a share. Reaching a
deadline never makes a result wrong, only less complete (undecided neurons become unknown).
The clock is a parameter, so the arithmetic is tested with a fake clock.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

SHARES: Mapping[str, float] = {
    "witnesses": 0.15,
    "proofs": 0.85,
    "search": 0.15,
}
"""Each stage's share of the time the analysis has left when it starts: the witness search and
the CP-SAT search only find counterexamples, so they get a small part; the first proof pass
most of it; the last proof pass (after the search) whatever remains."""

OUTPUT_SHARE = 0.02
OUTPUT_SECONDS = 2.5
"""Held back for the last steps and writing the outputs: this share of the limit plus these
seconds (at 60 s, ACAS Xu 3_3 prop_1 with 451 sub-boxes spent 3.5 s after the analysis on
the compression, the exact and onnxruntime comparisons and the files, and ran 61 s)."""
EQUIVALENCE_SHARE = 0.25
"""At most this share of the limit is held back for the equivalence proof (measured: 11 s for
a 400,000-weight 784-256x4-10 net, 0.3 s for ACAS Xu's 13,000 weights) ..."""
EQUIVALENCE_SECONDS_PER_WEIGHT = 3e-5
"""... and no more than this per nonzero weight."""
SMT_SHARE = 0.1
"""Held back from the analysis for the SMT tier (Z3 re-proving the stability obligations in
worker processes, shallow layers first), which also gets whatever time the analysis leaves
unused: Z3 only confirms what the kernel proved, so it gets a small reserve, never the proofs'
time (at 60 s, ACAS Xu 1_1 prop_3's analysis ends after 4 s and Z3 has the rest)."""


@dataclasses.dataclass
class Budget:
    """A wall-clock budget of `limit` seconds from creation."""

    limit: float
    weights: int = 0
    """Nonzero weights of the network: they size the equivalence reserve."""
    clock: Callable[[], float] = time.monotonic
    """The stages compare their deadlines with `time.monotonic()`: a job's Budget keeps this
    default; another clock is for testing the arithmetic."""
    started: float | None = None
    """When the job started on `clock` (default: when the Budget is made)."""
    smt_reserved: bool = True
    """Whether the SMT tier runs after the analysis (`Config.smt_tier`); without it its
    reserve is the analysis's."""

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @property
    def deadline(self) -> float:
        """When the whole job must be done."""
        assert self.started is not None  # set in __post_init__
        return self.started + self.limit

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def reserve(self, stage: str) -> float:
        """Seconds held back, at the end of the job, for `stage` ("equivalence", "output")."""
        if stage == "output":
            return min(OUTPUT_SHARE * self.limit + OUTPUT_SECONDS, 0.1 * self.limit)
        if stage == "equivalence":
            by_weights = EQUIVALENCE_SECONDS_PER_WEIGHT * self.weights
            return min(EQUIVALENCE_SHARE * self.limit, by_weights)
        if stage == "smt":
            return SMT_SHARE * self.limit if self.smt_reserved else 0.0
        raise KeyError(f"no reserve named {stage!r}; reserves: equivalence, output, smt")

    def analysis_deadline(self) -> float:
        """When the analysis (bounds, witnesses, search, proofs) must stop."""
        return self.smt_deadline() - self.reserve("smt")

    def smt_deadline(self) -> float:
        """When the SMT tier's checks of the stability obligations must stop (they run from
        the end of the analysis, whenever that is, to here)."""
        return self.deadline - self.reserve("output") - self.reserve("equivalence")

    def stage_deadline(self, stage: str) -> float:
        """Deadline of an analysis stage that starts now: its share of what the analysis has
        left."""
        share = SHARES.get(stage)
        if share is None:
            raise KeyError(f"no share named {stage!r}; shares: {', '.join(SHARES)}")
        now = self.clock()
        return now + share * max(0.0, self.analysis_deadline() - now)

    def output_deadline(self) -> float:
        """When everything but writing the outputs must be done."""
        return self.deadline - self.reserve("output")
