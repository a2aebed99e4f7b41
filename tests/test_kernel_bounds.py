"""The kernel's certified bounds: exact, sound on every point, as tight as CROWN."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.bounds import symbolic_bounds
from verify_compress.domain import Box
from verify_compress.ir import AffineLayer, Network
from verify_compress.kernel.bounds import (
    ExactNetwork,
    LayerBounds,
    bound_shows,
    box_bounds,
    target_bound,
)
from verify_compress.kernel.scaled import Scaled, round_fraction
from verify_compress.status import Neuron, Phase


def random_network(seed: int, sizes: list[int], dtype: type = np.float32) -> Network:
    rng = np.random.default_rng(seed)
    layers = []
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weights = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)
        weights[rng.random(weights.shape) < 0.2] = 0.0
        bias = rng.standard_normal(fan_out) * 0.3
        layers.append(AffineLayer(weights.astype(dtype), bias.astype(dtype), k < len(sizes) - 2))
    return Network(tuple(layers))


def random_box(seed: int, size: int) -> Box:
    rng = np.random.default_rng(seed + 1)
    centre = rng.uniform(-1, 1, size)
    radius = rng.uniform(0, 0.6, size)
    return Box(centre - radius, centre + radius)


networks = st.builds(
    random_network,
    st.integers(0, 10_000),
    st.lists(st.integers(1, 7), min_size=3, max_size=6),
    st.sampled_from([np.float32, np.float64]),
)


def exact_values_within(bounds: LayerBounds, network: Network, point: np.ndarray) -> bool:
    forward = network.evaluate_exact(point)
    for k in range(len(bounds.lower)):
        values = forward.pre_activations[k].to_fractions()
        for i, value in enumerate(values):
            if not Fraction(bounds.lower[k][i]) <= value <= Fraction(bounds.upper[k][i]):
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(networks, st.integers(0, 10_000))
def test_certified_bounds_contain_every_exact_forward_pass(network: Network, seed: int) -> None:
    box = random_box(seed, network.input_size)
    bounds = box_bounds(ExactNetwork(network), box)
    rng = np.random.default_rng(seed)
    points = np.vstack([box.sample(6, rng), box.lower, box.upper, box.center()])
    for point in points:
        assert exact_values_within(bounds, network, point)


@settings(max_examples=40, deadline=None)
@given(networks, st.integers(0, 10_000), st.data())
def test_a_bound_under_phase_assumptions_holds_wherever_the_assumptions_do(
    network: Network, seed: int, data: st.DataObject
) -> None:
    box = random_box(seed, network.input_size)
    exact = ExactNetwork(network)
    bounds = box_bounds(exact, box)
    hidden = network.hidden_neurons()
    deep = [n for n in hidden if n.layer > 0]
    if not deep:
        return
    target = data.draw(st.sampled_from(deep))
    earlier = [n for n in hidden if n.layer < target.layer]
    assumed = data.draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
    phases = {n: data.draw(st.sampled_from(list(Phase))) for n in assumed}
    for phase in Phase:
        value = target_bound(exact, box, bounds, target, phase, phases)
        for point in box.sample(40, np.random.default_rng(seed)):
            forward = network.evaluate_exact(point)
            holds = all(
                (forward.sign(n) >= 0) if p is Phase.ACTIVE else (forward.sign(n) <= 0)
                for n, p in phases.items()
            )
            if not holds:
                continue
            assert value is not None, "assumptions that hold at a point were called vacuous"
            g = forward.value(target)
            assert (g <= value) if phase is Phase.INACTIVE else (g >= value)


def test_kernel_bounds_are_as_tight_as_float_back_substitution() -> None:
    network = random_network(3, [6, 30, 30, 30, 4])
    box = random_box(3, 6)
    exact = box_bounds(ExactNetwork(network), box)
    floating = symbolic_bounds(network, box)
    for k in range(3):
        width = exact.upper[k] - exact.lower[k]
        float_width = floating.upper[k] - floating.lower[k]
        assert np.all(width <= float_width * (1 + 1e-3) + 1e-9)


def test_a_case_whose_assumptions_contradict_the_bounds_is_vacuous() -> None:
    network = random_network(5, [3, 4, 4, 2])
    box = random_box(5, 3)
    exact = ExactNetwork(network)
    bounds = box_bounds(exact, box)
    active = [i for i in range(4) if bounds.upper[0][i] < 0]
    if not active:
        bounds = LayerBounds(
            (np.full(4, -2.0), bounds.lower[1]), (np.full(4, -1.0), bounds.upper[1])
        )
        active = [0]
    assumed = {Neuron(0, active[0]): Phase.ACTIVE}
    value = target_bound(exact, box, bounds, Neuron(1, 0), Phase.ACTIVE, assumed)
    assert value is None
    assert bound_shows(value, Phase.ACTIVE)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64) | st.just(5e-324),
        min_size=1,
        max_size=20,
    )
)
def test_floats_become_the_exact_rationals_they_are(values: list[float]) -> None:
    scaled = Scaled.from_floats(np.array(values))
    for k, value in enumerate(values):
        assert scaled.value(k) == Fraction(value)


@given(st.fractions(), st.sampled_from(["down", "up"]))
def test_rounding_to_float_never_crosses_the_exact_value(value: Fraction, direction: str) -> None:
    rounded = Fraction(round_fraction(value, direction))
    assert rounded <= value if direction == "down" else rounded >= value
