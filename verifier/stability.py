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

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
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
from verifier.smt import Obligation, SmtResult, SmtVerdict, check_many
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
SPLIT_SLACK = 1.5
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
        search_deadline = time.monotonic() + (deadline - time.monotonic()) / 3
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
    check_rate: float = 0.03
    """Measured wall seconds of Z3 per checked lemma (a first guess until measured)."""


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
    """Prove the claims box by box, bisecting a box where a claim fails, and Z3-check the
    lemmas of every accepted sub-box right away (so the time they take steers the splitting).

    A sub-box is split only while the estimated cost of its two halves fits in the time left
    after what is already queued; otherwise its proof is accepted as it is. Claims that fail
    on an accepted sub-box cannot make their neuron stable any more and are not attempted
    again; neither are claims an exact witness has refuted.
    """
    splitting = network.input_size <= SPLITTABLE_INPUT_SIZE and config.max_subboxes > 1
    trees: list[SplitTree] = []
    boxes: list[Box] = []
    certification = _Certification(Subdomains.whole(domain), [], {})
    open_claims = dict(claims)
    for parent, box in enumerate(domain.boxes):
        now = time.monotonic()
        box_deadline = now + (deadline - now) / (len(domain.boxes) - parent)

        def offer(point: FloatArray, _: int, parent: int = parent) -> None:
            own = domain.boxes[parent]
            table.offer(np.clip(point, own.lower, own.upper)[None, :], parent, "lp")

        splits: dict[int, tuple[int, float, int, int]] = {}
        leaf_numbers: dict[int, int] = {}
        first_estimate = certification.check_rate * _expected_lemmas(network, open_claims)
        queue: collections.deque[tuple[int, Box, float]] = collections.deque(
            [(0, box, first_estimate)]
        )
        node_count, committed = 1, first_estimate
        while queue:
            node, node_box, estimate = queue.popleft()
            committed -= estimate
            open_claims = {n: p for n, p in open_claims.items() if len(table.seen(n)) < 2}
            if node > 0:
                table.offer(node_box.sample(64, rng), parent, "random")
            index = len(certification.proofs)
            # A node that will not be split gets the phase case splits instead; one whose
            # halves would not fit in the time left is not split.
            can_split = (
                splitting
                and node_count + 1 <= config.max_subboxes
                and any(bisect(node_box, d) is not None for d in range(node_box.size))
                and box_deadline - time.monotonic() - committed > SPLIT_SLACK * 2 * estimate
            )
            started = time.monotonic()
            own_checks = certification.check_rate * _expected_lemmas(network, open_claims)
            proof = prove_box(
                network,
                node_box,
                index,
                open_claims,
                max(started, box_deadline - committed - own_checks),
                0 if can_split else config.max_split_depth,
                offer,
                (lambda done, total: progress("certify", done, total)) if progress else None,
            )
            proved_in = time.monotonic() - started
            certification.prove_seconds += proved_in
            failed = [
                n
                for n, p in open_claims.items()
                if len(table.seen(n)) < 2 and proving_lemma(proof, index, n, p) is None
            ]
            child_cost = proved_in + certification.check_rate * len(proof.lemmas)
            if (
                failed
                and can_split
                and box_deadline - time.monotonic() - committed > SPLIT_SLACK * 2 * child_cost
            ):
                dimension = split_dimension(network, node_box, failed, rng)
                halves = bisect(node_box, dimension)
                if halves is not None:
                    at, below, above = halves
                    splits[node] = (dimension, at, node_count, node_count + 1)
                    queue.append((node_count, below, child_cost))
                    queue.append((node_count + 1, above, child_cost))
                    node_count += 2
                    committed += 2 * child_cost
                    continue
            if failed and can_split and config.max_split_depth > 0:
                # It was proved without phase case splits in view of bisecting it, but its
                # halves do not fit in the time left: give the failed claims their case splits.
                started = time.monotonic()
                proof = prove_box(
                    network,
                    node_box,
                    index,
                    open_claims,
                    max(started, box_deadline - committed - own_checks),
                    config.max_split_depth,
                    offer,
                    (lambda done, total: progress("certify", done, total)) if progress else None,
                )
                certification.prove_seconds += time.monotonic() - started
                failed = [
                    n
                    for n, p in open_claims.items()
                    if len(table.seen(n)) < 2 and proving_lemma(proof, index, n, p) is None
                ]
            leaf_numbers[node] = index
            certification.proofs.append(proof)
            boxes.append(node_box)
            open_claims = {n: p for n, p in open_claims.items() if n not in failed}
            started = time.monotonic()
            checks = check_proof(
                network,
                node_box,
                index,
                proof,
                open_claims,
                table,
                config.workers,
                deadline,
                progress,
            )
            checked_in = time.monotonic() - started
            certification.check_seconds += checked_in
            if checks:
                certification.check_rate = checked_in / len(checks)
            certification.checks.update(checks)
            if progress is not None:
                progress("sub-boxes", len(certification.proofs), 0)
        trees.append(_tree(0, splits, leaf_numbers))
    subdomains = Subdomains.from_trees(domain, trees)
    if any(
        not (np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper))
        for a, b in zip(subdomains.boxes, boxes, strict=True)
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


def _expected_lemmas(network: Network, claims: Mapping[Neuron, Phase]) -> int:
    """Lemmas a proof of `claims` needs: both bounds of every neuron before the deepest claim."""
    if not claims:
        return 0
    deepest = max(n.layer for n in claims)
    return 2 * sum(network.layers[k].outputs for k in range(deepest)) + len(claims)


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
    deadline: float | None = None,
) -> dict[str, LemmaCheck]:
    """`check_proof` for proof k on box k of `domain`, for every k."""
    checks: dict[str, LemmaCheck] = {}
    for index, (box, proof) in enumerate(zip(domain.boxes, proofs, strict=True)):
        checks.update(check_proof(network, box, index, proof, claims, table, workers, deadline))
        if progress is not None:
            progress("smt", index + 1, len(proofs))
    return checks


def check_proof(
    network: Network,
    box: Box,
    box_index: int,
    proof: BoxProof,
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    workers: int = 1,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> dict[str, LemmaCheck]:
    """Z3 checks of every lemma of one box proof that a stability claim rests on (the claim's
    and its context's).

    Past `deadline` no further obligation is started: the lemmas not checked by then are
    absent from the result, hence not established.
    """
    wanted: set[str] = set()
    for neuron, phase in claims.items():
        if len(table.seen(neuron)) == 2:
            continue
        lemma = proving_lemma(proof, box_index, neuron, phase)
        if lemma is not None:
            wanted.add(lemma.id)
            wanted.update(proof.contexts[lemma.context])
    needed = [proof.lemmas[i] for i in sorted(wanted, key=lambda i: (proof.lemmas[i].neuron, i))]
    checks: dict[str, LemmaCheck] = {}
    rows = DefinitionRows(network)
    batch = 64
    for start in range(0, len(needed), batch):
        if deadline is not None and time.monotonic() > deadline:
            break
        chunk = needed[start : start + batch]
        per_lemma = [lemma_obligations(network, box, proof, lemma, rows) for lemma in chunk]
        flat = [o for obligations in per_lemma for o in obligations]
        results = iter(check_many(flat, SMT_TIMEOUT, workers))
        for lemma, obligations in zip(chunk, per_lemma, strict=True):
            checks[lemma.id] = LemmaCheck(obligations, [next(results) for _ in obligations])
        if progress is not None:
            progress("smt", start + len(chunk), len(needed))
    return checks


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
