"""Branch and bound: the case splits and bisections the producer finds, and what the kernel
(`verify_compress.kernel.stability`) makes of them.

The producer (`verify_compress.branching`) only chooses where to cut and what to assume; every test
here checks its output with the kernel, and with the brute-force oracle where truth matters.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.branching import (
    ProofBoxes,
    TriangleLps,
    _FloatScreen,
    _prove_case,
    bisect_until_proved,
    split_by_cases,
)
from verify_compress.domain import Box, Domain
from verify_compress.ir import AffineLayer, Network
from verify_compress.kernel.bounds import ExactNetwork, box_bounds, narrowed, target_bound
from verify_compress.kernel.stability import (
    Case,
    CaseSplit,
    case_split_holds,
    covers_all_phases,
    proof_box_bounds,
    proved_claims,
)
from verify_compress.propagation import dual_value
from verify_compress.status import Neuron, Phase
from verify_compress.subdomains import Subdomains, bisect
from verify_compress.witnesses import WitnessTable

from conftest import network
from oracle import stability_oracle

TARGET = Neuron(1, 0)
LATER = time.monotonic() + 3600.0
"""A deadline no test reaches."""


def phase_correlated() -> tuple[Network, Box]:
    """g(1,0) = relu(x1 + 2) - relu(x1 + x2) - 0.75 >= 0.25 on [-1, 1]^2: the triangle
    relaxation of the unstable (0,0) = x1 + x2 costs 1, but in each of its phases the bound is
    exact: active, g(1,0) = 1.25 - x2; inactive, g(1,0) = x1 + 1.25."""
    net = network(([[1.0, 1.0], [1.0, 0.0]], [0.0, 2.0]), ([[-1.0, 1.0]], [-0.75]), ([[1.0]], [0]))
    return net, Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))


def two_kinks() -> tuple[Network, Box]:
    """g(1,0) = relu(x) - relu(x - 0.5) - 0.6, in [-0.6, -0.1] on [-1, 1]: the whole box's
    relaxation gives 0.4; on each half of x = 0 one kink is gone and the bound is -0.1."""
    net = network(([[1.0], [1.0]], [0.0, -0.5]), ([[1.0, -1.0]], [-0.6]), ([[1.0]], [0]))
    return net, Box(np.array([-1.0]), np.array([1.0]))


def whole(box: Box) -> Subdomains:
    return Subdomains.whole(Domain((box,)))


def root_of(exact: ExactNetwork, box: Box) -> ProofBoxes:
    return ProofBoxes(0, [box], [box_bounds(exact, box)], [None])


class DeafTable(WitnessTable):
    """A witness table that records nothing: no claim is ever refuted, so the producer keeps
    trying to prove whatever it is given."""

    def offer(self, points: object, box: int, source: str) -> int:
        return 0


def kernel_verdict(
    exact: ExactNetwork, box: Box, root: ProofBoxes, claims: dict[Neuron, Phase]
) -> dict[Neuron, Phase]:
    """What the kernel proves from the producer's tree and case splits, recomputing every
    bound from the tree alone (as `check` does)."""
    subdomains = Subdomains.from_trees(Domain((box,)), [root.tree()])
    bounds = proof_box_bounds(exact, subdomains)
    for k, produced in enumerate(root.bounds):
        for layer in range(len(produced.lower)):
            assert np.array_equal(bounds[k].lower[layer], produced.lower[layer])
            assert np.array_equal(bounds[k].upper[layer], produced.upper[layer])
    valid = [s for s in root.case_splits if case_split_holds(exact, subdomains, bounds, s)]
    return proved_claims(subdomains, bounds, valid, claims)


def with_multipliers(split: CaseSplit, multipliers: tuple[np.ndarray, ...] | None) -> CaseSplit:
    cases = tuple(dataclasses.replace(case, multipliers=multipliers) for case in split.cases)
    return dataclasses.replace(split, cases=cases)


def random_network(seed: int, sizes: list[int]) -> Network:
    rng = np.random.default_rng(seed)
    layers = []
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weights = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)
        bias = rng.standard_normal(fan_out) * 0.3
        layers.append(AffineLayer(weights, bias, k < len(sizes) - 2))
    return Network(tuple(layers))


def random_box(seed: int, size: int) -> Box:
    rng = np.random.default_rng(seed + 1)
    centre = rng.uniform(-1, 1, size)
    radius = rng.uniform(0.1, 1.0, size)
    return Box(centre - radius, centre + radius)


# ---------------------------------------------------------------------------------------------
# Case splits


def test_a_claim_the_box_bounds_miss_is_proved_by_a_case_split() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    claims = {TARGET: Phase.ACTIVE}
    assert not bounds.shows(TARGET, Phase.ACTIVE)
    assert proved_claims(whole(box), [bounds], [], claims) == {}

    split = split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 4, 16, LATER)

    assert split is not None
    assert (split.box, split.neuron, split.phase) == (0, TARGET, Phase.ACTIVE)
    assert {dict(case.assumptions).get(Neuron(0, 0)) for case in split.cases} == set(Phase)
    assert covers_all_phases(dict(case.assumptions) for case in split.cases)
    assert case_split_holds(exact, whole(box), [bounds], split)
    assert proved_claims(whole(box), [bounds], [split], claims) == claims


def test_a_case_split_with_one_case_removed_is_rejected() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    split = split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 4, 16, LATER)
    assert split is not None and len(split.cases) >= 2
    for removed in range(len(split.cases)):
        cases = split.cases[:removed] + split.cases[removed + 1 :]
        partial = dataclasses.replace(split, cases=cases)
        assert not covers_all_phases(dict(case.assumptions) for case in cases)
        assert not case_split_holds(exact, whole(box), [bounds], partial), f"without {removed}"


def test_a_case_split_is_rejected_for_the_wrong_phase_box_or_assumptions() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    split = split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 4, 16, LATER)
    assert split is not None
    kink = Neuron(0, 0)
    tampered = {
        "wrong phase": dataclasses.replace(split, phase=Phase.INACTIVE),
        "no such box": dataclasses.replace(split, box=1),
        "no cases": dataclasses.replace(split, cases=()),
        "assumes its own layer": dataclasses.replace(
            split,
            neuron=Neuron(0, 1),
            cases=(Case(((kink, Phase.ACTIVE),)), Case(((kink, Phase.INACTIVE),))),
        ),
        "assumes both phases of one neuron": dataclasses.replace(
            split, cases=(Case(((kink, Phase.ACTIVE), (kink, Phase.INACTIVE))),)
        ),
        "multipliers of the wrong size": with_multipliers(split, (np.ones(3),)),
        "multipliers for a layer too many": with_multipliers(split, (np.ones(2), np.ones(2))),
        "non-finite multipliers": with_multipliers(split, (np.array([np.nan, 1.0]),)),
        "multipliers that show nothing": with_multipliers(split, (np.zeros(2),)),
    }
    for name, bad in tampered.items():
        assert not case_split_holds(exact, whole(box), [bounds], bad), name
    assert case_split_holds(exact, whole(box), [bounds], split)


def test_a_case_split_proves_nothing_on_a_sub_box_outside_the_box_it_was_made_on() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    split = split_by_cases(net, exact, box, 0, root.bounds[0], TARGET, Phase.ACTIVE, 4, 16, LATER)
    assert split is not None
    # A tree where box 0 is cut into 1 and 2, and the split is (wrongly) placed on half 1:
    # half 2 has neither bounds nor a split for the claim.
    _, below, above = bisect(box, 0)  # type: ignore[misc]
    root.boxes += [below, above]
    root.enclosing += [0, 0]
    root.bounds += [box_bounds(exact, b, enclosing=root.bounds[0]) for b in (below, above)]
    root.splits[0] = (0, 0.0, 1, 2)
    subdomains = Subdomains.from_trees(Domain((box,)), [root.tree()])
    claims = {TARGET: Phase.ACTIVE}
    on_half = dataclasses.replace(split, box=1)
    assert not root.bounds[2].shows(TARGET, Phase.ACTIVE)
    assert proved_claims(subdomains, root.bounds, [on_half], claims) == {}
    # On the box enclosing both halves it covers both.
    assert proved_claims(subdomains, root.bounds, [split], claims) == claims


def test_split_by_cases_gives_up_within_its_depth_case_count_and_deadline() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    assert split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 0, 16, LATER) is None
    assert split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 4, 1, LATER) is None
    past = time.monotonic() - 1.0
    assert split_by_cases(net, exact, box, 0, bounds, TARGET, Phase.ACTIVE, 4, 16, past) is None


def test_split_by_cases_finds_no_split_for_a_false_claim() -> None:
    net, box = phase_correlated()
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    programs = TriangleLps(net, box, bounds)
    # g(1,0) >= 0.25: INACTIVE is false; (0,0) = x1 + x2 is unstable, so both phases are false.
    for neuron, phase in ((TARGET, Phase.INACTIVE), (Neuron(0, 0), Phase.ACTIVE)):
        lp = programs.for_layer(neuron.layer)
        split = split_by_cases(net, exact, box, 0, bounds, neuron, phase, 6, 256, LATER, lp)
        assert split is None, f"{neuron} {phase}"


def test_lp_multipliers_prove_without_assumptions_a_claim_crowns_multipliers_miss() -> None:
    for seed in range(100):
        net, box = random_network(seed, [2, 4, 4, 1]), random_box(seed, 2)
        exact = ExactNetwork(net)
        bounds = box_bounds(exact, box)
        programs = TriangleLps(net, box, bounds)
        missed = [
            (n, p)
            for n in net.hidden_neurons()
            for p in Phase
            if n.layer == 1 and not bounds.shows(n, p)
        ]
        for neuron, phase in missed:
            lp = programs.for_layer(1)
            split = split_by_cases(net, exact, box, 0, bounds, neuron, phase, 0, 1, LATER, lp)
            if split is not None:
                break
        else:
            continue
        break
    else:
        pytest.fail("no claim that the LP's multipliers prove and CROWN's miss")
    assert len(split.cases) == 1
    (case,) = split.cases
    assert case.assumptions == () and case.multipliers is not None
    assert case_split_holds(exact, whole(box), [bounds], split)
    assert proved_claims(whole(box), [bounds], [split], {neuron: phase}) == {neuron: phase}
    crowns = with_multipliers(split, None)
    assert not case_split_holds(exact, whole(box), [bounds], crowns)
    assert phase in stability_oracle(net, box).stable_phases(neuron)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.integers(0, 3), st.sampled_from(list(Phase)), max_size=4),
        max_size=6,
    )
)
def test_covers_all_phases_agrees_with_enumerating_every_phase_combination(
    raw: list[dict[int, Phase]],
) -> None:
    cases = [{Neuron(0, i): p for i, p in case.items()} for case in raw]
    mentioned = sorted({n for case in cases for n in case})
    expected = bool(cases) and all(
        any(all(assignment[n] is p for n, p in case.items()) for case in cases)
        for phases in itertools.product(list(Phase), repeat=len(mentioned))
        for assignment in [dict(zip(mentioned, phases, strict=True))]
    )
    assert covers_all_phases(cases) == expected


def test_cases_that_overlap_without_forming_a_tree_can_still_cover() -> None:
    a, b = Neuron(0, 0), Neuron(0, 1)
    active, inactive = Phase.ACTIVE, Phase.INACTIVE
    assert covers_all_phases([{a: active}, {b: active}, {a: inactive, b: inactive}])
    assert not covers_all_phases([{a: active}, {b: active}, {a: inactive, b: active}])
    assert covers_all_phases([{}])
    assert not covers_all_phases([])


def test_every_case_split_found_on_random_nets_is_accepted_and_its_claim_is_true() -> None:
    found = 0
    for seed in range(20):
        net = random_network(seed, [3, 6, 6, 1])
        box = random_box(seed, 3)
        exact = ExactNetwork(net)
        bounds = box_bounds(exact, box)
        programs = TriangleLps(net, box, bounds)
        verdict = None
        for neuron in net.hidden_neurons():
            for phase in Phase:
                if neuron.layer == 0 or bounds.shows(neuron, phase):
                    continue
                lp = programs.for_layer(neuron.layer)
                split = split_by_cases(net, exact, box, 0, bounds, neuron, phase, 4, 16, LATER, lp)
                if split is None:
                    continue
                found += 1
                assert case_split_holds(exact, whole(box), [bounds], split)
                verdict = verdict or stability_oracle(net, box)
                assert phase in verdict.stable_phases(neuron), f"seed {seed}: {neuron} {phase}"
    assert found >= 5, "too few case splits found to test anything"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.data())
def test_the_float_estimate_of_a_bound_matches_the_kernels_exact_bound_for_given_multipliers(
    seed: int, data: st.DataObject
) -> None:
    net = random_network(seed, [3, 5, 5, 2])
    box = random_box(seed, 3)
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    neuron = Neuron(data.draw(st.integers(1, 2)), data.draw(st.integers(0, 1)))
    phase = data.draw(st.sampled_from(list(Phase)))
    assumed = Neuron(neuron.layer - 1, data.draw(st.integers(0, 4)))
    cases = [{}, {assumed: Phase.ACTIVE}, {assumed: Phase.INACTIVE}]
    assumptions = data.draw(st.sampled_from(cases))
    rng = np.random.default_rng(seed)
    multipliers = [rng.standard_normal(5) for _ in range(neuron.layer)]
    lowers, uppers = narrowed(bounds, neuron.layer, assumptions)
    if any(np.any(lo > hi) for lo, hi in zip(lowers, uppers, strict=True)):
        return  # a vacuous case: the kernel alone decides it
    sign = -1.0 if phase is Phase.INACTIVE else 1.0
    value = target_bound(exact, box, bounds, neuron, phase, assumptions, multipliers)
    assert value is not None
    estimate = dual_value(
        net, box.lower, box.upper, neuron.layer, neuron.index, sign, lowers, uppers, multipliers
    )
    assert estimate == pytest.approx(float(sign * value), rel=1e-9, abs=1e-9)


def test_the_float_screen_never_skips_a_case_the_kernel_proves() -> None:
    proved = skipped = 0
    for seed in range(25):
        net = random_network(seed, [3, 6, 6, 1])
        box = random_box(seed, 3)
        exact = ExactNetwork(net)
        bounds = box_bounds(exact, box)
        for neuron in net.hidden_neurons():
            if neuron.layer == 0:
                continue
            for phase in Phase:
                for earlier in range(6):
                    for assumed_phase in Phase:
                        case = {Neuron(0, earlier): assumed_phase}
                        screen = _FloatScreen(net, box, bounds, neuron, phase, case)
                        shows = bound_shows_exactly(exact, box, bounds, neuron, phase, case)
                        proved += shows
                        if not screen.may_show(None):
                            skipped += 1
                            assert not shows, f"seed {seed}: {neuron} {phase} {case}"
    assert proved >= 20 and skipped >= 20, (proved, skipped)


def bound_shows_exactly(
    exact: ExactNetwork,
    box: Box,
    bounds: object,
    neuron: Neuron,
    phase: Phase,
    case: dict[Neuron, Phase],
) -> bool:
    value = target_bound(exact, box, bounds, neuron, phase, case)  # type: ignore[arg-type]
    return value is None or (value <= 0 if phase is Phase.INACTIVE else value >= 0)


# ---------------------------------------------------------------------------------------------
# Bisection


def test_bisection_proves_on_the_halves_a_claim_the_whole_box_bounds_miss() -> None:
    net, box = two_kinks()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    claims = {TARGET: Phase.INACTIVE}
    assert not root.bounds[0].shows(TARGET, Phase.INACTIVE)
    assert proved_claims(whole(box), root.bounds, [], claims) == {}

    table = WitnessTable(net, Domain((box,)))
    rng = np.random.default_rng(0)
    # Case splits of no assumptions (a bound with the LP's multipliers) do not prove it either.
    bisect_until_proved(net, exact, root, 0, claims, table, rng, LATER, 64, max_depth=0)

    assert root.splits == {0: (0, 0.0, 1, 2)} and root.case_splits == []
    for leaf in root.leaves:
        assert root.bounds[leaf].shows(TARGET, Phase.INACTIVE), f"sub-box {leaf}"
    assert kernel_verdict(exact, box, root, claims) == claims
    assert TARGET not in table.unstable()


def test_each_half_has_bounds_at_least_as_tight_as_the_box_it_was_cut_from() -> None:
    # Find a net where a half's OWN bounds are looser than its enclosing box's somewhere, so
    # only the intersection with the enclosing box's bounds keeps them at least as tight.
    box = Box(np.array([-1.0]), np.array([1.0]))
    for seed in range(200):
        net = random_network(seed, [1, 4, 4, 4, 1])
        exact = ExactNetwork(net)
        root = root_of(exact, box)
        first = root.bounds[0]
        unstable = [Neuron(0, i) for i in range(4) if first.lower[0][i] < 0 < first.upper[0][i]]
        if not unstable:
            continue
        _, below, above = bisect(box, 0)  # type: ignore[misc]
        looser = any(
            np.any(own.lower[k] < root.bounds[0].lower[k])
            or np.any(own.upper[k] > root.bounds[0].upper[k])
            for own in (box_bounds(exact, below), box_bounds(exact, above))
            for k in range(len(own.lower))
        )
        if looser:
            break
    else:
        pytest.fail("no net whose halves' own bounds are looser than the whole box's")
    # A claim no bisection proves (a first-layer neuron that crosses zero), with no witness to
    # refute it: exactly one cut.
    table = DeafTable(net, Domain((box,)))
    claims = {unstable[0]: Phase.ACTIVE}
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(0), LATER, 2)
    assert root.enclosing == [None, 0, 0]
    for k in (1, 2):
        for layer in range(len(root.bounds[0].lower)):
            assert np.all(root.bounds[k].lower[layer] >= root.bounds[0].lower[layer])
            assert np.all(root.bounds[k].upper[layer] <= root.bounds[0].upper[layer])
    kernel_verdict(exact, box, root, claims)  # the kernel recomputes the same bounds


def test_bisection_stops_at_the_most_sub_boxes_allowed() -> None:
    net, box = two_kinks()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    # g(1,0) <= -0.1 everywhere: ACTIVE is false and no witness refutes it in a deaf table.
    claims = {TARGET: Phase.ACTIVE}
    table = DeafTable(net, Domain((box,)))
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(0), LATER, 8)
    assert len(root.leaves) == 8
    assert kernel_verdict(exact, box, root, claims) == {}


def test_bisection_does_nothing_after_its_deadline() -> None:
    net, box = two_kinks()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    table = WitnessTable(net, Domain((box,)))
    past = time.monotonic() - 1.0
    claims = {TARGET: Phase.INACTIVE}
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(0), past, 64)
    assert root.leaves == [0] and len(root.boxes) == 1 and root.splits == {}


def test_a_claim_refuted_by_points_sampled_in_the_halves_is_not_bisected_further() -> None:
    net, box = two_kinks()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    table = WitnessTable(net, Domain((box,)))
    # (0,0) = x changes sign at 0: the samples of the halves show both phases.
    claims = {Neuron(0, 0): Phase.ACTIVE}
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(0), LATER, 64)
    assert Neuron(0, 0) in table.unstable()
    assert len(root.leaves) == 2
    assert all(w.box == 0 and box.contains(w.point) for w in table.witnesses())


def test_a_bisection_tree_is_a_valid_cover_of_its_box() -> None:
    net = random_network(7, [2, 5, 5, 1])
    box = Box(np.array([-1.0, -2.0]), np.array([1.0, 0.5]))
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    claims = {n: Phase.ACTIVE for n in net.hidden_neurons()}
    table = DeafTable(net, Domain((box,)))
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(0), LATER, 16)
    subdomains = Subdomains.from_trees(Domain((box,)), [root.tree()])
    assert len(subdomains.leaves) == 16
    assert list(subdomains.leaves) == root.leaves
    volume = sum(
        np.prod(subdomains.boxes[k].upper - subdomains.boxes[k].lower) for k in subdomains.leaves
    )
    assert volume == pytest.approx(np.prod(box.upper - box.lower))
    for k, produced in enumerate(root.boxes):
        assert np.array_equal(subdomains.boxes[k].lower, produced.lower)
        assert np.array_equal(subdomains.boxes[k].upper, produced.upper)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(2, 4), min_size=1, max_size=2), st.data())
def test_whatever_bisection_does_the_kernel_recomputes_its_bounds_and_proves_only_true_claims(
    seed: int, hidden: list[int], data: st.DataObject
) -> None:
    net = random_network(seed, [2, *hidden, 1])
    box = random_box(seed, 2)
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    claims = {
        n: data.draw(st.sampled_from(list(Phase)), label=str(n)) for n in net.hidden_neurons()
    }
    table = WitnessTable(net, Domain((box,)))
    bisect_until_proved(net, exact, root, 0, claims, table, np.random.default_rng(seed), LATER, 24)
    proved = kernel_verdict(exact, box, root, claims)
    verdict = stability_oracle(net, box)
    for neuron, phase in proved.items():
        assert phase in verdict.stable_phases(neuron), f"false claim {neuron} {phase} proved"
        assert neuron not in table.unstable()


def test_pruning_drops_the_bisections_no_proved_claim_needs_and_keeps_every_proof() -> None:
    net, box = two_kinks()
    exact = ExactNetwork(net)
    root = root_of(exact, box)
    # The true claim needs one cut; the false one (deaf table: never refuted) drives the
    # bisection on to 16 sub-boxes, none of which the true claim needs.
    claims = {TARGET: Phase.INACTIVE}
    table = DeafTable(net, Domain((box,)))
    false_claim = {TARGET: Phase.ACTIVE}
    bisect_until_proved(
        net, exact, root, 0, claims, table, np.random.default_rng(0), LATER, 2, max_depth=0
    )
    bisect_until_proved(
        net, exact, root, 0, false_claim, table, np.random.default_rng(0), LATER, 16, max_depth=0
    )
    assert len(root.leaves) == 16
    pruned = root.pruned(claims)
    assert len(pruned.leaves) == 2 and len(pruned.boxes) == 3
    assert kernel_verdict(exact, box, pruned, claims) == claims
    assert root.pruned({}).leaves == [0]


def test_a_case_whose_assumptions_leave_the_relaxation_empty_is_proved_vacuous() -> None:
    # g(0,0) = x - 0.5 and g(0,1) = -x - 0.5 on [-1, 1] are never both >= 0, though each
    # interval allows it; the target g(1,0) = h0 + h1 + 1.5 > 0 everywhere (0.5 where both
    # were active), so "inactive" can hold only where the case's assumptions do: nowhere.
    net = network(([[1.0], [-1.0]], [-0.5, -0.5]), ([[1.0, 1.0]], [1.5]), ([[1.0]], [0.0]))
    box = Box(np.array([-1.0]), np.array([1.0]))
    exact = ExactNetwork(net)
    bounds = box_bounds(exact, box)
    both = {Neuron(0, 0): Phase.ACTIVE, Neuron(0, 1): Phase.ACTIVE}
    assert target_bound(exact, box, bounds, TARGET, Phase.INACTIVE, both) is not None
    program = TriangleLps(net, box, bounds).for_layer(1)
    assert program is not None and program.multipliers(TARGET, Phase.INACTIVE, both) is None
    case, _ = _prove_case(exact, box, bounds, TARGET, Phase.INACTIVE, both, program)
    assert case is not None and case.multipliers is not None
    value = target_bound(exact, box, bounds, TARGET, Phase.INACTIVE, both, case.multipliers)
    assert value is not None and value <= 0
    # Without the assumptions the same multipliers prove nothing: the claim is false.
    alone = target_bound(exact, box, bounds, TARGET, Phase.INACTIVE, {}, case.multipliers)
    assert alone is not None and alone > 0
