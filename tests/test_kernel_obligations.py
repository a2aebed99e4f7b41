"""Tests for the stability obligations (verifier/kernel/obligations.py) and Z3 on them: Z3
confirms what the kernel proved on small random nets, refutes a bound nudged past validity,
and a claim rests on exactly the obligations of the boxes that show it."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify_compress.domain import Box, Domain
from verify_compress.kernel.bounds import ExactNetwork, LayerBounds, box_bounds
from verify_compress.kernel.obligations import (
    SmtEvidence,
    claim_evidence,
    layer_id,
    outward,
    stability_plan,
)
from verify_compress.kernel.stability import proof_box_bounds
from verify_compress.smt import Obligation, SmtVerdict, check
from verify_compress.status import Neuron, Phase
from verify_compress.subdomains import Bisection, Subdomains

from conftest import random_network


def _shown_claims(bounds: LayerBounds) -> dict[Neuron, Phase]:
    """Every neuron the bounds show stable, in the phase they show."""
    claims = {}
    for layer, lower in enumerate(bounds.lower):
        for i in range(lower.size):
            for phase in Phase:
                if bounds.shows(Neuron(layer, i), phase):
                    claims[Neuron(layer, i)] = phase
    return claims


def _whole(net_inputs: int, low: float, high: float) -> tuple[Domain, Subdomains]:
    domain = Domain.box(np.full(net_inputs, low), np.full(net_inputs, high))
    return domain, Subdomains.whole(domain)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), width=st.integers(2, 5))
def test_z3_confirms_every_claim_the_kernel_proves_on_a_small_random_net(
    seed: int, width: int
) -> None:
    rng = np.random.default_rng(seed)
    network = random_network(rng, [3, width, width, 2])
    exact = ExactNetwork(network)
    _, subdomains = _whole(3, -0.5, 0.5)
    bounds = proof_box_bounds(exact, subdomains)
    claims = _shown_claims(bounds[0])
    plan = stability_plan(exact, subdomains, bounds, [], claims)
    results = {o.id: check(Obligation(o.id, o.smtlib), 30.0).verdict for o in plan.obligations}
    assert all(v is SmtVerdict.PROVED for v in results.values()), results
    assert plan.confirmed(results) == set(claims)


def test_an_upper_bound_nudged_below_the_true_maximum_is_refuted_by_z3() -> None:
    rng = np.random.default_rng(3)
    network = random_network(rng, [3, 4, 4, 2])
    exact = ExactNetwork(network)
    _, subdomains = _whole(3, -0.5, 0.5)
    (bounds,) = proof_box_bounds(exact, subdomains)
    # First-layer bounds are exact interval bounds (a corner attains them): any lower upper
    # bound is false.
    upper = [u.copy() for u in bounds.upper]
    upper[0][0] = float(upper[0][0]) - 1e-3
    nudged = dataclasses.replace(bounds, upper=tuple(upper))
    assert check(_layer0_obligation(exact, subdomains, nudged), 30.0).verdict is (
        SmtVerdict.REFUTED
    )
    assert check(_layer0_obligation(exact, subdomains, bounds), 30.0).verdict is (SmtVerdict.PROVED)


def _layer0_obligation(
    exact: ExactNetwork, subdomains: Subdomains, bounds: LayerBounds
) -> Obligation:
    """The layer-0 obligation of box 0 with every layer-0 bound a goal: the premise of a
    (made-up) layer-1 claim."""
    shown = dataclasses.replace(
        bounds,
        upper=(bounds.upper[0], np.full_like(bounds.upper[1], -1.0), *bounds.upper[2:]),
    )
    plan = stability_plan(exact, subdomains, [shown], [], {Neuron(1, 0): Phase.INACTIVE})
    (first,) = [o for o in plan.obligations if o.id == layer_id(0, 0)]
    assert first.smtlib.count("(check-sat)") == 2 * bounds.lower[0].size
    return Obligation(first.id, first.smtlib)


def test_a_claim_shown_on_the_enclosing_box_rests_on_that_box_alone() -> None:
    rng = np.random.default_rng(7)
    network = random_network(rng, [2, 4, 3, 2])
    exact = ExactNetwork(network)
    domain = Domain.box(np.full(2, -1.0), np.full(2, 1.0))
    tree = Bisection(0, 0, 0.0, 1, 2)
    subdomains = Subdomains.from_trees(domain, [tree])
    bounds = proof_box_bounds(exact, subdomains)
    claims = _shown_claims(bounds[0])
    plan = stability_plan(exact, subdomains, bounds, [], claims)
    for neuron in claims:
        assert all(i.startswith("stability-b0-") for i in plan.rests_on[neuron])
    # A claim shown on each half only rests on both halves' obligations.
    halves = {
        n: p
        for n, p in _shown_claims(bounds[1]).items()
        if _shown_claims(bounds[2]).get(n) is p and n not in claims
    }
    plan = stability_plan(exact, subdomains, bounds, [], halves)
    for neuron in halves:
        boxes = {i.split("-")[1] for i in plan.rests_on[neuron]}
        assert boxes == {"b1", "b2"}


def test_a_claim_is_confirmed_only_when_every_obligation_it_rests_on_is_proved() -> None:
    ids = ["a", "b"]
    assert claim_evidence(ids, {"a": "proved", "b": "proved"}) is SmtEvidence.CONFIRMED
    assert claim_evidence(ids, {"a": "proved"}) is SmtEvidence.NOT_RUN
    assert claim_evidence(ids, {"a": "proved", "b": "not-run"}) is SmtEvidence.NOT_RUN
    assert claim_evidence(ids, {"a": "unknown", "b": "not-run"}) is SmtEvidence.UNKNOWN
    assert claim_evidence(ids, {"a": "refuted", "b": "proved"}) is SmtEvidence.UNKNOWN


@given(st.floats(-1e6, 1e6, allow_nan=False), st.integers(4, 53))
def test_outward_rounding_weakens_a_bound_and_keeps_its_sign(value: float, bits: int) -> None:
    down, up = outward(value, "down", bits), outward(value, "up", bits)
    assert down <= Fraction(value) <= up
    assert (down >= 0) == (value >= 0) and (up <= 0) == (value <= 0)


def test_the_texts_are_deterministic_and_name_every_box_coordinate_exactly() -> None:
    rng = np.random.default_rng(11)
    network = random_network(rng, [3, 3, 2])
    exact = ExactNetwork(network)
    box = Box(np.array([0.1, -0.2, 0.3]), np.array([0.2, 0.7, 0.30000000000000004]))
    domain = Domain((box,), "test")
    subdomains = Subdomains.whole(domain)
    bounds = [box_bounds(exact, box)]
    claims = _shown_claims(bounds[0])
    first = stability_plan(exact, subdomains, bounds, [], claims)
    second = stability_plan(exact, subdomains, bounds, [], claims)
    assert [o.sha256 for o in first.obligations] == [o.sha256 for o in second.obligations]
    for obligation in first.obligations:
        assert "(/ 3602879701896397.0 36028797018963968.0)" in obligation.smtlib  # 0.1 exactly


def test_a_claim_z3_refutes_is_reported_loudly_and_its_neuron_becomes_unknown() -> None:
    """A kernel bug simulated: an unstable first-layer neuron handed to the SMT tier as stably
    inactive with a made-up bound. Z3 refutes it; the run keeps the neuron (unknown) and
    says so; the other claims keep their status and their obligations."""
    from verify_compress.budget import Budget
    from verify_compress.config import Config
    from verify_compress.stability import analyse, confirm_with_smt
    from verify_compress.status import Status

    rng = np.random.default_rng(5)
    network = random_network(rng, [3, 6, 4, 2])
    domain = Domain.box(np.full(3, -1.0), np.ones(3))
    config = Config(time_limit=20, samples=200, workers=1)
    analysis = analyse(network, domain, config, np.random.default_rng(0), Budget(20.0))
    unstable = sorted(n for n, s in analysis.statuses.items() if s is Status.UNSTABLE)
    victim = next(n for n in unstable if n.layer == 0)
    upper = [u.copy() for u in analysis.bounds[0].upper]
    upper[0][victim.index] = -1.0
    bounds = [dataclasses.replace(analysis.bounds[0], upper=tuple(upper)), *analysis.bounds[1:]]
    statuses = {**analysis.statuses, victim: Status.STABLY_INACTIVE}
    buggy = dataclasses.replace(analysis, statuses=statuses, bounds=bounds)
    warnings: list[str] = []
    after, tier = confirm_with_smt(
        buggy, ExactNetwork(network), Budget(20.0), 1, warn=warnings.append
    )
    assert victim in tier.refuted
    assert after.statuses[victim] is Status.UNKNOWN
    assert len(warnings) == 1 and "BUG" in warnings[0] and str(victim) in warnings[0]
    assert victim not in tier.plan.rests_on
    kept = {n for n, s in after.statuses.items() if s.is_stable}
    assert kept == set(tier.plan.rests_on)


def test_a_neuron_pinned_to_zero_gets_both_phase_goals_so_either_claim_is_proved() -> None:
    rng = np.random.default_rng(2)
    network = random_network(rng, [3, 4, 3, 2])
    layer = network.layers[1]
    weights, bias = layer.weights.copy(), layer.bias.copy()
    weights[0], bias[0] = 0.0, 0.0  # g_1_0 = 0 everywhere
    layers = (network.layers[0], dataclasses.replace(layer, weights=weights, bias=bias))
    network = dataclasses.replace(network, layers=layers + network.layers[2:])
    exact = ExactNetwork(network)
    _, subdomains = _whole(3, -0.5, 0.5)
    bounds = proof_box_bounds(exact, subdomains)
    for phase in Phase:
        plan = stability_plan(exact, subdomains, bounds, [], {Neuron(1, 0): phase})
        (last,) = [o for o in plan.obligations if o.layer == 1]
        assert "(> g_1_0 0.0)" in last.smtlib and "(< g_1_0 0.0)" in last.smtlib
        assert check(Obligation(last.id, last.smtlib), 30.0).verdict is SmtVerdict.PROVED
