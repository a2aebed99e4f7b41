"""Branch and bound for the claims the domain boxes' bounds do not decide: input bisection
where the input is low-dimensional, case splits on earlier neurons' phases where it is not.

Stage: ... witnesses -> search -> **branching** (proofs) -> statuses -> compression ...

UNTRUSTED producer: it only chooses where to cut and what to assume. Every bound it relies on
is computed by the kernel (`verifier.kernel.bounds`) exactly as `check` will recompute it, so a
choice here can make a proof fail but never make a false one. Points sampled in every new
half are offered to the witness table: a claim refuted there is dropped everywhere.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping

import numpy as np
import numpy.typing as npt

from verifier.domain import Box
from verifier.ir import Network
from verifier.kernel.bounds import ExactNetwork, LayerBounds, bound_shows, box_bounds, target_bound
from verifier.kernel.stability import Case, CaseSplit
from verifier.lp import TriangleLp
from verifier.status import Neuron, Phase
from verifier.subdomains import Bisection, SplitTree, bisect, split_dimension
from verifier.witnesses import WitnessTable

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int, int], None]

CASE_SPLIT_CLAIMS = 8
"""A sub-box failing at most this many claims gets case splits before it is bisected."""
CASE_SPLIT_DEPTH = 4
CASE_SPLIT_CASES = 16
"""Case splits tried on a sub-box: at most this many assumptions per case and cases in all
(small: bisection is the other way to prove what they do not)."""

SAMPLES_PER_HALF = 16
"""Random points of every new half offered as witnesses (cheap: floats first, exact only for
points that may show an unseen phase)."""


@dataclasses.dataclass
class ProofBoxes:
    """The proof boxes of one domain box: node k of its tree is `first + k` overall."""

    first: int
    boxes: list[Box]
    bounds: list[LayerBounds]
    enclosing: list[int | None]
    splits: dict[int, tuple[int, float, int, int]] = dataclasses.field(default_factory=dict)
    case_splits: list[CaseSplit] = dataclasses.field(default_factory=list)
    """Case splits found on these proof boxes (`box` is the local node number)."""
    tried: set[int] = dataclasses.field(default_factory=set)
    """Nodes whose failing claims case splits were tried on."""

    def ancestry(self, node: int) -> list[int]:
        chain = [node]
        while (up := self.enclosing[chain[-1]]) is not None:
            chain.append(up)
        return chain

    def failing(self, node: int, claims: Mapping[Neuron, Phase]) -> set[Neuron]:
        """The claims neither the node's bounds nor a case split on it (or a box enclosing
        it) prove."""
        chain = set(self.ancestry(node))
        by_cases = {
            s.neuron for s in self.case_splits if s.box in chain and claims.get(s.neuron) is s.phase
        }
        return failing(self.bounds[node], claims) - by_cases

    @property
    def leaves(self) -> list[int]:
        return [k for k in range(len(self.boxes)) if k not in self.splits]

    def tree(self, node: int = 0) -> SplitTree:
        if node not in self.splits:
            return self.first + node
        dimension, at, below, above = self.splits[node]
        return Bisection(self.first + node, dimension, at, self.tree(below), self.tree(above))


def failing(bounds: LayerBounds, claims: Mapping[Neuron, Phase]) -> set[Neuron]:
    return {n for n, p in claims.items() if not bounds.shows(n, p)}


def bisect_until_proved(
    network: Network,
    exact: ExactNetwork,
    root: ProofBoxes,
    parent: int,
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    rng: np.random.Generator,
    deadline: float,
    max_boxes: int,
    progress: Progress | None = None,
    max_depth: int = CASE_SPLIT_DEPTH,
) -> None:
    """Bisect the proof boxes of `root` (a domain box with its bounds) while claims fail on
    some sub-box, most promising sub-box first, until every claim holds or is refuted, the
    tree has `max_boxes` sub-boxes, or the deadline. A sub-box failing few claims first gets
    case splits of at most `max_depth` assumptions per case."""
    while len(root.leaves) < max_boxes and time.monotonic() < deadline:
        refuted = table.unstable()
        open_claims = {n: p for n, p in claims.items() if n not in refuted}
        failed = {k: root.failing(k, open_claims) for k in root.leaves}
        candidates = [
            k
            for k, f in failed.items()
            if f and any(bisect(root.boxes[k], d) is not None for d in range(root.boxes[k].size))
        ]
        if not candidates:
            return
        # A failed claim counts 1/m where m sub-boxes fail it: it is proved once all m are.
        count = Counter(n for f in failed.values() for n in f)
        node = max(candidates, key=lambda k: (sum(1 / count[n] for n in failed[k]), -k))
        if node not in root.tried and len(failed[node]) <= CASE_SPLIT_CLAIMS:
            # A few failing claims are cheaper to prove by case splits than by more boxes.
            root.tried.add(node)
            try_case_splits(
                network, exact, root, node, failed[node], open_claims, deadline, max_depth
            )
            continue
        box = root.boxes[node]
        dimension = split_dimension(network, box, sorted(failed[node]), rng)
        halves = bisect(box, dimension)
        if halves is None:
            return
        at, below, above = halves
        numbers = []
        for half in (below, above):
            table.offer(half.sample(SAMPLES_PER_HALF, rng), parent, "random")
            numbers.append(len(root.boxes))
            root.boxes.append(half)
            root.enclosing.append(node)
            root.bounds.append(box_bounds(exact, half, enclosing=root.bounds[node]))
        root.splits[node] = (dimension, at, numbers[0], numbers[1])
        if progress is not None:
            progress(len(root.leaves), max_boxes)


def try_case_splits(
    network: Network,
    exact: ExactNetwork,
    root: ProofBoxes,
    node: int,
    neurons: Collection[Neuron],
    claims: Mapping[Neuron, Phase],
    deadline: float,
    max_depth: int = CASE_SPLIT_DEPTH,
    max_cases: int = CASE_SPLIT_CASES,
) -> None:
    """Case splits on proof box `node` for the given failing claims, shallow layers first,
    each with a fair share of the time to the deadline; those found join `root.case_splits`."""
    pending = sorted(neurons)
    programs = TriangleLps(network, root.boxes[node], root.bounds[node])
    for position, neuron in enumerate(pending):
        now = time.monotonic()
        if now >= deadline:
            return
        share = (deadline - now) / (len(pending) - position)
        split = split_by_cases(
            network,
            exact,
            root.boxes[node],
            node,
            root.bounds[node],
            neuron,
            claims[neuron],
            max_depth,
            max_cases,
            now + share,
            programs.for_layer(neuron.layer),
        )
        if split is not None:
            root.case_splits.append(split)


class TriangleLps:
    """The triangle LPs of one proof box, one per target layer, built when first needed."""

    def __init__(self, network: Network, box: Box, bounds: LayerBounds) -> None:
        self.network = network
        self.box = box
        self.bounds = bounds
        self._built: dict[int, TriangleLp] = {}

    def for_layer(self, layer: int) -> TriangleLp | None:
        if layer == 0:
            return None  # the first layer's bounds are exact already
        if layer not in self._built:
            self._built[layer] = TriangleLp(
                self.network, self.box, self.bounds.lower, self.bounds.upper, layer
            )
        return self._built[layer]


def split_by_cases(
    network: Network,
    exact: ExactNetwork,
    box: Box,
    box_number: int,
    bounds: LayerBounds,
    neuron: Neuron,
    phase: Phase,
    max_depth: int,
    max_cases: int,
    deadline: float,
    lp: TriangleLp | None = None,
) -> CaseSplit | None:
    """Cases on earlier neurons' phases that together prove `neuron` in `phase` on the box, or
    None if none is found within `max_depth` assumptions per case, `max_cases` cases, and the
    deadline. Each case is tried with CROWN's multipliers, then (given `lp`, the triangle LP of
    the layers before the neuron's on this box) with the LP's optimal ones. The neuron to split
    next is the unstable one whose relaxation costs the bound most (an estimate from float
    back-substitution). A proof without any split is a single case with LP multipliers."""
    pending: list[dict[Neuron, Phase]] = [{}]
    proved: list[Case] = []
    while pending:
        if time.monotonic() > deadline or len(proved) + len(pending) > max_cases:
            return None
        assumptions = pending.pop()
        case = _prove_case(exact, box, bounds, neuron, phase, assumptions, lp)
        if case is not None:
            proved.append(case)
            continue
        if len(assumptions) >= max_depth:
            return None
        chosen = _split_choice(network, bounds, neuron, phase, assumptions)
        if chosen is None:
            return None
        pending.extend({**assumptions, chosen: p} for p in Phase)
    return CaseSplit(box_number, neuron, phase, tuple(proved))


def _prove_case(
    exact: ExactNetwork,
    box: Box,
    bounds: LayerBounds,
    neuron: Neuron,
    phase: Phase,
    assumptions: Mapping[Neuron, Phase],
    lp: TriangleLp | None,
) -> Case | None:
    """The case proved by CROWN's multipliers or the LP's, checked by the kernel; None if
    neither shows the phase."""
    ordered = tuple(sorted(assumptions.items()))
    if bound_shows(target_bound(exact, box, bounds, neuron, phase, assumptions), phase):
        return Case(ordered)
    if lp is None:
        return None
    multipliers = lp.multipliers(neuron, phase, assumptions)
    if multipliers is None:
        return None
    value = target_bound(exact, box, bounds, neuron, phase, assumptions, multipliers)
    return Case(ordered, tuple(multipliers)) if bound_shows(value, phase) else None


def _split_choice(
    network: Network,
    bounds: LayerBounds,
    target: Neuron,
    phase: Phase,
    case: Mapping[Neuron, Phase],
) -> Neuron | None:
    """The earlier unstable neuron (not yet assumed) with the largest relaxation gap weighted
    by its float back-substitution coefficient for the target bound."""
    lowers = [np.array(v, dtype=np.float64) for v in bounds.lower[: target.layer]]
    uppers = [np.array(v, dtype=np.float64) for v in bounds.upper[: target.layer]]
    for n, p in case.items():
        if p is Phase.ACTIVE:
            lowers[n.layer][n.index] = max(lowers[n.layer][n.index], 0.0)
        else:
            uppers[n.layer][n.index] = min(uppers[n.layer][n.index], 0.0)
    sign = -1.0 if phase is Phase.INACTIVE else 1.0
    mu = sign * network.layers[target.layer].float_weights[target.index]
    best: tuple[float, Neuron] | None = None
    for k in range(target.layer - 1, -1, -1):
        lower, upper = lowers[k], uppers[k]
        unstable = (lower < 0) & (upper > 0)
        gap = np.where(unstable, np.abs(mu) * np.minimum(upper, -lower), 0.0)
        if gap.size and gap.max() > 0:
            i = int(np.argmax(gap))
            if best is None or gap[i] > best[0]:
                best = (float(gap[i]), Neuron(k, i))
        width = np.where(unstable, upper - lower, 1.0)
        beta = np.where(unstable, upper / width, 0.0)
        alpha = (upper >= -lower).astype(np.float64)
        nu = np.where(mu >= 0, alpha * mu, beta * mu)
        nu = np.where(lower >= 0, mu, nu)
        nu = np.where(upper <= 0, 0.0, nu)
        mu = nu @ network.layers[k].float_weights
    return None if best is None else best[1]
