"""Float bound propagation for the producer: CROWN's multipliers and what they cost.

Stage: ... -> search -> **branching** (which uses this) -> statuses ...

UNTRUSTED: everything here is float64 and only proposes dual multipliers; the kernel
(`verifier.kernel.bounds`) computes the bound they give exactly, and any multipliers at all give
a sound bound there (weak duality), so a poor proposal costs tightness, never soundness.

The dual function of a target row c of layer L, over proved bounds [l_k, u_k] of the earlier
layers (phase assumptions narrow them) and the input box, is

    D(nu) = c.b_L + sum_k nu_k.b_k + sum_k sum_i min_{g in [l, u]} (mu_ki relu(g) - nu_ki g)
            + min_{x in box} mu_x.x,     mu_{L-1} = W_L^T c, mu_{k-1} = W_k^T nu_k.

It is concave and piecewise linear in nu. CROWN's multipliers (back-substitution through the
triangle relaxation) are one point of it; the triangle LP's duals (`verifier.lp`) are its
maximum. `relaxation_costs` says which neuron's interval costs a bound most under given
multipliers: the neuron a case split should cut first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .ir import Network

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


def dual_value(
    network: Network,
    lower_box: FloatArray,
    upper_box: FloatArray,
    layer: int,
    index: int,
    sign: float,
    lowers: Sequence[FloatArray],
    uppers: Sequence[FloatArray],
    multipliers: Sequence[FloatArray],
) -> float:
    """D(nu) of the module docstring in float64: an estimate (not a proof) of the lower bound
    of sign * g_layer[index] the kernel would compute exactly from the same multipliers. The
    producer uses it to skip exact checks that are bound to fail."""
    mu = sign * network.layers[layer].float_weights[index]
    total = sign * float(network.layers[layer].float_bias[index])
    for k in range(layer - 1, -1, -1):
        nu = multipliers[k]
        lower, upper = lowers[k], uppers[k]
        at_lower = mu * np.maximum(lower, 0.0) - nu * lower
        at_upper = mu * np.maximum(upper, 0.0) - nu * upper
        least = np.minimum(at_lower, at_upper)
        least = np.where((lower < 0) & (upper > 0), np.minimum(least, 0.0), least)
        total += float(least.sum()) + float(nu @ network.layers[k].float_bias)
        mu = nu @ network.layers[k].float_weights
    centre, radius = (lower_box + upper_box) / 2, (upper_box - lower_box) / 2
    return total + float(mu @ centre - np.abs(mu) @ radius)
