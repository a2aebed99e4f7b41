"""Certified pre-activation bounds, computed in exact arithmetic from dual multipliers.

Part of the TRUSTED kernel: the run uses it to decide which bounds are proved, and `check`
runs the same computation from the certificate alone. It imports no producer code.

Soundness (weak Lagrangian duality). Let layer k compute g_k = W_k h_{k-1} + b_k with
h_{-1} = x in the box B and h_k = relu(g_k), and let [l_k, u_k] be proved bounds of g_k
(k < L). For a target row c of layer L and ANY real multipliers nu_k (one vector per earlier
layer), on every point of the network,

    c.g_L = c.b_L + sum_k nu_k.b_k + sum_k sum_i [mu_ki relu(g_ki) - nu_ki g_ki] + mu_x.x

where mu_{L-1} = W_L^T c, mu_{k-1} = W_k^T nu_k and mu_x = W_0^T nu_0 (the added terms
nu_k.(W_k h_{k-1} + b_k - g_k) are zero). Each bracket is at least its minimum over
g in [l_ki, u_ki], which is attained at l, u or the kink 0 (a piecewise-linear function of one
variable), and mu_x.x is at least its minimum over the box. The sum of these minima is
therefore a lower bound of c.g_L on the box, whatever the multipliers are. This module computes
that sum EXACTLY (integers over rational scales), so floating point never enters the proof.

The multipliers are chosen as CROWN does (back-substitution through the triangle relaxation:
nu_k = mu_k times the lower slope where mu_k >= 0 and times the upper slope u/(u-l) where
mu_k < 0; identity for active neurons, zero for inactive ones), with lower slopes from the
certificate when it gives them (alpha-CROWN) and the adaptive CROWN choice otherwise. Slopes
are rounded to dyadic rationals and the multipliers to at most `MULTIPLIER_BITS` bits (both
only change which multipliers are used, so neither can make a bound wrong). Bounds are stored
as float64 values rounded outward from the exact ones.

Phase assumptions (case splits): "g_ki >= 0" or "g_ki <= 0" narrow [l_ki, u_ki] to its
non-negative or non-positive part; a bound computed so holds wherever the assumptions do, and
an assumption set whose narrowed interval is empty holds nowhere (the case is vacuous).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction

import flint
import numpy as np
import numpy.typing as npt

from ..domain import Box
from ..ir import Network
from ..kernel.scaled import (
    FloatArray,
    ObjArray,
    Scaled,
    common_scale,
    floor_to_bits,
    matmul,
    to_flint,
)
from ..status import Neuron, Phase

SLOPE_BITS = 16
"""Lower and upper relaxation slopes are multiples of 2**-SLOPE_BITS."""
MULTIPLIER_BITS = 64
"""Multipliers are rounded down to at most this many significant bits per matrix, so the
integers stay small however deep the network is."""


@dataclasses.dataclass(frozen=True, eq=False)
class _ExactLayer:
    weights: flint.fmpz_mat
    rows: ObjArray
    absolute: flint.fmpz_mat
    scale: Fraction
    bias: Scaled
    relu: bool


class ExactNetwork:
    """A network's weights as integer matrices over one rational scale per layer (built once;
    the reference semantics: stored floats read as the exact rationals they are)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        layers = []
        for layer in network.layers:
            weights = Scaled.from_values(layer.weights)
            layers.append(
                _ExactLayer(
                    to_flint(weights.numerators),
                    weights.numerators,
                    to_flint(np.abs(weights.numerators)),
                    weights.scale,
                    Scaled.from_values(layer.bias),
                    layer.relu,
                )
            )
        self.layers = tuple(layers)

    @property
    def hidden_layers(self) -> list[int]:
        return [k for k, layer in enumerate(self.layers) if layer.relu]


@dataclasses.dataclass(frozen=True)
class LayerBounds:
    """Proved bounds lower <= g_k <= upper of every hidden layer k on one box (float64 values,
    each the exact rational it is)."""

    lower: tuple[FloatArray, ...]
    upper: tuple[FloatArray, ...]

    def shows(self, neuron: Neuron, phase: Phase) -> bool:
        """Whether these bounds prove `neuron` stable in `phase`."""
        if phase is Phase.INACTIVE:
            return bool(self.upper[neuron.layer][neuron.index] <= 0.0)
        return bool(self.lower[neuron.layer][neuron.index] >= 0.0)


Slopes = Mapping[int, Sequence[FloatArray]]
"""Per target layer L, one lower-relaxation slope vector per earlier layer k < L."""


def box_bounds(
    net: ExactNetwork,
    box: Box,
    slopes: Slopes | None = None,
    enclosing: LayerBounds | None = None,
) -> LayerBounds:
    """Proved bounds of every hidden layer on `box`, layer by layer: each layer's bounds rest
    on the earlier layers' (the tightest of back-substitution, interval propagation and the
    bounds proved on a box `enclosing` this one)."""
    lowers: list[FloatArray] = []
    uppers: list[FloatArray] = []
    for layer_index in net.hidden_layers:
        if layer_index != len(lowers):
            raise ValueError("hidden layers must come before the output layer")
        size = net.layers[layer_index].rows.shape[0]
        lower = np.full(size, -np.inf)
        upper = np.full(size, np.inf)
        # Within an enclosing box's bounds, only the neurons unstable there are worth more
        # work: a stable neuron's bounds change its multipliers by rounding errors at most.
        if enclosing is None:
            rows = np.arange(size)
        else:
            rows = np.flatnonzero(
                (enclosing.lower[layer_index] < 0) & (enclosing.upper[layer_index] > 0)
            )
        if rows.size:
            index = np.concatenate([rows, rows])
            sign = np.concatenate([np.ones(rows.size, np.int64), -np.ones(rows.size, np.int64)])
            layer_slopes = slopes.get(layer_index) if slopes is not None else None
            exact = lower_bounds(net, box, lowers, uppers, layer_index, index, sign, layer_slopes)
            lower[rows] = Scaled(exact.numerators[: rows.size], exact.scale).to_float("down")
            upper[rows] = -Scaled(exact.numerators[rows.size :], exact.scale).to_float("down")
        if layer_index > 0:
            interval_lower, interval_upper = _interval(net, layer_index, lowers[-1], uppers[-1])
            lower = np.maximum(lower, interval_lower)
            upper = np.minimum(upper, interval_upper)
        if enclosing is not None:
            lower = np.maximum(lower, enclosing.lower[layer_index])
            upper = np.minimum(upper, enclosing.upper[layer_index])
        lowers.append(lower)
        uppers.append(upper)
    return LayerBounds(tuple(lowers), tuple(uppers))


def target_bound(
    net: ExactNetwork,
    box: Box,
    bounds: LayerBounds,
    neuron: Neuron,
    phase: Phase,
    assumptions: Mapping[Neuron, Phase],
    multipliers: Sequence[FloatArray] | None = None,
) -> Fraction | None:
    """The proved bound of `neuron` that can show `phase` (its upper bound for INACTIVE, its
    lower bound for ACTIVE) on the part of `box` where the phase assumptions hold, or None if
    the assumptions hold nowhere on the box (then every claim holds there vacuously).

    Only neurons of layers before `neuron.layer` may be assumed. `multipliers`: one vector per
    earlier layer (see `lower_bounds`); CROWN's when None."""
    lowers, uppers = narrowed(bounds, neuron.layer, assumptions)
    if any(np.any(lo > hi) for lo, hi in zip(lowers, uppers, strict=True)):
        return None
    sign = -1 if phase is Phase.INACTIVE else 1
    exact = lower_bounds(
        net,
        box,
        lowers,
        uppers,
        neuron.layer,
        np.array([neuron.index]),
        np.array([sign], dtype=np.int64),
        multipliers=None if multipliers is None else [np.asarray(m)[None, :] for m in multipliers],
    )
    return sign * exact.value(0)


def narrowed(
    bounds: LayerBounds, layer: int, assumptions: Mapping[Neuron, Phase]
) -> tuple[list[FloatArray], list[FloatArray]]:
    """Copies of the bounds of the layers before `layer`, each assumed neuron's interval cut
    to its assumed sign (ACTIVE: g >= 0, INACTIVE: g <= 0); lower > upper where an assumption
    contradicts the bounds."""
    lowers = [np.array(v, copy=True) for v in bounds.lower[:layer]]
    uppers = [np.array(v, copy=True) for v in bounds.upper[:layer]]
    for assumed, assumed_phase in assumptions.items():
        if not 0 <= assumed.layer < layer:
            raise ValueError(f"assumption on {assumed} is not about an earlier layer")
        if assumed_phase is Phase.ACTIVE:
            lowers[assumed.layer][assumed.index] = max(lowers[assumed.layer][assumed.index], 0.0)
        else:
            uppers[assumed.layer][assumed.index] = min(uppers[assumed.layer][assumed.index], 0.0)
    return lowers, uppers


def bound_shows(value: Fraction | None, phase: Phase) -> bool:
    """Whether a `target_bound` result proves the phase (None: the case is vacuous)."""
    if value is None:
        return True
    return value <= 0 if phase is Phase.INACTIVE else value >= 0


def lower_bounds(
    net: ExactNetwork,
    box: Box,
    lowers: Sequence[FloatArray],
    uppers: Sequence[FloatArray],
    layer: int,
    index: npt.NDArray[np.int64],
    sign: npt.NDArray[np.int64],
    slopes: Sequence[FloatArray] | None = None,
    multipliers: Sequence[FloatArray] | None = None,
) -> Scaled:
    """Exact lower bounds of sign[r] * g_layer[index[r]] for every row r, over the box and the
    proved bounds [lowers[k], uppers[k]] of the earlier layers (see the module docstring).

    The multipliers are CROWN's (with the given lower `slopes`, else adaptive ones), or the
    given `multipliers` (one (rows, n_k) float array per earlier layer k, read as the exact
    rationals they are): any values give a sound bound."""
    target = net.layers[layer]
    signs = sign.astype(object)
    mu = np.asarray(target.rows[index] * signs[:, None], dtype=object)
    mu_scale = target.scale
    parts: list[tuple[ObjArray, Fraction]] = [
        (np.asarray(target.bias.numerators[index] * signs, dtype=object), target.bias.scale)
    ]
    for k in range(layer - 1, -1, -1):
        lower, upper = lowers[k], uppers[k]
        both = Scaled.from_floats(np.concatenate([lower, upper]))
        size = lower.size
        low, high = both.numerators[:size], both.numerators[size:]
        if multipliers is None:
            nu, nu_scale = _crown_multipliers(mu, mu_scale, lower, upper, low, high, slopes, k)
        else:
            given = Scaled.from_floats(np.asarray(multipliers[k], dtype=np.float64))
            nu, nu_scale = floor_to_bits(given.numerators, given.scale, MULTIPLIER_BITS)
        # Columns with nu = 0 over g <= 0 add min mu relu(g) = 0: skip them.
        kept = (upper > 0.0) | np.any(nu != 0, axis=0)
        if kept.any():
            parts.append(_neuron_minima(mu, mu_scale, nu, nu_scale, both.scale, low, high, kept))
        bias = net.layers[k].bias
        parts.append((np.asarray(nu.dot(bias.numerators), dtype=object), nu_scale * bias.scale))
        nonzero = np.any(nu != 0, axis=0)
        # Neurons with nu = 0 in every row add nothing to the product.
        if nonzero.all():
            mu = matmul(nu, net.layers[k].weights)
        else:
            mu = matmul(nu[:, nonzero], to_flint(net.layers[k].rows[nonzero]))
        mu_scale = nu_scale * net.layers[k].scale
    # min over the box of mu.x = mu.(l + u)/2 - |mu|.(u - l)/2.
    inputs = Scaled.from_floats(np.concatenate([box.lower, box.upper]))
    size = box.lower.size
    x_low, x_high = inputs.numerators[:size], inputs.numerators[size:]
    box_part = mu.dot(x_low + x_high) - np.abs(mu).dot(x_high - x_low)
    parts.append((np.asarray(box_part, dtype=object), mu_scale * inputs.scale / 2))
    return _sum_parts(parts, len(index))


def _crown_multipliers(
    mu: ObjArray,
    mu_scale: Fraction,
    lower: FloatArray,
    upper: FloatArray,
    low: ObjArray,
    high: ObjArray,
    slopes: Sequence[FloatArray] | None,
    k: int,
) -> tuple[ObjArray, Fraction]:
    """nu_k = mu_k times the triangle relaxation's slope chosen by the sign of mu (lower slope
    where mu >= 0, upper slope where mu < 0), 1 for active and 0 for inactive neurons."""
    inactive = upper <= 0.0
    active = (lower >= 0.0) & ~inactive
    unstable = ~inactive & ~active
    alpha = _lower_slopes(lower, upper, None if slopes is None else slopes[k])
    beta = _upper_slopes(low, high, unstable)
    chosen = np.where(mu >= 0, alpha[None, :], beta[None, :])
    chosen[:, active] = 1 << SLOPE_BITS
    chosen[:, inactive] = 0
    return floor_to_bits(
        np.asarray(mu * chosen, dtype=object), mu_scale / 2**SLOPE_BITS, MULTIPLIER_BITS
    )


def _lower_slopes(lower: FloatArray, upper: FloatArray, given: FloatArray | None) -> ObjArray:
    """Lower relaxation slopes (relu(g) >= a g) as numerators over 2**SLOPE_BITS: the given
    ones clipped to [0, 1], else CROWN's adaptive choice (1 where u >= -l, else 0)."""
    if given is None:
        values = (upper >= -lower).astype(np.float64)
    else:
        values = np.clip(np.nan_to_num(np.asarray(given, dtype=np.float64)), 0.0, 1.0)
    return np.floor(values * 2**SLOPE_BITS).astype(np.int64).astype(object)  # type: ignore[no-any-return]


def _upper_slopes(low: ObjArray, high: ObjArray, unstable: npt.NDArray[np.bool_]) -> ObjArray:
    """Upper relaxation slopes u/(u-l), rounded up, as numerators over 2**SLOPE_BITS."""
    slopes = np.zeros(low.size, dtype=object)
    for i in np.flatnonzero(unstable):
        u, width = int(high[i]), int(high[i]) - int(low[i])
        slopes[i] = -((-u << SLOPE_BITS) // width)
    return slopes


def _neuron_minima(
    mu: ObjArray,
    mu_scale: Fraction,
    nu: ObjArray,
    nu_scale: Fraction,
    bound_scale: Fraction,
    low: ObjArray,
    high: ObjArray,
    kept: npt.NDArray[np.bool_],
) -> tuple[ObjArray, Fraction]:
    """Per row, the sum over the kept neurons of min_{g in [l, u]} mu relu(g) - nu g: the
    smaller of its values at l and u, and 0 (its value at the kink) when l < 0 < u."""
    scale = common_scale(mu_scale, nu_scale)
    m = mu[:, kept] * int(mu_scale / scale)
    n = nu[:, kept] * int(nu_scale / scale)
    lo, hi = low[kept], high[kept]
    relu_lo = np.where(lo > 0, lo, 0)
    relu_hi = np.where(hi > 0, hi, 0)
    at_low = m * relu_lo[None, :] - n * lo[None, :]
    at_high = m * relu_hi[None, :] - n * hi[None, :]
    least = np.minimum(at_low, at_high)
    kink = (lo < 0) & (hi > 0)
    least = np.where(kink[None, :], np.minimum(least, 0), least)
    return np.asarray(least.sum(axis=1), dtype=object), scale * bound_scale


def _sum_parts(parts: list[tuple[ObjArray, Fraction]], rows: int) -> Scaled:
    scale = common_scale(*(s for _, s in parts))
    total = np.zeros(rows, dtype=object)
    for values, part_scale in parts:
        total = total + values * int(part_scale / scale)
    return Scaled(np.asarray(total, dtype=object), scale)


def _interval(
    net: ExactNetwork, layer: int, lower: FloatArray, upper: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Interval bounds of g_layer from proved bounds of g_{layer-1} (h = relu(g) in
    [relu(l), relu(u)]): W c +- |W| r + b with centre c and radius r, exactly."""
    previous = net.layers[layer - 1]
    h_low = np.maximum(lower, 0.0) if previous.relu else lower
    h_high = np.maximum(upper, 0.0) if previous.relu else upper
    values = Scaled.from_floats(np.concatenate([h_low, h_high]))
    size = lower.size
    centre2 = (values.numerators[:size] + values.numerators[size:]).reshape(-1, 1)
    radius2 = (values.numerators[size:] - values.numerators[:size]).reshape(-1, 1)
    this = net.layers[layer]
    middle = matmul(centre2.T, this.weights.transpose()).reshape(-1)
    spread = matmul(radius2.T, this.absolute.transpose()).reshape(-1)
    scale = this.scale * values.scale / 2
    common = common_scale(scale, this.bias.scale)
    bias = this.bias.at_scale(common)
    factor = int(scale / common)
    low = Scaled(np.asarray((middle - spread) * factor + bias, dtype=object), common)
    high = Scaled(np.asarray((middle + spread) * factor + bias, dtype=object), common)
    return low.to_float("down"), high.to_float("up")
