"""The producer's float CROWN multipliers are the kernel's, up to its slope rounding; their
costs point at unstable neurons only."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernel_bounds import random_box, random_network

from verify_compress.kernel.bounds import ExactNetwork, box_bounds, target_bound
from verify_compress.propagation import Targets, crown_multipliers, relaxation_costs
from verify_compress.status import Neuron, Phase


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(list(Phase)))
def test_float_crown_multipliers_give_the_kernels_crown_bound(seed: int, phase: Phase) -> None:
    network = random_network(seed, [3, 8, 8, 8, 2])
    exact = ExactNetwork(network)
    box = random_box(seed, 3)
    bounds = box_bounds(exact, box)
    target = Neuron(2, seed % 8)
    sign = -1.0 if phase is Phase.INACTIVE else 1.0
    rows = [lo[None, :] for lo in bounds.lower[:2]], [hi[None, :] for hi in bounds.upper[:2]]
    targets = Targets(2, np.array([target.index]), np.array([sign]), *rows)
    multipliers = [m[0] for m in crown_multipliers(network, targets)]
    kernels = target_bound(exact, box, bounds, target, phase, {})
    floats = target_bound(exact, box, bounds, target, phase, {}, multipliers)
    assert kernels is not None and floats is not None
    # The kernel rounds CROWN's slopes to multiples of 2**-16: the bounds differ by that much.
    assert abs(float(kernels) - float(floats)) <= 1e-3 * (1 + abs(float(kernels)))
    costs = relaxation_costs(
        network, 2, target.index, sign, bounds.lower, bounds.upper, multipliers
    )
    for k, cost in enumerate(costs):
        stable = (bounds.lower[k] >= 0) | (bounds.upper[k] <= 0)
        assert np.all(cost >= 0) and np.all(cost[stable] == 0)
