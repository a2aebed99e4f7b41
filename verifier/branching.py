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
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .domain import Box
from .ir import Network
from .kernel.bounds import (
    ExactNetwork,
    LayerBounds,
    bound_shows,
    narrowed,
    target_bound,
)
from .kernel.stability import Case, CaseSplit
from .lp import TriangleLp
from .propagation import Targets, crown_multipliers, dual_value, relaxation_costs
from .status import Neuron, Phase
from .subdomains import Bisection, SplitTree, ancestry, bisect, split_dimension
from .witnesses import WitnessTable
from .workers import WorkerPool, WorkerState

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
    attempted: set[tuple[int, Neuron]] = dataclasses.field(default_factory=set)
    """(node, claim) pairs a case split search has run on (a later, deeper pass takes the
    claims never attempted first)."""

    def failing(self, node: int, claims: Mapping[Neuron, Phase]) -> set[Neuron]:
        """The claims neither the node's bounds nor a case split on it (or a box enclosing
        it) prove."""
        return failing(self.bounds[node], claims) - self.proved_by_cases(node, claims)

    def proved_by_cases(self, node: int, claims: Mapping[Neuron, Phase]) -> set[Neuron]:
        """The claims a case split on the node or a box enclosing it proves."""
        if not self.case_splits:
            return set()
        chain = set(ancestry(node, self.enclosing))
        return {
            s.neuron for s in self.case_splits if s.box in chain and claims.get(s.neuron) is s.phase
        }

    @property
    def leaves(self) -> list[int]:
        return [k for k in range(len(self.boxes)) if k not in self.splits]

    def pruned(self, claims: Mapping[Neuron, Phase]) -> ProofBoxes:
        """The tree cut back to the bisections the given (proved) claims need: a node that
        proves every claim by its bounds or a case split (on it or a box enclosing it) becomes
        a sub-box. Each claim then still holds on every sub-box; `check` recomputes fewer
        boxes (bisections made only for claims that stayed unknown are dropped)."""
        order: list[int] = []
        splits: dict[int, tuple[int, float, int, int]] = {}

        def keep(node: int) -> int:
            number = len(order)
            order.append(node)
            if node in self.splits and self.failing(node, claims):
                dimension, at, below, above = self.splits[node]
                splits[number] = (dimension, at, keep(below), keep(above))
            return number

        keep(0)
        renumber = {old: new for new, old in enumerate(order)}
        enclosing: list[int | None] = []
        for old in order:
            up = self.enclosing[old]
            enclosing.append(None if up is None else renumber[up])
        return ProofBoxes(
            self.first,
            [self.boxes[old] for old in order],
            [self.bounds[old] for old in order],
            enclosing,
            splits,
            [
                dataclasses.replace(split, box=renumber[split.box])
                for split in self.case_splits
                if split.box in renumber
            ],
        )

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
    pool: WorkerPool | None = None,
) -> None:
    """Bisect the proof boxes of `root` (a domain box with its bounds) while claims fail on
    some sub-box, most promising sub-box first, until every claim holds or is refuted, the
    tree has `max_boxes` sub-boxes, or the deadline. A sub-box failing few claims first gets
    case splits of at most `max_depth` assumptions per case. On a worker `pool` both halves'
    bounds are computed at once; without one, one after the other here."""
    pool = pool if pool is not None else WorkerPool(network, exact, 1)
    # A node's bounds never change: what they fail to show is computed once per node (the
    # loop below looks at every leaf on every step).
    bound_failures: dict[int, set[Neuron]] = {}
    while len(root.leaves) < max_boxes and time.monotonic() < deadline:
        refuted = table.unstable()
        open_claims = {n: p for n, p in claims.items() if n not in refuted}
        failed = {}
        for k in root.leaves:
            if k not in bound_failures:
                bound_failures[k] = failing(root.bounds[k], claims)
            failed[k] = (bound_failures[k] & open_claims.keys()) - root.proved_by_cases(
                k, open_claims
            )
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
                network,
                exact,
                root,
                node,
                failed[node],
                open_claims,
                deadline,
                table,
                parent,
                max_depth,
                pool=pool,
            )
            continue
        box = root.boxes[node]
        dimension = split_dimension(network, box, sorted(failed[node]), rng)
        halves = bisect(box, dimension)
        if halves is None:
            return
        at, below, above = halves
        numbers = []
        halves_bounds = pool.bounds([(below, root.bounds[node]), (above, root.bounds[node])])
        for half, bounds in zip((below, above), halves_bounds, strict=True):
            table.offer(half.sample(SAMPLES_PER_HALF, rng), parent, "random")
            numbers.append(len(root.boxes))
            root.boxes.append(half)
            root.enclosing.append(node)
            root.bounds.append(bounds)
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
    table: WitnessTable,
    parent: int,
    max_depth: int = CASE_SPLIT_DEPTH,
    max_cases: int = CASE_SPLIT_CASES,
    progress: Progress | None = None,
    pool: WorkerPool | None = None,
) -> None:
    """Case splits on proof box `node` for the given failing claims, shallow layers first,
    each with a fair share of the time to the deadline (claims run side by side on the pool's
    workers); those found join `root.case_splits`, and the LP's points are offered to the
    witness table."""
    unstable = table.unstable()
    pending = sorted(
        (n for n in neurons if n not in unstable), key=lambda n: ((node, n) in root.attempted, n)
    )
    pool = pool if pool is not None else WorkerPool(network, exact, 1)
    workers = pool.workers
    # Rounds of one claim per worker: a claim refuted by an earlier round's points is skipped.
    for start in range(0, len(pending), workers):
        now = time.monotonic()
        if now >= deadline:
            return
        if progress is not None:
            progress(start, len(pending))
        batch = [n for n in pending[start : start + workers] if n not in table.unstable()]
        share = (deadline - now) * workers / (len(pending) - start)
        tasks = [
            CaseSplitTask(
                root.boxes[node],
                node,
                root.bounds[node],
                neuron,
                claims[neuron],
                max_depth,
                max_cases,
                min(deadline, now + share),
            )
            for neuron in batch
        ]
        results = pool.map(case_split_task, tasks)
        for task, (split, points) in zip(tasks, results, strict=True):
            root.attempted.add((node, task.neuron))
            for point in points:
                table.offer(point[None, :], parent, "lp")
            if split is not None:
                root.case_splits.append(split)


@dataclasses.dataclass(frozen=True)
class CaseSplitTask:
    box: Box
    box_number: int
    bounds: LayerBounds
    neuron: Neuron
    phase: Phase
    max_depth: int
    max_cases: int
    deadline: float


def case_split_task(
    state: WorkerState, task: CaseSplitTask
) -> tuple[CaseSplit | None, list[FloatArray]]:
    """`split_by_cases` for one claim (run on a worker: the box's LPs are built once per
    worker and kept in its cache), and the LP points it found on the way."""
    key = ("lps", task.box.lower.tobytes(), task.box.upper.tobytes())
    programs = state.cache.get(key)
    if programs is None:
        state.cache.clear()  # one proof box at a time: the LPs of the last one go
        programs = state.cache[key] = TriangleLps(state.network, task.box, task.bounds)
    points: list[FloatArray] = []
    split = split_by_cases(
        state.network,
        state.exact,
        task.box,
        task.box_number,
        task.bounds,
        task.neuron,
        task.phase,
        task.max_depth,
        task.max_cases,
        task.deadline,
        programs.for_layer(task.neuron.layer),
        points.append,
    )
    return split, points


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
    offer: Callable[[FloatArray], None] | None = None,
    refuted: Callable[[], bool] | None = None,
) -> CaseSplit | None:
    """Cases on earlier neurons' phases that together prove `neuron` in `phase` on the box, or
    None if none is found within `max_depth` assumptions per case, `max_cases` cases, and the
    deadline. Each case is tried with CROWN's multipliers, then (given `lp`, the triangle LP of
    the layers before the neuron's on this box) with the LP's optimal ones. The neuron to split
    next is the unstable one whose relaxation costs the bound most (an estimate from float
    back-substitution). A proof without any split is a single case with LP multipliers. The
    LP's optimal input of a case it does not prove goes to `offer` (it may be a witness that
    the claim is false); the search stops once `refuted()` says so."""
    pending: list[dict[Neuron, Phase]] = [{}]
    proved: list[Case] = []
    while pending:
        if time.monotonic() > deadline or len(proved) + len(pending) > max_cases:
            return None
        assumptions = pending.pop()
        case, tried = _prove_case(exact, box, bounds, neuron, phase, assumptions, lp, offer)
        if refuted is not None and refuted():
            return None
        if case is not None:
            proved.append(case)
            continue
        if len(assumptions) >= max_depth:
            return None
        chosen = _split_choice(network, bounds, neuron, phase, assumptions, tried)
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
    offer: Callable[[FloatArray], None] | None = None,
) -> tuple[Case | None, list[FloatArray] | None]:
    """The case proved by CROWN's multipliers or the LP's, checked by the kernel (None if
    neither shows the phase), and the LP's multipliers if it was solved. The kernel is asked
    only where the same multipliers' bound in float64 comes near showing the phase: a
    skipped check can cost a proof, never make one."""
    ordered = tuple(sorted(assumptions.items()))
    screen = _FloatScreen(exact.network, box, bounds, neuron, phase, assumptions)
    if screen.may_show(None) and bound_shows(
        target_bound(exact, box, bounds, neuron, phase, assumptions), phase
    ):
        return Case(ordered), None
    if lp is None:
        return None, None
    multipliers = lp.multipliers(neuron, phase, assumptions)
    if multipliers is None:
        return _vacuous_case(exact, box, bounds, neuron, phase, assumptions, lp), None
    if screen.may_show(multipliers) and bound_shows(
        target_bound(exact, box, bounds, neuron, phase, assumptions, multipliers), phase
    ):
        return Case(ordered, tuple(multipliers)), multipliers
    if offer is not None and lp.point is not None:
        offer(np.clip(lp.point, box.lower, box.upper))
    return None, multipliers


SCREEN_MARGIN = 1e-6
"""A float64 bound below -SCREEN_MARGIN * (1 + |bound|) is taken to fail in exact arithmetic
too (the kernel's rounded slopes only loosen CROWN's bound), so the kernel is not asked."""


class _FloatScreen:
    """Float64 estimates of one case's bound (`propagation.dual_value`) to spare the kernel
    the exact checks that cannot succeed."""

    def __init__(
        self,
        network: Network,
        box: Box,
        bounds: LayerBounds,
        neuron: Neuron,
        phase: Phase,
        assumptions: Mapping[Neuron, Phase],
    ) -> None:
        self.network, self.box, self.neuron = network, box, neuron
        self.sign = -1.0 if phase is Phase.INACTIVE else 1.0
        self.lowers, self.uppers = narrowed(bounds, neuron.layer, assumptions)
        # An empty interval makes the case vacuous: only the kernel says so.
        self.vacuous = any(np.any(lo > hi) for lo, hi in zip(self.lowers, self.uppers, strict=True))

    def may_show(self, multipliers: Sequence[FloatArray] | None) -> bool:
        """False only when the bound from these multipliers (CROWN's when None) clearly fails."""
        if self.vacuous:
            return True
        if multipliers is None:
            rows = [lo[None, :] for lo in self.lowers], [hi[None, :] for hi in self.uppers]
            targets = Targets(
                self.neuron.layer, np.array([self.neuron.index]), np.array([self.sign]), *rows
            )
            multipliers = [m[0] for m in crown_multipliers(self.network, targets)]
        value = dual_value(
            self.network,
            self.box.lower,
            self.box.upper,
            self.neuron.layer,
            self.neuron.index,
            self.sign,
            self.lowers,
            self.uppers,
            multipliers,
        )
        return not value < -SCREEN_MARGIN * (1.0 + abs(value))


RAY_SCALES = tuple(10.0**k for k in range(1, 13, 2))
"""How far an infeasibility ray is scaled up before the kernel is asked again."""


def _vacuous_case(
    exact: ExactNetwork,
    box: Box,
    bounds: LayerBounds,
    neuron: Neuron,
    phase: Phase,
    assumptions: Mapping[Neuron, Phase],
    lp: TriangleLp,
) -> Case | None:
    """A case whose assumptions leave the relaxation empty, proved by a multiple of the LP's
    infeasibility ray (the kernel checks the bound it gives), or None."""
    ray = lp.infeasibility_ray(assumptions)
    if ray is None:
        return None
    for direction in (1.0, -1.0):
        for scale in RAY_SCALES:
            multipliers = [direction * scale * m for m in ray]
            value = target_bound(exact, box, bounds, neuron, phase, assumptions, multipliers)
            if bound_shows(value, phase):
                return Case(tuple(sorted(assumptions.items())), tuple(multipliers))
    return None


def _split_choice(
    network: Network,
    bounds: LayerBounds,
    target: Neuron,
    phase: Phase,
    case: Mapping[Neuron, Phase],
    multipliers: Sequence[FloatArray] | None = None,
) -> Neuron | None:
    """The earlier unstable neuron (not yet assumed) whose interval costs the target's bound
    most under the given multipliers (the LP's), or under CROWN's when there are none."""
    lowers, uppers = narrowed(bounds, target.layer, case)
    sign = -1.0 if phase is Phase.INACTIVE else 1.0
    if multipliers is None:
        rows = [lo[None, :] for lo in lowers], [hi[None, :] for hi in uppers]
        targets = Targets(target.layer, np.array([target.index]), np.array([sign]), *rows)
        multipliers = [m[0] for m in crown_multipliers(network, targets)]
    costs = relaxation_costs(network, target.layer, target.index, sign, lowers, uppers, multipliers)
    best: tuple[float, Neuron] | None = None
    for k, cost in enumerate(costs):
        unstable = (lowers[k] < 0) & (uppers[k] > 0)
        cost = np.where(unstable, cost, 0.0)
        if cost.size and cost.max() > 0:
            i = int(np.argmax(cost))
            if best is None or cost[i] > best[0]:
                best = (float(cost[i]), Neuron(k, i))
    return None if best is None else best[1]
