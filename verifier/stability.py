"""The stability analysis: cheap evidence first, then the search, then proofs.

Stage: domain and bounds -> witnesses -> stability search -> certification -> **statuses**.

For every hidden neuron this decides one of four statuses, each with its evidence:
- UNSTABLE: two exactly checked witnesses (g > 0 at one domain point, g < 0 at another);
- STABLY_ACTIVE / STABLY_INACTIVE: on every sub-box of the domain, a bound lemma of the right
  sign, proved on the sub-box or on a proof box enclosing it, whose leaves are Farkas
  certificates checked in exact arithmetic AND by Z3, and whose context lemmas (a lower and an
  upper bound of every earlier-layer neuron, each on that box or one enclosing it) are proved
  the same way;
- UNKNOWN: anything else (time limit, a claim no certificate was found for). Never compressed.

Float bounds and CP-SAT answers only choose which claims to attempt; they decide nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from verifier import search as search_module
from verifier.bounds import LayerBounds, symbolic_bounds
from verifier.certify import (
    LOWER,
    UPPER,
    BoundLemma,
    BoxProof,
    DefinitionRows,
    ProofHelper,
    SplitRetry,
    context_id,
    covers_all_phases,
    lemma_id,
    prove_box,
    proving_sign,
)
from verifier.config import Config
from verifier.domain import Box, Domain
from verifier.errors import VerifyCompressError
from verifier.ir import Network
from verifier.obligations import (
    SMT_TIMEOUT,
    LemmaCheck,
    LemmaChecks,
    obligation_count,
)
from verifier.smt import SmtVerdict, check_many
from verifier.status import Neuron, Phase, Status
from verifier.subdomains import (
    SPLITTABLE_INPUT_SIZE,
    Bisection,
    SplitTree,
    Subdomains,
    ancestry,
    bisect,
    cover_obligation,
    split_dimension,
)
from verifier.witnesses import WitnessTable, find_witnesses

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

WRITE_SECONDS_PER_OBLIGATION = 0.002
"""What writing an obligation costs after the analysis (its SMT-LIB2 file, its lemma in
certificate.json; measured 2.2 s for 1,742 obligations): the Z3 checks stop in time for it."""
CALIBRATION_SAMPLE = 64
"""Lemmas whose Z3 checks measure its speed (a sample of the first proof box's)."""
SPLIT_SLACK = 1.2
"""A box is bisected only if the bisection's estimated cost, times this, fits in the time left
beside the projected Z3 checks: a half that runs out of time proves nothing, which is worse
than not splitting. (The Z3 projection gets no slack: measured per obligation in CPU seconds,
it projected 108 s where ACAS Xu 1_1 prop_1's checks then took 90 s.)"""
RETRY_EXTRA_DEPTHS = (0, 2, 4)
"""Case-split depths beyond `max_split_depth` that the retry on a box that cannot be bisected
tries in turn, each round on the claims the last left failed: on mnist-net_256x2's eps = 0.05
box of image 0, the 2 claims left unknown at depth 6 are proved at depth 8 (14 and 18 leaves,
3.8 s, their Z3 checks 3.1 s), where the 60 s run had 17 s unused."""
RESERVE_CAP = 0.5
"""The Z3 time reserved before the first proof is at most this share of the time left: the
first guess (per lemma, for every lemma a proof of all claims needs) can exceed the whole
budget on a large network (a random 4x256 MNIST-sized net at 60 s: 54 s projected against 31 s
left), and then nothing, not even the first layer's claims, would be proved. Proofs go layer
by layer and Z3 checks shallow layers first, so a short budget still decides the shallow
claims."""


@dataclasses.dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    undecided: int
    """Hidden neurons neither shown unstable nor decided by then."""


@dataclasses.dataclass
class StabilityAnalysis:
    statuses: dict[Neuron, Status]
    table: WitnessTable
    proofs: list[BoxProof]
    lemma_checks: dict[str, LemmaCheck]
    stages: list[StageRecord]
    claims: dict[Neuron, Phase]
    subdomains: Subdomains
    """The proof boxes: proofs[k] is about subdomains.boxes[k]."""
    cover_checks: dict[int, LemmaCheck]
    """Z3's check that the sub-boxes of each split domain box cover it."""

    def stability_lemmas(self, neuron: Neuron) -> list[str]:
        """The lemma ids that make a stable neuron stable (empty otherwise): per sub-box, the
        innermost proof box's lemma that shows the phase, each id once."""
        status = self.statuses[neuron]
        if not status.is_stable:
            return []
        phase = Phase.ACTIVE if status is Status.STABLY_ACTIVE else Phase.INACTIVE
        covering = covering_lemmas(
            _ancestries(self.subdomains), all_lemmas(self.proofs), neuron, phase
        )
        return [lemma.id for lemma in covering or []]


class InconsistentEvidenceError(VerifyCompressError):
    """A proof and an exact witness contradict each other: a bug, never a user error."""


def _claimed_phase(
    neuron: Neuron,
    table: WitnessTable,
    bounds: list[LayerBounds],
    search_claims: Mapping[Neuron, Phase],
) -> Phase | None:
    seen = table.seen(neuron)
    if len(seen) == 2:
        return None
    if len(seen) == 1:
        return next(iter(seen))
    if neuron in search_claims:
        return search_claims[neuron]
    phases = {b.phase_of(neuron) for b in bounds}
    if len(phases) == 1:
        return phases.pop()
    middle = sum(
        float(b.lower[neuron.layer][neuron.index] + b.upper[neuron.layer][neuron.index])
        for b in bounds
    )
    return Phase.ACTIVE if middle >= 0 else Phase.INACTIVE


def analyse(
    network: Network,
    domain: Domain,
    config: Config,
    rng: np.random.Generator,
    data: FloatArray | None = None,
    progress: Progress | None = None,
) -> StabilityAnalysis:
    """Run bounds, witnesses, the search and certification within `config.time_limit`."""
    started = time.monotonic()
    deadline = started + config.time_limit
    hidden = network.hidden_neurons()
    table = WitnessTable(network, domain)
    stages: list[StageRecord] = []

    def record(name: str, since: float, undecided: int) -> float:
        now = time.monotonic()
        stages.append(StageRecord(name, now - since, undecided))
        return now

    since = time.monotonic()
    bounds = [symbolic_bounds(network, box) for box in domain.boxes]

    def bound_decided(neuron: Neuron) -> bool:
        phases = {b.phase_of(neuron) for b in bounds}
        return len(phases) == 1 and None not in phases

    undecided_by_bounds = [n for n in hidden if not bound_decided(n)]
    since = record("bounds", since, len(undecided_by_bounds))

    find_witnesses(
        network, domain, table, undecided_by_bounds, config, rng, data, deadline, progress
    )
    unstable = table.unstable()
    candidates = [n for n in undecided_by_bounds if n not in unstable]
    since = record("witnesses", since, len(candidates))

    search_claims: dict[Neuron, Phase] = {}
    if candidates and time.monotonic() < deadline:
        # The search gets at most a sixth of what is left: certification and the Z3 checks
        # need the rest (the search only finds witnesses; proofs come from certification).
        # On mnist-net_256x2's eps = 0.05 box of image 1 a third (17.8 s of 60) found no
        # witness for its 140 candidates, and case splits proved claims in the time it took.
        # Where certification can bisect the input box it both proves and refutes claims
        # better than the search (measured on ACAS Xu: in 30 s on prop_3 the search found no
        # witness, and its 13 claims were those the bounds suggest), so it gets a twentieth.
        share = 20 if _splittable(network, config) else 6
        search_deadline = time.monotonic() + (deadline - time.monotonic()) / share
        run_search = (
            search_module.per_neuron_search
            if config.method == "per-neuron"
            else search_module.stability_search
        )
        result = run_search(
            network, domain, bounds, table, candidates, config, search_deadline, progress
        )
        search_claims = dict(result.claims)
    unstable = table.unstable()
    remaining = [n for n in candidates if n not in unstable]
    since = record("search", since, len(remaining))

    claims: dict[Neuron, Phase] = {}
    for neuron in hidden:
        phase = _claimed_phase(neuron, table, bounds, search_claims)
        if phase is not None:
            claims[neuron] = phase

    certification = _certify(network, domain, claims, table, config, rng, deadline, progress)
    stages.append(StageRecord("certify", certification.prove_seconds, 0))
    statuses = decide_statuses(
        hidden,
        table,
        certification.proofs,
        certification.checks,
        claims,
        _ancestries(certification.subdomains),
    )
    stages.append(
        StageRecord(
            "smt",
            certification.check_seconds,
            sum(1 for s in statuses.values() if s is Status.UNKNOWN),
        )
    )
    return StabilityAnalysis(
        statuses,
        table,
        certification.proofs,
        certification.checks,
        stages,
        claims,
        certification.subdomains,
        certification.cover_checks,
    )


@dataclasses.dataclass
class _Certification:
    subdomains: Subdomains
    proofs: list[BoxProof]
    checks: dict[str, LemmaCheck]
    boxes: list[Box] = dataclasses.field(default_factory=list)
    """boxes[k]: the box proofs[k] is about."""
    cover_checks: dict[int, LemmaCheck] = dataclasses.field(default_factory=dict)
    """Per domain box that was split: Z3's check that its sub-boxes cover it."""
    prove_seconds: float = 0.0
    check_seconds: float = 0.0
    check_cost: _CheckCost = dataclasses.field(default_factory=lambda: _CheckCost())
    rows: DefinitionRows | None = None
    """The network's rows with their text, built once for every worker process."""
    early: LemmaChecks | None = None
    """Z3 checks started while the proofs go on (one worker: the proofs use the other core)."""
    helper: ProofHelper | None = None
    """A process proving one half of each bisection while this one proves the other."""


@dataclasses.dataclass
class _CheckCost:
    """Projected wall seconds of Z3 per obligation, by the layer of the lemma's neuron (a
    deeper lemma's obligation spells out more rows). A first guess until measured on the run."""

    per_layer: dict[int, float] = dataclasses.field(default_factory=dict)
    guess: float = 0.03
    measured: bool = False

    def of(self, obligations_by_layer: Mapping[int, int]) -> float:
        return sum(
            count * self.per_layer.get(layer, self.guess)
            for layer, count in obligations_by_layer.items()
        )

    def calibrate(self, samples: Iterable[tuple[int, int, float]], workers: int) -> None:
        """Per layer, the measured seconds per obligation (from samples (layer, obligations,
        a worker's seconds on them)), spread over `workers` worker processes. Per obligation,
        not per lemma: a case split's lemma has dozens, a bound's one."""
        totals: dict[int, tuple[int, float]] = {}
        for layer, count, seconds in samples:
            done, spent = totals.get(layer, (0, 0.0))
            totals[layer] = (done + count, spent + seconds)
        measured = {
            layer: spent / max(1, done) / max(1, workers) for layer, (done, spent) in totals.items()
        }
        # A layer this sample lacks keeps its earlier estimate.
        self.per_layer = {**self.per_layer, **measured}
        self.guess = max(self.per_layer.values(), default=self.guess)
        self.measured = True


@dataclasses.dataclass
class _Node:
    """A proof box in the making: its proof (lemma ids numbered by `number`) and its cost."""

    number: int
    box: Box
    enclosing: int | None
    """The proof box this one is a half of (None for the domain box)."""
    proof: BoxProof
    failed: set[Neuron]
    """The claims attempted here (those failed on the enclosing box) that are not proved."""
    seconds: float


def _certify(
    network: Network,
    domain: Domain,
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    config: Config,
    rng: np.random.Generator,
    deadline: float,
    progress: Progress | None,
) -> _Certification:
    """Prove the claims box by box, then have Z3 check the lemmas the proved claims rest on.

    1. Proofs, per domain box (LP relaxations, exact certificates, phase case splits). On a
       splittable domain whose box still fails claims, the box is bisected, the sub-box whose
       failed claims are closest to being proved everywhere first (`_most_promising`), while
       the time of one more bisection plus the projected Z3 time of the claims proved so far
       fits in the box's share of the budget (with `SPLIT_SLACK`); a half inherits its
       enclosing box's bounds and re-proves only what it improves. With two or more workers a
       helper process proves one half of each bisection (`certification.helper`). The
       projection uses Z3's measured speed per obligation on a sample of the first proof's
       lemmas, then the early worker's (below).
    2. Z3 checks of the lemmas of the claims proved on every sub-box, shallow layers first,
       so that the time limit cuts deep claims before shallow ones. With two or more workers
       these start during phase 1: one worker process, at a lower CPU priority than the
       proofs, checks the lemmas of each claim once it is proved on every sub-box so far
       (`certification.early`).
    Claims refuted by a witness meanwhile, or failed on a sub-box, make no neuron stable.
    """
    splitting = _splittable(network, config)
    certification = _Certification(Subdomains.whole(domain), [], {})
    certification.rows = DefinitionRows(network).written()
    with contextlib.ExitStack() as stack:
        if config.workers > 1:
            # Below the proofs' priority: they are the critical path, the checks fill idle time.
            certification.early = stack.enter_context(
                LemmaChecks(network, 1, deadline, certification.rows, niceness=10)
            )
            if splitting:
                certification.helper = stack.enter_context(ProofHelper(network))
        open_claims = dict(claims)
        trees: list[SplitTree] = []
        for parent, box in enumerate(domain.boxes):
            now = time.monotonic()
            box_deadline = now + (deadline - now) / (len(domain.boxes) - parent)
            open_claims = {n: p for n, p in open_claims.items() if len(table.seen(n)) < 2}
            certifier = _BoxCertifier(
                network,
                domain,
                parent,
                open_claims,
                table,
                config,
                rng,
                progress,
                certification,
                len(certification.proofs),
            )
            certifier.prove(box, box_deadline, splitting)
            certification.prove_seconds += certifier.prove_seconds
            certification.proofs.extend(certifier.proofs())
            certification.boxes.extend(certifier.boxes())
            trees.append(certifier.tree())
            lemmas = all_lemmas(certification.proofs)
            open_claims = {
                n: p
                for n, p in open_claims.items()
                if len(table.seen(n)) < 2
                and covering_lemmas(certifier.leaf_ancestries(), lemmas, n, p) is not None
            }
        subdomains = Subdomains.from_trees(domain, trees)
        if any(
            not (np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper))
            for a, b in zip(subdomains.boxes, certification.boxes, strict=True)
        ):
            raise InconsistentEvidenceError("proof boxes rebuilt from the split trees differ")
        started = time.monotonic()
        checks = _check_shallow_first(
            network,
            subdomains.boxes,
            certification.proofs,
            _ancestries(subdomains),
            open_claims,
            config.workers,
            deadline,
            progress,
            certification.early,
            certification.rows,
        )
        certification.check_seconds = time.monotonic() - started
        certification.checks.update(checks)
        for parent in range(len(domain.boxes)):
            if len(subdomains.leaves_of(parent)) > 1:
                obligation = cover_obligation(subdomains, parent)
                result = check_many([obligation], SMT_TIMEOUT)[0]
                if result.verdict is not SmtVerdict.PROVED:
                    raise InconsistentEvidenceError(f"{obligation.id}: {result.verdict.value}")
                certification.cover_checks[parent] = LemmaCheck([obligation], [result])
        certification.subdomains = subdomains
        return certification


class _BoxCertifier:
    """Phase 1 of `_certify` on one domain box: the proof boxes and their proofs."""

    def __init__(
        self,
        network: Network,
        domain: Domain,
        parent: int,
        claims: Mapping[Neuron, Phase],
        table: WitnessTable,
        config: Config,
        rng: np.random.Generator,
        progress: Progress | None,
        certification: _Certification,
        first: int,
    ) -> None:
        self.network = network
        self.domain = domain
        self.parent = parent
        self.claims = claims
        self.table = table
        self.config = config
        self.rng = rng
        self.progress = progress
        self.certification = certification
        """Where Z3's measured speed is kept (shared by the boxes of one run)."""
        self.prove_seconds = 0.0
        """Wall seconds of the proofs (both halves at once count once)."""
        self.first = first
        """The number of this domain box's proof box; its halves are numbered after it."""
        self.nodes: dict[int, _Node] = {}
        self.splits: dict[int, tuple[int, float, int, int]] = {}
        self.leaves: list[int] = []
        self.bisections: list[tuple[float, Counter[int]]] = []
        """(wall seconds, lemmas it added to those Z3 would check) of every bisection so far:
        what the next costs."""

    def _refuted(self) -> set[Neuron]:
        return self.table.unstable()

    def _offer(self, point: FloatArray, _: int) -> None:
        own = self.domain.boxes[self.parent]
        self.table.offer(np.clip(point, own.lower, own.upper)[None, :], self.parent, "lp")

    def _attempted(self, enclosing: int | None) -> dict[Neuron, Phase]:
        """The claims a proof box attempts: all, or those failed on its enclosing box, less
        the refuted ones."""
        refuted = self._refuted()
        attempted = self.claims if enclosing is None else self.nodes[enclosing].failed
        return {n: p for n, p in self.claims.items() if n in attempted and n not in refuted}

    def _node(
        self, box: Box, deadline: float, split_depth: int, enclosing: int | None, number: int
    ) -> _Node:
        if enclosing is not None:
            self.table.offer(box.sample(64, self.rng), self.parent, "random")
        claims = self._attempted(enclosing)
        progress = self.progress
        started = time.monotonic()
        proof = prove_box(
            self.network,
            box,
            number,
            claims,
            max(started, deadline),
            split_depth,
            self._offer,
            (lambda done, total: progress("certify", done, total)) if progress else None,
            self.nodes[enclosing].proof if enclosing is not None else None,
        )
        return self._record(number, box, enclosing, claims, proof, time.monotonic() - started)

    def _halves(
        self, node: _Node, below: Box, above: Box, deadline: float, numbers: tuple[int, int]
    ) -> None:
        """Prove both halves of `node`: the upper one in the helper process (if any) while
        this process proves the lower one."""
        depth = self.config.max_split_depth
        helper = self.certification.helper
        if helper is None:
            self._node(below, deadline, depth, node.number, numbers[0])
            self._node(above, deadline, depth, node.number, numbers[1])
            return
        self.table.offer(above.sample(64, self.rng), self.parent, "random")
        claims = self._attempted(node.number)
        beside = helper.submit(above, numbers[1], claims, deadline, depth, node.proof)
        self._node(below, deadline, depth, node.number, numbers[0])
        proof, offered, seconds = beside.result()
        for point in offered:
            self._offer(point, numbers[1])
        self._record(numbers[1], above, node.number, claims, proof, seconds)

    def _record(
        self,
        number: int,
        box: Box,
        enclosing: int | None,
        claims: Mapping[Neuron, Phase],
        proof: BoxProof,
        seconds: float,
    ) -> _Node:
        """Keep a proof box's proof and the claims it fails."""
        refuted = self._refuted()
        shown = {n: proving_lemma(proof, number, n, p) for n, p in claims.items()}
        failed = {n for n, lemma in shown.items() if lemma is None and n not in refuted}
        node = _Node(number, box, enclosing, proof, failed, seconds)
        self.nodes[number] = node
        return node

    def _check_early(self) -> None:
        """Queue for the early Z3 worker the lemmas of the claims proved on every sub-box so
        far (a claim proved on some only may never need them), and recalibrate Z3's speed."""
        early = self.certification.early
        if early is None:
            return
        lemmas, contexts = self._lemmas_and_contexts()
        boxes = {k: n.box for k, n in self.nodes.items()}
        early.submit(lemmas, contexts, boxes, self._covered(lemmas, contexts))
        measured = early.seconds()
        if len(measured) >= CALIBRATION_SAMPLE:
            self.certification.check_cost.calibrate(measured.values(), self.config.workers)

    def _covered(
        self, lemmas: Mapping[str, BoundLemma], contexts: Mapping[str, list[str]]
    ) -> set[str]:
        """The lemmas of the claims proved on every sub-box so far, with their contexts."""
        refuted = self._refuted()
        open_claims = {n: p for n, p in self.claims.items() if n not in refuted}
        return _needed_lemmas(lemmas, contexts, self.leaf_ancestries(), open_claims)

    def _projected_checks(self) -> float:
        """Projected seconds to check, with Z3, the lemmas the proof boxes so far would have
        checked, and to write their obligations."""
        lemmas, contexts = self._lemmas_and_contexts()
        covered = self._covered(lemmas, contexts)
        return self.certification.check_cost.of(
            self._not_yet_checked(lemmas, covered)
        ) + _writing_seconds(lemmas, covered)

    def _unchecked(self) -> Counter[int]:
        """By layer, the obligations Z3 would check if the proofs stopped here, less those
        the early worker has checked: the lemmas of the claims proved on every sub-box so far,
        with their contexts transitively. (Not those of claims proved on some sub-boxes only:
        on prop_1 of ACAS Xu most of those stay unproved elsewhere, and counting them
        projected ten times the Z3 time the run then took.)"""
        lemmas, contexts = self._lemmas_and_contexts()
        return self._not_yet_checked(lemmas, self._covered(lemmas, contexts))

    def _not_yet_checked(self, lemmas: Mapping[str, BoundLemma], covered: set[str]) -> Counter[int]:
        """The obligations of the `covered` lemmas the early worker has not checked, by layer."""
        if self.certification.early is not None:
            covered = covered - self.certification.early.done()
        return _obligations_by_layer(lemmas, covered)

    def _next_bisection(self, node: _Node) -> float:
        """Projected wall seconds (LP, and Z3 for the lemmas it adds) of bisecting `node`:
        like the last bisections, or before any, `node`'s share of neurons a half re-proves
        (the two halves at once when a helper process proves one of them)."""
        cost = self.certification.check_cost
        recent = self.bisections[-8:]
        if not recent:
            # A half re-proves only the neurons not stable on `node`.
            facts = node.proof.facts.values()
            unsettled = max(0.1, sum(1 for f in facts if f.phase is None) / max(1, len(facts)))
            at_once = 1 if self.certification.helper is not None else 2
            return unsettled * (at_once * node.seconds + 2 * cost.of(self._unchecked()))
        return sum(seconds + cost.of(added) for seconds, added in recent) / len(recent)

    def prove(self, box: Box, deadline: float, splitting: bool) -> None:
        """Prove the box, bisected as time allows (`self.nodes`, `self.splits`, `self.leaves`).

        Every proof box gets phase case splits on the claims one relaxation does not prove:
        measured on ACAS Xu 1_1 prop_3, bisection alone needed 169 bisections (8,310
        obligations) to prove every claim, with case splits of depth 6 on every proof box 8
        (1,479 obligations).
        """
        open_claims = {n: p for n, p in self.claims.items() if n not in self._refuted()}
        reserve = min(
            self.certification.check_cost.guess * _expected_lemmas(self.network, open_claims),
            RESERVE_CAP * max(0.0, deadline - time.monotonic()),
        )
        depth = self.config.max_split_depth
        root = self._node(box, deadline - reserve, depth, None, self.first)
        self.prove_seconds += root.seconds
        self.leaves = [root.number]
        self._check_early()
        if not splitting:
            self._retry_with_splits(root, deadline)
        if splitting and root.failed and not self.certification.check_cost.measured:
            self._calibrate(root)
        while splitting and len(self.leaves) < self.config.max_subboxes:
            refuted = self._refuted()
            candidates = [
                self.nodes[k]
                for k in self.leaves
                if self.nodes[k].failed - refuted
                and any(bisect(self.nodes[k].box, d) is not None for d in range(box.size))
            ]
            if not candidates:
                break
            node = _most_promising([self.nodes[k] for k in self.leaves], candidates, refuted)
            needed = SPLIT_SLACK * self._next_bisection(node) + self._projected_checks()
            if time.monotonic() + needed > deadline:
                break
            dimension = split_dimension(self.network, node.box, sorted(node.failed), self.rng)
            halves = bisect(node.box, dimension)
            if halves is None:
                break
            at, below, above = halves
            numbers = (self.first + len(self.nodes), self.first + len(self.nodes) + 1)
            started = time.monotonic()
            before = self._unchecked()
            self._halves(node, below, above, deadline - self._projected_checks(), numbers)
            wall = time.monotonic() - started
            self.prove_seconds += wall
            self.splits[node.number] = (dimension, at, numbers[0], numbers[1])
            position = self.leaves.index(node.number)
            self.leaves[position : position + 1] = numbers
            self.bisections.append((wall, self._unchecked() - before))
            self._check_early()
            if self.progress is not None:
                self.progress("sub-boxes", len(self.leaves), 0)

    def _retry_with_splits(self, node: _Node, deadline: float) -> None:
        """Spend the time a box that cannot be bisected leaves on case splits of its failed
        deepest-layer claims (`SplitRetry`), most promising first, while the next attempt
        (timed like the last ones) and the projected Z3 checks fit before `deadline`; then
        the claims still failed again, deeper (`RETRY_EXTRA_DEPTHS`)."""
        refuted = self._refuted()
        layers = [lemma.neuron.layer for lemma in node.proof.lemmas.values()]
        # Ranking the claims costs an LP each: not worth it without a second for attempts.
        if not layers or deadline - time.monotonic() - self._projected_checks() < 1.0:
            return
        layer = max(layers)
        failed = [n for n in sorted(node.failed - refuted) if n.layer == layer]
        if not failed or context_id(node.number, layer) not in node.proof.contexts:
            return
        depth = self.config.max_split_depth
        started = time.monotonic()
        retry = SplitRetry(self.network, node.box, node.number, node.proof, layer)
        promising: list[tuple[Fraction, Neuron, int]] = []
        for neuron in failed:
            if time.monotonic() > deadline:
                break
            sign = proving_sign(self.claims[neuron])
            # Ranked by the deepest splits to be tried: at a set depth of 0 no gap would count.
            promise = retry.promise(neuron, sign, depth + max(RETRY_EXTRA_DEPTHS))
            if promise is not None:
                promising.append((promise, neuron, sign))
        pending = [(neuron, sign) for _, neuron, sign in sorted(promising)]
        for extra in RETRY_EXTRA_DEPTHS:
            pending = [(n, s) for n, s in pending if n in node.failed]
            if not self._retry_round(retry, node, pending, depth + extra, deadline):
                break
        self.prove_seconds += time.monotonic() - started

    def _retry_round(
        self,
        retry: SplitRetry,
        node: _Node,
        pending: list[tuple[Neuron, int]],
        depth: int,
        deadline: float,
    ) -> bool:
        """One attempt per pending claim with case splits of `depth`, in order, while the next
        (timed like the last ones) and the projected Z3 checks fit; False if time ran out."""
        looping = time.monotonic()
        for attempts, (neuron, sign) in enumerate(pending):
            now = time.monotonic()
            typical = (now - looping) / attempts if attempts else 1.0
            left = deadline - now - self._projected_checks()
            if typical > left:
                return False
            # Three fair shares of what is left: one stubborn claim cannot take it all.
            share = max(1.0, 3 * left / (len(pending) - attempts))
            lemma = retry.prove(neuron, sign, depth, min(deadline, now + share))
            if lemma is not None:
                node.proof.lemmas[lemma.id] = lemma
                node.failed.discard(neuron)
                self._check_early()
        return True

    def proofs(self) -> list[BoxProof]:
        """The proofs of the proof boxes, in order of their numbers."""
        return [self.nodes[self.first + k].proof for k in range(len(self.nodes))]

    def boxes(self) -> list[Box]:
        return [self.nodes[self.first + k].box for k in range(len(self.nodes))]

    def tree(self) -> SplitTree:
        return _tree(self.first, self.splits)

    def leaf_ancestries(self) -> list[list[int]]:
        enclosing = {k: node.enclosing for k, node in self.nodes.items()}
        return [ancestry(k, enclosing) for k in self.leaves]

    def _calibrate(self, node: _Node) -> None:
        """Measure Z3's speed per layer on a sample of the node's lemmas: a worker's CPU seconds
        to write and check an obligation, spread over the workers."""
        ordered = sorted(node.proof.lemmas.values(), key=lambda lemma: lemma.neuron)
        step = max(1, len(ordered) // CALIBRATION_SAMPLE)
        sample = [lemma.id for lemma in ordered[::step][:CALIBRATION_SAMPLE]]
        workers = self.config.workers
        with LemmaChecks(self.network, workers, rows=self.certification.rows) as checks:
            checks.submit(node.proof.lemmas, node.proof.contexts, {node.number: node.box}, sample)
            checks.results(math.inf)
            measured = checks.seconds()
        self.certification.check_cost.calibrate(measured.values(), workers)

    def _lemmas_and_contexts(self) -> tuple[dict[str, BoundLemma], dict[str, list[str]]]:
        """Every lemma and context of the proof boxes so far."""
        proofs = [n.proof for n in self.nodes.values()]
        return all_lemmas(proofs), all_contexts(proofs)


def _most_promising(
    leaves: Sequence[_Node], candidates: Sequence[_Node], refuted: set[Neuron]
) -> _Node:
    """The candidate sub-box whose bisection brings the most claims closest to being proved on
    every sub-box: a failed claim counts 1/k where k of the `leaves` fail it (a claim is proved
    only once all k are mended)."""
    failing = Counter(n for leaf in leaves for n in leaf.failed - refuted)

    def score(node: _Node) -> tuple[float, int]:
        return sum(1.0 / failing[n] for n in node.failed - refuted), -node.number

    return max(candidates, key=score)


def all_lemmas(proofs: Sequence[BoxProof]) -> dict[str, BoundLemma]:
    """Every lemma of every proof box by id (ids name their box, so they never clash)."""
    return {i: lemma for proof in proofs for i, lemma in proof.lemmas.items()}


def all_contexts(proofs: Sequence[BoxProof]) -> dict[str, list[str]]:
    return {c: ids for proof in proofs for c, ids in proof.contexts.items()}


def _ancestries(subdomains: Subdomains) -> list[list[int]]:
    """Per sub-box: it and the proof boxes enclosing it, innermost first."""
    return [subdomains.ancestry(k) for k in subdomains.leaves]


def _needed_lemmas(
    lemmas: Mapping[str, BoundLemma],
    contexts: Mapping[str, list[str]],
    ancestries: Sequence[Sequence[int]],
    claims: Mapping[Neuron, Phase],
) -> set[str]:
    """Ids of the lemmas that the claims proved on every sub-box rest on (theirs and their
    contexts')."""
    return _with_contexts(_claim_lemmas(lemmas, ancestries, claims), lemmas, contexts)


def _claim_lemmas(
    lemmas: Mapping[str, BoundLemma],
    ancestries: Sequence[Sequence[int]],
    claims: Mapping[Neuron, Phase],
) -> set[str]:
    """Ids of the lemmas that show the claims proved on every sub-box (not their contexts)."""
    return {
        lemma.id
        for neuron, phase in claims.items()
        for lemma in covering_lemmas(ancestries, lemmas, neuron, phase) or []
    }


def _with_contexts(
    identifiers: Iterable[str], lemmas: Mapping[str, BoundLemma], contexts: Mapping[str, list[str]]
) -> set[str]:
    """The lemmas and, transitively, those their contexts name (a context lemma of an
    enclosing box has a context of its own that the sub-box's context need not repeat)."""
    wanted: set[str] = set()
    pending = list(identifiers)
    while pending:
        identifier = pending.pop()
        if identifier not in wanted:
            wanted.add(identifier)
            pending.extend(contexts[lemmas[identifier].context])
    return wanted


def _check_shallow_first(
    network: Network,
    boxes: Sequence[Box],
    proofs: Sequence[BoxProof],
    ancestries: Sequence[Sequence[int]],
    claims: Mapping[Neuron, Phase],
    workers: int,
    deadline: float,
    progress: Progress | None,
    early: LemmaChecks | None = None,
    rows: DefinitionRows | None = None,
) -> dict[str, LemmaCheck]:
    """Z3 checks of the lemmas `claims` rest on (proof k is about boxes[k]), in order of
    layer, so that the deadline cuts deep claims before shallow ones, and in each layer the
    claims' own lemmas before those only deeper claims need (a wide layer's checks can take
    longer than the time left: on a random 784-256x4 net at 60 s, 4 of the 178 first-layer
    claims went unchecked behind the other first-layer bounds). The lemmas `early` has
    started are not checked again (its worker goes on meanwhile)."""
    lemmas = all_lemmas(proofs)
    contexts = all_contexts(proofs)
    own = _claim_lemmas(lemmas, ancestries, claims)
    wanted = _with_contexts(own, lemmas, contexts)
    checks_deadline = deadline - _writing_seconds(lemmas, wanted)
    # The early worker keeps what it has started; the rest goes to all the workers.
    started = early.started - early.withdraw() if early is not None else set()
    numbered = dict(enumerate(boxes))
    with LemmaChecks(network, workers, checks_deadline, rows) as checks:
        checks.submit(lemmas, contexts, numbered, wanted - started, own)
        report = (lambda done, total: progress("smt", done, total)) if progress else None
        checked = checks.results(checks_deadline, report)
    if early is not None:
        checked.update(early.results(checks_deadline))
    return {i: check for i, (check, _) in checked.items() if i in wanted}


def _writing_seconds(lemmas: Mapping[str, BoundLemma], identifiers: Iterable[str]) -> float:
    """What writing these lemmas' obligations after the analysis will take."""
    return WRITE_SECONDS_PER_OBLIGATION * sum(_obligations_by_layer(lemmas, identifiers).values())


def _obligations_by_layer(
    lemmas: Mapping[str, BoundLemma], identifiers: Iterable[str]
) -> Counter[int]:
    """The obligations of these lemmas, counted by the layer of their neurons."""
    counts: Counter[int] = Counter()
    for identifier in identifiers:
        lemma = lemmas[identifier]
        counts[lemma.neuron.layer] += obligation_count(lemma)
    return counts


def _splittable(network: Network, config: Config) -> bool:
    return network.input_size <= SPLITTABLE_INPUT_SIZE and config.max_subboxes > 1


def _expected_lemmas(network: Network, claims: Mapping[Neuron, Phase]) -> int:
    """Lemmas a proof of `claims` needs: both bounds of every neuron before the deepest claim."""
    if not claims:
        return 0
    deepest = max(n.layer for n in claims)
    earlier = 2 * sum(network.layers[k].outputs for k in range(deepest))
    return earlier + sum(1 for n in claims if n.layer == deepest)


def _tree(node: int, splits: Mapping[int, tuple[int, float, int, int]]) -> SplitTree:
    if node not in splits:
        return node
    dimension, at, below, above = splits[node]
    return Bisection(node, dimension, at, _tree(below, splits), _tree(above, splits))


def covering_lemmas(
    ancestries: Iterable[Sequence[int]],
    lemmas: Mapping[str, BoundLemma],
    neuron: Neuron,
    phase: Phase,
) -> list[BoundLemma] | None:
    """Per sub-box (given by its ancestry, innermost first), the innermost proof box's lemma
    that shows `neuron` in `phase` there, each lemma once; None if some sub-box has none.

    Sound because a lemma proved on a box holds on every box inside it.
    """
    sign = proving_sign(phase)
    found: dict[str, BoundLemma] = {}
    for chain in ancestries:
        showing = [
            lemma
            for box in chain
            if (lemma := lemmas.get(lemma_id(box, neuron, sign))) is not None
            and shows_phase(lemma, phase)
        ]
        if not showing:
            return None
        found.setdefault(showing[0].id, showing[0])
    return list(found.values())


def shows_phase(lemma: BoundLemma, phase: Phase) -> bool:
    if phase is Phase.INACTIVE:
        return lemma.sign == UPPER and lemma.value <= 0
    return lemma.sign == LOWER and lemma.value >= 0


def proving_lemma(proof: BoxProof, box: int, neuron: Neuron, phase: Phase) -> BoundLemma | None:
    """The lemma that shows `neuron` is in `phase` on this box, if one was proved."""
    sign = proving_sign(phase)
    lemma = proof.lemmas.get(lemma_id(box, neuron, sign))
    return lemma if lemma is not None and shows_phase(lemma, phase) else None


def check_lemmas(
    network: Network,
    domain: Domain,
    proofs: Sequence[BoxProof],
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    progress: Progress | None = None,
    workers: int = 1,
    deadline: float = math.inf,
) -> dict[str, LemmaCheck]:
    """Z3 checks of every lemma that a claim without two witnesses rests on (the claim's and
    its context's), proof k being about box k of `domain` (each box its own sub-box).

    Past `deadline` no further obligation is started: the lemmas not checked by then are
    absent from the result, hence not established.
    """
    open_claims = {n: p for n, p in claims.items() if len(table.seen(n)) < 2}
    ancestries = [[k] for k in range(len(proofs))]
    return _check_shallow_first(
        network, domain.boxes, proofs, ancestries, open_claims, workers, deadline, progress
    )


class _Established:
    """Which lemmas are established: proved by Z3 with leaves that cover every phase, and so
    is every lemma their context names, transitively. Each lemma and context is judged once
    (a context names lemmas of earlier layers only, so the recursion ends; judging every
    covering lemma's whole transitive context afresh took seconds on thousands of lemmas)."""

    def __init__(
        self,
        lemmas: Mapping[str, BoundLemma],
        contexts: Mapping[str, list[str]],
        checks: Mapping[str, LemmaCheck],
    ) -> None:
        self.lemmas = lemmas
        self.contexts = contexts
        self.checks = checks
        self._lemma: dict[str, bool] = {}
        self._context: dict[str, bool] = {}

    def lemma(self, identifier: str) -> bool:
        known = self._lemma.get(identifier)
        if known is None:
            own = self.checks.get(identifier)
            lemma = self.lemmas[identifier]
            # Also for a single leaf: one that carries an assumption proves nothing on its own.
            known = (
                own is not None
                and own.proved
                and covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves)
                and self.context(lemma.context)
            )
            self._lemma[identifier] = known
        return known

    def context(self, identifier: str) -> bool:
        known = self._context.get(identifier)
        if known is None:
            known = all(self.lemma(i) for i in self.contexts[identifier])
            self._context[identifier] = known
        return known


def decide_statuses(
    hidden: list[Neuron],
    table: WitnessTable,
    proofs: list[BoxProof],
    checks: Mapping[str, LemmaCheck],
    claims: Mapping[Neuron, Phase],
    ancestries: Sequence[Sequence[int]] | None = None,
) -> dict[Neuron, Status]:
    """The status of every hidden neuron. `ancestries` lists per sub-box the proof boxes it
    lies in, innermost first (default: proof box k is sub-box k, enclosed by none)."""
    chains = ancestries if ancestries is not None else [[k] for k in range(len(proofs))]
    lemmas = all_lemmas(proofs)
    established_lemma = _Established(lemmas, all_contexts(proofs), checks).lemma
    statuses: dict[Neuron, Status] = {}
    for neuron in hidden:
        seen = table.seen(neuron)
        phase = claims.get(neuron)
        covering = covering_lemmas(chains, lemmas, neuron, phase) if phase is not None else None
        established = covering is not None and all(
            established_lemma(lemma.id) for lemma in covering
        )
        if len(seen) == 2:
            if established:
                raise InconsistentEvidenceError(
                    f"neuron {neuron}: proved stable but has two witnesses"
                )
            statuses[neuron] = Status.UNSTABLE
        elif established and phase is not None:
            statuses[neuron] = Status.stable(phase)
        else:
            statuses[neuron] = Status.UNKNOWN
    return statuses
