"""Tests for float pre-activation bounds: soundness against exact evaluation, tightness order."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.bounds import (
    LayerBounds,
    domain_bounds,
    interval_bounds,
    symbolic_bounds,
    symbolic_linear_bounds,
)
from verify_compress.domain import Box
from verify_compress.ir import AffineLayer, Network
from verify_compress.status import Neuron, Phase

from conftest import MNIST_NETWORK, random_network, require_benchmarks


def _random_case(seed: int) -> tuple[Network, Box, np.random.Generator]:
    """A small random net (float32 or float64) and a box that may be flat in some inputs."""
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(1, 5))
    sizes = [inputs] + [int(rng.integers(1, 7)) for _ in range(rng.integers(1, 4))]
    sizes.append(int(rng.integers(1, 4)))
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    network = random_network(rng, sizes, final_relu=bool(rng.random() < 0.3), dtype=dtype)
    center = rng.normal(scale=2.0, size=inputs)
    radius = rng.exponential(scale=1.0, size=inputs) * (rng.random(inputs) < 0.8)
    return network, Box(center - radius, center + radius), rng


def _box_points(box: Box, rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform points plus random corners (where interval bounds of layer 0 are attained)."""
    uniform = np.clip(box.sample(count, rng), box.lower, box.upper)
    corners = np.where(rng.random((count, box.size)) < 0.5, box.lower, box.upper)
    return np.concatenate([uniform, corners, box.center()[None, :]])


def _exact_phases(network: Network, point: np.ndarray) -> dict[Neuron, Phase]:
    exact = network.evaluate_exact(point)
    return {
        neuron: Phase.ACTIVE if exact.sign(neuron) >= 0 else Phase.INACTIVE
        for neuron in network.hidden_neurons()
    }


def _violations(network: Network, bounds: LayerBounds, point: np.ndarray) -> list[str]:
    """Exact pre-activations at `point` outside the bounds, compared exactly."""
    exact = network.evaluate_exact(point)
    found = []
    for layer, values in enumerate(exact.pre_activations):
        for index, value in enumerate(values.to_fractions()):
            lower = Fraction(float(bounds.lower[layer][index]))
            upper = Fraction(float(bounds.upper[layer][index]))
            if not lower <= value <= upper:
                found.append(f"({layer},{index}): {float(value)} not in [{lower}, {upper}]")
    return found


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 2**32 - 1))
def test_interval_and_symbolic_bounds_contain_every_exact_forward_pass(seed: int) -> None:
    network, box, rng = _random_case(seed)
    interval = interval_bounds(network, box)
    symbolic = symbolic_bounds(network, box)
    for point in _box_points(box, rng, 15):
        assert _violations(network, interval, point) == []
        assert _violations(network, symbolic, point) == []


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 2**32 - 1))
def test_bounds_with_fixed_phases_contain_every_point_where_those_phases_hold(seed: int) -> None:
    network, box, rng = _random_case(seed)
    points = _box_points(box, rng, 40)
    anchor = _exact_phases(network, points[0])
    chosen = [neuron for neuron in anchor if rng.random() < 0.5]
    fixed = {neuron: anchor[neuron] for neuron in chosen}
    interval = interval_bounds(network, box, fixed)
    symbolic = symbolic_bounds(network, box, fixed)
    checked = 0
    for point in points:
        phases = network.evaluate_exact(point)
        holds = all(
            phases.sign(neuron) >= 0 if phase is Phase.ACTIVE else phases.sign(neuron) <= 0
            for neuron, phase in fixed.items()
        )
        if holds:
            checked += 1
            assert _violations(network, interval, point) == []
            assert _violations(network, symbolic, point) == []
    assert checked >= 1


@settings(deadline=None, max_examples=80)
@given(st.integers(0, 2**32 - 1))
def test_symbolic_bounds_are_never_looser_than_interval_bounds(seed: int) -> None:
    network, box, rng = _random_case(seed)
    fixed = _exact_phases(network, box.center()) if rng.random() < 0.3 else None
    interval = interval_bounds(network, box, fixed)
    symbolic = symbolic_bounds(network, box, fixed)
    for layer in range(len(network.layers)):
        assert np.all(symbolic.lower[layer] >= interval.lower[layer])
        assert np.all(symbolic.upper[layer] <= interval.upper[layer])


def _cancelling_network() -> Network:
    """g = relu(x) - relu(x) + 0.5 over x in [0, 1]: interval arithmetic misses the cancel."""
    first = AffineLayer(np.array([[1.0], [1.0]]), np.zeros(2), relu=True)
    second = AffineLayer(np.array([[1.0, -1.0]]), np.array([0.5]), relu=True)
    return Network((first, second))


def test_symbolic_bounds_see_cancellation_that_interval_bounds_miss() -> None:
    network = _cancelling_network()
    box = Box(np.array([0.0]), np.array([1.0]))
    interval = interval_bounds(network, box)
    symbolic = symbolic_bounds(network, box)
    assert interval.lower[1][0] == pytest.approx(-0.5, abs=1e-8)
    assert symbolic.lower[1][0] == pytest.approx(0.5, abs=1e-8)
    assert symbolic.upper[1][0] == pytest.approx(0.5, abs=1e-8)
    assert symbolic.phase_of(Neuron(1, 0)) is Phase.ACTIVE
    assert interval.phase_of(Neuron(1, 0)) is None


def test_symbolic_linear_bounds_of_the_first_layer_are_its_weights() -> None:
    network = random_network(np.random.default_rng(3), [4, 3, 2])
    box = Box(-np.ones(4), np.ones(4))
    _, linear = symbolic_linear_bounds(network, box)
    np.testing.assert_array_equal(linear[0].upper_coefficients, network.layers[0].float_weights)
    np.testing.assert_array_equal(linear[0].lower_coefficients, network.layers[0].float_weights)


def test_a_fixed_inactive_neuron_contributes_nothing_downstream() -> None:
    network = _cancelling_network()
    box = Box(np.array([0.0]), np.array([1.0]))
    fixed = {Neuron(0, 0): Phase.INACTIVE, Neuron(0, 1): Phase.INACTIVE}
    for bounds in (interval_bounds(network, box, fixed), symbolic_bounds(network, box, fixed)):
        assert bounds.upper[0][0] <= 0.0
        assert bounds.lower[1][0] == pytest.approx(0.5, abs=1e-8)
        assert bounds.upper[1][0] == pytest.approx(0.5, abs=1e-8)


def test_phase_of_claims_a_phase_only_when_the_bounds_do() -> None:
    bounds = LayerBounds([np.array([0.0, -1.0, -2.0, 0.0])], [np.array([1.0, 0.0, 3.0, 0.0])])
    assert bounds.phase_of(Neuron(0, 0)) is Phase.ACTIVE
    assert bounds.phase_of(Neuron(0, 1)) is Phase.INACTIVE
    assert bounds.phase_of(Neuron(0, 2)) is None
    assert bounds.phase_of(Neuron(0, 3)) is Phase.INACTIVE
    assert bounds.undecided([Neuron(0, i) for i in range(4)]) == [Neuron(0, 2)]


def test_domain_bounds_are_the_hull_of_the_box_bounds() -> None:
    first = LayerBounds([np.array([-1.0, 2.0])], [np.array([0.5, 3.0])])
    second = LayerBounds([np.array([0.0, -4.0])], [np.array([2.0, 1.0])])
    hull = domain_bounds([first, second])
    np.testing.assert_array_equal(hull.lower[0], [-1.0, -4.0])
    np.testing.assert_array_equal(hull.upper[0], [2.0, 3.0])


def test_a_box_of_the_wrong_dimension_or_a_non_hidden_fixed_neuron_is_a_caller_bug() -> None:
    network = random_network(np.random.default_rng(0), [3, 4, 2])
    with pytest.raises(ValueError, match="inputs"):
        symbolic_bounds(network, Box(np.zeros(2), np.ones(2)))
    with pytest.raises(ValueError, match="not a hidden neuron"):
        interval_bounds(network, Box(np.zeros(3), np.ones(3)), {Neuron(1, 0): Phase.ACTIVE})


def test_on_mnist_symbolic_bounds_contain_forward_passes_and_beat_interval_bounds() -> None:
    benchmarks = require_benchmarks()
    from verify_compress.domain import parse_vnnlib
    from verify_compress.onnx_import import load_network

    network = load_network(MNIST_NETWORK)
    box = parse_vnnlib(benchmarks / "mnistfc" / "prop_0_0.03.vnnlib", 784).boxes[0]
    rng = np.random.default_rng(0)
    bounds = symbolic_bounds(network, box)
    forward = network.forward(_box_points(box, rng, 200))
    for layer, values in enumerate(forward.pre_activations):
        assert np.all(values >= bounds.lower[layer])
        assert np.all(values <= bounds.upper[layer])
    hidden = network.hidden_neurons()
    assert len(bounds.undecided(hidden)) < len(interval_bounds(network, box).undecided(hidden))
