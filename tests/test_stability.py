"""Tests for the stability analysis: every status it reports agrees with the exact oracle.

`analyse` runs bounds, witnesses, the CP-SAT search, certification and Z3; the reference is the
brute-force activation-pattern oracle of `tests/oracle.py` (exact, via Z3 on each pattern).
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import random_network
from tests.oracle import OracleVerdict, stability_oracle
from verifier import stability
from verifier.certify import UPPER, BoxProof, lemma_id, prove_box
from verifier.config import Config
from verifier.domain import Box, Domain
from verifier.ir import AffineLayer, Network
from verifier.obligations import (
    LemmaCheck,
    RelaxationCache,
    coverage_obligation,
    lemma_obligations,
)
from verifier.smt import SmtResult, SmtVerdict, check
from verifier.stability import (
    InconsistentEvidenceError,
    StabilityAnalysis,
    _CheckCost,
    _most_promising,
    _Node,
    all_contexts,
    all_lemmas,
    analyse,
    check_lemmas,
    decide_statuses,
)
from verifier.status import Neuron, Phase, Status
from verifier.subdomains import Subdomains
from verifier.witnesses import WitnessTable

CONFIG = Config(time_limit=20, samples=200, gradient_steps=10)


def _case(seed: int) -> tuple[Network, Domain]:
    """A random 3-h1-h2-2 net (h1, h2 <= 6, small enough for the oracle) on a random box."""
    rng = np.random.default_rng(seed)
    sizes = [3, int(rng.integers(2, 7)), int(rng.integers(2, 7)), 2]
    network = random_network(rng, sizes)
    if rng.random() < 0.4:
        return network, Domain.box(np.zeros(3), np.ones(3))
    center = rng.normal(size=3)
    radius = rng.uniform(0.05, 1.0, size=3)
    return network, Domain.box(center - radius, center + radius)


def _assert_agrees_with_oracle(analysis: StabilityAnalysis, verdicts: list[OracleVerdict]) -> None:
    """Stable statuses hold on every box; unstable neurons are unstable on the domain."""
    for neuron, status in analysis.statuses.items():
        if status.is_stable:
            phase = Phase.ACTIVE if status is Status.STABLY_ACTIVE else Phase.INACTIVE
            for box, verdict in enumerate(verdicts):
                assert phase in verdict.stable_phases(neuron), (
                    f"{neuron} {status} is false on box {box}"
                )
        elif status is Status.UNSTABLE:
            shown = set().union(*(verdict.shown[neuron] for verdict in verdicts))
            assert shown == set(Phase), f"{neuron} reported unstable but the oracle shows {shown}"


def _assert_evidence_is_in_place(network: Network, analysis: StabilityAnalysis) -> None:
    """Unstable: exact witnesses of both strict signs. Stable: Z3-proved lemmas that show the
    phase, on every sub-box or a proof box enclosing it."""
    for neuron, status in analysis.statuses.items():
        if status is Status.UNSTABLE:
            for phase, sign in ((Phase.ACTIVE, 1), (Phase.INACTIVE, -1)):
                witness = analysis.table.witness_for(neuron, phase)
                assert witness is not None
                assert network.evaluate_exact(witness.point).sign(neuron) == sign
        elif status.is_stable:
            identifiers = analysis.stability_lemmas(neuron)
            lemmas = [all_lemmas(analysis.proofs)[i] for i in identifiers]
            for lemma in lemmas:
                assert analysis.lemma_checks[lemma.id].proved and lemma.neuron == neuron
                shows = lemma.value <= 0 if status is Status.STABLY_INACTIVE else lemma.value >= 0
                assert shows, f"{lemma.id} = {lemma.value} does not show {status}"
            subdomains = analysis.subdomains
            for leaf in subdomains.leaves:
                assert any(lemma.box in subdomains.ancestry(leaf) for lemma in lemmas)
        else:
            assert analysis.stability_lemmas(neuron) == []


# ---------------------------------------------------------------------------------------------
# Agreement with the oracle


@settings(deadline=None, max_examples=12)
@given(st.integers(0, 2**32 - 1))
def test_every_status_of_a_random_net_agrees_with_the_pattern_oracle(seed: int) -> None:
    network, domain = _case(seed)
    analysis = analyse(network, domain, CONFIG, CONFIG.rng())
    verdict = stability_oracle(network, domain.boxes[0])
    _assert_agrees_with_oracle(analysis, [verdict])
    _assert_evidence_is_in_place(network, analysis)
    # Small nets within a generous limit: nothing is left unknown.
    assert Status.UNKNOWN not in analysis.statuses.values()


@settings(deadline=None, max_examples=5)
@given(st.integers(0, 2**32 - 1))
def test_on_two_boxes_a_neuron_is_stable_only_if_stable_on_both(seed: int) -> None:
    network, first = _case(seed)
    second = Box(first.boxes[0].lower + 0.5, first.boxes[0].upper + 0.5)
    domain = Domain((first.boxes[0], second))
    analysis = analyse(network, domain, CONFIG, CONFIG.rng())
    verdicts = [stability_oracle(network, box) for box in domain.boxes]
    _assert_agrees_with_oracle(analysis, verdicts)
    _assert_evidence_is_in_place(network, analysis)


def _needs_a_split() -> Network:
    # g(1,0) = -relu(x) + relu(-x) + relu(x + 2) - 2.25 = -0.25 on [-1, 1]; the triangle
    # relaxation of the two unstable first-layer neurons cannot show it on the whole box.
    layers = (
        AffineLayer(
            np.array([[1.0], [-1.0], [1.0]], dtype=np.float32),
            np.array([0, 0, 2], dtype=np.float32),
            relu=True,
        ),
        AffineLayer(
            np.array([[-1.0, 1.0, 1.0]], dtype=np.float32),
            np.array([-2.25], dtype=np.float32),
            relu=True,
        ),
        AffineLayer(np.ones((1, 1), dtype=np.float32), np.zeros(1, dtype=np.float32), relu=False),
    )
    return Network(layers)


def test_a_claim_that_needs_a_case_split_is_certified_with_its_coverage() -> None:
    network = _needs_a_split()
    domain = Domain.box([-1.0], [1.0])
    config = dataclasses.replace(CONFIG, max_subboxes=1)
    analysis = analyse(network, domain, config, config.rng())
    target = Neuron(1, 0)
    assert analysis.statuses[target] is Status.STABLY_INACTIVE
    assert analysis.statuses[Neuron(0, 2)] is Status.STABLY_ACTIVE
    assert analysis.statuses[Neuron(0, 0)] is analysis.statuses[Neuron(0, 1)] is Status.UNSTABLE
    identifier = lemma_id(0, target, UPPER)
    lemma = analysis.proofs[0].lemmas[identifier]
    assert len(lemma.leaves) > 1
    obligations = analysis.lemma_checks[identifier].obligations
    assert [o.id for o in obligations][-1] == f"{identifier}.cover"
    assert len(obligations) == len(lemma.leaves) + 1
    _assert_agrees_with_oracle(analysis, [stability_oracle(network, domain.boxes[0])])


def test_a_claim_too_deep_for_the_set_split_depth_is_retried_deeper_on_an_unsplittable_box() -> (
    None
):
    network = _needs_a_split()
    domain = Domain.box([-1.0], [1.0])
    config = dataclasses.replace(CONFIG, max_subboxes=1, max_split_depth=0)
    target = Neuron(1, 0)
    with mock.patch.object(stability, "RETRY_EXTRA_DEPTHS", (0,)):
        unchanged = analyse(network, domain, config, config.rng())
    assert unchanged.statuses[target] is Status.UNKNOWN
    analysis = analyse(network, domain, config, config.rng())
    assert analysis.statuses[target] is Status.STABLY_INACTIVE
    assert len(analysis.proofs[0].lemmas[lemma_id(0, target, UPPER)].leaves) > 1
    _assert_agrees_with_oracle(analysis, [stability_oracle(network, domain.boxes[0])])


def test_on_a_splittable_box_case_splits_come_before_bisection() -> None:
    # A case split proves the claim on the whole box: no sub-box is needed.
    network = _needs_a_split()
    analysis = analyse(network, Domain.box([-1.0], [1.0]), CONFIG, CONFIG.rng())
    target = Neuron(1, 0)
    assert analysis.statuses[target] is Status.STABLY_INACTIVE
    assert analysis.subdomains.leaves == (0,)
    assert len(analysis.proofs[0].lemmas[lemma_id(0, target, UPPER)].leaves) > 1


def test_a_claim_no_relaxation_of_the_whole_box_proves_is_certified_on_its_halves() -> None:
    network = _needs_a_split()
    domain = Domain.box([-1.0], [1.0])
    config = dataclasses.replace(CONFIG, max_split_depth=0)
    analysis = analyse(network, domain, config, config.rng())
    target = Neuron(1, 0)
    assert analysis.statuses[target] is Status.STABLY_INACTIVE
    subdomains = analysis.subdomains
    assert len(subdomains.leaves) >= 2 and len(analysis.proofs) == len(subdomains.boxes)
    halves = [subdomains.boxes[k] for k in subdomains.leaves]
    assert sorted((float(b.lower[0]), float(b.upper[0])) for b in halves)[0][0] == -1.0
    assert subdomains.parents == (0,) * len(subdomains.boxes)
    # The whole box (proof box 0) does not show the claim; each sub-box's own lemma does.
    assert lemma_id(0, target, UPPER) not in analysis.stability_lemmas(target)
    for box in subdomains.leaves:
        lemma = analysis.proofs[box].lemmas[lemma_id(box, target, UPPER)]
        assert lemma.value <= 0 and all(leaf.assumptions == () for leaf in lemma.leaves)
    assert analysis.cover_checks[0].proved
    _assert_evidence_is_in_place(network, analysis)


def test_a_union_of_boxes_is_certified_with_z3_checks_started_during_the_proofs() -> None:
    # The early Z3 worker serves both domain boxes; the second box's certifier must not trip
    # over the first box's checked lemmas.
    network = random_network(np.random.default_rng(2), [2, 24, 24, 24, 2])
    domain = Domain(
        (
            Box(np.array([-1.0, -1.0]), np.array([0.0, 0.0])),
            Box(np.array([0.0, 0.0]), np.array([1.0, 1.0])),
        )
    )
    config = dataclasses.replace(CONFIG, samples=50, gradient_steps=0, workers=2)
    analysis = analyse(network, domain, config, config.rng())
    assert sum(1 for s in analysis.statuses.values() if s.is_stable) > 0
    _assert_evidence_is_in_place(network, analysis)


def test_obligations_are_the_same_with_relaxations_shared_or_built_per_lemma() -> None:
    # Sharing one relaxation per box, layer and context (with evictions from a tiny cache)
    # must not change a single obligation: the checker compares them by hash.
    network = random_network(np.random.default_rng(0), [2, 6, 6, 6, 2])
    domain = Domain.box(-np.ones(2), np.ones(2))
    config = dataclasses.replace(CONFIG, samples=50, gradient_steps=0, max_split_depth=0)
    analysis = analyse(network, domain, config, config.rng())
    assert len(analysis.subdomains.leaves) >= 2
    lemmas = all_lemmas(analysis.proofs)
    contexts = all_contexts(analysis.proofs)
    shared = RelaxationCache(size=2)
    ordered = sorted(lemmas.values(), key=lambda lemma: (lemma.neuron.layer, lemma.box))
    for lemma in ordered:
        box = analysis.subdomains.boxes[lemma.box]
        alone = lemma_obligations(network, box, lemmas, contexts, lemma)
        cached = lemma_obligations(network, box, lemmas, contexts, lemma, None, shared)
        assert [o.smtlib for o in cached] == [o.smtlib for o in alone], lemma.id


def test_with_a_helper_process_the_halves_give_the_statuses_of_a_single_process() -> None:
    network = _needs_a_split()
    domain = Domain.box([-1.0], [1.0])
    single = dataclasses.replace(CONFIG, max_split_depth=0, workers=1)
    helped = dataclasses.replace(single, workers=2)
    alone = analyse(network, domain, single, single.rng())
    beside = analyse(network, domain, helped, helped.rng())
    assert len(beside.subdomains.leaves) >= 2
    assert beside.statuses == alone.statuses
    assert beside.statuses[Neuron(1, 0)] is Status.STABLY_INACTIVE
    _assert_evidence_is_in_place(network, beside)


def test_a_sub_box_failing_claims_no_other_fails_is_bisected_before_those_sharing_theirs() -> None:
    box = Box(np.zeros(1), np.ones(1))
    shared = {Neuron(2, 0), Neuron(2, 1), Neuron(2, 2)}
    own = {Neuron(3, 0), Neuron(3, 1)}
    first, second, third = (
        _Node(number, box, 0, BoxProof({}, {}, {}, {}), set(failed), 1.0)
        for number, failed in ((1, shared), (2, shared), (3, own))
    )
    leaves = [first, second, third]
    # The sub-boxes failing the most claims share them: mending one proves none of them.
    assert _most_promising(leaves, leaves, set()) is third
    # Once the shared claims are refuted only the sub-box with claims left can be chosen.
    assert _most_promising(leaves, leaves, shared | {Neuron(3, 0)}) is third
    assert _most_promising(leaves, [first, second], set()) is first


def test_z3_time_is_projected_per_obligation_so_a_case_split_does_not_inflate_a_bound() -> None:
    cost = _CheckCost()
    # A case split's lemma of 63 obligations and a plain bound's lemma of one, on layer 3.
    cost.calibrate([(3, 63, 6.3), (3, 1, 0.1)], workers=2)
    assert cost.of({3: 10}) == pytest.approx(10 * 0.1 / 2)
    cost.calibrate([(1, 4, 0.2)], workers=2)
    # A layer the later sample lacks keeps its earlier estimate.
    assert cost.of({1: 2, 3: 10}) == pytest.approx(2 * 0.05 / 2 + 10 * 0.1 / 2)
    assert cost.of({5: 1}) == pytest.approx(cost.guess) and cost.guess == pytest.approx(0.05)


def test_input_splitting_is_not_tried_on_wide_inputs() -> None:
    network = _needs_a_split()
    wide = Network(
        (
            AffineLayer(
                np.repeat(network.layers[0].float_weights.astype(np.float32) / 20, 20, axis=1),
                network.layers[0].float_bias.astype(np.float32),
                relu=True,
            ),
            *network.layers[1:],
        )
    )
    domain = Domain.box(np.full(20, -1.0), np.full(20, 1.0))
    analysis = analyse(wide, domain, CONFIG, CONFIG.rng())
    assert len(analysis.subdomains.boxes) == 1 and analysis.cover_checks == {}
    assert analysis.subdomains.leaves == (0,)


# ---------------------------------------------------------------------------------------------
# False claims are refuted or left unknown, never certified


@settings(deadline=None, max_examples=8)
@given(st.integers(0, 2**32 - 1))
def test_claims_deliberately_made_false_are_never_reported_stable(seed: int) -> None:
    network, domain = _case(seed)
    verdict = stability_oracle(network, domain.boxes[0])

    def wrong_phase(neuron: Neuron, *_: object) -> Phase:
        stable = verdict.stable_phases(neuron)
        return next(iter(stable)).opposite if len(stable) == 1 else Phase.INACTIVE

    with mock.patch.object(stability, "_claimed_phase", wrong_phase):
        analysis = analyse(network, domain, CONFIG, CONFIG.rng())
    for neuron, status in analysis.statuses.items():
        if status.is_stable:
            # Only a neuron that is stable in both phases (g == 0 on the box) could be.
            assert verdict.stable_phases(neuron) == set(Phase), (
                f"false claim {neuron} became {status}"
            )
    _assert_agrees_with_oracle(analysis, [verdict])


# ---------------------------------------------------------------------------------------------
# Time limit


def test_with_a_tiny_time_limit_every_stable_status_is_confirmed_by_the_oracle() -> None:
    for seed in range(6):
        network, domain = _case(seed)
        for limit in (0.001, 0.01, 0.05):
            config = Config(time_limit=limit, samples=200)
            analysis = analyse(network, domain, config, config.rng())
            _assert_agrees_with_oracle(analysis, [stability_oracle(network, domain.boxes[0])])
            _assert_evidence_is_in_place(network, analysis)


def test_with_a_tiny_time_limit_most_claims_of_a_larger_net_stay_unknown() -> None:
    rng = np.random.default_rng(5)
    stable = unknown = 0
    for _ in range(3):
        network = random_network(rng, [5, 30, 30, 2])
        domain = Domain.box(np.zeros(5), np.ones(5))
        config = Config(time_limit=0.01, samples=200)
        analysis = analyse(network, domain, config, config.rng())
        _assert_evidence_is_in_place(network, analysis)
        stable += sum(1 for s in analysis.statuses.values() if s.is_stable)
        unknown += sum(1 for s in analysis.statuses.values() if s is Status.UNKNOWN)
    assert unknown > stable


def test_a_z3_projection_beyond_the_budget_still_leaves_time_to_prove_the_first_claims() -> None:
    network, domain = _case(2)
    # As on a large network: the box is not bisected, and the first guess of the Z3 time
    # exceeds the whole budget.
    config = Config(time_limit=30.0, samples=200, max_subboxes=1)
    with mock.patch.object(stability, "_expected_lemmas", return_value=10**7):
        analysis = analyse(network, domain, config, config.rng())
    _assert_agrees_with_oracle(analysis, [stability_oracle(network, domain.boxes[0])])
    assert any(s.is_stable for n, s in analysis.statuses.items() if n.layer == 0)


def test_with_no_time_at_all_no_neuron_is_called_stable() -> None:
    network, domain = _case(1)
    config = Config(time_limit=0.0, samples=200)
    analysis = analyse(network, domain, config, config.rng())
    assert not any(status.is_stable for status in analysis.statuses.values())
    assert analysis.lemma_checks == {}


# ---------------------------------------------------------------------------------------------
# decide_statuses: what makes a status


Proved = tuple[Network, Domain, BoxProof, dict[Neuron, Phase], dict[str, LemmaCheck]]


@pytest.fixture(scope="module")
def proved() -> Proved:
    """A net whose neuron (1, 0) is proved stably inactive (g = -0.25), with its Z3 checks."""
    layers = (
        AffineLayer(np.array([[1.0], [-1.0], [1.0]]), np.array([0.0, 0.0, 2.0]), relu=True),
        AffineLayer(np.array([[-1.0, 1.0, 1.0]]), np.array([-2.25]), relu=True),
        AffineLayer(np.ones((1, 1)), np.zeros(1), relu=False),
    )
    network = Network(layers)
    domain = Domain.box([-1.0], [1.0])
    claims = {Neuron(1, 0): Phase.INACTIVE, Neuron(0, 2): Phase.ACTIVE}
    proof = prove_box(network, domain.boxes[0], 0, claims, time.monotonic() + 60)
    table = WitnessTable(network, domain)
    checks = check_lemmas(network, domain, [proof], claims, table)
    return network, domain, proof, claims, checks


def test_a_proved_claim_with_its_checks_is_stable(proved: Proved) -> None:
    network, domain, proof, claims, checks = proved
    statuses = decide_statuses(
        network.hidden_neurons(), WitnessTable(network, domain), [proof], checks, claims
    )
    assert statuses[Neuron(1, 0)] is Status.STABLY_INACTIVE
    assert statuses[Neuron(0, 2)] is Status.STABLY_ACTIVE
    assert (
        statuses[Neuron(0, 0)] is statuses[Neuron(0, 1)] is Status.UNKNOWN
    )  # no claim, no witness


def test_a_claim_whose_own_or_context_check_failed_or_is_missing_is_unknown(proved: Proved) -> None:
    network, domain, proof, claims, checks = proved
    target = lemma_id(0, Neuron(1, 0), UPPER)
    context_lemma = lemma_id(0, Neuron(0, 0), UPPER)
    refuted = SmtResult(SmtVerdict.REFUTED, 0.0, "tampered")
    variants = {
        "missing own": {k: v for k, v in checks.items() if k != target},
        "missing context": {k: v for k, v in checks.items() if k != context_lemma},
        "refuted own": {
            **checks,
            target: LemmaCheck(
                checks[target].obligations, [refuted] * len(checks[target].obligations)
            ),
        },
        "refuted context": {
            **checks,
            context_lemma: LemmaCheck(checks[context_lemma].obligations, [refuted]),
        },
        "no results": {**checks, target: LemmaCheck([], [])},
    }
    for name, variant in variants.items():
        statuses = decide_statuses(
            network.hidden_neurons(), WitnessTable(network, domain), [proof], variant, claims
        )
        assert statuses[Neuron(1, 0)] is Status.UNKNOWN, name


def test_a_split_lemma_whose_leaves_do_not_cover_is_not_established(proved: Proved) -> None:
    network, domain, proof, claims, checks = proved
    target = lemma_id(0, Neuron(1, 0), UPPER)
    lemma = proof.lemmas[target]
    assert len(lemma.leaves) > 1
    # Every proper subset of the leaves, down to a single leaf that still carries its
    # assumption: a proof under an assumption is no proof of the lemma.
    for size in range(1, len(lemma.leaves)):
        partial = dataclasses.replace(lemma, leaves=lemma.leaves[-size:])
        broken = BoxProof(proof.facts, {**proof.lemmas, target: partial}, proof.contexts)
        statuses = decide_statuses(
            network.hidden_neurons(), WitnessTable(network, domain), [broken], checks, claims
        )
        assert statuses[Neuron(1, 0)] is Status.UNKNOWN, f"{size} of {len(lemma.leaves)} leaves"
    # Z3 agrees: the coverage obligation of the partial split is refuted, the full one proved.
    assert check(coverage_obligation(lemma)).verdict is SmtVerdict.PROVED
    assert check(coverage_obligation(partial)).verdict is SmtVerdict.REFUTED
    obligations = lemma_obligations(network, domain.boxes[0], proof.lemmas, proof.contexts, lemma)
    assert obligations[-1].id == f"{target}.cover"


def test_a_wrong_phase_claim_on_a_proved_neuron_is_not_stable(proved: Proved) -> None:
    network, domain, proof, claims, checks = proved
    flipped = {neuron: phase.opposite for neuron, phase in claims.items()}
    statuses = decide_statuses(
        network.hidden_neurons(), WitnessTable(network, domain), [proof], checks, flipped
    )
    assert not any(status.is_stable for status in statuses.values())


def test_witnesses_of_both_signs_make_a_neuron_unstable_and_contradict_a_proof(
    proved: Proved,
) -> None:
    network, domain, proof, claims, checks = proved
    table = WitnessTable(network, domain)
    table.offer(np.array([[-0.5], [0.5]]), 0, "test")
    statuses = decide_statuses(network.hidden_neurons(), table, [proof], checks, claims)
    assert statuses[Neuron(0, 0)] is statuses[Neuron(0, 1)] is Status.UNSTABLE
    # A (fake) witness table that shows the proved-inactive neuron active too is a bug: raise.

    class Contradicting(WitnessTable):
        def seen(self, neuron: Neuron) -> set[Phase]:
            return set(Phase) if neuron == Neuron(1, 0) else super().seen(neuron)

    with pytest.raises(InconsistentEvidenceError, match=r"\(1,0\)"):
        decide_statuses(
            network.hidden_neurons(), Contradicting(network, domain), [proof], checks, claims
        )


def test_stability_lemmas_name_one_lemma_per_box_of_the_right_sense(proved: Proved) -> None:
    network, domain, proof, claims, checks = proved
    statuses = decide_statuses(
        network.hidden_neurons(), WitnessTable(network, domain), [proof], checks, claims
    )
    analysis = StabilityAnalysis(
        statuses,
        WitnessTable(network, domain),
        [proof],
        checks,
        [],
        claims,
        Subdomains.whole(domain),
        {},
    )
    assert analysis.stability_lemmas(Neuron(1, 0)) == ["b0.L1.n0.upper"]
    assert analysis.stability_lemmas(Neuron(0, 2)) == ["b0.L0.n2.lower"]
    assert analysis.stability_lemmas(Neuron(0, 0)) == []
    assert proof.lemmas["b0.L1.n0.upper"].value == Fraction(-1, 4)
