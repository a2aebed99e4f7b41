"""Which stability claims the evidence proves: certified bounds on every proof box, and case
splits on earlier neurons' phases where the bounds alone fall short.

Part of the TRUSTED kernel (the run decides with it; `check` recomputes it from the
certificate). Evidence comes in two kinds, both checked here by `verifier.kernel.bounds`:

- Proof boxes: the domain boxes and the halves of recorded bisections, rebuilt from the domain
  and the split trees by `verifier.subdomains` (every cut strictly inside its interval, so the
  halves cover the box). Every proof box gets bounds for every hidden layer; the bounds of a
  box inside another are intersected with the enclosing box's, layer by layer (both hold on
  it). A claim holds on a sub-box (a leaf of the trees) if the sub-box's bounds show it.
- Case splits: on a proof box, a claim with a set of cases, each a set of phase assumptions on
  earlier-layer neurons. It holds on the box if the cases cover every phase combination of the
  neurons they mention (`covers_all_phases`) and in every case the bound computed under the
  case's assumptions shows the phase (or the case is vacuous: its assumptions contradict the
  box's bounds). A case split on a box holds on every sub-box inside it.

A claim holds on the domain iff it holds on every sub-box. Nothing else makes a neuron stable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..domain import Box
from ..kernel.bounds import (
    ExactNetwork,
    LayerBounds,
    bound_shows,
    box_bounds,
    target_bound,
)
from ..kernel.scaled import FloatArray
from ..status import Neuron, Phase
from ..subdomains import Subdomains

Assumptions = tuple[tuple[Neuron, Phase], ...]


@dataclasses.dataclass(frozen=True)
class Case:
    """Phase assumptions, and the multipliers of the bound under them (one float vector per
    earlier layer; None: CROWN's)."""

    assumptions: Assumptions
    multipliers: tuple[FloatArray, ...] | None = None


@dataclasses.dataclass(frozen=True)
class CaseSplit:
    """`neuron` is in `phase` on proof box `box`, case by case (one case without assumptions:
    a bound with multipliers of its own)."""

    box: int
    neuron: Neuron
    phase: Phase
    cases: tuple[Case, ...]


def evidence_name(neuron: Neuron) -> str:
    """How the equivalence obligations cite the proof that `neuron` is stable (the proofs on
    every sub-box, taken together)."""
    return f"stable.L{neuron.layer}.n{neuron.index}"


def covers_all_phases(cases: Iterable[Mapping[Neuron, Phase]]) -> bool:
    """True iff every assignment of phases to the neurons satisfies some case's assumptions."""
    leaves = [dict(case) for case in cases]

    def covered(fixed: dict[Neuron, Phase]) -> bool:
        undecided: list[Neuron] = []
        for leaf in leaves:
            if all(fixed.get(n, p) == p for n, p in leaf.items()):
                missing = [n for n in leaf if n not in fixed]
                if not missing:
                    return True
                undecided.extend(missing)
        if not undecided:
            return False
        neuron = min(undecided)
        return all(covered({**fixed, neuron: phase}) for phase in Phase)

    return covered({})


BoundsOfBoxes = Callable[[Sequence[tuple[Box, LayerBounds | None]]], list[LayerBounds]]
"""Certified bounds of boxes, each with the bounds of the box enclosing it (or None): what
`box_bounds` gives, one box at a time or on several processes at once."""


def proof_box_bounds(
    net: ExactNetwork,
    subdomains: Subdomains,
    progress: Callable[[int, int], None] | None = None,
    compute: BoundsOfBoxes | None = None,
) -> list[LayerBounds]:
    """Certified bounds on every proof box, level by level of the trees (a box's enclosing
    box is on the level above), the boxes of a level computed together by `compute`."""
    if compute is None:

        def compute(tasks: Sequence[tuple[Box, LayerBounds | None]]) -> list[LayerBounds]:
            return [box_bounds(net, box, enclosing=up) for box, up in tasks]

    count = len(subdomains.boxes)
    found: dict[int, LayerBounds] = {}
    level = [k for k in range(count) if subdomains.enclosing[k] is None]
    while level:
        tasks = []
        for k in level:
            up = subdomains.enclosing[k]
            tasks.append((subdomains.boxes[k], None if up is None else found[up]))
        for k, bounds in zip(level, compute(tasks), strict=True):
            found[k] = bounds
        if progress is not None:
            progress(len(found), count)
        level = [k for k in range(count) if subdomains.enclosing[k] in set(level)]
    return [found[k] for k in range(count)]


def case_split_holds(
    net: ExactNetwork, subdomains: Subdomains, bounds: Sequence[LayerBounds], split: CaseSplit
) -> bool:
    """Whether every case of the split shows the phase and the cases cover every phase
    combination."""
    if not 0 <= split.box < len(subdomains.boxes):
        return False
    cases = [dict(case.assumptions) for case in split.cases]
    if not cases or not covers_all_phases(cases):
        return False
    box = subdomains.boxes[split.box]
    layer = split.neuron.layer
    for case, assumptions in zip(split.cases, cases, strict=True):
        if len(assumptions) != len(case.assumptions):
            return False
        if any(not 0 <= n.layer < layer for n in assumptions):
            return False
        multipliers = case.multipliers
        if multipliers is not None and (
            len(multipliers) != layer
            or any(m.shape != (net.layers[k].rows.shape[0],) for k, m in enumerate(multipliers))
            or not all(np.all(np.isfinite(m)) for m in multipliers)
        ):
            return False
        value = target_bound(
            net, box, bounds[split.box], split.neuron, split.phase, assumptions, multipliers
        )
        if not bound_shows(value, split.phase):
            return False
    return True


def proved_claims(
    subdomains: Subdomains,
    bounds: Sequence[LayerBounds],
    valid_splits: Iterable[CaseSplit],
    claims: Mapping[Neuron, Phase],
) -> dict[Neuron, Phase]:
    """The claims that hold on every sub-box, given the proof boxes' bounds and the case
    splits already found to hold (`case_split_holds`)."""
    split_on = {(s.box, s.neuron, s.phase) for s in valid_splits}
    open_claims = dict(claims)
    for leaf in subdomains.leaves:
        if not open_claims:
            break
        chain = subdomains.ancestry(leaf)
        leaf_bounds = bounds[leaf]
        for neuron, phase in list(open_claims.items()):
            if leaf_bounds.shows(neuron, phase):
                continue
            if not any((k, neuron, phase) in split_on for k in chain):
                del open_claims[neuron]
    return open_claims
