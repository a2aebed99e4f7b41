"""The one worker pool: per-box and per-claim work spread over processes.

Used by the run (both halves of a bisection at once; case splits of many claims at once) and by
`check` (every proof box of a level of the bisection trees at once). Each worker process keeps
a `WorkerState`: the network, its exact integer matrices (built once), and a cache the tasks
may use (the LPs of a proof box). A task function takes the state and one task and returns a
picklable result; with one worker the same functions run in this process. Leaving the `with`
block cancels what has not started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from .domain import Box
from .ir import Network
from .kernel.bounds import ExactNetwork, LayerBounds, box_bounds

Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclasses.dataclass
class WorkerState:
    network: Network
    exact: ExactNetwork
    cache: dict[Any, Any] = dataclasses.field(default_factory=dict)


_worker_state: list[WorkerState] = []


def _start(network: Network) -> None:
    _worker_state.append(WorkerState(network, ExactNetwork(network)))


def _call(packed: tuple[Callable[[WorkerState, Any], Any], Any]) -> Any:
    function, task = packed
    return function(_worker_state[-1], task)


class WorkerPool:
    """Task functions over `workers` processes (in this process when 1)."""

    def __init__(self, network: Network, exact: ExactNetwork, workers: int) -> None:
        self.state = WorkerState(network, exact)
        self.workers = workers
        self._executor: Executor | None = None
        if workers > 1:
            self._executor = ProcessPoolExecutor(workers, initializer=_start, initargs=(network,))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def map(
        self, function: Callable[[WorkerState, Task], Result], tasks: Sequence[Task]
    ) -> list[Result]:
        """`function(state, task)` for every task, results in order."""
        if self._executor is None or len(tasks) < 2:
            return [function(self.state, task) for task in tasks]
        return list(self._executor.map(_call, [(function, task) for task in tasks]))

    def bounds(self, tasks: Sequence[BoundsTask]) -> list[LayerBounds]:
        """The certified bounds of each task's box (given the bounds of its enclosing box)."""
        return self.map(bounds_of_box, tasks)


BoundsTask = tuple[Box, LayerBounds | None]


def bounds_of_box(state: WorkerState, task: BoundsTask) -> LayerBounds:
    box, enclosing = task
    return box_bounds(state.exact, box, enclosing=enclosing)
