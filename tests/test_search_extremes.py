"""The CP-SAT search on extreme weights: it degrades (rescales, drops negligible weights, or
skips the stages that cannot be scaled) and says so in its notes, never crashes; and every
witness it reports is real (the exact sign of the pre-activation at the point)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify_compress.bounds import symbolic_bounds
from verify_compress.config import Config
from verify_compress.domain import Box, Domain
from verify_compress.ir import AffineLayer, Network
from verify_compress.search import (
    ScalingError,
    SearchResult,
    build_model,
    per_neuron_search,
    scale_network,
    stability_search,
)
from verify_compress.status import Neuron, Phase
from verify_compress.witnesses import Witness, WitnessTable

SEARCHES = {"single": stability_search, "per-neuron": per_neuron_search}


class _RecordingTable:
    """A witness table that also keeps every point the search offers."""

    def __init__(self, table: WitnessTable) -> None:
        self.table = table
        self.offered: list[npt.NDArray[np.float64]] = []

    def offer(self, points: npt.ArrayLike, box: int, source: str) -> int:
        self.offered.append(np.atleast_2d(np.asarray(points, dtype=np.float64)))
        return self.table.offer(points, box, source)

    def witnesses(self) -> Sequence[Witness]:
        return self.table.witnesses()

    def unseen_phases(self, neurons: Collection[Neuron]) -> Mapping[Neuron, set[Phase]]:
        return self.table.unseen_phases(neurons)


def _layer(weights: list[list[float]], bias: list[float], relu: bool = True) -> AffineLayer:
    return AffineLayer(np.array(weights, dtype=np.float64), np.array(bias, dtype=np.float64), relu)


def _search(
    network: Network, box: Box, method: str = "single", scale: int = 1000, seconds: float = 10.0
) -> tuple[SearchResult, _RecordingTable]:
    domain = Domain((box,))
    bounds = [symbolic_bounds(network, box)]
    table = _RecordingTable(WitnessTable(network, domain))
    config = Config(workers=1, seed=0, search_scale=scale)
    result = SEARCHES[method](
        network,
        domain,
        bounds,
        table,
        network.hidden_neurons(),
        config,
        time.monotonic() + seconds,
    )
    _assert_real(network, box, result, table)
    return result, table


def _assert_real(
    network: Network, box: Box, result: SearchResult, recording: _RecordingTable
) -> None:
    """Every offered point is in the box; every phase the table credits to a witness is the
    exact sign of the pre-activation there; no claim contradicts a seen phase."""
    for points in recording.offered:
        assert all(box.contains(point) for point in points)
    table = recording.table
    for neuron in network.hidden_neurons():
        for phase in table.seen(neuron):
            witness = table.witness_for(neuron, phase)
            assert witness is not None and box.contains(witness.point)
            sign = network.evaluate_exact(witness.point).sign(neuron)
            assert sign == (1 if phase is Phase.ACTIVE else -1), (neuron, phase, witness)
    for neuron, phase in result.claims.items():
        assert phase.opposite not in table.seen(neuron)


def _notes(result: SearchResult) -> str:
    return "\n".join(result.notes)


# ---------------------------------------------------------------------------------------------
# (a) subnormal weights


@pytest.mark.parametrize("method", SEARCHES)
def test_subnormal_weights_are_left_out_of_the_model_and_noted(method: str) -> None:
    # 1e-310 and 5e-324 are subnormal; 1e-310 * step is still nonzero, and the divisor that
    # would give it `scale` integer steps (2**1040) was the crash (float overflow of 1/typical).
    network = Network(
        (
            _layer([[1e-310, 5e-324], [1.0, -1.0]], [0.0, 0.1]),
            _layer([[5e-324, 1.0]], [0.0]),
            _layer([[1.0]], [0.0], relu=False),
        )
    )
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    result, table = _search(network, box, method)
    notes = _notes(result)
    assert "layer 0" in notes and "left out of the model" in notes, notes
    # The well-scaled neuron is still searched: (0, 1) is unstable on the box.
    assert Neuron(0, 1) in table.table.unstable()


@pytest.mark.parametrize("method", SEARCHES)
def test_a_wide_input_times_a_subnormal_weight_does_not_crash(method: str) -> None:
    network = Network((_layer([[5e-324]], [0.0]), _layer([[1.0]], [0.0], relu=False)))
    box = Box(np.array([-1e4]), np.array([1e4]))
    result, _ = _search(network, box, method)
    assert "left out of the model" in _notes(result)


@pytest.mark.parametrize("method", SEARCHES)
def test_a_subnormal_input_interval_is_held_constant_and_noted(method: str) -> None:
    network = Network((_layer([[1.0]], [0.0]), _layer([[1.0]], [0.0], relu=False)))
    box = Box(np.array([0.0]), np.array([5e-324]))
    result, _ = _search(network, box, method)
    assert "held at its lower bound" in _notes(result), _notes(result)


# ---------------------------------------------------------------------------------------------
# (b) 1e30 next to 1e-30


@pytest.mark.parametrize("method", SEARCHES)
def test_huge_weights_in_the_first_layer_skip_the_search_with_a_note(method: str) -> None:
    network = Network(
        (
            _layer([[1e30, 1e-30], [1e-30, -1e30]], [0.0, 0.0]),
            _layer([[1.0, 1.0]], [0.0]),
            _layer([[1.0]], [0.0], relu=False),
        )
    )
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    result, _ = _search(network, box, method)
    notes = _notes(result)
    assert "skipped" in notes and "layer 0" in notes, notes
    assert Neuron(0, 0) not in result.claims and Neuron(0, 1) not in result.claims
    assert result.per_box[0].stages == 0


@pytest.mark.parametrize("method", SEARCHES)
def test_huge_weights_in_a_later_layer_skip_only_the_stages_that_reach_it(method: str) -> None:
    network = Network(
        (
            _layer([[1.0, -1.0], [0.5, 1e-30]], [0.1, -0.2]),
            _layer([[1e30, -1e30], [1e-30, 1.0]], [0.0, 0.0]),
            _layer([[1.0, 1.0]], [0.0], relu=False),
        )
    )
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    result, table = _search(network, box, method)
    notes = _notes(result)
    assert "skipped" in notes and "layer 1" in notes, notes
    assert result.per_box[0].stages == 1
    # The first layer was searched: each of its neurons is shown unstable or claimed.
    for index in range(2):
        neuron = Neuron(0, index)
        assert neuron in table.table.unstable() or neuron in result.claims


@pytest.mark.parametrize("method", SEARCHES)
def test_large_weights_lower_the_search_scale_with_a_note(method: str) -> None:
    network = Network(
        (_layer([[1e15, -1e15], [1.0, 1.0]], [0.0, 0.5]), _layer([[1.0, 1.0]], [0.0], False))
    )
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    result, table = _search(network, box, method)
    assert "search scale lowered from 1000" in _notes(result), _notes(result)
    assert table.table.unstable() == {Neuron(0, 0), Neuron(0, 1)}


def test_scale_network_raises_a_scaling_error_not_an_overflow() -> None:
    network = Network((_layer([[1e30, 1e-30]], [0.0]), _layer([[1.0]], [0.0], relu=False)))
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ScalingError, match="layer 0"):
        scale_network(network, box, symbolic_bounds(network, box), 1000, 1)


# ---------------------------------------------------------------------------------------------
# (c) a weight of 1 next to 2**-60, with a flat input


@pytest.mark.parametrize("method", SEARCHES)
@pytest.mark.parametrize("flat", [0.5, 0.7])
def test_a_tiny_weight_on_the_only_varying_input_is_left_out_and_noted(
    method: str, flat: float
) -> None:
    # Input 0 is flat (folded into the bias); the only varying weight is 2**-60, so the divisor
    # that gives it `scale` steps (2**69) overflowed the bias and the domain in CP-SAT's int64.
    network = Network(
        (
            _layer([[1.0, 2.0**-60], [-1.0, 2.0**-60]], [-0.5, 0.5]),
            _layer([[1.0, 1.0]], [0.0], relu=False),
        )
    )
    box = Box(np.array([flat, -1.0]), np.array([flat, 1.0]))
    result, _ = _search(network, box, method)
    notes = _notes(result)
    assert "layer 0" in notes and "left out of the model" in notes, notes


def test_the_scaled_model_of_a_capped_layer_is_valid_for_cp_sat() -> None:
    network = Network((_layer([[1.0, 2.0**-60]], [-0.5]), _layer([[1.0]], [0.0], relu=False)))
    box = Box(np.array([0.7, -1.0]), np.array([0.7, 1.0]))
    scaled = scale_network(network, box, symbolic_bounds(network, box), 1000, 1)
    assert any("left out of the model" in note for note in scaled.notes)
    assert build_model(scaled).model.validate() == ""
    # G is the scaled bias, round(0.2 * 1000), at every grid point.
    grid = [int(scaled.input_lower[0]), 0, int(scaled.input_upper[0])]
    assert {scaled.forward([k])[0][0] for k in grid} == {200}


# ---------------------------------------------------------------------------------------------
# Random networks with weights across many orders of magnitude

MAGNITUDES = (0.0, 5e-324, 1e-310, 2.0**-60, 1e-30, 1e-6, 0.3, 1.0, 1.0, 3.0, 3.0, 1e6, 1e15, 1e30)
_weights = st.builds(
    lambda magnitude, sign, mantissa: sign * magnitude * mantissa,
    st.sampled_from(MAGNITUDES),
    st.sampled_from([-1.0, 1.0]),
    st.floats(0.5, 2.0),
)
_lowers = st.sampled_from([-1.0, 0.0, 0.25, -3.5, 1e6, -1e30])
_widths = st.sampled_from([0.0, 5e-324, 1e-300, 1e-12, 0.5, 2.0, 1e6])


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Network, Box]:
    sizes = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(2, 3)))] + [1]
    layers = []
    for position in range(len(sizes) - 1):
        rows, columns = sizes[position + 1], sizes[position]
        weights = [[draw(_weights) for _ in range(columns)] for _ in range(rows)]
        bias = [draw(_weights) for _ in range(rows)]
        layers.append(_layer(weights, bias, relu=position < len(sizes) - 2))
    lower = np.array([draw(_lowers) for _ in range(sizes[0])])
    upper = lower + np.array([draw(_widths) for _ in range(sizes[0])])
    return Network(tuple(layers)), Box(lower, upper)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases(), method=st.sampled_from(sorted(SEARCHES)))
def test_the_search_never_raises_on_extreme_weights_and_its_witnesses_are_real(
    case: tuple[Network, Box], method: str
) -> None:
    network, box = case
    _search(network, box, method, seconds=2.0)
    # Whatever scale_network accepts, CP-SAT accepts too (no MODEL_INVALID from an overflow).
    bounds = symbolic_bounds(network, box)
    try:
        scaled = scale_network(network, box, bounds, 1000, len(network.layers) - 1)
    except ScalingError:
        return
    assert build_model(scaled).model.validate() == ""
