"""Tests for certification: Farkas bounds are sound, false claims are never proved, obligations.

The reference is exact evaluation (`Network.evaluate_exact`) and the brute-force activation
pattern oracle of `tests/oracle.py`; nothing here trusts the floating-point LP.
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import random_network
from tests.oracle import stability_oracle
from verifier.certify import (
    LOWER,
    REPROVE_GAIN,
    UPPER,
    BoundLemma,
    BoxProof,
    Leaf,
    ProofHelper,
    SplitRetry,
    _LeafAttempt,
    _narrows,
    _solve_leaf,
    _splits_may_help,
    context_id,
    covers_all_phases,
    leaf_bound,
    leaf_obligation,
    lemma_id,
    maximum_over_bounds,
    prove_box,
    residual,
    round_outward,
)
from verifier.domain import Box, Domain
from verifier.ir import AffineLayer, Network
from verifier.obligations import facts_from_context
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import SmtVerdict, check
from verifier.stability import check_lemmas, decide_statuses
from verifier.status import Neuron, Phase, Status
from verifier.subdomains import bisect
from verifier.witnesses import WitnessTable


def _case(seed: int) -> tuple[Network, Box, np.random.Generator]:
    """A random 3-h1-h2-2 net (h1, h2 <= 6: small enough for the oracle) and a random box."""
    rng = np.random.default_rng(seed)
    sizes = [3, int(rng.integers(2, 7)), int(rng.integers(2, 7)), 2]
    network = random_network(rng, sizes, dtype=np.float32 if rng.random() < 0.7 else np.float64)
    if rng.random() < 0.3:
        return network, Box(np.zeros(3), np.ones(3)), rng
    center = rng.normal(size=3)
    radius = rng.uniform(0.05, 1.0, size=3)
    return network, Box(center - radius, center + radius), rng


def _output_claims(network: Network, rng: np.random.Generator) -> dict[Neuron, Phase]:
    """A random phase claimed for every neuron of the output layer (layer 2)."""
    outputs = network.layers[-1].outputs
    return {Neuron(2, i): Phase(rng.choice(["active", "inactive"])) for i in range(outputs)}


def _box_points(box: Box, rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform points plus random corners of the box."""
    corners = np.where(rng.random((count, box.size)) < 0.5, box.lower, box.upper)
    return np.concatenate([box.sample(count, rng), corners, box.center()[None, :]])


def _far_future() -> float:
    return time.monotonic() + 60.0


def _proves(lemma: BoundLemma | None, phase: Phase) -> bool:
    """Whether a lemma's value shows the neuron in `phase` (the decision `analyse` makes)."""
    if lemma is None:
        return False
    return lemma.value <= 0 if phase is Phase.INACTIVE else lemma.value >= 0


def _sign_of(phase: Phase) -> int:
    return UPPER if phase is Phase.INACTIVE else LOWER


def _relaxation_of(
    network: Network, box: Box, proof: BoxProof, lemma: BoundLemma, leaf: Leaf
) -> Relaxation:
    facts = facts_from_context(proof.lemmas, proof.contexts[lemma.context])
    return Relaxation(network, box, lemma.neuron.layer, facts, dict(leaf.assumptions))


# ---------------------------------------------------------------------------------------------
# Farkas soundness


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1))
def test_every_proved_lemma_bounds_every_exact_forward_pass_in_the_box(seed: int) -> None:
    network, box, rng = _case(seed)
    claims = _output_claims(network, rng)
    proof = prove_box(network, box, 0, claims, _far_future())
    expected = 2 * (network.layers[0].outputs + network.layers[1].outputs) + len(claims)
    assert len(proof.lemmas) == expected
    evaluations = [network.evaluate_exact(point) for point in _box_points(box, rng, 40)]
    for lemma in proof.lemmas.values():
        for exact in evaluations:
            g = exact.value(lemma.neuron)
            holds = g <= lemma.value if lemma.sign == UPPER else g >= lemma.value
            assert holds, f"{lemma.id} = {lemma.value} but g = {g}"
        allowed = lemma.value if lemma.sign == UPPER else -lemma.value
        for leaf in lemma.leaves:
            assert leaf.bound <= allowed
            relaxation = _relaxation_of(network, box, proof, lemma, leaf)
            assert leaf_bound(relaxation, lemma.neuron, lemma.sign, leaf.multipliers) == leaf.bound


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1))
def test_a_half_keeps_the_enclosing_lemmas_of_stable_neurons_and_re_proves_only_what_it_narrows(
    seed: int,
) -> None:
    network, box, rng = _case(seed)
    claims = _output_claims(network, rng)
    whole = prove_box(network, box, 0, claims, _far_future())
    dimension = int(np.argmax(box.upper - box.lower))
    halves = bisect(box, dimension)
    assert halves is not None
    half = halves[1 + int(rng.integers(2))]
    proof = prove_box(network, half, 1, claims, _far_future(), enclosing=whole)
    for neuron, fact in whole.facts.items():
        lower_id, upper_id = proof.fact_lemmas[neuron]
        if fact.phase is not None:
            assert proof.fact_lemmas[neuron] == whole.fact_lemmas[neuron]
        for identifier in (lower_id, upper_id):
            assert identifier.startswith(("b0.", "b1."))
            if identifier.startswith("b1."):
                lemma = proof.lemmas[identifier]
                known = fact.upper if lemma.sign == UPPER else fact.lower
                gain = (known - lemma.value) * lemma.sign
                decides = (
                    (lemma.value <= 0 < known)
                    if lemma.sign == UPPER
                    else (lemma.value >= 0 > known)
                )
                assert decides or gain >= (fact.upper - fact.lower) * Fraction(REPROVE_GAIN)
    # The half's bounds, own or inherited, hold at every exact forward pass in the half.
    for point in _box_points(half, rng, 30):
        exact = network.evaluate_exact(point)
        for neuron, fact in proof.facts.items():
            assert fact.lower <= exact.value(neuron) <= fact.upper


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1))
def test_any_nonnegative_multipliers_give_a_residual_above_the_target_at_real_points(
    seed: int,
) -> None:
    """The Farkas argument itself, with arbitrary (not LP-chosen) multipliers."""
    network, box, rng = _case(seed)
    proof = prove_box(network, box, 0, {Neuron(2, 0): Phase.ACTIVE}, _far_future())
    facts = facts_from_context(proof.lemmas, proof.contexts[context_id(0, 2)])
    relaxation = Relaxation(network, box, 2, facts, {})
    keys = [f"def:{k}:{i}" for k in range(2) for i in range(network.layers[k].outputs)]
    keys += list(relaxation.small_rows())
    chosen = [key for key in keys if rng.random() < 0.6]
    multipliers = {
        key: Fraction(
            int(rng.integers(0 if key.startswith(("above", "triangle")) else -40, 40)), 16
        )
        for key in chosen
    }
    target = Neuron(2, 1)
    lower, upper = relaxation.variable_bounds()
    layout = relaxation.variables
    for sign in (UPPER, LOWER):
        coefficients, constant = residual(relaxation, target, sign, multipliers)
        maximum = maximum_over_bounds(coefficients, constant, lower, upper)
        for point in _box_points(box, rng, 10):
            exact = network.evaluate_exact(point)
            values = [Fraction(0)] * layout.count
            for j, x in enumerate(point.tolist()):
                values[layout.x(j)] = Fraction(x)
            for k in range(2):
                for i, g in enumerate(exact.pre_activations[k].to_fractions()):
                    values[layout.g(k, i)], values[layout.a(k, i)] = g, max(g, Fraction(0))
            at_point = constant + sum(
                (c * v for c, v in zip(coefficients, values, strict=True)), Fraction(0)
            )
            assert sign * exact.value(target) <= at_point <= maximum


# ---------------------------------------------------------------------------------------------
# No false claim is ever certified


def _false_claims(
    network: Network, box: Box, rng: np.random.Generator
) -> tuple[dict[Neuron, Phase], set[Neuron]]:
    """A claim per hidden neuron, deliberately false for a random half; returns (claims, false)."""
    oracle = stability_oracle(network, box)
    claims: dict[Neuron, Phase] = {}
    false: set[Neuron] = set()
    for neuron in network.hidden_neurons():
        stable = oracle.stable_phases(neuron)
        if len(stable) == 2:
            continue  # g == 0 on the whole box: no phase claim is false
        if stable and rng.random() < 0.5:
            claims[neuron] = next(iter(stable))
            continue
        claims[neuron] = (
            next(iter(stable)).opposite if stable else Phase(rng.choice(["active", "inactive"]))
        )
        false.add(neuron)
    return claims, false


@settings(deadline=None, max_examples=12)
@given(st.integers(0, 2**32 - 1))
def test_a_claim_the_oracle_refutes_never_gets_a_lemma_that_proves_it(seed: int) -> None:
    network, box, rng = _case(seed)
    claims, false = _false_claims(network, box, rng)
    offered: list[np.ndarray] = []
    proof = prove_box(
        network,
        box,
        0,
        claims,
        _far_future(),
        offer_witness=lambda point, _box: offered.append(point),
    )
    for neuron in false:
        lemma = proof.lemmas.get(lemma_id(0, neuron, _sign_of(claims[neuron])))
        assert not _proves(lemma, claims[neuron]), f"false claim {neuron} {claims[neuron]} proved"
    for point in offered:
        assert np.all(point >= box.lower - 1e-6) and np.all(point <= box.upper + 1e-6)

    domain = Domain((box,))
    table = WitnessTable(network, domain)  # no witnesses: only proofs can decide
    checks = check_lemmas(network, domain, [proof], claims, table)
    statuses = decide_statuses(network.hidden_neurons(), table, [proof], checks, claims)
    for neuron, status in statuses.items():
        if neuron in false:
            assert status is Status.UNKNOWN, (
                f"false claim {neuron} {claims[neuron]} became {status}"
            )
        else:
            assert status in (Status.UNKNOWN, Status.stable(claims.get(neuron, Phase.ACTIVE)))


def test_a_false_claim_of_the_wrong_phase_on_a_stable_neuron_is_not_proved() -> None:
    # g(0,0) = x + 1 >= 1 on [0, 1]: stably active; claiming it inactive is false.
    network = Network(
        (
            AffineLayer(np.array([[1.0]]), np.array([1.0]), relu=True),
            AffineLayer(np.eye(1), np.zeros(1), relu=False),
        )
    )
    box = Box(np.zeros(1), np.ones(1))
    proof = prove_box(network, box, 0, {Neuron(0, 0): Phase.INACTIVE}, _far_future())
    lemma = proof.lemmas[lemma_id(0, Neuron(0, 0), UPPER)]
    assert lemma.value == 2 and not _proves(lemma, Phase.INACTIVE)


# ---------------------------------------------------------------------------------------------
# Case splits


def _split_network() -> tuple[Network, Box]:
    """g(1,0) = -relu(x) + relu(-x) + relu(x + 2) - 2.25 = -0.25 on [-1, 1].

    relu(x + 2) = x + 2 is stably active, relu(x) and relu(-x) are unstable; the triangle
    relaxation of both at once bounds g(1,0) only by 0.75, so the claim needs a split.
    """
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
    return Network(layers), Box(np.array([-1.0]), np.array([1.0]))


def test_a_half_proved_in_the_helper_process_is_the_half_proved_here_with_the_same_lp_optima() -> (
    None
):
    # The helper must be a mere change of process: same lemmas, same values, same leaves, and
    # the LP optima it offers as witnesses come back to the main process.
    network, box, rng = _case(11)
    claims = _output_claims(network, rng)
    whole = prove_box(network, box, 0, claims, _far_future())
    halves = bisect(box, int(np.argmax(box.upper - box.lower)))
    assert halves is not None
    half = halves[2]
    offered_here: list[np.ndarray] = []
    here = prove_box(
        network,
        half,
        1,
        claims,
        _far_future(),
        offer_witness=lambda point, _: offered_here.append(np.array(point)),
        enclosing=whole,
    )
    with ProofHelper(network) as helper:
        there, offered_there, seconds = helper.submit(
            half, 1, claims, _far_future(), 6, whole
        ).result()
    assert set(there.lemmas) == set(here.lemmas) and len(here.lemmas) > 0
    for identifier, lemma in here.lemmas.items():
        assert there.lemmas[identifier] == lemma
    assert there.fact_lemmas == here.fact_lemmas and there.contexts == here.contexts
    assert len(offered_there) == len(offered_here)
    for a, b in zip(offered_there, offered_here, strict=True):
        assert np.array_equal(a, b)
    assert seconds > 0


def test_a_claim_one_relaxation_cannot_prove_is_proved_by_a_case_split_z3_confirms() -> None:
    network, box = _split_network()
    claim = {Neuron(1, 0): Phase.INACTIVE}
    unsplit = prove_box(network, box, 0, claim, _far_future(), max_split_depth=0)
    assert unsplit.lemmas["b0.L1.n0.upper"].value > 0

    proof = prove_box(network, box, 0, claim, _far_future())
    lemma = proof.lemmas["b0.L1.n0.upper"]
    assert lemma.value == Fraction(-1, 4)
    assert len(lemma.leaves) >= 2
    assert covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves)
    for position, leaf in enumerate(lemma.leaves):
        assert leaf.bound <= 0
        relaxation = _relaxation_of(network, box, proof, lemma, leaf)
        obligation = leaf_obligation(
            relaxation, lemma.neuron, lemma.sign, leaf, f"{lemma.id}.leaf{position}"
        )
        assert check(obligation, 30.0).verdict is SmtVerdict.PROVED
    # Dropping a branch leaves a case uncovered.
    assert not covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves[1:])


def test_a_claim_retried_with_case_splits_after_the_proof_gets_a_lemma_z3_confirms() -> None:
    network, box = _split_network()
    neuron = Neuron(1, 0)
    unsplit = prove_box(network, box, 0, {neuron: Phase.INACTIVE}, _far_future(), 0)
    assert unsplit.lemmas["b0.L1.n0.upper"].value > 0
    retry = SplitRetry(network, box, 0, unsplit, 1)
    promise = retry.promise(neuron, UPPER, 6)
    assert promise is not None and promise > 0
    lemma = retry.prove(neuron, UPPER, 6, _far_future())
    assert lemma is not None and lemma.id == "b0.L1.n0.upper" and lemma.value <= 0
    # The same context as the lemma it replaces: the checker rebuilds the same relaxation.
    assert lemma.context == unsplit.lemmas["b0.L1.n0.upper"].context
    assert covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves)
    for position, leaf in enumerate(lemma.leaves):
        relaxation = _relaxation_of(network, box, unsplit, lemma, leaf)
        obligation = leaf_obligation(
            relaxation, lemma.neuron, lemma.sign, leaf, f"{lemma.id}.leaf{position}"
        )
        assert check(obligation, 30.0).verdict is SmtVerdict.PROVED
    # With no case split allowed the retry proves nothing.
    again = SplitRetry(network, box, 0, unsplit, 1)
    assert again.promise(neuron, UPPER, 6) is not None
    assert again.prove(neuron, UPPER, 0, _far_future()) is None


def test_the_optimum_a_re_proved_bound_is_judged_by_includes_the_bias() -> None:
    network, box = _split_network()
    claim = {Neuron(1, 0): Phase.INACTIVE}
    unsplit = prove_box(network, box, 0, claim, _far_future(), max_split_depth=0)
    facts = facts_from_context(unsplit.lemmas, unsplit.contexts["b0.ctx1"])
    relaxation = Relaxation(network, box, 1, facts, {})
    judged: list[float] = []
    attempt = _solve_leaf(
        relaxation,
        relaxation.linear_program(),
        Neuron(1, 0),
        UPPER,
        10.0,
        lambda optimum: judged.append(optimum) or True,
    )
    # The optimum judged is the bound the certificate gives, bias (-2.25) included.
    assert attempt.bound is not None and 0 < attempt.bound < 1
    assert judged == [pytest.approx(float(attempt.bound), abs=1e-6)]


def test_a_re_proved_bound_is_wanted_only_if_it_narrows_enough_or_decides_the_sign() -> None:
    known = NeuronFact(Fraction(-1), Fraction(1))
    # An upper bound: the LP optimum is max g; a lower bound: it is max -g = -min g.
    assert _narrows(UPPER, known)(0.5) and not _narrows(UPPER, known)(0.99)
    assert _narrows(LOWER, known)(0.5) and not _narrows(LOWER, known)(0.99)
    wide = NeuronFact(Fraction(-100), Fraction(1))
    # Narrowing by 1% of the width is not enough, unless the sign becomes decided.
    assert _narrows(UPPER, wide)(-0.001) and not _narrows(UPPER, wide)(0.001)
    assert _narrows(LOWER, NeuronFact(Fraction(-1), Fraction(100)))(-0.001)


def test_case_splits_are_tried_only_when_the_triangle_gaps_could_close_the_bound() -> None:
    network, box = _split_network()
    claim = {Neuron(1, 0): Phase.INACTIVE}
    unsplit = prove_box(network, box, 0, claim, _far_future(), max_split_depth=0)
    lemma = unsplit.lemmas["b0.L1.n0.upper"]
    (leaf,) = lemma.leaves
    relaxation = _relaxation_of(network, box, unsplit, lemma, leaf)
    near = _LeafAttempt(leaf, leaf.bound, None, dict(leaf.multipliers))
    # The bound 3/4 is within the two triangle gaps (each at most 1 here): worth splitting.
    assert 0 < leaf.bound <= 1 and _splits_may_help(relaxation, near, 6)
    assert not _splits_may_help(relaxation, near, 0)
    hopeless = _LeafAttempt(leaf, leaf.bound + 10, None, dict(leaf.multipliers))
    assert not _splits_may_help(relaxation, hopeless, 6)


# ---------------------------------------------------------------------------------------------
# Leaf obligations and residuals


def _layer_one_lemma(seed: int = 3) -> tuple[Network, Box, BoxProof, BoundLemma, Relaxation]:
    """A proved layer-1 lemma whose leaf has multipliers, with its relaxation."""
    rng = np.random.default_rng(seed)
    network = random_network(rng, [3, 6, 6, 2])
    box = Box(np.zeros(3), np.ones(3))
    proof = prove_box(network, box, 0, {Neuron(2, 0): Phase.ACTIVE}, _far_future())
    lemma = next(
        lemma
        for lemma in proof.lemmas.values()
        if lemma.neuron.layer == 1
        and len(lemma.leaves) == 1
        and lemma.leaves[0].multipliers
        and any(key.startswith("def:") for key in lemma.leaves[0].multipliers)
    )
    return network, box, proof, lemma, _relaxation_of(network, box, proof, lemma, lemma.leaves[0])


@pytest.fixture(scope="module")
def layer_one() -> tuple[Network, Box, BoxProof, BoundLemma, Relaxation]:
    return _layer_one_lemma()


def test_z3_proves_the_obligation_of_a_real_leaf(
    layer_one: tuple[Network, Box, BoxProof, BoundLemma, Relaxation],
) -> None:
    network, box, proof, lemma, relaxation = layer_one
    obligation = leaf_obligation(relaxation, lemma.neuron, lemma.sign, lemma.leaves[0], "real")
    result = check(obligation, 30.0)
    assert result.verdict is SmtVerdict.PROVED, result.detail
    first = proof.lemmas[lemma_id(0, Neuron(0, 0), UPPER)]
    first_relaxation = _relaxation_of(network, box, proof, first, first.leaves[0])
    assert first.leaves[0].multipliers == {}
    assert (
        check(
            leaf_obligation(first_relaxation, first.neuron, UPPER, first.leaves[0], "first")
        ).verdict
        is SmtVerdict.PROVED
    )


def test_z3_refutes_an_obligation_whose_stated_bound_was_lowered(
    layer_one: tuple[Network, Box, BoxProof, BoundLemma, Relaxation],
) -> None:
    _, _, _, lemma, relaxation = layer_one
    leaf = lemma.leaves[0]
    lowered = Leaf(leaf.assumptions, leaf.multipliers, leaf.bound - Fraction(1, 1000))
    result = check(leaf_obligation(relaxation, lemma.neuron, lemma.sign, lowered, "lowered"), 30.0)
    assert result.verdict is SmtVerdict.REFUTED


def test_z3_refutes_an_obligation_whose_multiplier_was_changed_so_the_bound_fails(
    layer_one: tuple[Network, Box, BoxProof, BoundLemma, Relaxation],
) -> None:
    _, _, _, lemma, relaxation = layer_one
    leaf = lemma.leaves[0]
    for key in sorted(key for key in leaf.multipliers if key.startswith("def:")):
        changed = {**leaf.multipliers, key: leaf.multipliers[key] + 5}
        if leaf_bound(relaxation, lemma.neuron, lemma.sign, changed) > leaf.bound:
            break
    else:
        pytest.fail("no multiplier change breaks the residual bound")
    tampered = Leaf(leaf.assumptions, changed, leaf.bound)
    result = check(leaf_obligation(relaxation, lemma.neuron, lemma.sign, tampered, "changed"), 30.0)
    assert result.verdict is SmtVerdict.REFUTED


def test_residual_rejects_negative_inequality_multipliers_and_unknown_rows(
    layer_one: tuple[Network, Box, BoxProof, BoundLemma, Relaxation],
) -> None:
    _, _, _, lemma, relaxation = layer_one
    rows = relaxation.small_rows()
    inequality = [key for key in rows if key.startswith(("above:", "triangle:"))]
    assert inequality, "the fixture needs an unstable layer-0 neuron"
    for key in inequality:
        with pytest.raises(ValueError, match="negative multiplier"):
            residual(relaxation, lemma.neuron, lemma.sign, {key: Fraction(-1, 3)})
    layer_zero = relaxation.network.layers[0].outputs
    stable_rows = [f"above:0:{i}" for i in range(layer_zero) if f"above:0:{i}" not in rows]
    unknown = ["bogus:0:0", "def:1:0", "def:0:99", "above:0:99", "identity:5:0", *stable_rows]
    for key in unknown:
        with pytest.raises(ValueError, match="unknown row"):
            residual(relaxation, lemma.neuron, lemma.sign, {key: Fraction(1)})
    # Equality rows take multipliers of either sign.
    equality = next(key for key in lemma.leaves[0].multipliers if key.startswith("def:"))
    residual(relaxation, lemma.neuron, lemma.sign, {equality: Fraction(-7, 2)})


def test_a_multiplier_change_that_keeps_the_bound_is_still_a_valid_certificate(
    layer_one: tuple[Network, Box, BoxProof, BoundLemma, Relaxation],
) -> None:
    """Farkas: any nonnegative multipliers prove the bound they give; Z3 agrees."""
    _, _, _, lemma, relaxation = layer_one
    changed = {key: value * 2 for key, value in lemma.leaves[0].multipliers.items()}
    bound = leaf_bound(relaxation, lemma.neuron, lemma.sign, changed)
    leaf = Leaf((), changed, bound)
    assert (
        check(leaf_obligation(relaxation, lemma.neuron, lemma.sign, leaf, "doubled")).verdict
        is SmtVerdict.PROVED
    )


# ---------------------------------------------------------------------------------------------
# Case-split coverage


N1, N2, N3 = Neuron(0, 1), Neuron(0, 2), Neuron(1, 0)
ACT, INA = Phase.ACTIVE, Phase.INACTIVE


def test_a_complete_split_tree_covers_all_phases() -> None:
    assert covers_all_phases([{}])
    assert covers_all_phases([{N1: ACT}, {N1: INA}])
    assert covers_all_phases(
        [{N1: ACT, N2: ACT}, {N1: ACT, N2: INA}, {N1: INA, N2: ACT}, {N1: INA, N2: INA}]
    )
    # Unbalanced: only the inactive branch of N1 is split further, on a different neuron.
    assert covers_all_phases([{N1: ACT}, {N1: INA, N3: ACT}, {N1: INA, N3: INA}])
    # Leaves from different trees that still cover together.
    assert covers_all_phases([{N1: ACT}, {N2: ACT}, {N1: INA, N2: INA}])


def test_a_split_tree_with_a_branch_missing_does_not_cover() -> None:
    assert not covers_all_phases([])
    assert not covers_all_phases([{N1: ACT}])
    assert not covers_all_phases([{N1: ACT, N2: ACT}, {N1: ACT, N2: INA}, {N1: INA, N2: ACT}])
    assert not covers_all_phases([{N1: ACT}, {N1: INA, N3: ACT}])
    assert not covers_all_phases([{N1: ACT}, {N2: ACT}, {N1: INA, N2: INA, N3: ACT}])


@settings(deadline=None, max_examples=200)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([N1, N2, N3, Neuron(1, 1)]), st.sampled_from(list(Phase)), max_size=4
        ),
        max_size=8,
    )
)
def test_coverage_agrees_with_enumerating_every_phase_assignment(
    leaves: list[dict[Neuron, Phase]],
) -> None:
    neurons = [N1, N2, N3, Neuron(1, 1)]
    expected = all(
        any(all(assignment[n] == p for n, p in leaf.items()) for leaf in leaves)
        for assignment in (
            dict(zip(neurons, phases, strict=True)) for phases in itertools.product(Phase, repeat=4)
        )
    )
    assert covers_all_phases(leaves) == expected


# ---------------------------------------------------------------------------------------------
# Small pieces


@settings(deadline=None, max_examples=200)
@given(st.fractions(), st.sampled_from([UPPER, LOWER]))
def test_outward_rounding_gives_a_float_on_the_safe_side(value: Fraction, sign: int) -> None:
    rounded = round_outward(value, sign)
    assert Fraction(float(rounded)) == rounded
    assert sign * value <= sign * rounded


def test_a_passed_deadline_leaves_every_claim_unproved() -> None:
    network, box, _ = _case(7)
    claims = {n: Phase.ACTIVE for n in network.hidden_neurons()}
    proof = prove_box(network, box, 0, claims, time.monotonic() - 1.0)
    assert proof.lemmas == {} and proof.facts == {}
    assert prove_box(network, box, 0, {}, _far_future()).lemmas == {}


def test_in_a_layer_before_the_deepest_claims_are_proved_before_the_other_neurons() -> None:
    network = random_network(np.random.default_rng(3), [3, 6, 6, 2])
    box = Box(-np.ones(3), np.ones(3))
    claims = {Neuron(1, 4): Phase.ACTIVE, Neuron(1, 5): Phase.INACTIVE, Neuron(2, 0): Phase.ACTIVE}
    proof = prove_box(network, box, 0, claims, _far_future())
    order = [lemma.neuron for lemma in proof.lemmas.values() if lemma.neuron.layer == 1]
    assert order[:4] == [Neuron(1, 4), Neuron(1, 4), Neuron(1, 5), Neuron(1, 5)]
    assert sorted(set(order)) == [Neuron(1, i) for i in range(6)]


def test_lemma_and_context_ids_name_box_layer_neuron_and_sense() -> None:
    assert lemma_id(2, Neuron(1, 7), UPPER) == "b2.L1.n7.upper"
    assert lemma_id(0, Neuron(0, 0), LOWER) == "b0.L0.n0.lower"
    assert context_id(1, 3) == "b1.ctx3"


def test_an_empty_case_split_branch_gets_an_exact_certificate_that_z3_accepts() -> None:
    # On x in [-1, 1], g0 = x - 0.5 and g1 = -x - 0.5 cannot both be >= 0: the branch that
    # assumes both active is empty, so it proves any bound (here: g2 = h0 + h1 + 5 <= 0).
    from verifier.certify import _empty_branch_leaf, leaf_bound, leaf_obligation
    from verifier.domain import Box
    from verifier.ir import AffineLayer, Network
    from verifier.relaxation import NeuronFact, Relaxation
    from verifier.smt import SmtVerdict, check
    from verifier.status import Neuron, Phase

    network = Network(
        (
            AffineLayer(np.array([[1.0], [-1.0]]), np.array([-0.5, -0.5]), relu=True),
            AffineLayer(np.array([[1.0, 1.0]]), np.array([5.0]), relu=True),
            AffineLayer(np.array([[1.0]]), np.array([0.0]), relu=False),
        )
    )
    box = Box(np.array([-1.0]), np.array([1.0]))
    facts = {Neuron(0, 0): NeuronFact(Fraction(-3, 2), Fraction(1, 2))}
    facts[Neuron(0, 1)] = NeuronFact(Fraction(-3, 2), Fraction(1, 2))
    both_active = {Neuron(0, 0): Phase.ACTIVE, Neuron(0, 1): Phase.ACTIVE}
    relaxation = Relaxation(network, box, 1, facts, both_active)
    attempt = _empty_branch_leaf(relaxation, Neuron(1, 0), 1, 10.0)
    assert attempt.leaf is not None and attempt.bound is not None
    assert attempt.bound <= 0
    assert leaf_bound(relaxation, Neuron(1, 0), 1, attempt.leaf.multipliers) == attempt.bound
    obligation = leaf_obligation(relaxation, Neuron(1, 0), 1, attempt.leaf, "empty-branch")
    assert check(obligation).verdict is SmtVerdict.PROVED
    # The same multipliers prove nothing once the branch is not empty.
    one_active = Relaxation(network, box, 1, facts, {Neuron(0, 0): Phase.ACTIVE})
    assert leaf_bound(one_active, Neuron(1, 0), 1, attempt.leaf.multipliers) > 0
