"""Tests of the CP-SAT stability search: a faithful scaled encoding, agreement with a brute-force
pattern oracle on small networks, and the anytime / scaling-artefact guards."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from verify_compress import search as search_module
from verify_compress.bounds import symbolic_bounds
from verify_compress.config import Config
from verify_compress.domain import Box, Domain
from verify_compress.ir import AffineLayer, Network
from verify_compress.search import (
    SolveOutcome,
    build_model,
    per_neuron_search,
    scale_network,
    stability_search,
    stalled,
)
from verify_compress.status import Neuron, Phase
from verify_compress.witnesses import WitnessTable

from conftest import random_network
from oracle import stability_oracle

SIZES = ([2, 4, 4, 1], [3, 6, 5, 1], [2, 5, 5, 2])


def _random_box(rng: np.random.Generator, size: int, constant_input: bool = False) -> Box:
    lower = rng.uniform(-1.0, 0.5, size)
    upper = lower + rng.uniform(0.3, 2.5, size)
    if constant_input:
        upper[0] = lower[0]
    return Box(lower, upper)


def _solve_at(model_network: Network, box: Box, grid: np.ndarray, scale: int) -> tuple:
    bounds = symbolic_bounds(model_network, box)
    scaled = scale_network(model_network, box, bounds, scale, len(model_network.layers))
    model = build_model(scaled)
    for variable, value in zip(model.inputs, grid.tolist(), strict=True):
        model.model.add(variable == int(value))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    status = solver.solve(model.model)
    return scaled, model, solver, status


@settings(deadline=None, max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.sampled_from(SIZES),
    scale=st.sampled_from([16, 1000]),
    constant_input=st.booleans(),
)
def test_the_cp_sat_encoding_equals_the_scaled_integer_semantics_at_grid_points(
    seed: int, sizes: list[int], scale: int, constant_input: bool
) -> None:
    rng = np.random.default_rng(seed)
    network = random_network(rng, sizes)
    box = _random_box(rng, sizes[0], constant_input)
    probe = scale_network(network, box, symbolic_bounds(network, box), scale, 1)
    grid = rng.integers(probe.input_lower, probe.input_upper + 1)
    scaled, model, solver, status = _solve_at(network, box, grid, scale)

    point = scaled.to_real(grid)[0]
    assert box.contains(point)
    reference = scaled.forward(grid)
    inside = all(
        layer.lower[row] <= value <= layer.upper[row]
        for layer, values in zip(scaled.layers, reference, strict=True)
        for row, value in enumerate(values)
    )
    if not inside:
        # The domains only exclude grid points whose scaled values leave the widened bounds.
        assert solver.status_name(status) == "INFEASIBLE"
        return
    assert solver.status_name(status) == "OPTIMAL"
    exact = network.evaluate_exact(point)
    for layer_index, layer in enumerate(scaled.layers):
        for row, variable in model.pre[layer_index].items():
            value = solver.value(variable)
            assert value == reference[layer_index][row]
            real = float(exact.value(Neuron(layer_index, row)))
            assert abs(value / scale - real) <= layer.error[row] + 1e-12


def test_grid_points_map_back_exactly_into_the_box_even_far_from_zero() -> None:
    box = Box(np.array([1e6, -3.1, 0.25, 7.0]), np.array([1e6 + 1e-3, 2.9, 0.25, 7.000001]))
    network = random_network(np.random.default_rng(0), [4, 3, 1])
    scaled = scale_network(network, box, symbolic_bounds(network, box), 1000, 1)
    corners = np.stack([scaled.input_lower, scaled.input_upper, np.zeros_like(scaled.input_lower)])
    points = scaled.to_real(corners)
    assert all(box.contains(p) for p in points)
    assert points[0, 2] == 0.25  # a point input stays constant
    assert np.all(scaled.input_upper - scaled.input_lower >= 999)
    assert np.array_equal(scaled.nearest_grid(points[1]), scaled.input_upper)


def _cheap_analysis(
    network: Network, domain: Domain, seed: int, method: str
) -> tuple[WitnessTable, object, list[Neuron]]:
    rng = np.random.default_rng(seed)
    bounds = [symbolic_bounds(network, box) for box in domain.boxes]
    table = WitnessTable(network, domain)
    table.offer(domain.sample(3, rng), 0, "random")
    candidates = [n for n in network.hidden_neurons() if table.unseen_phases([n])]
    search = stability_search if method == "single" else per_neuron_search
    config = Config(workers=1, seed=seed)
    result = search(network, domain, bounds, table, candidates, config, time.monotonic() + 30)
    return table, result, candidates


@pytest.mark.parametrize(
    ("seed", "method"), [(s, "single") for s in range(24)] + [(s, "per-neuron") for s in range(6)]
)
def test_the_analysis_agrees_with_the_pattern_oracle_on_small_networks(
    seed: int, method: str
) -> None:
    rng = np.random.default_rng(1000 + seed)
    sizes = SIZES[seed % len(SIZES)]
    network = random_network(rng, sizes)
    box = _random_box(rng, sizes[0])
    oracle = stability_oracle(network, box)
    table, result, candidates = _cheap_analysis(network, Domain((box,)), seed, method)

    for neuron in network.hidden_neurons():
        stable_phases = oracle.stable_phases(neuron)
        if not stable_phases:
            assert neuron in table.unstable(), f"{neuron} is unstable but was not shown so"
        elif neuron in candidates:
            assert neuron not in table.unstable()
            assert result.claims.get(neuron) in stable_phases, f"{neuron}: wrong or no claim"
    assert not result.undecided
    assert result.notes == []  # ordinary weights and boxes: nothing given up


def _search_on_boxes(network: Network, boxes: list[tuple[float, float]]) -> tuple:
    domain = Domain(tuple(Box(np.array([low]), np.array([high])) for low, high in boxes))
    bounds = [symbolic_bounds(network, box) for box in domain.boxes]
    table = WitnessTable(network, domain)
    result = stability_search(
        network, domain, bounds, table, [Neuron(0, 0)], Config(workers=1), time.monotonic() + 10
    )
    return table, result


def test_a_neuron_stable_in_different_phases_on_two_boxes_is_shown_unstable() -> None:
    network = Network((AffineLayer(np.ones((1, 1)), np.zeros(1), True),))
    table, result = _search_on_boxes(network, [(-1.0, -0.5), (0.5, 1.0)])
    assert result.claims == {}
    assert Neuron(0, 0) in table.unstable()


@pytest.mark.parametrize("seed", range(6))
def test_on_two_boxes_a_claim_needs_the_same_stable_phase_on_both(seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    sizes = SIZES[seed % len(SIZES)]
    network = random_network(rng, sizes)
    boxes = (_random_box(rng, sizes[0]), _random_box(rng, sizes[0]))
    oracles = [stability_oracle(network, box) for box in boxes]
    domain = Domain(boxes)
    bounds = [symbolic_bounds(network, box) for box in boxes]
    table = WitnessTable(network, domain)
    table.offer(boxes[0].sample(2, rng), 0, "random")
    candidates = [n for n in network.hidden_neurons() if table.unseen_phases([n])]
    result = stability_search(
        network, domain, bounds, table, candidates, Config(workers=1), time.monotonic() + 30
    )
    for neuron in network.hidden_neurons():
        stable = oracles[0].stable_phases(neuron) & oracles[1].stable_phases(neuron)
        if not stable:
            assert neuron in table.unstable()
        elif neuron in candidates:
            assert result.claims.get(neuron) in stable
    assert not result.undecided


def test_a_tiny_time_limit_yields_undecided_never_a_claim() -> None:
    rng = np.random.default_rng(7)
    network = random_network(rng, [20, 60, 60, 60, 1])
    domain = Domain.box(-np.ones(20), np.ones(20))
    bounds = [symbolic_bounds(network, domain.boxes[0])]
    table = WitnessTable(network, domain)
    candidates = [n for n in network.hidden_neurons() if bounds[0].phase_of(n) is None]
    for search in (stability_search, per_neuron_search):
        result = search(
            network, domain, bounds, table, candidates, Config(workers=1), time.monotonic() + 0.05
        )
        assert result.claims == {}
        assert result.undecided == {n for n in candidates if table.unseen_phases([n])}


def test_an_unconfirmed_cp_sat_solution_is_never_turned_into_a_claim() -> None:
    # At scale 2 the scaled model shows (1,0) active at a grid point (G = 1), but exactly the
    # neuron is stably inactive on [0, 1] (the oracle confirms). The solution is offered, not
    # confirmed, the margin rises, and the neuron ends undecided (suspected inactive).
    network = Network(
        (
            AffineLayer(np.array([[-1.64], [-0.54], [0.27]]), np.array([0.4, 0.25, -0.18]), True),
            AffineLayer(np.array([[2.92, -0.38, -1.12]]), np.array([-1.12]), True),
            AffineLayer(np.ones((1, 1)), np.zeros(1), False),
        )
    )
    domain = Domain.box([0.0], [1.0])
    box = domain.boxes[0]
    target = Neuron(1, 0)
    assert stability_oracle(network, box).stable_phases(target) == {Phase.INACTIVE}
    bounds = [symbolic_bounds(network, box)]
    scaled = scale_network(network, box, bounds[0], 2, 2)
    grid = range(int(scaled.input_lower[0]), int(scaled.input_upper[0]) + 1)
    assert max(scaled.forward([k])[1][0] for k in grid) >= 1

    for search in (stability_search, per_neuron_search):
        table = WitnessTable(network, domain)
        config = Config(workers=1, search_scale=2)
        result = search(network, domain, bounds, table, [target], config, time.monotonic() + 10)
        assert target not in result.claims
        assert target in result.undecided
        assert result.suspected.get(target) is Phase.INACTIVE
        assert Phase.ACTIVE not in table.seen(target)
        assert sum(report.unconfirmed for report in result.per_box) >= 1


def test_on_a_point_domain_every_neuron_is_claimed_in_its_exact_phase() -> None:
    network = random_network(np.random.default_rng(3), [3, 5, 5, 1])
    point = [0.1, 0.2, 0.3]
    domain = Domain.box(point, point)
    bounds = [symbolic_bounds(network, domain.boxes[0])]
    exact = network.evaluate_exact(point)
    for search in (stability_search, per_neuron_search):
        table = WitnessTable(network, domain)
        hidden = network.hidden_neurons()
        result = search(
            network, domain, bounds, table, hidden, Config(workers=1), time.monotonic() + 10
        )
        assert not result.undecided
        for neuron in hidden:
            assert result.claims[neuron] is (
                Phase.ACTIVE if exact.sign(neuron) > 0 else Phase.INACTIVE
            )


def test_a_stage_stalls_after_ten_seconds_or_half_its_run_without_a_new_phase() -> None:
    assert not stalled(started=0.0, last_progress=0.0, now=9.0)
    assert stalled(started=0.0, last_progress=0.0, now=10.5)
    assert not stalled(started=0.0, last_progress=20.0, now=29.0)
    # In a long stage the silence must last half of the stage's run: from a phase seen at
    # 100 s, until 200 s.
    assert not stalled(started=0.0, last_progress=100.0, now=190.0)
    assert stalled(started=0.0, last_progress=100.0, now=201.0)


def test_a_single_search_that_makes_no_progress_stops_long_before_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A solver that never finds anything (always UNKNOWN): the stage must give up when it has
    # stalled, not spend the whole share; its candidates stay undecided, never claimed.
    def silent_solve(*_arguments: object, **_options: object) -> SolveOutcome:
        time.sleep(0.02)
        return SolveOutcome("UNKNOWN", 0.0, 0.0, [], [], 0.02)

    monkeypatch.setattr(search_module, "_solve", silent_solve)
    monkeypatch.setattr(search_module, "STALL_SECONDS", 0.3)
    network = random_network(np.random.default_rng(7), [4, 8, 8, 1])
    domain = Domain.box(-np.ones(4), np.ones(4))
    bounds = [symbolic_bounds(network, domain.boxes[0])]
    table = WitnessTable(network, domain)
    candidates = [n for n in network.hidden_neurons() if bounds[0].phase_of(n) is None]
    started = time.monotonic()
    result = stability_search(
        network, domain, bounds, table, candidates, Config(workers=1), started + 60
    )
    assert time.monotonic() - started < 20
    assert result.claims == {}
    assert result.undecided
    assert any("stalled" in note for note in result.notes)


def test_every_indicator_a_search_stage_poses_has_a_variable_in_the_stage_model() -> None:
    # Neuron (0, 1) has zero weights and bias -1: the scaled models fix it inactive, but no
    # point has shown it inactive yet (a fresh table). A stage that leaves it open (here: stages
    # that decide nothing) must not pose it to the next stage's model, where it has no variable
    # (the paper bench crashed with KeyError on such a neuron of an L1-trained MNIST net).
    network = Network(
        (
            AffineLayer(np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([0.0, -1.0]), True),
            AffineLayer(np.array([[1.0, 1.0]]), np.array([-0.25]), True),
            AffineLayer(np.ones((1, 1)), np.zeros(1), False),
        )
    )
    domain = Domain.box([0.0, 0.0], [1.0, 1.0])
    bounds = [symbolic_bounds(network, domain.boxes[0])]
    posed: list[tuple[int, Neuron]] = []

    def undecisive_stage(model: Any, indicators: set[Any], *_rest: Any) -> None:
        for neuron, _phase in indicators:
            posed.append((len(model.pre), neuron))
            assert neuron.index in model.pre[neuron.layer]

    table = WitnessTable(network, domain)
    search_module._search(
        network, domain, bounds, table, network.hidden_neurons(), Config(workers=1),
        time.monotonic() + 10, None, undecisive_stage, "test",
    )
    assert (1, Neuron(0, 1)) in posed  # the first stage does pose it (it has a variable there)
    assert (2, Neuron(0, 1)) not in posed
