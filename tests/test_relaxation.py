"""Tests for the LP relaxation: every row and bound holds for the real network on the box."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import random_network
from verifier.domain import Box
from verifier.exact import RationalArray
from verifier.ir import AffineLayer, Network
from verifier.relaxation import NeuronFact, Relaxation, Treatment, Variables, treatment
from verifier.status import Neuron, Phase


def _case(seed: int) -> tuple[Network, Box, np.random.Generator]:
    """A random 3-layer net (float32 or float64) and a random non-degenerate box."""
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(1, 4))
    sizes = [inputs, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 3))]
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    network = random_network(rng, sizes, dtype=dtype)
    lower = rng.uniform(-1.0, 0.5, size=inputs)
    return network, Box(lower, lower + rng.uniform(0.05, 1.5, size=inputs)), rng


def exact_interval_facts(network: Network, box: Box, layers: int) -> dict[Neuron, NeuronFact]:
    """True bounds of every neuron of the first `layers` layers, by exact interval arithmetic."""
    low = [Fraction(float(v)) for v in box.lower]
    high = [Fraction(float(v)) for v in box.upper]
    facts: dict[Neuron, NeuronFact] = {}
    for k in range(layers):
        layer = network.layers[k]
        weights = [row.to_fractions() for row in map(layer.exact_weights.row, range(layer.outputs))]
        bias = layer.exact_bias.to_fractions()
        g_low = [
            b
            + sum(
                (w * (lo if w > 0 else hi) for w, lo, hi in zip(row, low, high, strict=True)),
                Fraction(0),
            )
            for row, b in zip(weights, bias, strict=True)
        ]
        g_high = [
            b
            + sum(
                (w * (hi if w > 0 else lo) for w, lo, hi in zip(row, low, high, strict=True)),
                Fraction(0),
            )
            for row, b in zip(weights, bias, strict=True)
        ]
        for i in range(layer.outputs):
            facts[Neuron(k, i)] = NeuronFact(g_low[i], g_high[i])
        if layer.relu:
            low = [max(v, Fraction(0)) for v in g_low]
            high = [max(v, Fraction(0)) for v in g_high]
        else:
            low, high = g_low, g_high
    return facts


def real_assignment(relaxation: Relaxation, point: np.ndarray) -> list[Fraction]:
    """The exact value of every relaxation variable when the network runs on `point`."""
    network = relaxation.network
    layout = relaxation.variables
    exact = network.evaluate_exact(point)
    values = [Fraction(0)] * layout.count
    for j, value in enumerate(RationalArray.from_array(point).to_fractions()):
        values[layout.x(j)] = value
    for k in range(relaxation.layer):
        for i, g in enumerate(exact.pre_activations[k].to_fractions()):
            values[layout.g(k, i)] = g
            values[layout.a(k, i)] = max(g, Fraction(0)) if network.layers[k].relu else g
    return values


def _box_points(box: Box, rng: np.random.Generator, count: int) -> np.ndarray:
    corners = np.where(rng.random((count, box.size)) < 0.5, box.lower, box.upper)
    return np.concatenate([box.sample(count, rng), corners])


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**32 - 1))
def test_every_row_and_variable_bound_holds_at_real_points_of_the_box(seed: int) -> None:
    network, box, rng = _case(seed)
    facts = exact_interval_facts(network, box, 2)
    relaxation = Relaxation(network, box, 2, facts, {})
    lower, upper = relaxation.variable_bounds()
    rows = relaxation.small_rows()
    for point in _box_points(box, rng, 20):
        values = real_assignment(relaxation, point)
        for index, value in enumerate(values):
            name = relaxation.variables.name(index)
            assert lower[index] <= value <= upper[index], f"{name} = {value} outside its bounds"
        for key, (coefficients, constant, equality) in rows.items():
            slack = constant + sum((c * values[v] for v, c in coefficients.items()), Fraction(0))
            assert slack == 0 if equality else slack >= 0, f"row {key} violated: {slack}"


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1))
def test_an_assumed_phase_only_adds_rows_that_hold_where_the_neuron_has_that_phase(
    seed: int,
) -> None:
    network, box, rng = _case(seed)
    facts = exact_interval_facts(network, box, 2)
    unstable = [
        n for n in facts if n.layer < 2 and network.layers[n.layer].relu and facts[n].phase is None
    ]
    if not unstable:
        return
    neuron = unstable[int(rng.integers(len(unstable)))]
    for point in _box_points(box, rng, 20):
        sign = network.evaluate_exact(point).sign(neuron)
        phase = Phase.ACTIVE if sign >= 0 else Phase.INACTIVE
        relaxation = Relaxation(network, box, 2, facts, {neuron: phase})
        assert relaxation.treatment_of(neuron) == phase.value
        values = real_assignment(relaxation, point)
        lower, upper = relaxation.variable_bounds()
        assert all(lo <= v <= hi for lo, v, hi in zip(lower, values, upper, strict=True))
        for key, (coefficients, constant, equality) in relaxation.small_rows().items():
            slack = constant + sum((c * values[v] for v, c in coefficients.items()), Fraction(0))
            assert slack == 0 if equality else slack >= 0, f"row {key} violated under {phase}"


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1))
def test_float_lp_rows_and_objective_agree_with_the_network_at_real_points(seed: int) -> None:
    network, box, rng = _case(seed)
    facts = exact_interval_facts(network, box, 2)
    relaxation = Relaxation(network, box, 2, facts, {})
    keys, program = relaxation.linear_program()
    keys_again, rows = relaxation.lp_rows()
    assert keys == keys_again and program.size == relaxation.variables.count
    definitions = [f"def:{k}:{i}" for k in range(2) for i in range(network.layers[k].outputs)]
    assert keys == definitions + list(relaxation.small_rows())
    target = Neuron(2, int(rng.integers(network.layers[2].outputs)))
    for point in _box_points(box, rng, 5):
        values = np.array([float(v) for v in real_assignment(relaxation, point)])
        for key, row in zip(keys, rows, strict=True):
            activity = float(row.coefficients @ values[row.indices])
            scale = (
                1.0 + float(np.abs(row.coefficients) @ np.abs(values[row.indices])) + abs(row.rhs)
            )
            if row.equality:
                assert abs(activity - row.rhs) <= 1e-9 * scale, key
            else:
                assert activity >= row.rhs - 1e-9 * scale, key
        g = float(network.evaluate_exact(point).value(target))
        for sign in (1, -1):
            objective, constant = relaxation.target_objective(target, sign)
            assert objective @ values + constant == pytest.approx(sign * g, rel=1e-9, abs=1e-9)


def test_variable_layout_gives_every_variable_one_index_and_one_name() -> None:
    layout = Variables(input_size=2, layer_sizes=(3, 1))
    indices = [layout.x(0), layout.x(1)] + [
        f(k, i) for k, size in enumerate((3, 1)) for i in range(size) for f in (layout.g, layout.a)
    ]
    assert sorted(indices) == list(range(layout.count)) == list(range(10))
    names = [layout.name(index) for index in range(layout.count)]
    assert len(set(names)) == layout.count
    assert layout.name(layout.g(1, 0)) == "g_1_0" and layout.name(layout.a(0, 2)) == "a_0_2"
    with pytest.raises(IndexError):
        layout.name(layout.count)


def test_a_fact_has_a_phase_only_when_its_bounds_do_not_straddle_zero() -> None:
    assert NeuronFact(Fraction(0), Fraction(3)).phase is Phase.ACTIVE
    assert NeuronFact(Fraction(-2), Fraction(0)).phase is Phase.INACTIVE
    assert NeuronFact(Fraction(-1, 3), Fraction(1, 7)).phase is None


def test_assumptions_override_facts_and_layers_without_relu_are_linear() -> None:
    layers = (
        AffineLayer(np.eye(2), np.zeros(2), relu=True),
        AffineLayer(np.ones((1, 2)), np.zeros(1), relu=False),
    )
    network = Network(layers)
    straddling = NeuronFact(Fraction(-1), Fraction(1))
    assert treatment(network, Neuron(0, 0), straddling, {}) == Treatment.UNSTABLE
    assert (
        treatment(network, Neuron(0, 0), straddling, {Neuron(0, 0): Phase.ACTIVE})
        == Treatment.ACTIVE
    )
    assert (
        treatment(network, Neuron(0, 0), NeuronFact(Fraction(-3), Fraction(-1)), {})
        == Treatment.INACTIVE
    )
    assert (
        treatment(network, Neuron(1, 0), straddling, {Neuron(1, 0): Phase.INACTIVE})
        == Treatment.LINEAR
    )


def test_the_triangle_row_is_the_chord_through_both_ends_of_the_bounds() -> None:
    network = Network(
        (
            AffineLayer(np.eye(1), np.zeros(1), relu=True),
            AffineLayer(np.eye(1), np.zeros(1), relu=False),
        )
    )
    box = Box(np.array([-2.0]), np.array([3.0]))
    facts = {Neuron(0, 0): NeuronFact(Fraction(-2), Fraction(3))}
    relaxation = Relaxation(network, box, 1, facts, {})
    rows = relaxation.small_rows()
    assert set(rows) == {"above:0:0", "triangle:0:0"}
    coefficients, constant, equality = rows["triangle:0:0"]
    layout = relaxation.variables
    g, a = layout.g(0, 0), layout.a(0, 0)
    assert not equality
    for g_value, a_value in ((Fraction(-2), Fraction(0)), (Fraction(3), Fraction(3))):
        assert coefficients[g] * g_value + coefficients[a] * a_value + constant == 0
    # Above the chord is excluded: relu's graph lies below it.
    assert coefficients[g] * 0 + coefficients[a] * Fraction(2) + constant < 0
    lower, upper = relaxation.variable_bounds()
    assert (lower[a], upper[a]) == (Fraction(0), Fraction(3))
    assert (lower[g], upper[g]) == (Fraction(-2), Fraction(3))
