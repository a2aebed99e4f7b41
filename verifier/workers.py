"""The one worker pool: per-box and per-claim work spread over processes.

Used by the run (both halves of a bisection at once; case splits of many claims at once) and by
`check` (every proof box of a level of the bisection trees at once). Each worker keeps a
`WorkerState`: the network, its exact integer matrices (built once), and a cache the tasks may
use (the LPs of a proof box). A task function takes the state and one task and returns a
picklable result; with one worker the same functions run in this process. Leaving the `with`
block cancels what has not started.

Where the tasks run is the pool's backend (`Config.backend`); the task functions, and so every
result, are the same on each, and the kernel decides what any result proves:
- "local" (default): a `ProcessPoolExecutor` of `workers` processes on this machine, each
  building its `WorkerState` once in its initializer.
- "dask": the workers of a Dask distributed cluster (`verifier.batch.backends.DaskTaskPool`,
  the one module that imports Dask): a `LocalCluster` of `workers` processes, or the cluster
  at `scheduler`, whose thread count then replaces `workers`. The network is sent to every
  worker once; each worker process (and thread) builds its `WorkerState` on its first task of
  that network and keeps it for the next ones (`run_on_worker`).

Deadlines: a task that is a dataclass with a field `deadline` holds a `time.monotonic()`
instant of this process. Another machine's monotonic clock has another origin, so the Dask
backend moves such a deadline onto the worker's clock through the wall clock (this process's
and the worker's `time.time() - time.monotonic()`); with wall clocks in sync (NTP) a task
ends when it would have here. A deadline only ever decides when a task stops searching, never
what its result proves.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from .domain import Box
from .errors import VerifyCompressError
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


class _Executor(Protocol):
    """What runs a pool's tasks elsewhere: results in order; `close` releases the workers."""

    def map(self, call: Callable[..., Any], tasks: Sequence[Any]) -> list[Any]: ...

    def close(self) -> None: ...


class _LocalExecutor:
    """`workers` processes of this machine, each with its `WorkerState` from the start."""

    def __init__(self, network: Network, workers: int) -> None:
        self._executor = ProcessPoolExecutor(workers, initializer=_start, initargs=(network,))

    def map(self, call: Callable[..., Any], tasks: Sequence[Any]) -> list[Any]:
        return list(self._executor.map(call, tasks))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


Backend = Literal["local", "dask"]


class WorkerPool:
    """Task functions over `workers` workers (in this process when 1), on `backend` (see the
    module docstring; `scheduler`, a Dask scheduler's address, is for "dask" only).

    `workers` is then how many tasks run at once (callers batch by it). Raises
    `MissingToolError` when "dask" is asked for without Dask installed, and
    `VerifyCompressError` naming a scheduler that does not accept a connection."""

    def __init__(
        self,
        network: Network,
        exact: ExactNetwork,
        workers: int,
        backend: Backend = "local",
        scheduler: str | None = None,
    ) -> None:
        if scheduler and backend != "dask":
            raise VerifyCompressError("--scheduler is for --backend dask only")
        self.state = WorkerState(network, exact)
        self.workers = workers
        self.backend: Backend = backend
        self._executor: _Executor | None = None
        if workers > 1 and backend == "local":
            self._executor = _LocalExecutor(network, workers)
        elif workers > 1:
            from .batch.backends import DaskTaskPool  # the one module importing Dask

            dask_pool = DaskTaskPool(network, scheduler, workers)
            self._executor = dask_pool
            self.workers = dask_pool.slots

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            self._executor.close()

    def map(
        self, function: Callable[[WorkerState, Task], Result], tasks: Sequence[Task]
    ) -> list[Result]:
        """`function(state, task)` for every task, results in order."""
        if self._executor is None or len(tasks) < 2:
            return [function(self.state, task) for task in tasks]
        if self.backend == "local":
            return self._executor.map(_call, [(function, task) for task in tasks])
        clock = time.time() - time.monotonic()
        return self._executor.map(run_on_worker, [(function, task, clock) for task in tasks])

    def bounds(self, tasks: Sequence[BoundsTask]) -> list[LayerBounds]:
        """The certified bounds of each task's box (given the bounds of its enclosing box)."""
        return self.map(bounds_of_box, tasks)


KEPT_STATES = 4
"""`WorkerState`s a Dask worker process keeps (per network and thread), the oldest dropped."""

_remote_states: OrderedDict[tuple[str, int], WorkerState] = OrderedDict()
_remote_lock = threading.Lock()


def run_on_worker(
    packed: tuple[Callable[[WorkerState, Any], Any], Any, float],
    shared: Network,
    key_of_shared: str,
) -> Any:
    """On a Dask worker: `function(state, task)` with this worker's `WorkerState` of the
    network `shared` (built on its first task under `key_of_shared` in this process and
    thread, then kept), the task's deadline moved onto this machine's monotonic clock from the
    sender's (`clock`: the sender's `time.time() - time.monotonic()`)."""
    function, task, clock = packed
    key = (key_of_shared, threading.get_ident())
    with _remote_lock:
        state = _remote_states.get(key)
        if state is not None:
            _remote_states.move_to_end(key)
    if state is None:
        state = WorkerState(shared, ExactNetwork(shared))
        with _remote_lock:
            _remote_states[key] = state
            while len(_remote_states) > KEPT_STATES:
                _remote_states.popitem(last=False)
    return function(state, on_this_clock(task, clock - (time.time() - time.monotonic())))


def on_this_clock(task: Any, shift: float) -> Any:
    """`task` with its `deadline` field (a dataclass's float) moved by `shift` seconds; any
    other task as it is."""
    if not dataclasses.is_dataclass(task) or isinstance(task, type):
        return task
    deadline = getattr(task, "deadline", None)
    if not isinstance(deadline, float) or not any(
        field.name == "deadline" for field in dataclasses.fields(task)
    ):
        return task
    return dataclasses.replace(task, deadline=deadline + shift)


BoundsTask = tuple[Box, LayerBounds | None]


def bounds_of_box(state: WorkerState, task: BoundsTask) -> LayerBounds:
    box, enclosing = task
    return box_bounds(state.exact, box, enclosing=enclosing)
