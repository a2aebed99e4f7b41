"""Float pre-activation bounds: interval arithmetic and symbolic back-substitution.

Stage: ONNX -> IR -> domain and **bounds** -> witnesses -> stability search -> certification ...

For one box and every affine layer l, `LayerBounds` holds float64 vectors with
lower[l][i] <= g_l[i](x) <= upper[l][i] for every x in the box, where g_l is the EXACT (rational)
pre-activation. These bounds are hints: a neuron they decide (lower >= 0 or upper <= 0) is a
claim that certification must prove, and they give the stability search its variable domains.
Still, they are made robustly sound against float rounding: every computed value is widened by
an estimate of its accumulated rounding error (the standard gamma_n = n*u/(1-n*u) bound on a
dot product of n terms, doubled) plus a relative padding of 1e-9*(|value|+1).

- `interval_bounds`: interval arithmetic layer by layer (exact up to rounding on the first
  layer: each bound is attained at a corner of the box).
- `symbolic_bounds`: DeepPoly-style back-substitution. For each layer the identity on g_l is
  pushed back to the input through every earlier layer with the ReLU relaxations below, then
  concretized over the box; each layer's result is intersected with interval arithmetic from
  the already tightened previous layer, so it is never looser than `interval_bounds`.
- `domain_bounds`: the elementwise hull of per-box bounds (bounds valid on a union of boxes).

ReLU relaxations of h = relu(g) for g in [L, U] with L < 0 < U: upper chord
h <= U(g-L)/(U-L) (valid on [L, U] because relu is convex and the chord lies above it at both
ends; its intercept is rounded upward), lower h >= alpha*g with alpha = 1 if U > -L else 0
(valid for every g). Stable neurons (L >= 0 or U <= 0) and neurons in `fixed` are exactly linear
(ACTIVE: h = g) or zero (INACTIVE: h = 0). A `fixed` phase must be true on the box (proved):
the bounds are only as sound as the phases they are given.

Soundness of rounded back-substitution: the coefficient vectors used at each step may differ
from the exact products, but any coefficient vector gives a valid bound once the difference
times the largest magnitude of the quantity it multiplies is added; that is the accumulated
error estimate carried along with every back-substitution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .domain import Box
from .ir import AffineLayer, Network
from .status import Neuron, Phase

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_UNIT_ROUNDOFF = 2.0**-53
_RELATIVE_PADDING = 1e-9


@dataclasses.dataclass(frozen=True, eq=False)
class LayerBounds:
    """Float64 pre-activation bounds on one box (or a union), one vector pair per affine layer.

    lower[l][i] <= g_l[i](x) <= upper[l][i] for every x of the box, up to the soundness caveats
    in the module docstring.
    """

    lower: list[FloatArray]
    upper: list[FloatArray]

    def phase_of(self, neuron: Neuron) -> Phase | None:
        """The phase these bounds claim for a neuron (a claim, not a proof), or None.

        INACTIVE if upper <= 0, else ACTIVE if lower >= 0. A neuron with both (g == 0 on the
        box) is reported INACTIVE: removing it is the simpler compression.
        """
        if self.upper[neuron.layer][neuron.index] <= 0.0:
            return Phase.INACTIVE
        if self.lower[neuron.layer][neuron.index] >= 0.0:
            return Phase.ACTIVE
        return None

    def undecided(self, neurons: Sequence[Neuron]) -> list[Neuron]:
        """The neurons (in the given order) whose phase these bounds do not claim."""
        return [neuron for neuron in neurons if self.phase_of(neuron) is None]


@dataclasses.dataclass(frozen=True, eq=False)
class LinearBounds:
    """Linear bounds of one layer's pre-activations in terms of the input x, on one box.

    lower_coefficients @ x + lower_constant <= g_l(x) <= upper_coefficients @ x + upper_constant
    for x in the box, up to the rounding error accounted for in the concrete `LayerBounds`.
    Rows are neurons; the coefficient signs pick the box corner maximizing each linear bound.
    """

    lower_coefficients: FloatArray
    lower_constant: FloatArray
    upper_coefficients: FloatArray
    upper_constant: FloatArray


@dataclasses.dataclass(frozen=True)
class _Relaxation:
    """h >= lower_slope*g and h <= upper_slope*g + upper_intercept, per neuron of a layer."""

    lower_slope: FloatArray
    upper_slope: FloatArray
    upper_intercept: FloatArray
    output_magnitude: FloatArray
    """max |h| over the box, per neuron."""


def _rounding_error(magnitude: FloatArray, terms: int) -> FloatArray:
    """Twice gamma_{terms} times a sum of absolute values: a rounding-error bound on a sum."""
    count = terms + 4
    gamma = count * _UNIT_ROUNDOFF / (1.0 - count * _UNIT_ROUNDOFF)
    return np.asarray(2.0 * gamma * magnitude, dtype=np.float64)


def _widen(
    lower: FloatArray, upper: FloatArray, error: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Move bounds outward by the rounding error estimate and the relative padding."""
    widened_lower = lower - error - _RELATIVE_PADDING * (np.abs(lower) + 1.0)
    widened_upper = upper + error + _RELATIVE_PADDING * (np.abs(upper) + 1.0)
    return widened_lower, widened_upper


def _fixed_masks(
    network: Network, fixed: Mapping[Neuron, Phase] | None
) -> list[tuple[BoolArray, BoolArray]]:
    """Per layer: (fixed ACTIVE mask, fixed INACTIVE mask). Bad neurons are caller bugs."""
    masks = [
        (np.zeros(layer.outputs, dtype=bool), np.zeros(layer.outputs, dtype=bool))
        for layer in network.layers
    ]
    for neuron, phase in (fixed or {}).items():
        if not (0 <= neuron.layer < len(network.layers)) or not network.layers[neuron.layer].relu:
            raise ValueError(f"fixed neuron {neuron} is not a hidden neuron of {network.name}")
        if not 0 <= neuron.index < network.layers[neuron.layer].outputs:
            raise ValueError(f"fixed neuron {neuron} is out of range in {network.name}")
        active, inactive = masks[neuron.layer]
        (active if phase is Phase.ACTIVE else inactive)[neuron.index] = True
    return masks


def _apply_fixed(
    lower: FloatArray, upper: FloatArray, masks: tuple[BoolArray, BoolArray]
) -> tuple[FloatArray, FloatArray]:
    """A proved phase bounds g by 0 on its side."""
    active, inactive = masks
    return np.where(active, np.maximum(lower, 0.0), lower), np.where(
        inactive, np.minimum(upper, 0.0), upper
    )


def _activation_range(
    layer: AffineLayer, lower: FloatArray, upper: FloatArray, inactive: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Bounds of h = relu(g) (or g for a layer without ReLU) given bounds of g."""
    if not layer.relu:
        return lower, upper
    zero = np.zeros_like(lower)
    return np.where(inactive, zero, np.maximum(lower, 0.0)), np.where(
        inactive, zero, np.maximum(upper, 0.0)
    )


def _interval_layer(
    layer: AffineLayer, h_lower: FloatArray, h_upper: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Interval arithmetic for g = W h + b with h in [h_lower, h_upper], widened for rounding."""
    weights, bias = layer.float_weights, layer.float_bias
    positive, negative = np.maximum(weights, 0.0), np.minimum(weights, 0.0)
    lower = positive @ h_lower + negative @ h_upper + bias
    upper = positive @ h_upper + negative @ h_lower + bias
    magnitude = np.abs(weights) @ np.maximum(np.abs(h_lower), np.abs(h_upper)) + np.abs(bias)
    return _widen(lower, upper, _rounding_error(magnitude, 2 * layer.inputs))


def interval_bounds(
    network: Network, box: Box, fixed: Mapping[Neuron, Phase] | None = None
) -> LayerBounds:
    """Interval-arithmetic pre-activation bounds of every layer on one box.

    On the first layer each bound is attained (before widening) at the box corner picked by the
    signs of the neuron's weights.
    """
    _check_box(network, box)
    masks = _fixed_masks(network, fixed)
    h_lower, h_upper = box.lower, box.upper
    lowers: list[FloatArray] = []
    uppers: list[FloatArray] = []
    for layer, layer_masks in zip(network.layers, masks, strict=True):
        lower, upper = _apply_fixed(*_interval_layer(layer, h_lower, h_upper), layer_masks)
        lowers.append(lower)
        uppers.append(upper)
        h_lower, h_upper = _activation_range(layer, lower, upper, layer_masks[1])
    return LayerBounds(lowers, uppers)


def _relaxation(
    layer: AffineLayer, lower: FloatArray, upper: FloatArray, masks: tuple[BoolArray, BoolArray]
) -> _Relaxation:
    """The linear relaxation of one layer's activation from its (sound) pre-activation bounds."""
    magnitude = np.maximum(np.abs(lower), np.abs(upper))
    if not layer.relu:
        ones = np.ones_like(lower)
        return _Relaxation(ones, ones, np.zeros_like(lower), magnitude)
    active = masks[0] | (lower >= 0.0)
    inactive = (masks[1] | (upper <= 0.0)) & ~active
    unstable = ~(active | inactive)
    safe_lower = np.where(unstable, lower, -1.0)
    safe_upper = np.where(unstable, upper, 1.0)
    chord_slope = safe_upper / (safe_upper - safe_lower)
    # The rounded chord must still lie above relu at g = L and g = U; 8u of the terms covers
    # the rounding of the width, the slope and the product.
    chord_intercept = -chord_slope * safe_lower
    chord_intercept = chord_intercept + 8.0 * _UNIT_ROUNDOFF * (chord_intercept + safe_upper)
    upper_slope = np.where(active, 1.0, np.where(inactive, 0.0, chord_slope))
    upper_intercept = np.where(unstable, chord_intercept, 0.0)
    lower_slope = np.where(active, 1.0, np.where(unstable & (upper > -lower), 1.0, 0.0))
    output_magnitude = np.where(inactive, 0.0, np.maximum(upper, 0.0))
    return _Relaxation(lower_slope, upper_slope, upper_intercept, output_magnitude)


def _back_substitute(
    network: Network,
    layer_index: int,
    sign: float,
    relaxations: Sequence[_Relaxation],
    input_magnitude: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coefficients, constant and accumulated rounding error of an upper bound of sign*g_layer.

    Upper bound of sum_j A_j h_j: positive A_j use the upper relaxation, negative the lower one.
    With sign = -1 this is minus a lower bound of g_layer.
    """
    layer = network.layers[layer_index]
    coefficients = sign * layer.float_weights
    constant = sign * layer.float_bias
    error = np.zeros_like(constant)
    largest_inner = max(earlier.inputs for earlier in network.layers[: layer_index + 1])
    for earlier_index in range(layer_index - 1, -1, -1):
        relaxation = relaxations[earlier_index]
        earlier = network.layers[earlier_index]
        positive = np.maximum(coefficients, 0.0)
        negative = np.minimum(coefficients, 0.0)
        # Through the activation: coefficients on h become coefficients on g.
        constant = constant + positive @ relaxation.upper_intercept
        coefficients = positive * relaxation.upper_slope + negative * relaxation.lower_slope
        # Through the affine map g = W h' + b, with h' the previous activation (or the input).
        previous_magnitude = (
            relaxations[earlier_index - 1].output_magnitude
            if earlier_index > 0
            else input_magnitude
        )
        g_magnitude = np.abs(earlier.float_weights) @ previous_magnitude + np.abs(
            earlier.float_bias
        )
        error = error + _rounding_error(
            np.abs(positive) @ relaxation.upper_intercept
            + 2.0 * np.abs(coefficients) @ g_magnitude
            + 2.0 * np.abs(constant),
            largest_inner,
        )
        constant = constant + coefficients @ earlier.float_bias
        coefficients = coefficients @ earlier.float_weights
    return coefficients, constant, error


def _concretize_upper(
    coefficients: FloatArray, constant: FloatArray, error: FloatArray, box: Box
) -> tuple[FloatArray, FloatArray]:
    """The maximum of coefficients @ x + constant over the box, and its total error estimate."""
    value = (
        np.maximum(coefficients, 0.0) @ box.upper
        + np.minimum(coefficients, 0.0) @ box.lower
        + constant
    )
    magnitude = np.abs(coefficients) @ np.maximum(np.abs(box.lower), np.abs(box.upper)) + np.abs(
        constant
    )
    return value, error + _rounding_error(magnitude, 2 * box.size)


def symbolic_linear_bounds(
    network: Network, box: Box, fixed: Mapping[Neuron, Phase] | None = None
) -> tuple[LayerBounds, list[LinearBounds]]:
    """Symbolic bounds of every layer on one box, with the linear bounds they concretize.

    The concrete bounds are intersected, layer by layer, with interval arithmetic over the
    previous layer's (already tightened) bounds.
    """
    _check_box(network, box)
    masks = _fixed_masks(network, fixed)
    input_magnitude = np.maximum(np.abs(box.lower), np.abs(box.upper))
    lowers: list[FloatArray] = []
    uppers: list[FloatArray] = []
    linear: list[LinearBounds] = []
    relaxations: list[_Relaxation] = []
    h_lower, h_upper = box.lower, box.upper
    for layer_index, layer in enumerate(network.layers):
        interval_lower, interval_upper = _interval_layer(layer, h_lower, h_upper)
        upper_coefficients, upper_constant, upper_error = _back_substitute(
            network, layer_index, 1.0, relaxations, input_magnitude
        )
        minus_coefficients, minus_constant, minus_error = _back_substitute(
            network, layer_index, -1.0, relaxations, input_magnitude
        )
        upper_value, upper_error = _concretize_upper(
            upper_coefficients, upper_constant, upper_error, box
        )
        minus_value, minus_error = _concretize_upper(
            minus_coefficients, minus_constant, minus_error, box
        )
        symbolic_lower, _ = _widen(-minus_value, -minus_value, minus_error)
        _, symbolic_upper = _widen(upper_value, upper_value, upper_error)
        lower, upper = _apply_fixed(
            np.maximum(symbolic_lower, interval_lower),
            np.minimum(symbolic_upper, interval_upper),
            masks[layer_index],
        )
        lowers.append(lower)
        uppers.append(upper)
        linear.append(
            LinearBounds(-minus_coefficients, -minus_constant, upper_coefficients, upper_constant)
        )
        relaxations.append(_relaxation(layer, lower, upper, masks[layer_index]))
        h_lower, h_upper = _activation_range(layer, lower, upper, masks[layer_index][1])
    return LayerBounds(lowers, uppers), linear


def symbolic_bounds(
    network: Network, box: Box, fixed: Mapping[Neuron, Phase] | None = None
) -> LayerBounds:
    """DeepPoly-style back-substitution bounds on one box, never looser than interval bounds."""
    return symbolic_linear_bounds(network, box, fixed)[0]


def domain_bounds(per_box: Sequence[LayerBounds]) -> LayerBounds:
    """The elementwise hull of bounds on several boxes: valid on their union."""
    if not per_box:
        raise ValueError("domain_bounds needs the bounds of at least one box")
    layers = len(per_box[0].lower)
    lower = [np.min([bounds.lower[layer] for bounds in per_box], axis=0) for layer in range(layers)]
    upper = [np.max([bounds.upper[layer] for bounds in per_box], axis=0) for layer in range(layers)]
    return LayerBounds(lower, upper)


def _check_box(network: Network, box: Box) -> None:
    if box.size != network.input_size:
        raise ValueError(
            f"box has {box.size} inputs but {network.name} expects {network.input_size}"
        )
