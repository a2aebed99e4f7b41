"""Float bound propagation for the producer: CROWN's multipliers and their optimisation.

Stage: ... -> search -> **branching** (which uses this) -> statuses ...

UNTRUSTED: everything here is float64 and only proposes dual multipliers; the kernel
(`verifier.kernel.bounds`) computes the bound they give exactly, and any multipliers at all give
a sound bound there (weak duality), so a poor proposal costs tightness, never soundness.

The dual function of a target row c of layer L, over proved bounds [l_k, u_k] of the earlier
layers (phase assumptions narrow them) and the input box, is

    D(nu) = c.b_L + sum_k nu_k.b_k + sum_k sum_i min_{g in [l, u]} (mu_ki relu(g) - nu_ki g)
            + min_{x in box} mu_x.x,     mu_{L-1} = W_L^T c, mu_{k-1} = W_k^T nu_k.

It is concave and piecewise linear in nu, and its supergradient with respect to nu_k is the
primal residual W_k h*_{k-1} + b_k - g*_k at the minimising points (g* per neuron, h* = relu(g*),
the box corner x* for k = 0). `optimise` runs Adam on it from CROWN's multipliers (the
back-substitution through the triangle relaxation) and keeps the best point seen: this is the
Lagrangian relaxation the LP of the triangle relaxation is equivalent to, solved approximately,
batched over many targets at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from verifier.domain import Box
from verifier.ir import Network

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Targets:
    """Rows to bound from below: sign[r] * g_layer[index[r]], over bounds of layers < layer.

    lowers/uppers have one (rows, n_k) array per earlier layer: each row may carry its own
    bounds (phase assumptions narrow them per row)."""

    layer: int
    index: npt.NDArray[np.int64]
    sign: FloatArray
    lowers: list[FloatArray]
    uppers: list[FloatArray]


def crown_multipliers(network: Network, targets: Targets) -> list[FloatArray]:
    """CROWN's multipliers nu_k (rows, n_k) for every earlier layer k: back-substitution
    through the triangle relaxation with the adaptive lower slope."""
    mu = targets.sign[:, None] * network.layers[targets.layer].float_weights[targets.index]
    multipliers: list[FloatArray] = [np.zeros(0)] * targets.layer
    for k in range(targets.layer - 1, -1, -1):
        lower, upper = targets.lowers[k], targets.uppers[k]
        unstable = (lower < 0) & (upper > 0)
        width = np.where(unstable, upper - lower, 1.0)
        beta = np.where(unstable, upper / width, 0.0)
        alpha = (upper >= -lower).astype(np.float64)
        nu = np.where(mu >= 0, alpha * mu, beta * mu)
        nu = np.where(lower >= 0, mu, nu)
        nu = np.where(upper <= 0, 0.0, nu)
        multipliers[k] = nu
        mu = nu @ network.layers[k].float_weights
    return multipliers


def dual_value(
    network: Network, box: Box, targets: Targets, multipliers: Sequence[FloatArray]
) -> tuple[FloatArray, list[FloatArray]]:
    """D(nu) per row (float, approximate) and its supergradient per layer."""
    layer = network.layers[targets.layer]
    value = targets.sign * layer.float_bias[targets.index]
    mu = targets.sign[:, None] * layer.float_weights[targets.index]
    gradients: list[FloatArray] = [np.zeros(0)] * targets.layer
    relu_points: list[FloatArray] = [np.zeros(0)] * targets.layer
    g_points: list[FloatArray] = [np.zeros(0)] * targets.layer
    for k in range(targets.layer - 1, -1, -1):
        nu = multipliers[k]
        lower, upper = targets.lowers[k], targets.uppers[k]
        candidates = np.stack([lower, upper, np.clip(0.0, lower, upper)])
        values = mu[None] * np.maximum(candidates, 0.0) - nu[None] * candidates
        best = np.argmin(values, axis=0)
        g_star = np.take_along_axis(candidates, best[None], axis=0)[0]
        value = value + np.take_along_axis(values, best[None], axis=0)[0].sum(axis=1)
        value = value + nu @ network.layers[k].float_bias
        g_points[k] = g_star
        relu_points[k] = np.maximum(g_star, 0.0)
        mu = nu @ network.layers[k].float_weights
    x_star = np.where(mu >= 0, box.lower[None, :], box.upper[None, :])
    value = value + (mu * x_star).sum(axis=1)
    for k in range(targets.layer):
        previous = x_star if k == 0 else relu_points[k - 1]
        layer_k = network.layers[k]
        gradients[k] = previous @ layer_k.float_weights.T + layer_k.float_bias - g_points[k]
    return value, gradients


def optimise(
    network: Network,
    box: Box,
    targets: Targets,
    steps: int = 200,
    learning_rate: float = 0.01,
    final_rate: float = 0.0002,
    start: Sequence[FloatArray] | None = None,
) -> tuple[list[FloatArray], FloatArray]:
    """Adam ascent on the dual function from CROWN's multipliers (or `start`), the step size
    decaying geometrically from `learning_rate` to `final_rate` (relative to each row's
    largest multiplier); returns the best multipliers seen per row and their (float) dual
    values."""
    multipliers = [m.copy() for m in (start or crown_multipliers(network, targets))]
    best_value, gradients = dual_value(network, box, targets, multipliers)
    best = [m.copy() for m in multipliers]
    moments = [np.zeros_like(m) for m in multipliers]
    squares = [np.zeros_like(m) for m in multipliers]
    scales = [np.abs(m).max(axis=1, keepdims=True) + 1e-3 for m in multipliers]
    decay = (final_rate / learning_rate) ** (1 / max(1, steps - 1))
    for step in range(1, steps + 1):
        rate = learning_rate * decay ** (step - 1)
        for k, gradient in enumerate(gradients):
            moments[k] = 0.9 * moments[k] + 0.1 * gradient
            squares[k] = 0.999 * squares[k] + 0.001 * gradient**2
            corrected = moments[k] / (1 - 0.9**step)
            spread = np.sqrt(squares[k] / (1 - 0.999**step)) + 1e-12
            multipliers[k] = multipliers[k] + rate * scales[k] * corrected / spread
        value, gradients = dual_value(network, box, targets, multipliers)
        better = value > best_value
        if better.any():
            best_value = np.where(better, value, best_value)
            for k in range(len(best)):
                best[k][better] = multipliers[k][better]
    return best, best_value


def relaxation_costs(
    network: Network,
    layer: int,
    index: int,
    sign: float,
    lowers: Sequence[FloatArray],
    uppers: Sequence[FloatArray],
    multipliers: Sequence[FloatArray],
) -> list[FloatArray]:
    """Per earlier layer, what each neuron's interval costs the dual bound of one target row
    under the given multipliers: -min_{g in [l, u]} (mu relu(g) - nu g) >= 0 where that
    minimum is negative (0 elsewhere). Splitting the costliest unstable neuron removes most."""
    mu = sign * network.layers[layer].float_weights[index]
    costs: list[FloatArray] = [np.zeros(0)] * layer
    for k in range(layer - 1, -1, -1):
        nu = multipliers[k]
        lower, upper = lowers[k], uppers[k]
        candidates = np.stack([lower, upper, np.clip(0.0, lower, upper)])
        values = mu[None] * np.maximum(candidates, 0.0) - nu[None] * candidates
        costs[k] = np.maximum(-values.min(axis=0), 0.0)
        mu = nu @ network.layers[k].float_weights
    return costs
