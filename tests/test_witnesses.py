"""Tests for the witness table and search: every recorded phase is exactly true at its witness."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.bounds import symbolic_bounds
from verify_compress.config import Config
from verify_compress.domain import Box, Domain
from verify_compress.errors import DomainError
from verify_compress.ir import AffineLayer, Network
from verify_compress.status import Neuron, Phase
from verify_compress.witnesses import WitnessTable, corner_points, find_witnesses

from conftest import MNIST_NETWORK, random_network, require_benchmarks


def _identity_network(inputs: int) -> Network:
    """Hidden neuron i computes g = x_i exactly."""
    hidden = AffineLayer(np.eye(inputs), np.zeros(inputs), relu=True)
    output = AffineLayer(np.ones((1, inputs)), np.zeros(1), relu=False)
    return Network((hidden, output))


def _assert_witnesses_reproduce(table: WitnessTable, network: Network, domain: Domain) -> None:
    signs = {}
    for witness in table.witnesses():
        assert domain.boxes[witness.box].contains(witness.point)
        exact = network.evaluate_exact(witness.point)
        signs[id(witness)] = {neuron: exact.sign(neuron) for neuron in network.hidden_neurons()}
    for neuron in network.hidden_neurons():
        for phase in Phase:
            witness = table.witness_for(neuron, phase)
            assert (witness is not None) == (phase in table.seen(neuron))
            if witness is not None:
                assert signs[id(witness)][neuron] == (1 if phase is Phase.ACTIVE else -1)


def _random_domain(rng: np.random.Generator, inputs: int) -> Domain:
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        center = rng.normal(size=inputs)
        radius = rng.exponential(size=inputs)
        boxes.append(Box(center - radius, center + radius))
    return Domain(tuple(boxes))


@settings(deadline=None, max_examples=80)
@given(st.integers(0, 2**32 - 1))
def test_every_recorded_witness_lies_in_its_box_and_reproduces_its_phase_exactly(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(1, 4))
    sizes = [inputs, *(int(rng.integers(1, 6)) for _ in range(rng.integers(1, 4))), 2]
    network = random_network(rng, sizes)
    domain = _random_domain(rng, inputs)
    table = WitnessTable(network, domain)
    config = Config(samples=30, gradient_steps=8)
    data = rng.normal(scale=2.0, size=(5, inputs))
    find_witnesses(network, domain, table, network.hidden_neurons(), config, rng, data=data)
    _assert_witnesses_reproduce(table, network, domain)
    assert table.unstable() == {n for n in network.hidden_neurons() if len(table.seen(n)) == 2}
    used = {
        id(w) for n in network.hidden_neurons() for p in Phase if (w := table.witness_for(n, p))
    }
    assert used == {id(w) for w in table.witnesses()}


def test_an_exactly_zero_pre_activation_shows_neither_phase() -> None:
    network = _identity_network(1)
    table = WitnessTable(network, Domain.box([-1.0], [1.0]))
    assert table.offer(np.array([[0.0]]), 0, "random") == 0
    assert table.seen(Neuron(0, 0)) == set()
    assert table.offer(np.array([[0.5], [-0.25]]), 0, "random") == 2
    assert table.unstable() == {Neuron(0, 0)}


def test_a_float_pre_activation_that_rounds_to_zero_is_decided_exactly() -> None:
    # g = x0 + x1 - x2 at (1e16, 1, 1e16) is exactly 1, while float64 sums lose the 1.
    hidden = AffineLayer(np.array([[1.0, 1.0, -1.0]]), np.zeros(1), relu=True)
    network = Network((hidden, AffineLayer(np.ones((1, 1)), np.zeros(1), relu=False)))
    point = np.array([1e16, 1.0, 1e16])
    table = WitnessTable(network, Domain.box(point, point))
    assert float(network.forward(point).pre_activations[0][0, 0]) != 1.0
    table.offer(point[None, :], 0, "random")
    assert table.seen(Neuron(0, 0)) == {Phase.ACTIVE}


def test_offer_evaluates_greedily_and_skips_points_that_show_nothing_new() -> None:
    network = _identity_network(3)
    table = WitnessTable(network, Domain.box(-np.ones(3), np.ones(3)))
    assert table.offer(np.array([[1.0, 0.5, 0.25]]), 0, "random") == 3
    assert table.unseen_phases(network.hidden_neurons()) == {
        Neuron(0, i): {Phase.INACTIVE} for i in range(3)
    }
    points = np.array([[1.0, -1.0, 1.0], [-1.0, -0.5, -1.0], [1.0, 1.0, -1.0]])
    assert table.offer(points, 0, "corner") == 3
    assert table.exact_evaluations == 2
    assert [w.point.tolist() for w in table.witnesses()] == [[1.0, 0.5, 0.25], [-1.0, -0.5, -1.0]]
    assert table.witness_for(Neuron(0, 1), Phase.INACTIVE) is table.witnesses()[1]
    assert table.unseen_phases(network.hidden_neurons()) == {}


def test_offering_a_point_outside_its_box_or_to_a_missing_box_is_a_caller_bug() -> None:
    network = _identity_network(2)
    table = WitnessTable(network, Domain.box([0.0, 0.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="outside box 0"):
        table.offer(np.array([[0.5, 1.5]]), 0, "random")
    with pytest.raises(ValueError, match="box 1"):
        table.offer(np.array([[0.5, 0.5]]), 1, "random")
    with pytest.raises(ValueError, match="not a hidden neuron"):
        table.seen(Neuron(1, 0))


def test_data_rows_outside_the_domain_are_skipped_and_counted() -> None:
    network = _identity_network(2)
    domain = Domain.box([-1.0, -1.0], [1.0, 1.0])
    table = WitnessTable(network, domain)
    data = np.array([[0.5, -0.5], [3.0, 0.0], [-0.5, 0.5], [np.nan, 0.0]])
    report = find_witnesses(
        network, domain, table, network.hidden_neurons(), Config(), np.random.default_rng(0), data
    )
    assert (report.data_used, report.data_skipped) == (2, 2)
    assert table.unstable() == {Neuron(0, 0), Neuron(0, 1)}
    assert {w.source for w in table.witnesses()} == {"data"}
    assert [stage.name for stage in report.stages] == ["data"]


def test_data_of_the_wrong_width_is_a_domain_error() -> None:
    network = _identity_network(2)
    domain = Domain.box([-1.0, -1.0], [1.0, 1.0])
    table = WitnessTable(network, domain)
    with pytest.raises(DomainError, match="3 values"):
        find_witnesses(
            network, domain, table, [], Config(), np.random.default_rng(0), np.ones((1, 3))
        )


def test_a_deadline_in_the_past_runs_no_stage() -> None:
    network = random_network(np.random.default_rng(1), [3, 5, 2])
    domain = Domain.box(-np.ones(3), np.ones(3))
    table = WitnessTable(network, domain)
    report = find_witnesses(
        network,
        domain,
        table,
        network.hidden_neurons(),
        Config(),
        np.random.default_rng(0),
        deadline=time.monotonic() - 1.0,
    )
    assert report.stages == ()
    assert table.witnesses() == []


def test_the_search_is_deterministic_given_the_seed() -> None:
    network = random_network(np.random.default_rng(2), [4, 8, 8, 2])
    domain = Domain.box(-np.ones(4), np.ones(4))
    found = []
    for _ in range(2):
        table = WitnessTable(network, domain)
        find_witnesses(
            network,
            domain,
            table,
            network.hidden_neurons(),
            Config(samples=50),
            np.random.default_rng(7),
        )
        found.append([(w.point.tolist(), w.box, w.source) for w in table.witnesses()])
    assert found[0] == found[1]


def test_a_first_layer_corner_attains_the_exact_extreme_of_the_neuron_over_the_box() -> None:
    rng = np.random.default_rng(4)
    network = random_network(rng, [5, 6, 3, 2])
    box = Box(rng.normal(size=5) - 1.0, rng.normal(size=5) + 1.5)
    rows = [(Neuron(0, i), phase) for i in range(6) for phase in Phase]
    corners = corner_points(network, box, rows)
    weights = network.layers[0].weights
    bias = network.layers[0].bias
    for (neuron, phase), corner in zip(rows, corners, strict=True):
        value = network.evaluate_exact(corner).value(neuron)
        high = [
            Fraction(float(u if w > 0 else lo))
            for w, lo, u in zip(weights[neuron.index], box.lower, box.upper, strict=True)
        ]
        low = [
            Fraction(float(lo if w > 0 else u))
            for w, lo, u in zip(weights[neuron.index], box.lower, box.upper, strict=True)
        ]
        chosen = high if phase is Phase.ACTIVE else low
        extreme = Fraction(float(bias[neuron.index])) + sum(
            Fraction(float(w)) * x for w, x in zip(weights[neuron.index], chosen, strict=True)
        )
        assert value == extreme
        bounds = symbolic_bounds(network, box)
        if phase is Phase.ACTIVE:
            assert Fraction(bounds.upper[0][neuron.index]) >= value
        else:
            assert Fraction(bounds.lower[0][neuron.index]) <= value


def test_on_mnist_over_the_unit_box_almost_every_neuron_is_shown_unstable() -> None:
    require_benchmarks()
    from verify_compress.onnx_import import load_network

    network = load_network(MNIST_NETWORK)
    domain = Domain.box(np.zeros(784), np.ones(784))
    candidates = symbolic_bounds(network, domain.boxes[0]).undecided(network.hidden_neurons())
    table = WitnessTable(network, domain)
    config = Config()
    started = time.monotonic()
    report = find_witnesses(
        network, domain, table, candidates, config, config.rng(), deadline=started + 60.0
    )
    undecided = [neuron for neuron in candidates if len(table.seen(neuron)) < 2]
    print(
        f"mnist [0,1]^784: {len(undecided)} of {len(candidates)} candidates undecided after "
        f"{time.monotonic() - started:.2f} s, {table.exact_evaluations} exact evaluations, "
        f"stages {[(s.name, s.undecided) for s in report.stages]}"
    )
    assert len(undecided) <= 5
    _assert_witnesses_reproduce(table, network, domain)
