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
import time
from collections.abc import Callable, Mapping
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
from verifier.domain import Domain
from verifier.errors import VerifyCompressError
from verifier.ir import Network
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import Obligation, SmtResult, SmtVerdict, check_many
from verifier.status import Neuron, Phase, Status
from verifier.witnesses import WitnessTable, find_witnesses

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]


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
    smt_timeout: float = 60.0,
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

    # Z3 checks come last and get the final quarter of the budget; lemmas left unchecked at the
    # deadline are simply not established (their neurons stay unknown).
    certify_deadline = deadline - 0.25 * config.time_limit
    proofs: list[BoxProof] = []

    def offer(point: FloatArray, box_number: int) -> None:
        bounds = domain.boxes[box_number]
        table.offer(np.clip(point, bounds.lower, bounds.upper)[None, :], box_number, "lp")

    open_claims = dict(claims)
    for box_index, box in enumerate(domain.boxes):
        # Each box gets an equal share of what is left; a claim that failed on an earlier box
        # cannot make its neuron stable any more, so later boxes do not attempt it.
        remaining_boxes = len(domain.boxes) - box_index
        box_deadline = time.monotonic() + (certify_deadline - time.monotonic()) / remaining_boxes
        open_claims = {n: p for n, p in open_claims.items() if len(table.seen(n)) < 2}
        proof = prove_box(
            network,
            box,
            box_index,
            open_claims,
            box_deadline,
            config.max_split_depth,
            offer,
            (lambda done, total: progress("certify", done, total)) if progress else None,
        )
        proofs.append(proof)
        open_claims = {
            n: p
            for n, p in open_claims.items()
            if proving_lemma(proof, box_index, n, p) is not None
        }
    since = record("certify", since, 0)

    lemma_checks = check_lemmas(
        network, domain, proofs, claims, table, smt_timeout, progress, config.workers, deadline
    )
    statuses = decide_statuses(hidden, table, proofs, lemma_checks, claims)
    record("smt", since, sum(1 for s in statuses.values() if s is Status.UNKNOWN))
    return StabilityAnalysis(statuses, table, proofs, lemma_checks, stages, claims)


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
    domain: Domain,
    proof: BoxProof,
    lemma: BoundLemma,
    rows: DefinitionRows | None = None,
) -> list[Obligation]:
    """The SMT obligations of one lemma: one per leaf, plus the case-split coverage."""
    facts = facts_from_context(proof.lemmas, proof.contexts[lemma.context])
    obligations = []
    for position, leaf in enumerate(lemma.leaves):
        relaxation = Relaxation(
            network, domain.boxes[lemma.box], lemma.neuron.layer, facts, dict(leaf.assumptions)
        )
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
    proofs: list[BoxProof],
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    timeout: float,
    progress: Progress | None,
    workers: int = 1,
    deadline: float | None = None,
) -> dict[str, LemmaCheck]:
    """Z3 checks of every lemma that a stability claim rests on (the claim's and its contexts').

    Past `deadline` no further obligation is started: the lemmas not checked by then are
    absent from the result, hence not established.
    """
    needed: list[tuple[BoxProof, BoundLemma]] = []
    for box_index, proof in enumerate(proofs):
        wanted: set[str] = set()
        for neuron, phase in claims.items():
            if len(table.seen(neuron)) == 2:
                continue
            lemma = proving_lemma(proof, box_index, neuron, phase)
            if lemma is not None:
                wanted.add(lemma.id)
                wanted.update(proof.contexts[lemma.context])
        needed.extend(
            (proof, proof.lemmas[i])
            for i in sorted(wanted, key=lambda i: (proof.lemmas[i].neuron, i))
        )
    checks: dict[str, LemmaCheck] = {}
    rows = DefinitionRows(network)
    batch = 64
    for start in range(0, len(needed), batch):
        if deadline is not None and time.monotonic() > deadline:
            break
        chunk = needed[start : start + batch]
        per_lemma = [
            lemma_obligations(network, domain, proof, lemma, rows) for proof, lemma in chunk
        ]
        flat = [o for obligations in per_lemma for o in obligations]
        results = iter(check_many(flat, timeout, workers))
        for (_, lemma), obligations in zip(chunk, per_lemma, strict=True):
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
