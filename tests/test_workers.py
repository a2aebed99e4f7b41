"""The worker pool computes exactly the bounds this process computes, box by box."""

from __future__ import annotations

import numpy as np
from test_kernel_bounds import random_box, random_network
from verify_compress.kernel.bounds import ExactNetwork, box_bounds
from verify_compress.subdomains import bisect
from verify_compress.workers import WorkerPool


def test_bounds_of_a_batch_on_two_processes_equal_the_bounds_box_by_box() -> None:
    network = random_network(11, [3, 12, 12, 12, 2])
    exact = ExactNetwork(network)
    box = random_box(11, 3)
    whole = box_bounds(exact, box)
    halves = []
    for dimension in range(3):
        cut = bisect(box, dimension)
        assert cut is not None
        halves += [cut[1], cut[2]]
    tasks = [(half, whole) for half in halves] + [(box, None)]
    with WorkerPool(network, exact, 2) as pool:
        batched = pool.bounds(tasks)
    for (half, enclosing), bounds in zip(tasks, batched, strict=True):
        alone = box_bounds(exact, half, enclosing=enclosing)
        for k in range(len(alone.lower)):
            np.testing.assert_array_equal(bounds.lower[k], alone.lower[k])
            np.testing.assert_array_equal(bounds.upper[k], alone.upper[k])
