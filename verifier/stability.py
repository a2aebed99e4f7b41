"""The stability analysis: cheap evidence first, then the search, then proofs.

Stage: domain and bounds -> witnesses -> stability search -> certification -> **statuses**.

For every hidden neuron this decides one of four statuses, each with its evidence:
- UNSTABLE: two exactly checked witnesses (g > 0 at one domain point, g < 0 at another);
- STABLY_ACTIVE / STABLY_INACTIVE: on every box of the domain, a bound lemma of the right sign
  whose leaves are Farkas certificates checked in exact arithmetic AND by Z3, and whose context
  lemmas (every earlier-layer lemma of that box) are proved the same way;
- UNKNOWN: anything else (time limit, a claim no certificate was found for). Never compressed.

Float bounds and CP-SAT answers only choose which claims to attempt; they decide nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    covers_all_phases,
    leaf_obligation,
    lemma_id,
    prove_box,
)
from verifier.config import Config
from verifier.domain import Box, Domain
from verifier.errors import VerifyCompressError
from verifier.ir import Network
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import Obligation, SmtResult, SmtVerdict, SolverPool, check_many
from verifier.status import Neuron, Phase, Status
from verifier.subdomains import (
    SPLITTABLE_INPUT_SIZE,
    Bisection,
    SplitTree,
    Subdomains,
    bisect,
    cover_obligation,
    split_dimension,
)
from verifier.witnesses import WitnessTable, find_witnesses

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

SMT_TIMEOUT = 60.0
SPLIT_SLACK = 1.2
"""A box is bisected only if its halves' estimated cost, times this, fits in the time left:
a half that runs out of time proves nothing, which is worse than not splitting."""
"""Seconds Z3 may take on one obligation (they take milliseconds when the certificate is valid)."""


@dataclasses.dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    undecided: int
    """Hidden neurons neither shown unstable nor decided by then."""


@dataclasses.dataclass
class LemmaCheck:
    obligations: list[Obligation]
    results: list[SmtResult]

    @property
    def proved(self) -> bool:
        return bool(self.results) and all(r.verdict is SmtVerdict.PROVED for r in self.results)


@dataclasses.dataclass
class StabilityAnalysis:
    statuses: dict[Neuron, Status]
    table: WitnessTable
    proofs: list[BoxProof]
    lemma_checks: dict[str, LemmaCheck]
    stages: list[StageRecord]
    claims: dict[Neuron, Phase]
    subdomains: Subdomains
    """The sub-boxes the proofs are made on: proofs[k] is about subdomains.boxes[k]."""
    cover_checks: dict[int, LemmaCheck]
    """Z3's check that the sub-boxes of each split domain box cover it."""

    def stability_lemmas(self, neuron: Neuron) -> list[str]:
        """The per-box lemma ids that make a stable neuron stable (empty otherwise)."""
        status = self.statuses[neuron]
        if not status.is_stable:
            return []
        sign = LOWER if status is Status.STABLY_ACTIVE else UPPER
        return [lemma_id(box, neuron, sign) for box in range(len(self.proofs))]


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
        # The search gets at most a third of what is left: certification and the Z3 checks
        # need the rest (the search only finds witnesses; proofs come from certification).
        # Where certification can bisect the input box it both proves and refutes claims
        # better than the search (measured on ACAS Xu: the search found no witness there), so
        # the search gets a sixth.
        share = 6 if _splittable(network, config) else 3
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
    statuses = decide_statuses(hidden, table, certification.proofs, certification.checks, claims)
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
    cover_checks: dict[int, LemmaCheck] = dataclasses.field(default_factory=dict)
    """Per domain box that was split: Z3's check that its sub-boxes cover it."""
    prove_seconds: float = 0.0
    check_seconds: float = 0.0
    check_cost: _CheckCost = dataclasses.field(default_factory=lambda: _CheckCost())


@dataclasses.dataclass
class _CheckCost:
    """Projected wall seconds of Z3 per lemma, by the layer of the lemma's neuron (a deeper
    lemma's obligation spells out more rows). A first guess until measured on the run."""

    per_layer: dict[int, float] = dataclasses.field(default_factory=dict)
    guess: float = 0.03
    measured: bool = False

    def of(self, lemmas_by_layer: Mapping[int, int]) -> float:
        return sum(
            count * self.per_layer.get(layer, self.guess)
            for layer, count in lemmas_by_layer.items()
        )

    def calibrate(self, samples: Sequence[tuple[int, float]]) -> None:
        """Per-layer means of measured (layer, seconds per lemma)."""
        by_layer: dict[int, list[float]] = {}
        for layer, seconds in samples:
            by_layer.setdefault(layer, []).append(seconds)
        self.per_layer = {layer: sum(v) / len(v) for layer, v in by_layer.items()}
        self.guess = max(self.per_layer.values(), default=self.guess)
        self.measured = True

    def rescale(self, lemmas_by_layer: Mapping[int, int], seconds: float) -> None:
        """Scale the projection to what checking these lemmas really took."""
        predicted = self.of(lemmas_by_layer)
        if predicted > 0 and sum(lemmas_by_layer.values()) >= 24:
            factor = seconds / predicted
            self.per_layer = {layer: v * factor for layer, v in self.per_layer.items()}
            self.guess *= factor


@dataclasses.dataclass
class _Node:
    """A sub-box in the making: its proof (lemma ids numbered by `number`) and its cost."""

    number: int
    box: Box
    proof: BoxProof
    failed: set[Neuron]
    seconds: float
    needed: Counter[int]
    """Lemmas Z3 would check on this sub-box (those of the claims it proves, with contexts),
    counted by layer."""


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

    Per domain box, in two phases:
    1. Proofs (LP relaxations, exact certificates, phase case splits). On a splittable domain
       whose box still fails claims, the box is bisected, sub-box with the most failed claims
       first, while the LP time of two more halves plus the projected Z3 time of every sub-box
       fits in the box's share of the budget (with `SPLIT_SLACK`); then the sub-boxes that
       still fail claims get phase case splits as time allows. The projection uses Z3's
       measured speed on one batch of the first proof's lemmas.
    2. Z3 checks of the lemmas of the claims proved on every sub-box, shallow layers first,
       so that the time limit cuts deep claims before shallow ones.
    Claims refuted by a witness meanwhile, or failed on a sub-box, make no neuron stable.
    """
    splitting = _splittable(network, config)
    certification = _Certification(Subdomains.whole(domain), [], {})
    open_claims = dict(claims)
    trees: list[SplitTree] = []
    leaf_boxes: list[Box] = []
    for parent, box in enumerate(domain.boxes):
        now = time.monotonic()
        box_deadline = now + (deadline - now) / (len(domain.boxes) - parent)
        open_claims = {n: p for n, p in open_claims.items() if len(table.seen(n)) < 2}
        certifier = _BoxCertifier(
            network, domain, parent, open_claims, table, config, rng, progress, certification
        )
        leaves = certifier.prove(box, box_deadline, splitting)
        certification.prove_seconds += certifier.prove_seconds
        first = len(certification.proofs)
        proofs = [_renumbered(leaf.proof, leaf.number, first + k) for k, leaf in enumerate(leaves)]
        numbering = {leaf.number: first + k for k, leaf in enumerate(leaves)}
        trees.append(_tree(0, certifier.splits, numbering))
        proved = {
            n: p
            for n, p in open_claims.items()
            if len(table.seen(n)) < 2
            and all(
                proving_lemma(proof, first + k, n, p) is not None for k, proof in enumerate(proofs)
            )
        }
        started = time.monotonic()
        boxes = [leaf.box for leaf in leaves]
        checks = _check_shallow_first(
            network, boxes, proofs, first, proved, config.workers, box_deadline, progress
        )
        checked_in = time.monotonic() - started
        certification.check_seconds += checked_in
        layers = {i: lemma.neuron.layer for proof in proofs for i, lemma in proof.lemmas.items()}
        checked = Counter(layers[i] for i in checks)
        certification.check_cost.rescale(checked, checked_in)
        leaf_boxes.extend(boxes)
        certification.checks.update(checks)
        certification.proofs.extend(proofs)
        open_claims = proved
    subdomains = Subdomains.from_trees(domain, trees)
    if any(
        not (np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper))
        for a, b in zip(subdomains.boxes, leaf_boxes, strict=True)
    ):
        raise InconsistentEvidenceError("sub-boxes rebuilt from the split trees differ")
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
    """Phase 1 of `_certify` on one domain box: the sub-boxes and their proofs."""

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
        self.splits: dict[int, tuple[int, float, int, int]] = {}
        self.count = 0

    def _open(self) -> dict[Neuron, Phase]:
        return {n: p for n, p in self.claims.items() if len(self.table.seen(n)) < 2}

    def _offer(self, point: FloatArray, _: int) -> None:
        own = self.domain.boxes[self.parent]
        self.table.offer(np.clip(point, own.lower, own.upper)[None, :], self.parent, "lp")

    def _node(self, box: Box, deadline: float, split_depth: int) -> _Node:
        number = self.count
        self.count += 1
        if number > 0:
            self.table.offer(box.sample(64, self.rng), self.parent, "random")
        claims = self._open()
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
        )
        seconds = time.monotonic() - started
        self.prove_seconds += seconds
        failed = {
            n
            for n, p in claims.items()
            if len(self.table.seen(n)) < 2 and proving_lemma(proof, number, n, p) is None
        }
        proved = {n: p for n, p in claims.items() if n not in failed}
        needed = Counter(
            proof.lemmas[i].neuron.layer for i in _needed_lemmas(proof, number, proved)
        )
        return _Node(number, box, proof, failed, seconds, needed)

    def _projected_checks(self, leaves: Sequence[_Node]) -> float:
        return sum(self.certification.check_cost.of(leaf.needed) for leaf in leaves)

    def prove(self, box: Box, deadline: float, splitting: bool) -> list[_Node]:
        """The sub-boxes' proofs; `self.splits` records how node 0 (the box) was bisected."""
        # The whole box first gets the phase case splits too: they cost LP time only, and
        # its proof is the one kept when bisecting does not fit in the time left.
        reserve = self.certification.check_cost.guess * _expected_lemmas(self.network, self._open())
        root = self._node(box, deadline - reserve, self.config.max_split_depth)
        if splitting and root.failed and not self.certification.check_cost.measured:
            self._calibrate(root)
        leaves = [root]
        while splitting and len(leaves) < self.config.max_subboxes:
            unstable = self.table.unstable()
            candidates = [
                leaf
                for leaf in leaves
                if leaf.failed - unstable
                and any(bisect(leaf.box, d) is not None for d in range(leaf.box.size))
            ]
            if not candidates:
                break
            node = max(candidates, key=lambda leaf: (len(leaf.failed - unstable), -leaf.number))
            needed = SPLIT_SLACK * (
                2 * node.seconds
                + self._projected_checks(leaves)
                + self.certification.check_cost.of(node.needed)
            )
            if time.monotonic() + needed > deadline:
                break
            dimension = split_dimension(self.network, node.box, sorted(node.failed), self.rng)
            halves = bisect(node.box, dimension)
            if halves is None:
                break
            at, below, above = halves
            position = leaves.index(node)
            children = [
                self._node(half, deadline - self._projected_checks(leaves), 0)
                for half in (below, above)
            ]
            self.splits[node.number] = (dimension, at, children[0].number, children[1].number)
            leaves[position : position + 1] = children
            if self.progress is not None:
                self.progress("sub-boxes", len(leaves), 0)
        if len(leaves) > 1 and self.config.max_split_depth > 0:
            leaves = self._with_case_splits(leaves, deadline)
        return leaves

    def _with_case_splits(self, leaves: list[_Node], deadline: float) -> list[_Node]:
        """Re-prove the sub-boxes that fail claims with phase case splits, as time allows:
        first those whose failed claims fail on the fewest sub-boxes (the nearest to proved)."""
        result = list(leaves)
        retried: set[int] = set()
        while True:
            unstable = self.table.unstable()
            failing = Counter(n for leaf in result for n in leaf.failed - unstable)
            pending = [
                (min(failing[n] for n in leaf.failed - unstable), position)
                for position, leaf in enumerate(result)
                if leaf.failed - unstable and leaf.number not in retried
            ]
            if not pending:
                return result
            _, position = min(pending)
            leaf = result[position]
            retried.add(leaf.number)
            needed = SPLIT_SLACK * (2 * leaf.seconds + self._projected_checks(result))
            if time.monotonic() + needed > deadline:
                return result
            redone = self._node(
                leaf.box, deadline - self._projected_checks(result), self.config.max_split_depth
            )
            # Keep the first numbering: the split tree already names this sub-box.
            result[position] = dataclasses.replace(
                redone,
                number=leaf.number,
                proof=_renumbered(redone.proof, redone.number, leaf.number),
            )

    def _calibrate(self, node: _Node) -> None:
        """Measure Z3's speed per layer on a sample of the node's lemmas: the time to write a
        lemma's obligations plus the solver's own time on them, spread over the workers."""
        ordered = sorted(node.proof.lemmas.values(), key=lambda lemma: lemma.neuron)
        sample = ordered[:: max(1, len(ordered) // 64)][:64]
        rows = DefinitionRows(self.network)
        written: list[tuple[int, float, list[Obligation]]] = []
        for lemma in sample:
            started = time.monotonic()
            obligations = lemma_obligations(self.network, node.box, node.proof, lemma, rows)
            written.append((lemma.neuron.layer, time.monotonic() - started, obligations))
        flat = [o for _, _, obligations in written for o in obligations]
        with SolverPool(self.config.workers, SMT_TIMEOUT) as pool:
            results = iter(pool.check(flat))
        workers = max(1, self.config.workers)
        self.certification.check_cost.calibrate(
            [
                (layer, writing + sum(next(results).seconds for _ in obligations) / workers)
                for layer, writing, obligations in written
            ]
        )


def _renumbered(proof: BoxProof, old: int, new: int) -> BoxProof:
    """The same proof with its lemma and context ids naming box `new` instead of `old`."""
    if old == new:
        return proof

    def rename(identifier: str) -> str:
        prefix = f"b{old}."
        if not identifier.startswith(prefix):
            raise InconsistentEvidenceError(f"{identifier} is not a lemma of box {old}")
        return f"b{new}." + identifier[len(prefix) :]

    lemmas = {
        rename(i): dataclasses.replace(lemma, id=rename(i), box=new, context=rename(lemma.context))
        for i, lemma in proof.lemmas.items()
    }
    contexts = {rename(c): [rename(i) for i in ids] for c, ids in proof.contexts.items()}
    return BoxProof(dict(proof.facts), lemmas, contexts)


def _written(
    network: Network,
    boxes: Sequence[Box],
    proofs: Sequence[BoxProof],
    chunk: Sequence[tuple[int, BoundLemma]],
    rows: DefinitionRows,
    per_lemma: list[list[Obligation]],
) -> Iterator[Obligation]:
    """The obligations of each (sub-box, lemma) of `chunk`, written one lemma at a time (and
    also collected per lemma into `per_lemma`)."""
    for k, lemma in chunk:
        per_lemma.append(lemma_obligations(network, boxes[k], proofs[k], lemma, rows))
        yield from per_lemma[-1]


def _needed_lemmas(proof: BoxProof, box: int, claims: Mapping[Neuron, Phase]) -> set[str]:
    """Ids of the lemmas that the claims proved in `proof` rest on (theirs and contexts)."""
    wanted: set[str] = set()
    for neuron, phase in claims.items():
        lemma = proving_lemma(proof, box, neuron, phase)
        if lemma is not None:
            wanted.add(lemma.id)
            wanted.update(proof.contexts[lemma.context])
    return wanted


def _check_shallow_first(
    network: Network,
    boxes: Sequence[Box],
    proofs: Sequence[BoxProof],
    first: int,
    claims: Mapping[Neuron, Phase],
    workers: int,
    deadline: float,
    progress: Progress | None,
    lemmas: Sequence[BoundLemma] | None = None,
) -> dict[str, LemmaCheck]:
    """Z3 checks of the lemmas `claims` rest on (or of `lemmas` of the first proof, if given),
    on sub-boxes first..first+len(proofs)-1, in order of layer, so that the deadline cuts deep
    claims before shallow ones. Writing obligations overlaps with solving them."""
    needed = (
        [(0, lemma) for lemma in lemmas]
        if lemmas is not None
        else [
            (k, proof.lemmas[i])
            for k, proof in enumerate(proofs)
            for i in _needed_lemmas(proof, first + k, claims)
        ]
    )
    needed.sort(key=lambda item: (item[1].neuron.layer, item[0], item[1].neuron, item[1].id))
    checks: dict[str, LemmaCheck] = {}
    rows = DefinitionRows(network)
    batch = 64
    with SolverPool(workers, SMT_TIMEOUT) as pool:
        for start in range(0, len(needed), batch):
            if time.monotonic() > deadline:
                break
            chunk = needed[start : start + batch]
            per_lemma: list[list[Obligation]] = []
            written = _written(network, boxes, proofs, chunk, rows, per_lemma)
            results = iter(pool.check(written))
            for (_, lemma), obligations in zip(chunk, per_lemma, strict=True):
                checks[lemma.id] = LemmaCheck(obligations, [next(results) for _ in obligations])
            if progress is not None:
                progress("smt", start + len(chunk), len(needed))
    return checks


def _splittable(network: Network, config: Config) -> bool:
    return network.input_size <= SPLITTABLE_INPUT_SIZE and config.max_subboxes > 1


def _expected_lemmas(network: Network, claims: Mapping[Neuron, Phase]) -> int:
    """Lemmas a proof of `claims` needs: both bounds of every neuron before the deepest claim."""
    if not claims:
        return 0
    deepest = max(n.layer for n in claims)
    earlier = 2 * sum(network.layers[k].outputs for k in range(deepest))
    return earlier + sum(1 for n in claims if n.layer == deepest)


def _tree(
    node: int, splits: Mapping[int, tuple[int, float, int, int]], leaves: Mapping[int, int]
) -> SplitTree:
    if node in leaves:
        return leaves[node]
    dimension, at, below, above = splits[node]
    return Bisection(dimension, at, _tree(below, splits, leaves), _tree(above, splits, leaves))


def proving_lemma(proof: BoxProof, box: int, neuron: Neuron, phase: Phase) -> BoundLemma | None:
    """The lemma that shows `neuron` is in `phase` on this box, if one was proved."""
    sign = UPPER if phase is Phase.INACTIVE else LOWER
    lemma = proof.lemmas.get(lemma_id(box, neuron, sign))
    if lemma is None:
        return None
    holds = lemma.value <= 0 if sign == UPPER else lemma.value >= 0
    return lemma if holds else None


def lemma_obligations(
    network: Network,
    box: Box,
    proof: BoxProof,
    lemma: BoundLemma,
    rows: DefinitionRows | None = None,
) -> list[Obligation]:
    """The SMT obligations of one lemma: one per leaf, plus the case-split coverage."""
    facts = facts_from_context(proof.lemmas, proof.contexts[lemma.context])
    obligations = []
    for position, leaf in enumerate(lemma.leaves):
        relaxation = Relaxation(network, box, lemma.neuron.layer, facts, dict(leaf.assumptions))
        obligations.append(
            leaf_obligation(
                relaxation, lemma.neuron, lemma.sign, leaf, f"{lemma.id}.leaf{position}", rows
            )
        )
    if len(lemma.leaves) > 1:
        obligations.append(coverage_obligation(lemma))
    return obligations


def coverage_obligation(lemma: BoundLemma) -> Obligation:
    """The case split's leaves cover every phase combination of the split neurons."""
    neurons = sorted({n for leaf in lemma.leaves for n, _ in leaf.assumptions})
    declarations = "\n".join(f"(declare-const g_{n.layer}_{n.index} Real)" for n in neurons)
    branches = []
    for leaf in lemma.leaves:
        atoms = [
            f"({'>=' if p is Phase.ACTIVE else '<='} g_{n.layer}_{n.index} 0.0)"
            for n, p in leaf.assumptions
        ]
        branches.append(f"(and {' '.join(atoms)} true)")
    text = (
        f"; verify-compress obligation {lemma.id}.cover: the case split covers all phases\n"
        f"(set-logic QF_LRA)\n{declarations}\n(assert (not (or {' '.join(branches)})))\n(check-sat)\n"  # noqa: E501
    )
    return Obligation(f"{lemma.id}.cover", text)


def facts_from_context(
    lemmas: Mapping[str, BoundLemma], context: list[str]
) -> dict[Neuron, NeuronFact]:
    """The proved bounds of every neuron that has both an upper and a lower lemma in `context`."""
    uppers: dict[Neuron, Fraction] = {}
    lowers: dict[Neuron, Fraction] = {}
    for identifier in context:
        lemma = lemmas[identifier]
        (uppers if lemma.sign == UPPER else lowers)[lemma.neuron] = lemma.value
    return {
        neuron: NeuronFact(lowers[neuron], uppers[neuron]) for neuron in uppers if neuron in lowers
    }


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
    its context's), proof k being about box k of `domain`.

    Past `deadline` no further obligation is started: the lemmas not checked by then are
    absent from the result, hence not established.
    """
    open_claims = {n: p for n, p in claims.items() if len(table.seen(n)) < 2}
    return _check_shallow_first(
        network, domain.boxes, proofs, 0, open_claims, workers, deadline, progress
    )


def lemma_is_established(
    proof: BoxProof, lemma: BoundLemma, checks: Mapping[str, LemmaCheck]
) -> bool:
    """Proved by Z3, and so is every lemma of its context."""
    own = checks.get(lemma.id)
    if own is None or not own.proved:
        return False
    # Also for a single leaf: one that carries an assumption proves nothing on its own.
    if not covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves):
        return False
    return all(i in checks and checks[i].proved for i in proof.contexts[lemma.context])


def decide_statuses(
    hidden: list[Neuron],
    table: WitnessTable,
    proofs: list[BoxProof],
    checks: Mapping[str, LemmaCheck],
    claims: Mapping[Neuron, Phase],
) -> dict[Neuron, Status]:
    statuses: dict[Neuron, Status] = {}
    for neuron in hidden:
        seen = table.seen(neuron)
        phase = claims.get(neuron)
        established = phase is not None and all(
            (lemma := proving_lemma(proof, box, neuron, phase)) is not None
            and lemma_is_established(proof, lemma, checks)
            for box, proof in enumerate(proofs)
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
