"""The stability analysis: certified bounds first, then witnesses and the search for what the
bounds leave open, then branch and bound on the claims that remain.

Stage: domain -> **bounds -> witnesses -> search -> branching -> statuses** -> compression.

For every hidden neuron this decides one of four statuses, each with its evidence:
- STABLY_ACTIVE / STABLY_INACTIVE: the kernel (`verifier.kernel.stability`) finds the claim
  proved on every sub-box of the domain, by the sub-box's certified bounds or by a case split;
- UNSTABLE: two exactly checked witnesses (g > 0 at one domain point, g < 0 at another);
- UNKNOWN: anything else (time limit, a claim no proof was found for). Never compressed.

Float bounds and CP-SAT answers only choose which phase to claim and where to branch; every
decision rests on the kernel's exact bounds or on exact witnesses.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from . import search as search_module
from .bounds import symbolic_bounds
from .branching import (
    CASE_SPLIT_DEPTH,
    ProofBoxes,
    bisect_until_proved,
    try_case_splits,
)
from .budget import Budget
from .config import Config
from .domain import Domain
from .errors import VerifyCompressError
from .ir import Network
from .kernel.bounds import ExactNetwork, LayerBounds, box_bounds
from .kernel.obligations import (
    SmtEvidence,
    StabilityObligation,
    StabilityPlan,
    claim_evidence,
    stability_plan,
)
from .kernel.stability import CaseSplit, case_split_holds, evidence_name, proved_claims
from .smt import Obligation, SmtResult, SmtVerdict, SolverPool
from .status import Neuron, Phase, Status
from .subdomains import SPLITTABLE_INPUT_SIZE, SplitTree, Subdomains
from .witnesses import WitnessTable, find_witnesses
from .workers import WorkerPool

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

MAX_CASES = 4096
"""Most cases one case split may have."""
DEEPER = 34
"""The last proof attempt, after the search, allows this many more assumptions per case: on
high-dimensional inputs it is branch and bound on earlier neurons' phases, bounded by time and
MAX_CASES rather than depth (mnist-net_256x2 prop_1_0.05: stable neurons whose proofs need 50
to 130 cases at depths past 12; 9 unknown at --time-limit 300 instead of 20 with depth 8 and
256 cases)."""


@dataclasses.dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    undecided: int
    """Hidden neurons neither shown unstable nor proved stable by then."""


@dataclasses.dataclass
class StabilityAnalysis:
    statuses: dict[Neuron, Status]
    table: WitnessTable
    claims: dict[Neuron, Phase]
    subdomains: Subdomains
    bounds: list[LayerBounds]
    """bounds[k]: the certified bounds on proof box k of `subdomains`."""
    case_splits: list[CaseSplit]
    """The case splits the kernel found to hold, each needed by some stable neuron."""
    stages: list[StageRecord]

    def stability_lemmas(self, neuron: Neuron) -> list[str]:
        """Names of the evidence that makes a stable neuron stable (empty otherwise), as the
        equivalence proof cites it."""
        return [evidence_name(neuron)] if self.statuses[neuron].is_stable else []


class InconsistentEvidenceError(VerifyCompressError):
    """A proof and an exact witness contradict each other: a bug, never a user error."""


def analyse(
    network: Network,
    domain: Domain,
    config: Config,
    rng: np.random.Generator,
    budget: Budget,
    data: FloatArray | None = None,
    progress: Progress | None = None,
) -> StabilityAnalysis:
    """Decide every hidden neuron's status before `budget.analysis_deadline()`."""
    hidden = network.hidden_neurons()
    table = WitnessTable(network, domain)
    stages: list[StageRecord] = []
    exact = ExactNetwork(network)

    since = time.monotonic()
    roots = []
    for k, box in enumerate(domain.boxes):
        roots.append(ProofBoxes(0, [box], [box_bounds(exact, box)], [None]))
        if progress is not None:
            progress("bounds", k + 1, len(domain.boxes))
    decided = {
        n: p for n in hidden for p in Phase if all(root.bounds[0].shows(n, p) for root in roots)
    }
    undecided = [n for n in hidden if n not in decided]
    stages.append(StageRecord("bounds", time.monotonic() - since, len(undecided)))

    since = time.monotonic()
    if undecided:
        find_witnesses(
            network,
            domain,
            table,
            undecided,
            config,
            rng,
            data,
            budget.stage_deadline("witnesses"),
            progress,
        )
    unstable = table.unstable()
    candidates = [n for n in undecided if n not in unstable]
    stages.append(StageRecord("witnesses", time.monotonic() - since, len(candidates)))

    # Both halves of a bisection, and the case splits of several claims, run at once.
    workers = config.workers if undecided else 1
    with WorkerPool(network, exact, workers, config.backend, config.scheduler) as pool:
        claims = {**_claims(undecided, table, roots), **decided}
        stages += _prove(
            network, domain, exact, roots, claims, table, config, rng, budget, progress, pool
        )
    statuses, valid = _decide(exact, hidden, table, domain, roots, claims)
    # Keep only the bisections the stable neurons need (check recomputes every proof box),
    # and the case splits that hold.
    stable = {n: p for n, p in claims.items() if statuses[n].is_stable}
    for root, splits in zip(roots, valid, strict=True):
        root.case_splits = splits
    roots = [root.pruned(stable) for root in roots]
    subdomains = Subdomains.from_trees(domain, _numbered_trees(roots))
    bounds = [b for root in roots for b in root.bounds]
    needed = [
        dataclasses.replace(split, box=root.first + split.box)
        for root in roots
        for split in root.case_splits
        if stable.get(split.neuron) is split.phase
    ]
    if proved_claims(subdomains, bounds, needed, stable) != stable:
        raise InconsistentEvidenceError("pruning the bisection trees lost a proof")
    return StabilityAnalysis(statuses, table, claims, subdomains, bounds, needed, stages)


def _prove(
    network: Network,
    domain: Domain,
    exact: ExactNetwork,
    roots: list[ProofBoxes],
    claims: dict[Neuron, Phase],
    table: WitnessTable,
    config: Config,
    rng: np.random.Generator,
    budget: Budget,
    progress: Progress | None,
    pool: WorkerPool,
) -> list[StageRecord]:
    """The proof passes around the search (see `analyse`); `claims` may change phase where
    the search suggests one for a neuron never seen."""
    stages = []
    since = time.monotonic()
    deadline = budget.stage_deadline("proofs")
    _branch(
        network,
        exact,
        roots,
        claims,
        table,
        config,
        rng,
        deadline,
        config.max_split_depth,
        progress,
        pool,
    )
    stages.append(
        StageRecord("proofs", time.monotonic() - since, _open_count(roots, claims, table))
    )

    # The search looks for witnesses of the claims still open (it proves nothing); its
    # claims say which phase the last proof attempt should try for a neuron never seen.
    since = time.monotonic()
    remaining = sorted(n for n in _unproved(roots, claims) if n not in table.unstable())
    if remaining and time.monotonic() < budget.analysis_deadline():
        run_search = (
            search_module.per_neuron_search
            if config.method == "per-neuron"
            else search_module.stability_search
        )
        float_bounds = [symbolic_bounds(network, box) for box in domain.boxes]
        result = run_search(
            network,
            domain,
            float_bounds,
            table,
            remaining,
            config,
            budget.stage_deadline("search"),
            progress,
        )
        for neuron, phase in result.claims.items():
            if not table.seen(neuron):
                claims[neuron] = phase
    stages.append(
        StageRecord("search", time.monotonic() - since, _open_count(roots, claims, table))
    )

    since = time.monotonic()
    deeper = config.max_split_depth + DEEPER
    _branch(
        network,
        exact,
        roots,
        claims,
        table,
        config,
        rng,
        budget.analysis_deadline(),
        deeper,
        progress,
        pool,
    )
    stages.append(
        StageRecord("deeper proofs", time.monotonic() - since, _open_count(roots, claims, table))
    )
    return stages


def _claims(
    undecided: Sequence[Neuron],
    table: WitnessTable,
    roots: Sequence[ProofBoxes],
) -> dict[Neuron, Phase]:
    """The phase to prove for every undecided neuron not shown unstable: the one witnesses
    show, else the phase the bounds lean to (the sign of the middle of the bounds, summed over
    the domain boxes). The search may change it later (`_prove`)."""
    claims = {}
    for neuron in undecided:
        seen = table.seen(neuron)
        if len(seen) == 2:
            continue
        if seen:
            claims[neuron] = next(iter(seen))
        else:
            middle = sum(
                float(r.bounds[0].lower[neuron.layer][neuron.index])
                + float(r.bounds[0].upper[neuron.layer][neuron.index])
                for r in roots
            )
            claims[neuron] = Phase.ACTIVE if middle >= 0 else Phase.INACTIVE
    return claims


def _branch(
    network: Network,
    exact: ExactNetwork,
    roots: list[ProofBoxes],
    claims: Mapping[Neuron, Phase],
    table: WitnessTable,
    config: Config,
    rng: np.random.Generator,
    deadline: float,
    depth: int,
    progress: Progress | None,
    pool: WorkerPool | None = None,
) -> None:
    """Branch and bound on the claims the proofs so far leave open, each domain box in turn
    with an equal share of the time to `deadline`: bisection of low-dimensional inputs (with
    case splits on sub-boxes that fail few claims), case splits of at most `depth` assumptions
    per case on earlier neurons' phases otherwise. What is found is added to `roots`."""
    splittable = network.input_size <= SPLITTABLE_INPUT_SIZE and config.max_subboxes > 1
    for parent, root in enumerate(roots):
        now = time.monotonic()
        box_deadline = now + (deadline - now) / (len(roots) - parent)
        open_claims = {n: p for n, p in claims.items() if n not in table.unstable()}
        if splittable:
            report = (lambda done, total: progress("sub-boxes", done, total)) if progress else None
            bisect_until_proved(
                network,
                exact,
                root,
                parent,
                open_claims,
                table,
                rng,
                box_deadline,
                config.max_subboxes,
                report,
                min(depth, CASE_SPLIT_DEPTH),
                pool,
            )
            continue
        failed = root.failing(0, open_claims)
        if failed:
            report = (
                (lambda done, total: progress("case splits", done, total)) if progress else None
            )
            try_case_splits(
                network,
                exact,
                root,
                0,
                failed,
                open_claims,
                box_deadline,
                table,
                parent,
                depth,
                MAX_CASES,
                report,
                pool,
            )


def _open_count(
    roots: Sequence[ProofBoxes], claims: Mapping[Neuron, Phase], table: WitnessTable
) -> int:
    unstable = table.unstable()
    return sum(1 for n in _unproved(roots, claims) if n not in unstable)


def _unproved(roots: Sequence[ProofBoxes], claims: Mapping[Neuron, Phase]) -> set[Neuron]:
    """The claims some sub-box fails so far."""
    return {n for root in roots for leaf in root.leaves for n in root.failing(leaf, claims)}


def _decide(
    exact: ExactNetwork,
    hidden: Sequence[Neuron],
    table: WitnessTable,
    domain: Domain,
    roots: Sequence[ProofBoxes],
    claims: Mapping[Neuron, Phase],
) -> tuple[dict[Neuron, Status], list[list[CaseSplit]]]:
    """The statuses the kernel gives the proof boxes of `roots`, and per root the case splits
    that hold (numbered as in the root)."""
    subdomains = Subdomains.from_trees(domain, _numbered_trees(roots))
    numbered = [
        (dataclasses.replace(split, box=root.first + split.box), split)
        for root in roots
        for split in root.case_splits
    ]
    bounds = [b for root in roots for b in root.bounds]
    holding = {
        id(local) for split, local in numbered if case_split_holds(exact, subdomains, bounds, split)
    }
    valid = [split for split, local in numbered if id(local) in holding]
    statuses = _statuses(hidden, table, proved_claims(subdomains, bounds, valid, claims))
    per_root = [[s for s in root.case_splits if id(s) in holding] for root in roots]
    return statuses, per_root


def _numbered_trees(roots: Sequence[ProofBoxes]) -> list[SplitTree]:
    """The split trees with proof boxes numbered across the domain boxes in order (each
    root's nodes `first`, `first + 1`, ...)."""
    first = 0
    trees = []
    for root in roots:
        root.first = first
        trees.append(root.tree())
        first += len(root.boxes)
    return trees


def decide_statuses(
    exact: ExactNetwork,
    hidden: Sequence[Neuron],
    table: WitnessTable,
    subdomains: Subdomains,
    bounds: Sequence[LayerBounds],
    splits: Sequence[CaseSplit],
    claims: Mapping[Neuron, Phase],
) -> tuple[dict[Neuron, Status], list[CaseSplit]]:
    """The status of every hidden neuron, and the case splits the stable ones rest on."""
    valid = [s for s in splits if case_split_holds(exact, subdomains, bounds, s)]
    proved = proved_claims(subdomains, bounds, valid, claims)
    needed = [s for s in valid if s.neuron in proved and proved[s.neuron] is s.phase]
    return _statuses(hidden, table, proved), needed


def _statuses(
    hidden: Sequence[Neuron], table: WitnessTable, proved: Mapping[Neuron, Phase]
) -> dict[Neuron, Status]:
    """Two exact witnesses make a neuron unstable, a kernel proof stable, nothing unknown."""
    statuses: dict[Neuron, Status] = {}
    for neuron in hidden:
        seen = table.seen(neuron)
        if len(seen) == 2:
            if neuron in proved:
                raise InconsistentEvidenceError(
                    f"neuron {neuron}: proved stable but has two witnesses"
                )
            statuses[neuron] = Status.UNSTABLE
        elif neuron in proved:
            statuses[neuron] = Status.stable(proved[neuron])
        else:
            statuses[neuron] = Status.UNKNOWN
    return statuses


SMT_SECONDS_PER_QUERY = 0.1
"""Seconds Z3 may spend on a stability obligation per (check-sat) in it (at least
`SMT_MIN_SECONDS`, or the obligation's fair share of the time left to the Budget's SMT
deadline when that is more; never past the deadline): a first-layer neuron's bound over
784 inputs takes it about 12 ms, one over 50 ACAS Xu neurons up to 50 ms, while a
second-layer neuron's exact LP over 64 dense inputs takes it about 8 s (measured on the
bundled digits_l1), which is not worth the time of the obligations after it."""
SMT_MIN_SECONDS = 2.0
SMT_MAX_SECONDS = 60.0
"""The most a fair share gives one obligation: Z3's exact simplex either decides a layer of a
small network within it (digits_l1's second layer: about 25 s) or, over 784 dense inputs, not
within the whole default limit (the bundled MNIST net's second layer: still unknown at 300 s)."""


@dataclasses.dataclass(frozen=True)
class SmtTier:
    """The SMT tier of a run: the stability obligations of the stable claims (shallow layers
    first), the ones written and shipped (a prefix of the plan: texts are written only while
    there is time to run them) with each one's result, and the claims Z3 refuted (a bug, never
    a user error)."""

    plan: StabilityPlan
    written: tuple[StabilityObligation, ...]
    results: Mapping[str, SmtResult]
    """By obligation id, for the written ones; one Z3 did not reach is NOT_RUN."""
    refuted: tuple[Neuron, ...]
    seconds: float

    def evidence(self, neuron: Neuron) -> SmtEvidence:
        verdicts = {i: r.verdict.value for i, r in self.results.items()}
        return claim_evidence(self.plan.rests_on[neuron], verdicts)

    @property
    def confirmed(self) -> int:
        """Stable neurons every obligation of which Z3 proved."""
        verdicts = {i: r.verdict.value for i, r in self.results.items()}
        return sum(
            1
            for ids in self.plan.rests_on.values()
            if claim_evidence(ids, verdicts) is SmtEvidence.CONFIRMED
        )


def confirm_with_smt(
    analysis: StabilityAnalysis,
    exact: ExactNetwork,
    budget: Budget,
    workers: int,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    run: bool = True,
) -> tuple[StabilityAnalysis, SmtTier]:
    """Z3 re-proves the stability obligations (`verifier.kernel.obligations`) in `workers`
    processes until `budget.smt_deadline()`, shallow layers first, each text written when a
    worker is free and only before that deadline (none when not `run`). A claim Z3 refutes
    contradicts the kernel: it is reported through `warn` and its neuron becomes UNKNOWN (kept,
    never compressed); the returned analysis has the statuses after that."""
    since = time.monotonic()
    deadline = budget.smt_deadline()
    plan = stability_plan(
        exact,
        analysis.subdomains,
        analysis.bounds,
        analysis.case_splits,
        _stable_claims(analysis.statuses),
    )
    written: list[StabilityObligation] = []

    def tasks() -> Iterator[tuple[Obligation, float]]:
        for position in range(len(plan.ids)):
            if not run or time.monotonic() >= deadline:
                return
            obligation = plan.write(position)
            written.append(obligation)
            if progress is not None:
                progress("smt", position, len(plan.ids))
            queries = obligation.smtlib.count("(check-sat)")
            # What the obligations after it leave: time is not kept back for a plan so small
            # that each obligation could have more than its per-query allowance.
            share = (deadline - time.monotonic()) * workers / (len(plan.ids) - position)
            timeout = max(
                SMT_MIN_SECONDS, SMT_SECONDS_PER_QUERY * queries, min(share, SMT_MAX_SECONDS)
            )
            yield Obligation(obligation.id, obligation.smtlib), timeout

    with SolverPool(workers) as pool:
        found = pool.check_lazily(tasks(), deadline)
    results = {o.id: r for o, r in zip(written, found, strict=True)}
    if progress is not None:
        progress("smt", len(written), len(plan.ids))
    refuted = tuple(
        n
        for n, ids in plan.rests_on.items()
        if any(i in results and results[i].verdict is SmtVerdict.REFUTED for i in ids)
    )
    if refuted:
        failed = sorted(i for i, r in results.items() if r.verdict is SmtVerdict.REFUTED)
        message = (
            f"BUG: Z3 refutes stability obligations the kernel accepted ({', '.join(failed)}); "
            f"{len(refuted)} neurons are reported unknown and kept: "
            f"{', '.join(str(n) for n in refuted)}"
        )
        if warn is not None:
            warn(message)
        statuses = {n: Status.UNKNOWN if n in refuted else s for n, s in analysis.statuses.items()}
        analysis = dataclasses.replace(analysis, statuses=statuses)
        plan = stability_plan(
            exact,
            analysis.subdomains,
            analysis.bounds,
            analysis.case_splits,
            _stable_claims(statuses),
        )
        # Keep the longest prefix of the new plan that was written with the same text.
        old = {o.id: o for o in written}
        written = []
        for position, identifier in enumerate(plan.ids):
            if identifier not in old or plan.write(position).sha256 != old[identifier].sha256:
                break
            written.append(old[identifier])
        results = {o.id: results[o.id] for o in written}
    return analysis, SmtTier(plan, tuple(written), results, refuted, time.monotonic() - since)


def _stable_claims(statuses: Mapping[Neuron, Status]) -> dict[Neuron, Phase]:
    return {
        n: Phase.ACTIVE if s is Status.STABLY_ACTIVE else Phase.INACTIVE
        for n, s in statuses.items()
        if s.is_stable
    }
