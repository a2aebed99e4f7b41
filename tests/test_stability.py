"""The stability analysis: every status it reports agrees with the exact oracle, and rests on
evidence the kernel accepts.

`analyse` runs the kernel's certified bounds on every domain box, witnesses and the CP-SAT
search on what they leave open, then branch and bound (bisection or case splits) checked by the
kernel (`verify_compress.kernel.stability`). The reference is the brute-force activation-pattern
oracle of `tests/oracle.py` (exact, via Z3 on each pattern).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress import stability
from verify_compress.branching import ProofBoxes, TriangleLps, bisect_until_proved, split_by_cases
from verify_compress.budget import Budget
from verify_compress.config import Config
from verify_compress.domain import Box, Domain
from verify_compress.ir import AffineLayer, Network
from verify_compress.kernel.bounds import ExactNetwork, LayerBounds, box_bounds
from verify_compress.kernel.stability import (
    Case,
    CaseSplit,
    case_split_holds,
    evidence_name,
    proof_box_bounds,
    proved_claims,
)
from verify_compress.stability import (
    InconsistentEvidenceError,
    StabilityAnalysis,
    analyse,
    decide_statuses,
)
from verify_compress.status import Neuron, Phase, Status
from verify_compress.subdomains import Subdomains
from verify_compress.witnesses import WitnessTable

from conftest import network, random_network
from oracle import OracleVerdict, stability_oracle

CONFIG = Config(samples=200, gradient_steps=10)
NO_BISECTION = dataclasses.replace(CONFIG, max_subboxes=1)
GENEROUS = 60.0
TARGET = Neuron(1, 0)


def phase_correlated() -> Network:
    """g(1,0) = relu(x1 + 2) - relu(x1 + x2) - 0.75 >= 0.25 on [-1, 1]^2; the whole box's
    bounds miss it, a case split on (0,0) = x1 + x2 proves it (see tests/test_branching.py)."""
    return network(
        ([[1.0, 1.0], [1.0, 0.0]], [0.0, 2.0]), ([[-1.0, 1.0]], [-0.75]), ([[1.0]], [0.0])
    )


def two_kinks() -> Network:
    """g(1,0) = relu(x) - relu(x - 0.5) - 0.6 in [-0.6, -0.1] on [-1, 1]: the whole box's
    bounds miss it, the halves of x = 0 prove it, no case split does."""
    return network(([[1.0], [1.0]], [0.0, -0.5]), ([[1.0, -1.0]], [-0.6]), ([[1.0]], [0.0]))


SQUARE = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
INTERVAL = Box(np.array([-1.0]), np.array([1.0]))


def random_case(seed: int, inputs: int = 3) -> tuple[Network, Domain]:
    """A random inputs-h1-h2-2 net (h1, h2 <= 6, small enough for the oracle) on a random
    box."""
    rng = np.random.default_rng(seed)
    sizes = [inputs, int(rng.integers(2, 7)), int(rng.integers(2, 7)), 2]
    net = random_network(rng, sizes)
    if rng.random() < 0.4:
        return net, Domain.box(np.zeros(inputs), np.ones(inputs))
    center = rng.normal(size=inputs)
    radius = rng.uniform(0.05, 1.0, size=inputs)
    return net, Domain.box(center - radius, center + radius)


def run(
    net: Network, domain: Domain, config: Config = CONFIG, limit: float = GENEROUS, seed: int = 0
) -> StabilityAnalysis:
    return analyse(net, domain, config, np.random.default_rng(seed), Budget(limit))


def phase_of(status: Status) -> Phase:
    return Phase.ACTIVE if status is Status.STABLY_ACTIVE else Phase.INACTIVE


def decided_by_bounds(net: Network, domain: Domain) -> dict[Neuron, Phase]:
    """The neurons every domain box's certified bounds show stable, in that phase."""
    exact = ExactNetwork(net)
    bounds = [box_bounds(exact, box) for box in domain.boxes]
    return {n: p for n in net.hidden_neurons() for p in Phase if all(b.shows(n, p) for b in bounds)}


def assert_agrees_with_oracle(analysis: StabilityAnalysis, verdicts: list[OracleVerdict]) -> None:
    """Stable statuses hold on every box; unstable neurons are unstable on the domain."""
    for neuron, status in analysis.statuses.items():
        if status.is_stable:
            for box, verdict in enumerate(verdicts):
                assert phase_of(status) in verdict.stable_phases(neuron), (
                    f"{neuron} {status} is false on box {box}"
                )
        elif status is Status.UNSTABLE:
            shown = set().union(*(verdict.shown[neuron] for verdict in verdicts))
            assert shown == set(Phase), f"{neuron} reported unstable but the oracle shows {shown}"


def assert_evidence_is_in_place(net: Network, analysis: StabilityAnalysis) -> None:
    """Unstable: exact witnesses of both strict signs. Stable: the kernel, recomputing every
    proof box's bounds from the trees alone, proves the claim with the recorded case splits.
    Only stable neurons have stability lemmas."""
    exact = ExactNetwork(net)
    subdomains = analysis.subdomains
    bounds = proof_box_bounds(exact, subdomains)
    assert len(bounds) == len(analysis.bounds) == len(subdomains.boxes)
    for recomputed, recorded in zip(bounds, analysis.bounds, strict=True):
        for layer in range(len(recomputed.lower)):
            assert np.array_equal(recomputed.lower[layer], recorded.lower[layer])
            assert np.array_equal(recomputed.upper[layer], recorded.upper[layer])
    for split in analysis.case_splits:
        assert case_split_holds(exact, subdomains, bounds, split), split
    assert set(analysis.statuses) == set(net.hidden_neurons())
    for neuron, status in analysis.statuses.items():
        if status is Status.UNSTABLE:
            for phase, sign in ((Phase.ACTIVE, 1), (Phase.INACTIVE, -1)):
                witness = analysis.table.witness_for(neuron, phase)
                assert witness is not None
                assert analysis.subdomains.domain.boxes[witness.box].contains(witness.point)
                assert net.evaluate_exact(witness.point).sign(neuron) == sign
        if status.is_stable:
            claim = {neuron: phase_of(status)}
            assert analysis.claims[neuron] is phase_of(status)
            assert proved_claims(subdomains, bounds, analysis.case_splits, claim) == claim
            assert analysis.stability_lemmas(neuron) == [evidence_name(neuron)]
        else:
            assert analysis.stability_lemmas(neuron) == []


# ---------------------------------------------------------------------------------------------
# Agreement with the oracle


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_every_status_on_a_random_net_agrees_with_the_pattern_oracle(
    seed: int, bisection: bool
) -> None:
    net, domain = random_case(seed)
    analysis = run(net, domain, CONFIG if bisection else NO_BISECTION, seed=seed)
    assert_agrees_with_oracle(analysis, [stability_oracle(net, domain.boxes[0])])
    assert_evidence_is_in_place(net, analysis)


def test_small_nets_within_a_generous_limit_leave_no_neuron_unknown() -> None:
    for seed in range(12):
        net, domain = random_case(seed)
        analysis = run(net, domain)
        unknown = [n for n, s in analysis.statuses.items() if s is Status.UNKNOWN]
        assert unknown == [], f"seed {seed}: {unknown} unknown"


@settings(deadline=None, max_examples=10)
@given(st.integers(0, 2**32 - 1))
def test_on_two_random_boxes_every_status_agrees_with_the_oracle_on_both(seed: int) -> None:
    net, first = random_case(seed)
    second = Box(first.boxes[0].lower + 0.5, first.boxes[0].upper + 0.5)
    domain = Domain((first.boxes[0], second))
    analysis = run(net, domain, seed=seed)
    assert_agrees_with_oracle(analysis, [stability_oracle(net, box) for box in domain.boxes])
    assert_evidence_is_in_place(net, analysis)


def test_on_a_union_of_two_boxes_a_neuron_is_stable_only_if_stable_on_both() -> None:
    # On [0.5, 1] u [-1, -0.5]: x is active on one box and inactive on the other; x + 0.75
    # is active on the first and crosses zero on the second; x + 2 and -x - 2 are stable on
    # both.
    net = network(([[1.0], [1.0], [1.0], [-1.0]], [0.0, 0.75, 2.0, -2.0]), ([[1, 1, 1, 1]], [0]))
    first, second = Box(np.array([0.5]), np.array([1.0])), Box(np.array([-1.0]), np.array([-0.5]))
    union = Domain((first, second))
    analysis = run(net, union)
    assert analysis.statuses == {
        Neuron(0, 0): Status.UNSTABLE,
        Neuron(0, 1): Status.UNSTABLE,
        Neuron(0, 2): Status.STABLY_ACTIVE,
        Neuron(0, 3): Status.STABLY_INACTIVE,
    }
    assert_agrees_with_oracle(analysis, [stability_oracle(net, box) for box in union.boxes])
    assert_evidence_is_in_place(net, analysis)
    # The kernel: the first box's bounds show (0,0) and (0,1) active, the second's do not.
    exact = ExactNetwork(net)
    claims = {Neuron(0, 0): Phase.ACTIVE, Neuron(0, 1): Phase.ACTIVE, Neuron(0, 2): Phase.ACTIVE}
    alone = Subdomains.whole(Domain((first,)))
    assert proved_claims(alone, [box_bounds(exact, first)], [], claims) == claims
    both = [box_bounds(exact, box) for box in union.boxes]
    assert proved_claims(Subdomains.whole(union), both, [], claims) == {Neuron(0, 2): Phase.ACTIVE}


def test_a_claim_proved_on_one_box_only_is_not_proved_on_the_union_even_when_true() -> None:
    # g(1,0) of two_kinks is <= -0.1 on all of [-1, 1]; on [-1, -0.5] the bounds show it, on
    # [-1, 1] they do not (it takes a bisection or a case split there).
    net = two_kinks()
    exact = ExactNetwork(net)
    left = Box(np.array([-1.0]), np.array([-0.5]))
    claims = {TARGET: Phase.INACTIVE}
    bounds = [box_bounds(exact, box) for box in (left, INTERVAL)]
    assert bounds[0].shows(TARGET, Phase.INACTIVE)
    assert proved_claims(Subdomains.whole(Domain((left,))), bounds[:1], [], claims) == claims
    union = Subdomains.whole(Domain((left, INTERVAL)))
    assert proved_claims(union, bounds, [], claims) == {}


# ---------------------------------------------------------------------------------------------
# Branch and bound inside the analysis


def test_a_claim_the_domain_box_bounds_miss_is_proved_by_a_case_split_without_bisection() -> None:
    net = phase_correlated()
    domain = Domain((SQUARE,))
    assert TARGET not in decided_by_bounds(net, domain)
    analysis = run(net, domain, NO_BISECTION)
    assert analysis.statuses[TARGET] is Status.STABLY_ACTIVE
    assert analysis.statuses[Neuron(0, 0)] is Status.UNSTABLE
    assert analysis.statuses[Neuron(0, 1)] is Status.STABLY_ACTIVE
    assert len(analysis.subdomains.boxes) == 1
    assert [(s.box, s.neuron, s.phase) for s in analysis.case_splits] == [(0, TARGET, Phase.ACTIVE)]
    assert_agrees_with_oracle(analysis, [stability_oracle(net, SQUARE)])
    assert_evidence_is_in_place(net, analysis)


def test_inputs_too_wide_to_bisect_get_case_splits() -> None:
    # The phase-correlated net with 18 more inputs it ignores: more than 16 inputs, so no
    # input is bisected whatever max_subboxes says.
    net = phase_correlated()
    first = net.layers[0]
    wide = Network(
        (
            AffineLayer(
                np.hstack([first.float_weights, np.zeros((2, 18))]), first.float_bias, True
            ),
            *net.layers[1:],
        )
    )
    domain = Domain.box(-np.ones(20), np.ones(20))
    analysis = run(wide, domain)
    assert analysis.statuses[TARGET] is Status.STABLY_ACTIVE
    assert len(analysis.subdomains.boxes) == 1
    assert [s.neuron for s in analysis.case_splits] == [TARGET]
    assert_evidence_is_in_place(wide, analysis)


def test_a_case_split_on_the_second_domain_box_counts_for_that_box() -> None:
    # Box 0: the bounds show (1,0) active. Box 1: only a case split does.
    net = phase_correlated()
    corner = Box(np.array([0.25, -1.0]), np.array([1.0, -0.5]))
    assert TARGET in decided_by_bounds(net, Domain((corner,)))
    for boxes, split_box in (((corner, SQUARE), 1), ((SQUARE, corner), 0)):
        domain = Domain(boxes)
        analysis = run(net, domain, NO_BISECTION)
        assert analysis.statuses[TARGET] is Status.STABLY_ACTIVE, f"split on box {split_box}"
        assert [s.box for s in analysis.case_splits] == [split_box]
        assert_evidence_is_in_place(net, analysis)


def test_a_claim_the_whole_box_bounds_miss_is_proved_on_the_halves_of_a_bisection() -> None:
    net = two_kinks()
    domain = Domain((INTERVAL,))
    assert TARGET not in decided_by_bounds(net, domain)
    # No case split (max_split_depth=0 leaves only a bound with the LP's multipliers, which
    # misses it too): only the halves prove it.
    analysis = run(net, domain, dataclasses.replace(CONFIG, max_split_depth=0))
    assert analysis.statuses[TARGET] is Status.STABLY_INACTIVE
    subdomains = analysis.subdomains
    assert len(subdomains.leaves) >= 2 and 0 not in subdomains.leaves
    assert analysis.case_splits == []
    assert not analysis.bounds[0].shows(TARGET, Phase.INACTIVE)
    assert all(analysis.bounds[k].shows(TARGET, Phase.INACTIVE) for k in subdomains.leaves)
    assert_agrees_with_oracle(analysis, [stability_oracle(net, INTERVAL)])
    assert_evidence_is_in_place(net, analysis)


# ---------------------------------------------------------------------------------------------
# False claims are refuted or left unknown, never proved


def false_claims(net: Network, verdict: OracleVerdict, flip: bool) -> dict[Neuron, Phase]:
    """The wrong phase for every neuron stable in one phase only, and ACTIVE (flip: INACTIVE)
    for every unstable one. Neurons with g == 0 on the whole box (stable in both) are left
    out: no claim about them is false."""
    claims = {}
    for neuron in net.hidden_neurons():
        stable = verdict.stable_phases(neuron)
        if len(stable) == 1:
            claims[neuron] = next(iter(stable)).opposite
        elif not stable:
            claims[neuron] = Phase.INACTIVE if flip else Phase.ACTIVE
    return claims


class DeafTable(WitnessTable):
    """Records no witness: no claim is refuted, so the producer keeps trying to prove it."""

    def offer(self, points: object, box: int, source: str) -> int:
        return 0


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_claims_deliberately_made_false_are_never_proved_by_the_kernel(
    seed: int, flip: bool
) -> None:
    net, domain = random_case(seed, inputs=2)
    box = domain.boxes[0]
    claims = false_claims(net, stability_oracle(net, box), flip)
    exact = ExactNetwork(net)
    root = ProofBoxes(0, [box], [box_bounds(exact, box)], [None])
    deadline = time.monotonic() + 10.0
    table = DeafTable(net, domain)
    bisect_until_proved(
        net, exact, root, 0, claims, table, np.random.default_rng(seed), deadline, 32
    )
    splits = list(root.case_splits)
    for neuron, phase in claims.items():
        split = split_by_cases(net, exact, box, 0, root.bounds[0], neuron, phase, 4, 32, deadline)
        assert split is None, f"a case split for the false claim {neuron} {phase}"
    subdomains = Subdomains.from_trees(domain, [root.tree()])
    bounds = proof_box_bounds(exact, subdomains)
    valid = [s for s in splits if case_split_holds(exact, subdomains, bounds, s)]
    assert proved_claims(subdomains, bounds, valid, claims) == {}
    assert proved_claims(Subdomains.whole(domain), bounds[:1], [], claims) == {}


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1), st.booleans(), st.data())
def test_no_multipliers_make_the_kernel_accept_a_false_claim(
    seed: int, flip: bool, data: st.DataObject
) -> None:
    net, domain = random_case(seed, inputs=2)
    box = domain.boxes[0]
    claims = false_claims(net, stability_oracle(net, box), flip)
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    whole = Subdomains.whole(domain)
    lp = TriangleLps(net, box, bounds).for_layer(1)
    assert lp is not None
    rng = np.random.default_rng(seed)
    width = net.layers[0].outputs
    drawn = data.draw(
        st.lists(st.floats(-1e3, 1e3), min_size=width, max_size=width), label="multipliers"
    )
    for neuron, phase in claims.items():
        if neuron.layer != 1:
            continue
        candidates = [np.array(drawn)] + [rng.normal(scale=s, size=width) for s in (0.1, 1, 10)]
        optimal = lp.multipliers(neuron, phase)  # the best the LP finds for the false claim
        if optimal is not None:
            candidates.append(optimal[0])
        for multipliers in candidates:
            alone = CaseSplit(0, neuron, phase, (Case((), (multipliers,)),))
            assert not case_split_holds(exact, whole, [bounds], alone), multipliers
            kink = Neuron(0, int(rng.integers(width)))
            cases = tuple(Case(((kink, p),), (multipliers,)) for p in Phase)
            split = CaseSplit(0, neuron, phase, cases)
            assert not case_split_holds(exact, whole, [bounds], split), multipliers
        assert proved_claims(whole, [bounds], [], {neuron: phase}) == {}


@settings(deadline=None, max_examples=12)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_false_claims_handed_to_the_analysis_never_become_stable_statuses(
    seed: int, bisection: bool
) -> None:
    net, domain = random_case(seed)
    verdict = stability_oracle(net, domain.boxes[0])
    wrong = false_claims(net, verdict, flip=bool(seed % 2))
    handed: dict[Neuron, Phase] = {}

    def claims(undecided: Sequence[Neuron], *_: object) -> dict[Neuron, Phase]:
        handed.update({n: wrong[n] for n in undecided if n in wrong})
        return dict(handed)

    # Few sub-boxes and shallow splits: the producer cannot prove these, only spend time.
    config = CONFIG if bisection else NO_BISECTION
    config = dataclasses.replace(config, max_subboxes=min(config.max_subboxes, 32))
    config = dataclasses.replace(config, max_split_depth=3)
    with mock.patch.object(stability, "_claims", claims):
        analysis = run(net, domain, config, seed=seed)
    for neuron, phase in handed.items():
        status = analysis.statuses[neuron]
        assert not status.is_stable, f"false claim {neuron} {phase} became {status}"
    assert_agrees_with_oracle(analysis, [verdict])
    assert_evidence_is_in_place(net, analysis)


# ---------------------------------------------------------------------------------------------
# Time limit


def test_with_no_time_at_all_only_what_the_domain_box_bounds_decide_is_stable() -> None:
    undecided_somewhere = False
    for seed in range(6):
        net, domain = random_case(seed)
        decided = decided_by_bounds(net, domain)
        analysis = run(net, domain, limit=0.0)
        stable = {n: phase_of(s) for n, s in analysis.statuses.items() if s.is_stable}
        assert stable == decided, f"seed {seed}"
        others = {s for n, s in analysis.statuses.items() if n not in decided}
        assert others <= {Status.UNKNOWN}
        undecided_somewhere |= bool(others)
        assert analysis.table.witnesses() == []
        assert len(analysis.subdomains.boxes) == 1 and analysis.case_splits == []
        assert_evidence_is_in_place(net, analysis)
    assert undecided_somewhere, "every neuron was decided by bounds: the test shows nothing"


def test_with_no_time_a_case_split_claim_stays_unknown_while_the_bounds_still_decide() -> None:
    net = phase_correlated()
    analysis = run(net, Domain((SQUARE,)), NO_BISECTION, limit=0.0)
    assert analysis.statuses == {
        Neuron(0, 0): Status.UNKNOWN,
        Neuron(0, 1): Status.STABLY_ACTIVE,
        TARGET: Status.UNKNOWN,
    }


def test_with_a_tiny_time_limit_every_stable_status_is_confirmed_by_the_oracle() -> None:
    for seed in range(6):
        net, domain = random_case(seed)
        verdict = stability_oracle(net, domain.boxes[0])
        for limit in (0.001, 0.01, 0.05):
            analysis = run(net, domain, limit=limit, seed=seed)
            assert_agrees_with_oracle(analysis, [verdict])
            assert_evidence_is_in_place(net, analysis)


# ---------------------------------------------------------------------------------------------
# decide_statuses: what makes a status


def identity_net() -> tuple[Network, Domain]:
    """(0,0) = x crosses zero on [-1, 1]; (0,1) = x + 2 is active."""
    return network(([[1.0], [1.0]], [0.0, 2.0]), ([[1.0, 1.0]], [0.0])), Domain((INTERVAL,))


def test_a_proved_neuron_that_also_has_two_witnesses_is_inconsistent_evidence() -> None:
    net, domain = identity_net()
    exact = ExactNetwork(net)
    table = WitnessTable(net, domain)
    table.offer(np.array([[-0.5], [0.5]]), 0, "test")
    assert table.seen(Neuron(0, 0)) == set(Phase)
    honest = box_bounds(exact, INTERVAL)
    # Bounds that (falsely) show (0,0) inactive: g <= -1.
    lying = LayerBounds((np.array([-2.0, 1.0]),), (np.array([-1.0, 3.0]),))
    claims = {Neuron(0, 0): Phase.INACTIVE, Neuron(0, 1): Phase.ACTIVE}
    whole = Subdomains.whole(domain)
    hidden = net.hidden_neurons()
    with pytest.raises(InconsistentEvidenceError, match=r"\(0,0\)"):
        decide_statuses(exact, hidden, table, whole, [lying], [], claims)
    statuses, needed = decide_statuses(exact, hidden, table, whole, [honest], [], claims)
    assert statuses == {Neuron(0, 0): Status.UNSTABLE, Neuron(0, 1): Status.STABLY_ACTIVE}
    assert needed == []


def test_a_claim_is_stable_only_in_the_phase_the_evidence_proves() -> None:
    net, domain = identity_net()
    exact = ExactNetwork(net)
    bounds = [box_bounds(exact, INTERVAL)]
    whole = Subdomains.whole(domain)
    hidden = net.hidden_neurons()
    table = WitnessTable(net, domain)
    cases = {
        Phase.ACTIVE: Status.STABLY_ACTIVE,
        Phase.INACTIVE: Status.UNKNOWN,
    }
    for phase, expected in cases.items():
        claims = {Neuron(0, 0): phase, Neuron(0, 1): phase}
        statuses, _ = decide_statuses(exact, hidden, table, whole, bounds, [], claims)
        # (0,0) has neither a proof nor witnesses: unknown whatever is claimed.
        assert statuses == {Neuron(0, 0): Status.UNKNOWN, Neuron(0, 1): expected}
    statuses, _ = decide_statuses(exact, hidden, table, whole, bounds, [], {})
    assert set(statuses.values()) == {Status.UNKNOWN}


def test_only_case_splits_the_kernel_accepts_make_a_neuron_stable() -> None:
    net = phase_correlated()
    domain = Domain((SQUARE,))
    exact = ExactNetwork(net)
    bounds = [box_bounds(exact, SQUARE)]
    split = split_by_cases(
        net, exact, SQUARE, 0, bounds[0], TARGET, Phase.ACTIVE, 4, 16, time.monotonic() + 60
    )
    assert split is not None
    broken = dataclasses.replace(split, cases=split.cases[1:])
    whole = Subdomains.whole(domain)
    hidden = net.hidden_neurons()
    claims = {TARGET: Phase.ACTIVE}
    table = WitnessTable(net, domain)
    statuses, needed = decide_statuses(exact, hidden, table, whole, bounds, [broken], claims)
    assert statuses[TARGET] is Status.UNKNOWN and needed == []
    statuses, needed = decide_statuses(exact, hidden, table, whole, bounds, [split], claims)
    assert statuses[TARGET] is Status.STABLY_ACTIVE and needed == [split]
    flipped = {TARGET: Phase.INACTIVE}
    statuses, needed = decide_statuses(exact, hidden, table, whole, bounds, [split], flipped)
    assert statuses[TARGET] is Status.UNKNOWN and needed == []


# ---------------------------------------------------------------------------------------------
# Stability lemmas


def test_stability_lemmas_name_exactly_the_stable_neurons() -> None:
    net = phase_correlated()
    domain = Domain((SQUARE,))
    analyses = [run(net, domain, NO_BISECTION), run(net, domain, NO_BISECTION, limit=0.0)]
    seen = set()
    for analysis in analyses:
        for neuron, status in analysis.statuses.items():
            seen.add(status)
            expected = [f"stable.L{neuron.layer}.n{neuron.index}"] if status.is_stable else []
            assert analysis.stability_lemmas(neuron) == expected
    assert seen == {Status.STABLY_ACTIVE, Status.UNSTABLE, Status.UNKNOWN}
    assert analyses[0].stability_lemmas(TARGET) == ["stable.L1.n0"]
    inactive = run(two_kinks(), Domain((INTERVAL,)))
    assert inactive.statuses[TARGET] is Status.STABLY_INACTIVE
    assert inactive.stability_lemmas(TARGET) == ["stable.L1.n0"]
