"""The one worker pool: the kernel's bounds of many proof boxes, computed in parallel.

Used by the run (both halves of a bisection at once) and by `check` (every proof box of a
level of the bisection trees at once). Each worker process builds the network's exact integer
matrices once; a task is a box and the bounds of the box enclosing it, a result the box's
certified bounds, exactly what `verifier.kernel.bounds.box_bounds` computes in this process.
Leaving the `with` block cancels what has not started.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from types import TracebackType

from verifier.domain import Box
from verifier.ir import Network
from verifier.kernel.bounds import ExactNetwork, LayerBounds, box_bounds

BoundsTask = tuple[Box, LayerBounds | None]

_worker_network: list[ExactNetwork] = []


def _start(network: Network) -> None:
    _worker_network.append(ExactNetwork(network))


def _bounds(task: BoundsTask) -> LayerBounds:
    box, enclosing = task
    return box_bounds(_worker_network[-1], box, enclosing=enclosing)


class BoundsPool:
    """Certified bounds of boxes on `workers` processes (in this process when 1)."""

    def __init__(self, network: Network, exact: ExactNetwork, workers: int) -> None:
        self.exact = exact
        self._executor: Executor | None = None
        if workers > 1:
            self._executor = ProcessPoolExecutor(workers, initializer=_start, initargs=(network,))

    def __enter__(self) -> BoundsPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def bounds(self, tasks: Sequence[BoundsTask]) -> list[LayerBounds]:
        """The certified bounds of each task's box, in order."""
        if self._executor is None or len(tasks) < 2:
            return [box_bounds(self.exact, box, enclosing=up) for box, up in tasks]
        return list(self._executor.map(_bounds, tasks))
