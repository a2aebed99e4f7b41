"""The stability search on CP-SAT: one scaled-integer model of the network per box.

Stage: ONNX -> IR -> domain and bounds -> witnesses -> **stability search** -> certification
-> compression -> equivalence -> certificate and report. This is the only module that imports
OR-Tools' CP-SAT.

Input: the hidden neurons that still have a phase nobody has seen (the *candidates*), the
per-box pre-activation bounds, and the witness table. Output: for every candidate either a
CLAIM (stably active / stably inactive), or `undecided`; as a side effect every input the
solver finds is offered to the witness table, which may show candidates unstable.

What is trusted, and what is not
--------------------------------
CP-SAT works on integers, so the model is the network in a *scaled integer semantics*
(`ScaledNetwork`): inputs restricted to a grid, weights rounded, and every layer's value
divided back to a fixed scale. That semantics is an approximation of the real network:
- a CP-SAT solution may not be a real witness: its input is therefore mapped back to the real
  domain (exactly: grid steps are powers of two, so the point is a float inside the box) and
  `WitnessTable.offer` re-evaluates it in exact rational arithmetic. Only that exact evaluation
  marks a phase as seen.
- CP-SAT's "optimum 0" (no grid point shows the phase in the scaled model) is a CLAIM, never a
  proof: the scaled model only sees grid points, and rounding may hide a real point where the
  pre-activation is slightly positive (resp. negative). Claims go to certification, which turns
  them into exact proofs or refutes them.
- Bounds are float hints too. They give the variable domains and fix the phase of neurons they
  decide; if they were wrong, the model could miss solutions (again: only a claim is lost or
  wrongly made, and certification catches wrong claims).

The scaled integer semantics
----------------------------
Input j varies on a grid of power-of-two step_j <= width_j / scale (about `scale` steps per
input), centred in the box: x_j = (m_j + k_j) * step_j with integer offset k_j, where the grid
indices m_j + k_j run over [ceil(lower_j / step_j), floor(upper_j / step_j)]. Every grid point
therefore lies in the box and is an exactly representable float; |k_j| stays near scale/2,
which keeps the rounding error small even far from 0. The centre m * step (and every input
with lower == upper) is folded exactly into the first layer's bias.

Every layer l has a divisor D_l, a power of two chosen so that a median weight becomes about
`scale` (`_divisor`), and computes from the previous integer values v (v = k for layer 0,
v = H_{l-1} otherwise; one unit of v_j is worth unit_j real units: step_j, resp. 1/scale):

    acc_i = sum_j A_ij v_j + B_i,    A_ij = round(W_ij * unit_j * scale * D_l),
                                     B_i  = round(b'_i * scale * D_l) + D_l // 2
    G_i   = floor(acc_i / D_l)       (a linear constraint: 0 <= acc_i - D_l * G_i <= D_l - 1)
    H_i   = max(G_i, 0) for a free ReLU, G_i for a neuron fixed active, 0 for one fixed
            inactive, G_i for a layer without ReLU.

(b' is the exact bias with the constant inputs folded in; the D_l // 2 makes the division
round to nearest.) So G_i / scale approximates the real pre-activation g_i at the grid point,
and the scale does not grow with depth. A neuron is *fixed* when the bounds decide its phase
or an earlier stage claimed it (see below). With sound bounds and true fixed phases,
|G_i / scale - g_i| <= error_i (`ScaledLayer.error`), where

    error_i = 1/(2 scale) + (sum_j max|v_j| + 1) / (2 scale D_l) + sum_j |W_ij| error_{l-1,j}

(division rounding; rounding of weights and bias; propagated error, ReLU being 1-Lipschitz).
The domain of G_i is the bound interval, scaled and widened by min(error_i, DOMAIN_SLACK *
width + 2/scale); `ScaledNetwork.forward` is the pure-integer reference of this semantics, and
the CP-SAT model (`build_model`) has, at each grid point, exactly its values, unless one of
them leaves its domain (then the model excludes the grid point).

CP-SAT's integers are 64-bit: it rejects a model in which a linear constraint may reach 2**62,
or whose variable domains add up beyond int64. `scale_network` keeps every row's possible sum
within `MAX_LINEAR_SUM` and the domains' total within `MAX_DOMAIN_TOTAL`, and degrades, never
fails, where extreme weights break them:
- where the divisor a layer's typical weight asks for would break them (tiny weights beside an
  ordinary bias or bound: 2**-60 on the only varying input, subnormal weights), D is capped
  and the weights that round to 0 are left out of the model (their rounding is in the error
  bound; the hint and the exact re-evaluation of solutions still use them);
- where even D = 1 breaks them (pre-activations of 1e15 at scale 1000), the stage is scaled
  again at a lower search scale, down to `MIN_LOWERED_SCALE`; below that (1e30) the stage and
  every deeper one are skipped, and their candidates stay open (undecided);
- inputs whose interval admits no float grid (a subnormal or overflowing width) are held at
  their lower bound.
Each of these is a note (`BoxReport.notes`, `SearchResult.notes`) for the caller to report. As
the model stays an approximation either way, nothing it yields gets more trust than before:
solutions are re-evaluated exactly, absences are claims.

The search
----------
On each box, candidates are taken in layer stages (shallowest first). Stage L builds one model
of the network up to layer L: a phase Boolean z per free neuron (z => G >= 0, H = G; not z =>
G <= 0, H = 0, plus the same in big-M form so that CP-SAT's LP sees it), and for every open
candidate phase of layers <= L an indicator literal, p => G >= margin ("seen active") or
q => G <= -margin ("seen inactive"), also linked to G in big-M form; it maximizes their sum.
Every solution is collected by a callback and offered to the witness table; confirmed
indicators are dropped and the model re-solved, until CP-SAT proves the optimum is 0 (the
remaining phases are CLAIMED absent on the box) or the stage's time is up (they stay open and
are retried in the next stage). A solve that makes no progress is followed by one round of
per-indicator feasibility problems (`stability_search`'s `proof_fallback`). Neurons claimed in
a stage are fixed in the next stages, and the bounds are recomputed under those claims, so
deeper claims are conditional on shallower ones (certification proves them in that order).

A solution the exact evaluation does not confirm (a scaling artefact) raises that indicator's
margin, up to the margin at which the error bound guarantees confirmation; a phase that is
only absent at a raised margin is never claimed (it is reported undecided, and `suspected`).

`per_neuron_search` solves one feasibility problem per candidate and unseen phase on the same
stage models instead (the pre-2021 approach), to measure the single model's speed-up.

Determinism: the solver gets `random_seed = config.seed` and `num_workers = config.workers`.
CP-SAT with one worker and no time limit reached is deterministic (the tests use one worker);
with several workers its portfolio is not, and wall-clock limits (the deadline, stage shares,
iteration caps and the early stop after an improving solution) make any run depend on timing.
Differences can only change which witnesses are found first and which neurons end undecided;
claims are still only made on a proved optimum 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt
from ortools.sat.python import cp_model

from .bounds import LayerBounds, symbolic_bounds
from .config import Config
from .domain import Box, Domain
from .exact import RationalArray
from .ir import Network
from .status import Neuron, Phase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ObjArray = npt.NDArray[np.object_]
Indicator = tuple[Neuron, Phase]
Progress = Callable[[str, int, int], None]
"""`progress(stage, decided, total)`, as in the witness search."""

FIXED_ACTIVE = 1
FREE = 0
FIXED_INACTIVE = -1

FIRST_ITERATION_SECONDS = 5.0
STALL_SECONDS = 10.0
STALL_FRACTION = 0.5
"""The single search leaves a stage once no phase has been seen or ruled out for
max(STALL_SECONDS, STALL_FRACTION * the time the stage has run): it runs after the cheap
proofs and only finds witnesses and hints, and the time it would spend stalled belongs to the
deeper proof pass that follows it (`stability._prove`)."""
"""Initial per-iteration CP-SAT time cap; doubled whenever an iteration ends without progress."""
STOP_AFTER_IMPROVEMENT_FACTOR = 1.0
"""After the first solution that shows a new phase, let the solver run this many times as long
again (plus `STOP_AFTER_IMPROVEMENT_SECONDS`) before stopping it to drop the seen indicators."""
STOP_AFTER_IMPROVEMENT_SECONDS = 1.0
HINT_WITNESSES = True
"""Give CP-SAT a complete hint (the scaled forward pass at the best recorded witness) as its
first solution. Essential on deep nets (ACAS Xu: without it CP-SAT finds no feasible point of
a 4-layer model in 20 s; with it, at once). The hint's conflict limit is 0: letting the
LP worker's search follow the hint made mnist-net_256x2 prop_0_0.03 iterations 5-10x slower."""
WEIGHT_QUANTILE = 0.5
MAX_INTEGER_WEIGHT = 2.0**24
"""Integer weights: a typical (median) weight of a layer gets about `scale` steps, no weight
more than this many (keeps CP-SAT's sums far from 64-bit overflow)."""
DOMAIN_SLACK = 0.25
"""The domain of G is the bound interval widened by the error bound, but by at most this
fraction of its width (plus 2/scale): the worst-case bound grows exponentially with depth
(ACAS Xu 1_1 on prop_3: 2e4 at layer 5, where the observed error is 0.2) and would make
the domains, hence CP-SAT's relaxations, useless. Grid points whose scaled values fall outside
are missed by the model (it is an approximation either way)."""
MARGIN_GROWTH = 8
"""Factor by which an indicator's margin grows after an unconfirmed solution."""
SOURCE_SINGLE = "search"
SOURCE_PER_NEURON = "search-per-neuron"
_MAX_GRID_INDEX = 2**50
MAX_LINEAR_SUM = 2**60
"""Most that any linear constraint of the model may reach, sum_j |a_j| * max|x_j| plus its
constant. CP-SAT rejects a model where such a sum may exceed 2**62 (int64 max / 2); the factor
4 absorbs the float rounding of the estimates made here."""
MAX_DOMAIN_TOTAL = 2**61
"""Most that the variables' domains may add up to (max(|min|, |max|, max - min) each): CP-SAT
requires the sum to fit in an int64."""
MIN_LOWERED_SCALE = 16
"""A stage that does not fit the limits at `config.search_scale` is scaled again at a scale
lowered by the estimated excess (twice over), but not below this; below it the stage, and
every deeper one, is skipped (and a note says so)."""
_RESCALE_ATTEMPTS = 3


class PreActivationBounds(Protocol):
    """Float pre-activation bounds of every affine layer on one box (`bounds.LayerBounds`)."""

    @property
    def lower(self) -> Sequence[FloatArray]: ...

    @property
    def upper(self) -> Sequence[FloatArray]: ...


class RecordedWitness(Protocol):
    """A witness point of one box (`witnesses.Witness`)."""

    @property
    def point(self) -> FloatArray: ...

    @property
    def box(self) -> int: ...


class WitnessRecorder(Protocol):
    """The part of `witnesses.WitnessTable` the search uses."""

    def offer(self, points: FloatArray, box: int, source: str) -> int: ...

    def witnesses(self) -> Sequence[RecordedWitness]: ...

    def unseen_phases(self, neurons: Collection[Neuron]) -> Mapping[Neuron, set[Phase]]: ...


# ---------------------------------------------------------------------------------------------
# Scaled integer semantics


class ScalingError(ValueError):
    """A layer's scaled integers do not fit CP-SAT's 64-bit limits (or float64) at this scale."""

    def __init__(self, layer: int, reason: str, excess: float) -> None:
        super().__init__(f"layer {layer}: {reason}")
        self.layer = layer
        self.excess = excess
        """How many times too large the scaled values are (inf: no scale helps). They shrink
        about in proportion to the scale."""


@dataclasses.dataclass(frozen=True, eq=False)
class ScaledLayer:
    """One affine layer in the scaled integer semantics (see the module docstring)."""

    weights: IntArray
    """A, shape (outputs, inputs of this layer's integer input vector)."""
    bias: ObjArray
    """B, Python ints."""
    divisor: int
    """D: G = floor((A v + B) / D)."""
    lower: ObjArray
    upper: ObjArray
    """Domain of G per neuron (Python ints)."""
    fixed: npt.NDArray[np.int8]
    """FIXED_ACTIVE / FIXED_INACTIVE where the bounds decide the phase, FREE otherwise."""
    relu: bool
    error: FloatArray
    """Bound on |G / scale - g| for the exact g at the grid input, given sound bounds."""

    @property
    def outputs(self) -> int:
        return int(self.weights.shape[0])

    def reach(self) -> list[int]:
        """max |G| over the domain, per neuron."""
        pairs = zip(self.lower.tolist(), self.upper.tolist(), strict=True)
        return [max(abs(int(low)), abs(int(high))) for low, high in pairs]

    def post_activation_range(self, row: int) -> tuple[int, int]:
        """Range of H for one neuron."""
        low, high = int(self.lower[row]), int(self.upper[row])
        if not self.relu or self.fixed[row] == FIXED_ACTIVE:
            return low, high
        if self.fixed[row] == FIXED_INACTIVE:
            return 0, 0
        return 0, max(0, high)


@dataclasses.dataclass(frozen=True, eq=False)
class ScaledNetwork:
    """The first `len(layers)` affine layers of a network on one box, in scaled integers.

    Variable input j is x_j = (origin_index_j + k_j) * step_j with integer k_j in
    [input_lower_j, input_upper_j] (a grid centred on the box, so |k_j| stays small); the
    constant part `origin` is folded exactly into the first layer's bias.
    """

    scale: int
    steps: FloatArray
    """Grid step per input (a power of two); 0 for constant inputs."""
    origin: FloatArray
    """The grid centre of each variable input, the value of each constant input."""
    origin_index: IntArray
    """origin / step per variable input."""
    input_lower: IntArray
    input_upper: IntArray
    """Range of the integer grid offset k per variable input."""
    variable: npt.NDArray[np.intp]
    """Indices of the inputs that vary (step > 0), in the order of the layer-0 weight columns."""
    layers: tuple[ScaledLayer, ...]
    notes: tuple[str, ...] = ()
    """What the scaling had to give up: inputs held constant, weights left out of the model."""

    def to_real(self, grid: npt.ArrayLike) -> FloatArray:
        """The real inputs of grid offsets (shape (..., variables)): exact floats in the box."""
        offsets = np.atleast_2d(np.asarray(grid, dtype=np.int64))
        if offsets.shape[1] != self.variable.size:
            raise ValueError(
                f"grid offsets of shape {offsets.shape} for {self.variable.size} inputs"
            )
        points = np.tile(self.origin, (offsets.shape[0], 1))
        indices = self.origin_index + offsets
        # |indices| < 2**50 and steps are powers of two: the products are exact.
        points[:, self.variable] = indices.astype(np.float64) * self.steps[self.variable]
        return points

    def nearest_grid(self, point: npt.ArrayLike) -> IntArray:
        """The grid offsets nearest to a real input, clipped into the box's grid."""
        x = np.asarray(point, dtype=np.float64).reshape(-1)[self.variable]
        # Clipped before the cast: a point outside the box (or NaN) must not wrap around int64.
        index = np.nan_to_num(np.rint(x / self.steps[self.variable]))
        low, high = self.origin_index + self.input_lower, self.origin_index + self.input_upper
        k = np.clip(index, low, high).astype(np.int64) - self.origin_index
        return np.asarray(k, dtype=np.int64)

    def forward(self, grid: npt.ArrayLike) -> list[list[int]]:
        """G of every layer at one grid input: the reference the CP-SAT model must equal."""
        values = np.array([int(v) for v in np.asarray(grid).reshape(-1)], dtype=object)
        result: list[list[int]] = []
        for layer in self.layers:
            acc = layer.weights.astype(object).dot(values) + layer.bias
            g = [int(a) // layer.divisor for a in acc]
            result.append(g)
            values = np.array(
                [_post_activation(layer, row, value) for row, value in enumerate(g)], dtype=object
            )
        return result


def _post_activation(layer: ScaledLayer, row: int, value: int) -> int:
    if not layer.relu or layer.fixed[row] == FIXED_ACTIVE:
        return value
    if layer.fixed[row] == FIXED_INACTIVE:
        return 0
    return max(value, 0)


def _power_of_two_at_most(value: float) -> float:
    """The largest power of two <= value, for any finite value > 0 (subnormals included)."""
    _, exponent = math.frexp(value)  # value = m * 2**exponent with 0.5 <= m < 1
    return math.ldexp(1.0, exponent - 1)


def _grid_step(lower: float, upper: float, scale: int) -> float | None:
    """The power-of-two step of about `scale` steps over [lower, upper], or None where no
    float grid fits (a width that overflows or underflows, or indices of 2**50 and more)."""
    width = upper - lower
    if not math.isfinite(width) or width / scale <= 0.0:
        return None
    step = _power_of_two_at_most(width / scale)
    if not max(abs(lower), abs(upper)) / step < _MAX_GRID_INDEX:
        return None
    return step


@dataclasses.dataclass(frozen=True)
class _InputGrid:
    steps: FloatArray
    origin: FloatArray
    origin_index: IntArray
    lower: IntArray
    upper: IntArray
    variable: npt.NDArray[np.intp]
    held: tuple[int, ...]
    """Inputs with lower < upper held constant at their lower bound (no float grid fits)."""


def _input_grid(box: Box, scale: int) -> _InputGrid:
    """A power-of-two grid with about `scale` steps per varying input, centred in the box.

    Grid indices run over [ceil(lower/step), floor(upper/step)], so every grid point is in the
    box. Inputs with lower == upper stay constant, and so do inputs whose interval no float
    grid fits (too narrow for float steps, or too wide for float64): those are `held`.
    """
    steps = np.zeros(box.size)
    origin = np.array(box.lower, dtype=np.float64)
    origin_index: list[int] = []
    lower: list[int] = []
    upper: list[int] = []
    held: list[int] = []
    for j in np.flatnonzero(box.upper > box.lower).tolist():
        box_lower, box_upper = float(box.lower[j]), float(box.upper[j])
        step = _grid_step(box_lower, box_upper, scale)
        if step is None:
            held.append(j)
            continue
        low, high = math.ceil(box_lower / step), math.floor(box_upper / step)
        if low > high:
            held.append(j)
            continue
        middle = (low + high) // 2
        steps[j] = step
        origin[j] = middle * step
        origin_index.append(middle)
        lower.append(low - middle)
        upper.append(high - middle)
    return _InputGrid(
        steps=steps,
        origin=origin,
        origin_index=np.array(origin_index, dtype=np.int64),
        lower=np.array(lower, dtype=np.int64),
        upper=np.array(upper, dtype=np.int64),
        variable=np.flatnonzero(steps > 0),
        held=tuple(held),
    )


def _ideal_exponent(unit_weights: FloatArray, scale: int) -> int:
    """log2 of the power of two D that makes a typical weight |W_ij * unit_j| * scale * D about
    `scale`.

    Typical is the `WEIGHT_QUANTILE` quantile of the nonzero magnitudes (the largest weights
    then get more than `scale` steps, never fewer), capped so no integer weight exceeds
    `MAX_INTEGER_WEIGHT`; never below 0 (D >= 1). Computed on logarithms, so that subnormal
    weights (whose reciprocals overflow) are fine; `_scale_layer` may cap it further.
    """
    magnitudes = np.abs(unit_weights[unit_weights != 0])
    if magnitudes.size == 0:
        return 0
    typical = float(np.quantile(magnitudes, WEIGHT_QUANTILE))
    largest_steps = float(np.max(magnitudes)) * scale
    if not (typical > 0.0 and 0.0 < largest_steps < math.inf):
        return 0
    reciprocal = 1.0 / typical
    exponent = round(math.log2(reciprocal) if reciprocal < math.inf else -math.log2(typical))
    # The largest e with largest_steps * 2**e <= MAX_INTEGER_WEIGHT (logarithms give it to +-1).
    cap = math.floor(math.log2(MAX_INTEGER_WEIGHT) - math.log2(largest_steps))
    while math.ldexp(largest_steps, cap) > MAX_INTEGER_WEIGHT:
        cap -= 1
    while math.ldexp(largest_steps, cap + 1) <= MAX_INTEGER_WEIGHT:
        cap += 1
    return max(0, min(exponent, cap))


def _float_magnitude(value: Fraction) -> float:
    """|value| as a float; inf where it overflows float64."""
    try:
        return abs(float(value))
    except OverflowError:
        return math.inf


def _exact_biases(network: Network, layer_index: int, origin: FloatArray) -> list[Fraction]:
    """The layer's exact bias; for layer 0 plus W @ origin (constant part of the input)."""
    layer = network.layers[layer_index]
    if layer_index != 0:
        return [Fraction(v) for v in layer.exact_bias.to_fractions()]
    folded = layer.exact_weights.matmul(RationalArray.from_array(origin)).add(layer.exact_bias)
    return folded.to_fractions()


def _fixed_phases(
    relu: bool,
    lower: FloatArray,
    upper: FloatArray,
    layer_index: int,
    claimed: Mapping[Neuron, Phase],
) -> npt.NDArray[np.int8]:
    fixed = np.zeros(lower.shape, dtype=np.int8)
    if relu:
        fixed[lower >= 0] = FIXED_ACTIVE
        fixed[upper <= 0] = FIXED_INACTIVE
        for neuron, phase in claimed.items():
            if neuron.layer == layer_index:
                fixed[neuron.index] = FIXED_ACTIVE if phase is Phase.ACTIVE else FIXED_INACTIVE
    return fixed


def scale_network(
    network: Network,
    box: Box,
    bounds: PreActivationBounds,
    scale: int,
    depth: int,
    fixed: Mapping[Neuron, Phase] | None = None,
) -> ScaledNetwork:
    """The scaled integer semantics of the first `depth` affine layers on `box`.

    Neurons the bounds decide, and those in `fixed` (claims of earlier stages), have their
    phase fixed: H = G (active) or H = 0 (inactive).

    Every integer is kept within CP-SAT's 64-bit limits (`MAX_LINEAR_SUM`, `MAX_DOMAIN_TOTAL`):
    where the divisor a typical weight asks for would exceed them it is capped, and weights
    that then round to 0 are left out of the model (the error bound covers their rounding; the
    hint and the exact re-evaluation of solutions still use them). Where even D = 1 exceeds
    the limits, float64 overflows, or the bounds are not finite, `ScalingError` is raised.
    What was given up is listed in the result's `notes`.
    """
    if scale < 2:
        raise ValueError(f"search scale must be at least 2, got {scale}")
    grid = _input_grid(box, scale)
    notes = _held_note(grid.held)
    magnitudes = np.maximum(np.abs(grid.lower), np.abs(grid.upper)).astype(np.float64)
    domain_total = 2.0 * float(np.sum(magnitudes))
    units = grid.steps[grid.variable]
    previous_error = np.zeros(grid.variable.size)
    layers: list[ScaledLayer] = []
    for index in range(depth):
        layer = network.layers[index]
        weights = layer.float_weights[:, grid.variable] if index == 0 else layer.float_weights
        lower_bound = np.asarray(bounds.lower[index], dtype=np.float64)
        upper_bound = np.asarray(bounds.upper[index], dtype=np.float64)
        scaled, layer_notes = _scale_layer(
            index,
            weights,
            units,
            magnitudes,
            previous_error,
            _exact_biases(network, index, grid.origin),
            (lower_bound, upper_bound),
            _fixed_phases(layer.relu, lower_bound, upper_bound, index, fixed or {}),
            layer.relu,
            scale,
        )
        notes += layer_notes
        # G and H of each neuron, and its Booleans.
        domain_total += 3.0 * float(sum(scaled.reach())) + 4.0 * scaled.outputs
        if domain_total > MAX_DOMAIN_TOTAL:
            raise ScalingError(
                index,
                f"the model's variable domains add up to {domain_total:.3g} at scale {scale}, "
                "beyond CP-SAT's int64 limit",
                domain_total / MAX_DOMAIN_TOTAL,
            )
        layers.append(scaled)
        post = [scaled.post_activation_range(row) for row in range(scaled.outputs)]
        magnitudes = np.array([max(abs(a), abs(b)) for a, b in post], dtype=np.float64)
        units = np.full(scaled.outputs, 1.0 / scale)
        previous_error = scaled.error
    return ScaledNetwork(
        scale=scale,
        steps=grid.steps,
        origin=grid.origin,
        origin_index=grid.origin_index,
        input_lower=grid.lower,
        input_upper=grid.upper,
        variable=grid.variable,
        layers=tuple(layers),
        notes=tuple(notes),
    )


def _held_note(held: Sequence[int]) -> list[str]:
    if not held:
        return []
    shown = ", ".join(str(j) for j in held[:8]) + (", ..." if len(held) > 8 else "")
    if len(held) == 1:
        return [f"input {shown} held at its lower bound: no float grid fits its interval"]
    return [f"inputs {shown} held at their lower bounds: no float grid fits their intervals"]


def _scale_layer(
    index: int,
    weights: FloatArray,
    units: FloatArray,
    magnitudes: FloatArray,
    previous_error: FloatArray,
    biases: Sequence[Fraction],
    bounds: tuple[FloatArray, FloatArray],
    fixed: npt.NDArray[np.int8],
    relu: bool,
    scale: int,
) -> tuple[ScaledLayer, list[str]]:
    """One layer of `scale_network`: the divisor, integer weights and bias, error, domains.

    `magnitudes` bounds |v_j| of the layer's integer inputs, one unit of which is worth
    `units[j]`. The divisor is the ideal one (`_ideal_exponent`) unless every row's linear sum,
    bounded per unit of D and independently of D, needs a smaller one to stay within
    `MAX_LINEAR_SUM` / 2 (the other half is margin for rounding).
    """
    lower_bound, upper_bound = bounds
    live = magnitudes > 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        raw = weights * units
        # Inputs that are always 0 (neurons fixed inactive) have no effect: their weights are 0.
        unit_weights = np.where(live, raw, 0.0)
    ideal = _ideal_exponent(raw, scale)
    if not np.all(np.isfinite(unit_weights)):
        raise ScalingError(index, "its weights times the input units overflow float64", math.inf)
    if not (np.all(np.isfinite(lower_bound)) and np.all(np.isfinite(upper_bound))):
        raise ScalingError(index, "its pre-activation bounds are not finite", math.inf)
    bias_sizes = np.array([_float_magnitude(b) for b in biases], dtype=np.float64)
    bound_sizes = np.maximum(np.abs(lower_bound), np.abs(upper_bound))
    with np.errstate(over="ignore", invalid="ignore"):
        slack_cap = DOMAIN_SLACK * (upper_bound - lower_bound) + 2.0 / scale
        reach = (bound_sizes + slack_cap + 1e-9 * (1.0 + bound_sizes)) * scale + 2.0
        # Row sum sum_j |A_ij| max|v_j| + |B_i| + D (max|G_i| + 1) <= D * per_divisor + fixed.
        per_divisor = scale * (np.abs(unit_weights) @ magnitudes + bias_sizes) + reach + 1.5
        fixed_part = 0.5 * (np.asarray(unit_weights != 0, dtype=np.float64) @ magnitudes) + 1.0
    room = MAX_LINEAR_SUM / 2
    worst = float(np.max(per_divisor + fixed_part)) if per_divisor.size else 0.0
    if not worst <= room:
        largest = float(np.max(bound_sizes)) if bound_sizes.size else 0.0
        raise ScalingError(
            index,
            f"its pre-activations (bounds up to {largest:.3g}) need integers up to {worst:.3g} "
            f"at scale {scale}, beyond CP-SAT's 64-bit limits",
            worst / room,
        )
    budget = 62
    if per_divisor.size:
        budget = int(np.min(np.floor(np.log2((room - fixed_part) / per_divisor))))
    exponent = max(0, min(ideal, budget))
    divisor = 2**exponent
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        rounded = np.rint(unit_weights * float(scale * divisor))
    if not np.all(np.abs(rounded) <= MAX_LINEAR_SUM):  # the budget rules it out; guards the cast
        raise ScalingError(index, "its integer weights leave CP-SAT's 64-bit range", math.inf)
    integer_weights = rounded.astype(np.int64)
    # B includes D // 2 so that the floor division rounds to nearest (ties up).
    bias = np.array([round(b * scale * divisor) + divisor // 2 for b in biases], dtype=object)
    with np.errstate(over="ignore", invalid="ignore"):
        error = (
            0.5 / scale
            # weights are rounded in float64: allow 2**-20 above the exact half unit
            + (0.5 + 2.0**-20) * (float(np.sum(magnitudes)) + 1.0) / (scale * divisor)
            + np.abs(weights) @ previous_error
        )
        error = np.where(np.isnan(error), np.inf, error)
        slack = np.minimum(error, slack_cap) + 1e-9 * (1.0 + bound_sizes)
    scaled = ScaledLayer(
        weights=integer_weights,
        bias=bias,
        divisor=divisor,
        lower=np.array([math.floor(v) - 1 for v in (lower_bound - slack) * scale], object),
        upper=np.array([math.ceil(v) + 1 for v in (upper_bound + slack) * scale], object),
        fixed=fixed,
        relu=relu,
        error=np.asarray(error, dtype=np.float64),
    )
    _check_limits(index, scaled, magnitudes)
    notes = _dropped_notes(index, weights, unit_weights, integer_weights, live, exponent, ideal)
    return scaled, notes


def _dropped_notes(
    index: int,
    weights: FloatArray,
    unit_weights: FloatArray,
    integer_weights: IntArray,
    live: npt.NDArray[np.bool_],
    exponent: int,
    ideal: int,
) -> list[str]:
    """What a capped divisor or float underflow cost: weights left out of the model (not
    counting those of inputs that are always 0)."""
    nonzero = (weights != 0) & live
    dropped = int(np.count_nonzero(nonzero & (integer_weights == 0)))
    underflow = int(np.count_nonzero(nonzero & (unit_weights == 0)))
    left_out = (
        "left out of the model (the hint and the exact re-evaluation of solutions still use them)"
    )
    if exponent < ideal:
        note = (
            f"layer {index}: divisor 2**{exponent} instead of 2**{ideal}, to stay within "
            "CP-SAT's 64-bit limits"
        )
        if dropped:
            return [f"{note}: {dropped} nonzero weight(s) round to 0 and are {left_out}"]
        return [f"{note}: its weights are rounded more coarsely"]
    if underflow:
        return [
            f"layer {index}: {underflow} nonzero weight(s) underflow float64 at the input scale "
            f"and are {left_out}"
        ]
    return []


def _check_limits(index: int, layer: ScaledLayer, input_magnitudes: FloatArray) -> None:
    """Refuse a layer whose integer sums could leave CP-SAT's 64-bit range: every row's
    sum_j |A_ij| max|v_j| + |B_i| + D (max|G_i| + 1) must stay within `MAX_LINEAR_SUM`."""
    biases = [abs(int(v)) for v in layer.bias.tolist()]
    reach = layer.reach()
    if max(biases + reach, default=0) > MAX_LINEAR_SUM:
        raise ScalingError(index, "its scaled bias or bounds leave CP-SAT's 64-bit range", math.inf)
    sums = (
        np.abs(layer.weights).astype(np.float64) @ input_magnitudes
        + np.array(biases, dtype=np.float64)
        + layer.divisor * (np.array(reach, dtype=np.float64) + 1.0)
    )
    worst = float(np.max(sums)) if sums.size else 0.0
    if not worst <= MAX_LINEAR_SUM:
        raise ScalingError(
            index,
            f"its scaled sums reach {worst:.3g}, beyond CP-SAT's 64-bit limits",
            worst / MAX_LINEAR_SUM,
        )


# ---------------------------------------------------------------------------------------------
# The CP-SAT encoding


@dataclasses.dataclass(eq=False)
class StabilityModel:
    """A CP-SAT model of a `ScaledNetwork`, with handles to its variables.

    `inputs[c]` is the grid index of variable input column c; `pre[l][i]` is G of neuron (l, i)
    (absent for neurons fixed inactive that are not needed); `phase[n]` is the Boolean z of a
    free neuron (z => G >= 0 and H = G; not z => G <= 0 and H = 0).
    """

    model: cp_model.CpModel
    scaled: ScaledNetwork
    inputs: list[cp_model.IntVar]
    pre: list[dict[int, cp_model.IntVar]]
    post: list[dict[int, cp_model.IntVar]]
    phase: dict[Neuron, cp_model.IntVar]
    indicators: dict[tuple[Neuron, Phase, int], cp_model.IntVar] = dataclasses.field(
        default_factory=dict
    )

    def indicator(self, neuron: Neuron, phase: Phase, margin: int) -> cp_model.IntVar:
        """The literal "neuron shows `phase` with G beyond +-margin" (created on first use)."""
        key = (neuron, phase, margin)
        if key not in self.indicators:
            g = self.pre[neuron.layer][neuron.index]
            literal = self.model.new_bool_var(f"seen_{phase.value}_{neuron.layer}_{neuron.index}")
            layer = self.scaled.layers[neuron.layer]
            low, high = int(layer.lower[neuron.index]), int(layer.upper[neuron.index])
            # The enforced form drives propagation; the big-M form links the literal to G in
            # CP-SAT's LP relaxation, which otherwise cannot bound the objective.
            if phase is Phase.ACTIVE:
                self.model.add(g >= margin).only_enforce_if(literal)
                self.model.add(g - (margin - low) * literal >= low)
            else:
                self.model.add(g <= -margin).only_enforce_if(literal)
                self.model.add(g + (high + margin) * literal <= high)
            self.indicators[key] = literal
        return self.indicators[key]

    def set_literal_domain(self, literal: cp_model.IntVar, low: int, high: int) -> None:
        """Fix (or free) a Boolean in place; used to retire indicators and pose sub-problems."""
        literal.with_domain(cp_model.Domain(low, high))

    def hint(self, grid: IntArray) -> None:
        """A complete hint: the scaled forward pass at a grid point (a feasible assignment)."""
        values = self.scaled.forward(grid)
        hints: dict[int, tuple[cp_model.IntVar, int]] = {}
        for variable, value in zip(self.inputs, grid.tolist(), strict=True):
            hints[variable.index] = (variable, int(value))
        for layer_index, layer_values in enumerate(values):
            layer = self.scaled.layers[layer_index]
            for row, variable in self.pre[layer_index].items():
                hints[variable.index] = (variable, layer_values[row])
            for row, variable in self.post[layer_index].items():
                value = _post_activation(layer, row, layer_values[row])
                hints.setdefault(variable.index, (variable, value))
        for neuron, variable in self.phase.items():
            hints[variable.index] = (variable, int(values[neuron.layer][neuron.index] > 0))
        for (neuron, phase, margin), literal in self.indicators.items():
            value = values[neuron.layer][neuron.index]
            shown = value >= margin if phase is Phase.ACTIVE else value <= -margin
            hints[literal.index] = (literal, int(shown))
        self.model.clear_hints()  # type: ignore[no-untyped-call]
        for variable, value in hints.values():
            low, high = self._domain(variable)
            if low < high:  # constants (cached, shared) and retired literals need no hint
                self.model.add_hint(variable, min(high, max(low, value)))

    def _domain(self, variable: cp_model.IntVar) -> tuple[int, int]:
        domain = list(self.model.proto.variables[variable.index].domain)
        return int(domain[0]), int(domain[-1])


def build_model(
    scaled: ScaledNetwork, last_layer_rows: Collection[int] | None = None
) -> StabilityModel:
    """Encode `scaled` in CP-SAT; in its last layer only `last_layer_rows` (default: all).

    Neurons fixed inactive contribute nothing downstream and get no variable unless they are in
    the last layer's requested rows.
    """
    model = cp_model.CpModel()
    inputs = [
        model.new_int_var(int(low), int(high), f"k_{int(j)}")
        for low, high, j in zip(
            scaled.input_lower.tolist(), scaled.input_upper.tolist(), scaled.variable, strict=True
        )
    ]
    sources: dict[int, cp_model.IntVar] = dict(enumerate(inputs))
    pre: list[dict[int, cp_model.IntVar]] = []
    post: list[dict[int, cp_model.IntVar]] = []
    phase: dict[Neuron, cp_model.IntVar] = {}
    depth = len(scaled.layers)
    for layer_index, layer in enumerate(scaled.layers):
        last = layer_index == depth - 1
        if last and last_layer_rows is not None:
            rows = sorted(set(last_layer_rows))
        else:
            rows = [r for r in range(layer.outputs) if last or not _is_zero(layer, r)]
        layer_pre: dict[int, cp_model.IntVar] = {}
        layer_post: dict[int, cp_model.IntVar] = {}
        columns = sorted(sources)
        source_list = [sources[c] for c in columns]
        for row in rows:
            low, high = int(layer.lower[row]), int(layer.upper[row])
            g = model.new_int_var(low, high, f"g_{layer_index}_{row}")
            coefficients = layer.weights[row, columns].tolist()
            terms = [(v, c) for v, c in zip(source_list, coefficients, strict=True) if c != 0]
            acc = cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms])
            bias = int(layer.bias[row])
            # 0 <= acc + B - D * G <= D - 1, i.e. G = floor((acc + B) / D).
            model.add_linear_constraint(acc - layer.divisor * g, -bias, layer.divisor - 1 - bias)
            layer_pre[row] = g
            layer_post[row] = _encode_activation(model, layer, layer_index, row, g, phase)
        pre.append(layer_pre)
        post.append(layer_post)
        sources = {row: h for row, h in layer_post.items() if not _is_zero(layer, row)}
    return StabilityModel(model, scaled, inputs, pre, post, phase)


def _is_zero(layer: ScaledLayer, row: int) -> bool:
    return layer.relu and layer.fixed[row] == FIXED_INACTIVE


def _encode_activation(
    model: cp_model.CpModel,
    layer: ScaledLayer,
    layer_index: int,
    row: int,
    g: cp_model.IntVar,
    phase: dict[Neuron, cp_model.IntVar],
) -> cp_model.IntVar:
    if not layer.relu or layer.fixed[row] == FIXED_ACTIVE:
        return g
    if layer.fixed[row] == FIXED_INACTIVE:
        return model.new_constant(0)
    low, high = int(layer.lower[row]), int(layer.upper[row])
    if high <= 0:
        return model.new_constant(0)
    h = model.new_int_var(0, high, f"h_{layer_index}_{row}")
    if low >= 0:
        model.add(h == g)
        return h
    z = model.new_bool_var(f"z_{layer_index}_{row}")
    model.add(h == g).only_enforce_if(z)
    model.add(g >= 0).only_enforce_if(z)
    model.add(h == 0).only_enforce_if(~z)
    model.add(g <= 0).only_enforce_if(~z)
    # The same in big-M form for CP-SAT's LP relaxation (redundant for the search).
    model.add(h >= g)
    model.add(h - g - low * z <= -low)
    model.add(h - high * z <= 0)
    phase[Neuron(layer_index, row)] = z
    return h


# ---------------------------------------------------------------------------------------------
# Solving


@dataclasses.dataclass(frozen=True)
class SolveOutcome:
    status: str
    """CP-SAT status name: OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN, MODEL_INVALID."""
    objective: float
    bound: float
    grids: list[IntArray]
    """Input grid indices of every collected solution."""
    shown: list[frozenset[tuple[Neuron, Phase, int]]]
    """Indicators true in each collected solution."""
    seconds: float


class _Collector(cp_model.CpSolverSolutionCallback):
    """Collects every (improving) solution; stops the solve a while after the first positive one."""

    def __init__(
        self,
        solver: cp_model.CpSolver,
        model: StabilityModel,
        watched: Sequence[tuple[tuple[Neuron, Phase, int], cp_model.IntVar]],
        early_stop: bool,
    ) -> None:
        super().__init__()
        self._solver = solver
        self._model = model
        self._watched = watched
        self._early_stop = early_stop
        self._timer: threading.Timer | None = None
        self.grids: list[IntArray] = []
        self.shown: list[frozenset[tuple[Neuron, Phase, int]]] = []

    def on_solution_callback(self) -> None:
        grid = np.array([self.value(v) for v in self._model.inputs], dtype=np.int64)
        shown = frozenset(key for key, literal in self._watched if self.boolean_value(literal))
        self.grids.append(grid)
        self.shown.append(shown)
        if shown and self._early_stop and self._timer is None:
            delay = STOP_AFTER_IMPROVEMENT_FACTOR * self.wall_time + STOP_AFTER_IMPROVEMENT_SECONDS
            self._timer = threading.Timer(delay, self._solver.stop_search)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _solve(
    model: StabilityModel,
    watched: Sequence[tuple[tuple[Neuron, Phase, int], cp_model.IntVar]],
    config: Config,
    time_limit: float,
    early_stop: bool,
    first_solution_only: bool = False,
) -> SolveOutcome:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = max(1, config.workers)
    solver.parameters.random_seed = config.seed
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.stop_after_first_solution = first_solution_only
    solver.parameters.hint_conflict_limit = 0
    # Ctrl-C belongs to the command line (clean exit, no partial output), not to CP-SAT, which
    # would otherwise reset SIGINT to its default action after solving.
    solver.parameters.catch_sigint_signal = False
    collector = _Collector(solver, model, watched, early_stop)
    start = time.monotonic()
    try:
        status = solver.solve(model.model, collector)
    finally:
        collector.cancel()
    has_objective = model.model.has_objective()
    return SolveOutcome(
        status=solver.status_name(status),
        objective=solver.objective_value if has_objective else 0.0,
        bound=solver.best_objective_bound if has_objective else 0.0,
        grids=collector.grids,
        shown=collector.shown,
        seconds=time.monotonic() - start,
    )


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class BoxReport:
    """What happened on one box (diagnostics for the report and the benchmark)."""

    box: int
    indicators: int
    """Candidate phases searched on this box (after bound-decided ones were removed)."""
    stages: int
    """Layer stages run (one model per stage)."""
    iterations: int
    """CP-SAT solves."""
    solutions: int
    confirmed: int
    """Indicators whose phase the exact evaluation confirmed (seen) after a solve."""
    unconfirmed: int
    """Indicators shown by CP-SAT solutions but not confirmed exactly (scaling artefacts)."""
    absent: int
    """Indicators claimed absent on this box (CP-SAT at margin 1, or conditional bounds)."""
    statuses: tuple[str, ...]
    seconds: float
    build_seconds: float
    """Part of `seconds` spent on bounds, scaling and building models."""
    notes: tuple[str, ...] = ()
    """What the search gave up on this box, for the report: inputs held constant, weights left
    out of the model, a lowered search scale, stages skipped (their candidates stay open)."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Outcome of a stability search.

    `claims` are CLAIMS, not proofs: the neuron's other phase was never seen, and on every box
    either the bounds decided it or CP-SAT found (in the scaled model, assuming the box's
    earlier-layer claims) that no grid point shows the other phase. Certification must prove
    or refute each. `undecided` neurons are unknown: the deadline passed, or CP-SAT's answers
    could not be confirmed; `suspected` gives, for those undecided neurons where only scaling
    artefacts stood between them and a claim, the phase the scaled model suggests.
    """

    claims: dict[Neuron, Phase]
    undecided: set[Neuron]
    iterations: int
    solutions: int
    seconds: float
    per_box: list[BoxReport]
    suspected: dict[Neuron, Phase] = dataclasses.field(default_factory=dict)
    method: str = "single"
    notes: list[str] = dataclasses.field(default_factory=list)
    """Every box's `BoxReport.notes`, prefixed with "box k: ", for the caller to print."""


@dataclasses.dataclass
class _BoxState:
    """Per-indicator outcomes and counters on one box."""

    absent: set[Indicator] = dataclasses.field(default_factory=set)
    """Claimed absent at margin 1 (or by bounds conditional on earlier claims)."""
    raised: set[Indicator] = dataclasses.field(default_factory=set)
    """Absent only at a raised margin, or unconfirmed at the guaranteed margin: not claimed."""
    iterations: int = 0
    solutions: int = 0
    confirmed: int = 0
    unconfirmed: int = 0
    statuses: list[str] = dataclasses.field(default_factory=list)
    stalled: bool = False
    """A stage stopped early: no phase seen or ruled out for a while (see STALL_SECONDS)."""

    def conditional_phases(self) -> dict[Neuron, Phase]:
        """The phases claimed so far on this box (ACTIVE absent: inactive; else INACTIVE
        absent: active)."""
        phases: dict[Neuron, Phase] = {}
        for neuron, phase in sorted(self.absent, key=_indicator_order):
            if phase is Phase.ACTIVE or neuron not in phases:
                phases[neuron] = phase.opposite
        return phases

    def resolved(self) -> set[Indicator]:
        return self.absent | self.raised

    def record(self, outcome: SolveOutcome) -> None:
        self.iterations += 1
        self.solutions += len(outcome.grids)
        self.statuses.append(outcome.status)


StageSearch = Callable[
    [StabilityModel, set[Indicator], IntArray, WitnessRecorder, int, Config, float, _BoxState],
    None,
]


# ---------------------------------------------------------------------------------------------
# The searches


def stability_search(
    network: Network,
    domain: Domain,
    bounds_per_box: Sequence[PreActivationBounds],
    table: WitnessRecorder,
    candidates: Collection[Neuron],
    config: Config,
    deadline: float,
    progress: Progress | None = None,
    *,
    proof_fallback: bool = True,
) -> SearchResult:
    """The single CP-SAT stability search (the paper's method) over all candidates.

    `deadline` is an absolute `time.monotonic()` instant. Candidates whose phases are all seen
    already are ignored; those left without a claim at the deadline are `undecided`.

    On each box the candidates are taken in layer stages: stage L is one model of the network
    up to layer L over every still-open candidate phase of layers <= L, in which the neurons
    claimed in earlier stages are fixed to their claimed phase and the bounds are recomputed
    under those claims (`bounds.symbolic_bounds(..., fixed=claims)`, intersected with the given
    bounds). Later claims are thus conditional on earlier ones; certification proves them in
    the same order, with the earlier lemmas as context. Each stage gets an equal share of the
    time left; what a stage does not use passes on.

    `proof_fallback`: when a solve of the single model makes no progress within its time cap,
    run one round of per-indicator feasibility problems on the same model (each with the same
    cap) before the next, longer, single solve. CP-SAT proves absence far better with the
    indicator fixed (presolve propagates G >= 1 back through the network) than from the
    maximization, whose LP bound is the number of indicators: on ACAS Xu 1_1 prop_3 the pure
    single search claimed 9 of 43 candidate phases in 120 s, per-neuron 27. Pass False to
    measure the pure single search.
    """
    stage = (
        _single_stage if proof_fallback else functools.partial(_single_stage, proof_fallback=False)
    )
    return _search(
        network,
        domain,
        bounds_per_box,
        table,
        candidates,
        config,
        deadline,
        progress,
        stage,
        "single" if proof_fallback else "single-pure",
    )


def per_neuron_search(
    network: Network,
    domain: Domain,
    bounds_per_box: Sequence[PreActivationBounds],
    table: WitnessRecorder,
    candidates: Collection[Neuron],
    config: Config,
    deadline: float,
    progress: Progress | None = None,
) -> SearchResult:
    """One CP-SAT feasibility problem per candidate and unseen phase (the pre-2021 approach).

    Same stages, scaling, conditioning and hints as `stability_search`; within a stage each
    problem gets an equal share of the stage's time left.
    """
    return _search(
        network,
        domain,
        bounds_per_box,
        table,
        candidates,
        config,
        deadline,
        progress,
        _per_neuron_stage,
        "per-neuron",
    )


def _search(
    network: Network,
    domain: Domain,
    bounds_per_box: Sequence[PreActivationBounds],
    table: WitnessRecorder,
    candidates: Collection[Neuron],
    config: Config,
    deadline: float,
    progress: Progress | None,
    stage_search: StageSearch,
    method: str,
) -> SearchResult:
    start = time.monotonic()
    if len(bounds_per_box) != len(domain.boxes):
        raise ValueError(
            f"{len(bounds_per_box)} bound sets for a domain of {len(domain.boxes)} boxes"
        )
    outside = sorted(set(candidates) - set(network.hidden_neurons()))
    if outside:
        raise ValueError(f"candidate {outside[0]} is not a hidden ReLU neuron of the network")
    unseen = _unseen(table, candidates)
    states: list[_BoxState | None] = []
    reports: list[BoxReport] = []
    for box_index, (box, bounds) in enumerate(zip(domain.boxes, bounds_per_box, strict=True)):
        unseen = _unseen(table, unseen)
        needed = {
            (neuron, phase)
            for neuron, phases in unseen.items()
            for phase in phases
            if _possible(bounds, neuron, phase)
        }
        if not needed:
            states.append(_BoxState())
            continue
        if time.monotonic() >= deadline:
            states.append(None)
            continue
        # The boxes share what is left.
        box_deadline = time.monotonic() + (deadline - time.monotonic()) / (
            len(domain.boxes) - box_index
        )
        state, report = _search_box(
            network,
            box_index,
            box,
            bounds,
            table,
            needed,
            config,
            box_deadline,
            progress,
            stage_search,
        )
        states.append(state)
        reports.append(report)
    claims, undecided, suspected = _aggregate(_unseen(table, unseen), bounds_per_box, states)
    return SearchResult(
        claims=claims,
        undecided=undecided,
        iterations=sum(r.iterations for r in reports),
        solutions=sum(r.solutions for r in reports),
        seconds=time.monotonic() - start,
        per_box=reports,
        suspected=suspected,
        method=method,
        notes=[f"box {report.box}: {note}" for report in reports for note in report.notes],
    )


def _search_box(
    network: Network,
    box_index: int,
    box: Box,
    bounds: PreActivationBounds,
    table: WitnessRecorder,
    needed: set[Indicator],
    config: Config,
    deadline: float,
    progress: Progress | None,
    stage_search: StageSearch,
) -> tuple[_BoxState, BoxReport]:
    start = time.monotonic()
    state = _BoxState()
    layers = sorted({neuron.layer for neuron, _ in needed})
    build_seconds = 0.0
    stages = 0
    notes: list[str] = []
    for position, layer in enumerate(layers):
        now = time.monotonic()
        if now >= deadline:
            break
        stage_deadline = now + (deadline - now) / (len(layers) - position)
        fixed = state.conditional_phases()
        stage_bounds = _conditional_bounds(network, box, bounds, fixed)
        still = _unseen(table, {neuron for neuron, _ in needed})
        open_set = {
            (neuron, phase)
            for neuron, phase in needed
            if neuron.layer <= layer
            and neuron not in fixed
            and (neuron, phase) not in state.resolved()
            and phase in still.get(neuron, set())
        }
        for indicator in list(open_set):
            if not _possible(stage_bounds, *indicator):
                state.absent.add(indicator)
                open_set.discard(indicator)
        if not open_set:
            continue
        fixed = state.conditional_phases()
        open_set = {i for i in open_set if i[0] not in fixed}
        scaled, stage_notes = _scale_stage(
            network, box, stage_bounds, config.search_scale, layer + 1, fixed
        )
        notes += [note for note in stage_notes if note not in notes]
        if scaled is None:
            # Every deeper stage models this stage's layers too: their candidates stay open.
            build_seconds += time.monotonic() - now
            break
        model = build_model(scaled, {n.index for n, _ in open_set if n.layer == layer})
        invalid = model.model.validate()
        if invalid:
            # The limits above should rule this out; never let it end the job.
            notes.append(
                f"search skipped for layers {layer} and deeper: CP-SAT rejects the model: "
                f"{invalid[:200]}"
            )
            build_seconds += time.monotonic() - now
            break
        # A neuron the scaled model fixes inactive (its bounds or an earlier claim) has no
        # variable: the search cannot show its phases, so they stay open for the proofs.
        open_set = {i for i in open_set if i[0].index in model.pre[i[0].layer]}
        if not open_set:
            build_seconds += time.monotonic() - now
            continue
        hint = _hint_point(network, scaled, stage_bounds, table, box_index, open_set)
        build_seconds += time.monotonic() - now
        stages += 1
        stage_search(model, open_set, hint, table, box_index, config, stage_deadline, state)
        if state.stalled:
            note = "a search stage stopped early: no new phase seen or ruled out (stalled)"
            notes += [note] if note not in notes else []
        if progress is not None:
            progress(f"search box {box_index} layer {layer}", len(state.resolved()), len(needed))
    report = BoxReport(
        box=box_index,
        indicators=len(needed),
        stages=stages,
        iterations=state.iterations,
        solutions=state.solutions,
        confirmed=state.confirmed,
        unconfirmed=state.unconfirmed,
        absent=len(state.absent),
        statuses=tuple(state.statuses),
        seconds=time.monotonic() - start,
        build_seconds=build_seconds,
        notes=tuple(notes),
    )
    return state, report


def _scale_stage(
    network: Network,
    box: Box,
    bounds: PreActivationBounds,
    scale: int,
    depth: int,
    fixed: Mapping[Neuron, Phase],
) -> tuple[ScaledNetwork | None, list[str]]:
    """`scale_network` at `scale`, or, where that does not fit CP-SAT's limits, at a scale
    lowered by the estimated excess; None where no scale down to `MIN_LOWERED_SCALE` fits.
    Returns the notes that say what was given up."""
    current = scale
    first: ScalingError | None = None
    last: ScalingError | None = None
    for _ in range(_RESCALE_ATTEMPTS):
        try:
            scaled = scale_network(network, box, bounds, current, depth, fixed)
        except ScalingError as error:
            first = first or error
            last = error
            lowered = _lowered_scale(current, error.excess)
            if lowered is None:
                break
            current = lowered
            continue
        notes = list(scaled.notes)
        if first is not None:
            notes.insert(
                0,
                f"search scale lowered from {scale} to {current} for layers up to {depth - 1} "
                f"({first})",
            )
        return scaled, notes
    return None, [
        f"search skipped for layers {depth - 1} and deeper: {last} (no search scale from "
        f"{scale} down to {MIN_LOWERED_SCALE} fits)"
    ]


def _lowered_scale(scale: int, excess: float) -> int | None:
    """The scale at which values `excess` times too large fit twice over, if it is at least
    `MIN_LOWERED_SCALE` (values shrink about in proportion to the scale)."""
    if not math.isfinite(excess):
        return None
    lowered = math.floor(scale / (2.0 * max(excess, 1.0)))
    return lowered if MIN_LOWERED_SCALE <= lowered < scale else None


def _conditional_bounds(
    network: Network, box: Box, bounds: PreActivationBounds, fixed: Mapping[Neuron, Phase]
) -> PreActivationBounds:
    """The given bounds intersected with symbolic bounds that assume the `fixed` phases.

    Where the two are disjoint (a claim contradicts the bounds: it is wrong) the given bounds
    are kept.
    """
    if not fixed:
        return bounds
    conditional = symbolic_bounds(network, box, fixed)
    lower: list[FloatArray] = []
    upper: list[FloatArray] = []
    for layer_index in range(len(bounds.lower)):
        given_lower = np.asarray(bounds.lower[layer_index], dtype=np.float64)
        given_upper = np.asarray(bounds.upper[layer_index], dtype=np.float64)
        new_lower = np.maximum(given_lower, conditional.lower[layer_index])
        new_upper = np.minimum(given_upper, conditional.upper[layer_index])
        disjoint = new_lower > new_upper
        lower.append(np.where(disjoint, given_lower, new_lower))
        upper.append(np.where(disjoint, given_upper, new_upper))
    return LayerBounds(lower, upper)


def _unseen(table: WitnessRecorder, neurons: Iterable[Neuron]) -> dict[Neuron, set[Phase]]:
    return {n: set(p) for n, p in table.unseen_phases(list(neurons)).items() if p}


def _possible(bounds: PreActivationBounds, neuron: Neuron, phase: Phase) -> bool:
    """Whether the bounds leave room for a strict witness of `phase` (g > 0 resp. g < 0); a
    NaN bound leaves room."""
    if phase is Phase.ACTIVE:
        return not bool(bounds.upper[neuron.layer][neuron.index] <= 0)
    return not bool(bounds.lower[neuron.layer][neuron.index] >= 0)


def _aggregate(
    unseen: Mapping[Neuron, set[Phase]],
    bounds_per_box: Sequence[PreActivationBounds],
    states: Sequence[_BoxState | None],
) -> tuple[dict[Neuron, Phase], set[Neuron], dict[Neuron, Phase]]:
    """Claim P for a neuron iff the opposite phase is unseen and absent on every box.

    Absent on a box: bound-decided there, or claimed absent by the box's search. A neuron with
    both phases absent everywhere (g == 0 in the scaled model) is claimed inactive.
    """
    claims: dict[Neuron, Phase] = {}
    suspected: dict[Neuron, Phase] = {}
    undecided: set[Neuron] = set()
    for neuron, phases in unseen.items():
        for shown in sorted(phases, key=lambda p: p is not Phase.ACTIVE):
            verdicts = [
                _box_verdict(bounds, state, (neuron, shown))
                for bounds, state in zip(bounds_per_box, states, strict=True)
            ]
            if all(v == "absent" for v in verdicts):
                claims[neuron] = shown.opposite
                break
            if neuron not in suspected and all(v in ("absent", "raised") for v in verdicts):
                suspected[neuron] = shown.opposite
        if neuron not in claims:
            undecided.add(neuron)
    return claims, undecided, {n: p for n, p in suspected.items() if n in undecided}


def _box_verdict(bounds: PreActivationBounds, state: _BoxState | None, indicator: Indicator) -> str:
    neuron, phase = indicator
    if not _possible(bounds, neuron, phase):
        return "absent"
    if state is None:
        return "unsearched"
    if indicator in state.absent:
        return "absent"
    if indicator in state.raised:
        return "raised"
    return "open"


def _margin_limit(model: StabilityModel, neuron: Neuron) -> int:
    """The margin at which the error bound guarantees a solution is a real witness.

    At most one beyond the neuron's domain (no G reaches that margin, so the indicator is
    infeasible there, as it would be at any larger one), which keeps the indicator's
    coefficients within CP-SAT's limits even where the error bound is huge or infinite.
    """
    layer = model.scaled.layers[neuron.layer]
    beyond = max(abs(int(layer.lower[neuron.index])), abs(int(layer.upper[neuron.index]))) + 1
    scaled_error = float(layer.error[neuron.index]) * model.scaled.scale
    if not scaled_error < beyond:  # also where the error bound is inf or NaN
        return beyond
    return min(beyond, math.floor(scaled_error) + 1)


def _hint_point(
    network: Network,
    scaled: ScaledNetwork,
    bounds: PreActivationBounds,
    table: WitnessRecorder,
    box_index: int,
    needed: Collection[Indicator],
) -> IntArray:
    """The grid point nearest to the recorded witness (or the box center) that comes closest,
    by float evaluation, to showing the needed phases; used as the solver's starting solution."""
    box_points = [w.point for w in table.witnesses() if w.box == box_index]
    center = scaled.to_real(np.zeros(scaled.variable.size, dtype=np.int64))
    points = np.vstack([center, *box_points]) if box_points else center
    score = np.zeros(points.shape[0])
    # Extreme weights may overflow the float pass: a NaN score counts as 0.
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        values = network.forward(points).pre_activations
        for neuron, phase in needed:
            width = float(bounds.upper[neuron.layer][neuron.index]) - float(
                bounds.lower[neuron.layer][neuron.index]
            )
            sign = 1.0 if phase is Phase.ACTIVE else -1.0
            g = values[neuron.layer][:, neuron.index]
            score += np.nan_to_num(np.clip(sign * g / max(width, 1e-12), -1.0, 1.0))
    return scaled.nearest_grid(points[int(np.argmax(score))])


def _offer(
    model: StabilityModel, table: WitnessRecorder, grids: Sequence[IntArray], box: int, source: str
) -> None:
    if grids:
        table.offer(model.scaled.to_real(np.stack(grids)), box, source)


def _indicator_order(indicator: Indicator) -> tuple[int, int, str]:
    neuron, phase = indicator
    return neuron.layer, neuron.index, phase.value


def _retire_unwatched(
    model: StabilityModel, watched: Sequence[tuple[tuple[Neuron, Phase, int], cp_model.IntVar]]
) -> None:
    """Fix every indicator not watched in this solve to false."""
    keep = {key for key, _ in watched}
    for key, literal in model.indicators.items():
        model.set_literal_domain(literal, 0, 1 if key in keep else 0)


def _still_unseen(table: WitnessRecorder, indicators: Collection[Indicator]) -> set[Indicator]:
    still = _unseen(table, {neuron for neuron, _ in indicators})
    return {(n, p) for n, p in indicators if p in still.get(n, set())}


def _single_stage(
    model: StabilityModel,
    indicators: set[Indicator],
    hint: IntArray,
    table: WitnessRecorder,
    box_index: int,
    config: Config,
    deadline: float,
    state: _BoxState,
    proof_fallback: bool = True,
) -> None:
    """Maximize the number of shown indicators; drop the confirmed ones and re-solve until the
    optimum is 0 (claims) or the deadline.

    With `proof_fallback`, a solve that makes no progress within its time cap (no new phase
    seen, no optimum proved) is followed by one round of per-indicator feasibility problems
    on the same model, each capped at the same time (see `stability_search`).
    """
    open_set = set(indicators)
    margins = dict.fromkeys(open_set, 1)
    cap = FIRST_ITERATION_SECONDS
    started = last_progress = time.monotonic()
    while open_set:
        remaining = deadline - time.monotonic()
        if remaining <= 0.0:
            return
        if stalled(started, last_progress, time.monotonic()):
            state.stalled = True
            return
        watched = [
            ((n, p, margins[(n, p)]), model.indicator(n, p, margins[(n, p)]))
            for n, p in sorted(open_set, key=_indicator_order)
        ]
        _retire_unwatched(model, watched)
        model.model.clear_objective()  # type: ignore[no-untyped-call]
        model.model.maximize(cp_model.LinearExpr.sum([literal for _, literal in watched]))
        if HINT_WITNESSES:
            model.hint(hint)
        outcome = _solve(model, watched, config, min(remaining, cap), early_stop=True)
        state.record(outcome)
        _offer(model, table, outcome.grids, box_index, SOURCE_SINGLE)
        seen_now = open_set - _still_unseen(table, open_set)
        state.confirmed += len(seen_now)
        open_set -= seen_now
        shown = {(n, p) for keys in outcome.shown for n, p, _ in keys} & open_set
        state.unconfirmed += len(shown)
        for indicator in shown:
            limit = _margin_limit(model, indicator[0])
            if margins[indicator] >= limit:
                open_set.discard(indicator)
                state.raised.add(indicator)
            else:
                margins[indicator] = min(limit, margins[indicator] * MARGIN_GROWTH)
        if outcome.grids:
            hint = outcome.grids[-1]
        if outcome.status == "OPTIMAL" and outcome.objective == 0:
            for indicator in open_set:
                (state.absent if margins[indicator] == 1 else state.raised).add(indicator)
            return
        if outcome.status == "MODEL_INVALID":
            raise RuntimeError("CP-SAT rejected the stability model (a bug in the encoding)")
        if outcome.status == "INFEASIBLE":
            # The base model has no grid point at all: the bounds were wrong. Claim nothing.
            return
        if seen_now or shown:
            last_progress = time.monotonic()
            continue
        if proof_fallback:
            model.model.clear_objective()  # type: ignore[no-untyped-call]
            for indicator in sorted(open_set, key=_indicator_order):
                if stalled(started, last_progress, time.monotonic()):
                    break
                own_deadline = min(deadline, time.monotonic() + cap)
                margins[indicator] = _prove_one(
                    model,
                    indicator,
                    margins[indicator],
                    hint,
                    table,
                    box_index,
                    config,
                    own_deadline,
                    state,
                    SOURCE_SINGLE,
                )
            still_open = _still_unseen(table, open_set) - state.resolved()
            if still_open != open_set:
                last_progress = time.monotonic()
            open_set = still_open
        cap *= 2


def stalled(started: float, last_progress: float, now: float) -> bool:
    """Whether a stage that started at `started` and last saw or ruled out a phase at
    `last_progress` has stalled by `now` (see STALL_SECONDS)."""
    return now - last_progress > max(STALL_SECONDS, STALL_FRACTION * (now - started))


def _per_neuron_stage(
    model: StabilityModel,
    indicators: set[Indicator],
    hint: IntArray,
    table: WitnessRecorder,
    box_index: int,
    config: Config,
    deadline: float,
    state: _BoxState,
) -> None:
    """One feasibility problem per indicator, in order, each with an equal share of the time
    left."""
    model.model.clear_objective()  # type: ignore[no-untyped-call]
    ordered = sorted(indicators, key=_indicator_order)
    for position, indicator in enumerate(ordered):
        share = (deadline - time.monotonic()) / (len(ordered) - position)
        _prove_one(
            model,
            indicator,
            1,
            hint,
            table,
            box_index,
            config,
            time.monotonic() + share,
            state,
            SOURCE_PER_NEURON,
        )


def _prove_one(
    model: StabilityModel,
    indicator: Indicator,
    margin: int,
    hint: IntArray,
    table: WitnessRecorder,
    box_index: int,
    config: Config,
    deadline: float,
    state: _BoxState,
    source: str,
) -> int:
    """Decide one indicator by feasibility of G >= margin (resp. G <= -margin).

    INFEASIBLE: absent (claimed at margin 1, `raised` otherwise). A solution is offered to the
    table; if it does not confirm the phase, the margin grows and the problem is re-solved,
    up to the margin at which the error bound guarantees confirmation. Returns the margin
    reached (the indicator stays open if the deadline comes first).
    """
    neuron, phase = indicator
    limit = _margin_limit(model, neuron)
    while _still_unseen(table, [indicator]) and indicator not in state.resolved():
        remaining = deadline - time.monotonic()
        if remaining <= 0.0:
            break
        literal = model.indicator(neuron, phase, margin)
        watched = [((neuron, phase, margin), literal)]
        _retire_unwatched(model, watched)
        model.set_literal_domain(literal, 1, 1)
        if HINT_WITNESSES:
            model.hint(hint)
        outcome = _solve(
            model, watched, config, remaining, early_stop=False, first_solution_only=True
        )
        model.set_literal_domain(literal, 0, 1)
        state.record(outcome)
        _offer(model, table, outcome.grids, box_index, source)
        if outcome.status == "MODEL_INVALID":
            raise RuntimeError("CP-SAT rejected the stability model (a bug in the encoding)")
        if outcome.status == "INFEASIBLE":
            (state.absent if margin == 1 else state.raised).add(indicator)
            break
        if not outcome.grids:
            break
        if not _still_unseen(table, [indicator]):
            state.confirmed += 1
            break
        state.unconfirmed += 1
        if margin >= limit:
            state.raised.add(indicator)
            break
        margin = min(limit, margin * MARGIN_GROWTH)
    return margin
