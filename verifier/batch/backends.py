"""Where a batch's jobs run: one small interface, two backends.

Stage: jobs -> **backend** -> one main job each -> index. A `Backend` runs one function on
many tasks and yields `(task index, result)` as each finishes, in any order
(`map_unordered`); `slots` is how many run at once. Leaving its `with` block releases what it
started.

- `LocalBackend(jobs)`: this machine, `jobs` at a time (threads that each supervise one job's
  process: `verifier.batch.execute.run_job` starts a process per job, so a job past its time
  can be killed alone).
- `DaskBackend(scheduler, jobs)`: a Dask distributed cluster at `scheduler`, or a
  `LocalCluster` of `jobs` worker processes (one thread each) when no address is given. Dask is
  optional (`pip install 'verify-compress[dask]'`): it is imported here only, and a missing
  Dask raises `MissingToolError` saying how to install it. The workers must be able to import
  verify-compress and read the jobs' files at the same paths (a shared file system), and, to
  run a job in a process of its own, must not be daemonic (`LocalCluster` is started with
  `distributed.worker.daemon: False`; for a cluster of your own, start the workers with
  `DASK_DISTRIBUTED__WORKER__DAEMON=False`).

A task whose function raises (on Dask: a worker lost) yields `on_error(task, error)` instead,
so one broken job never ends the batch.

The same Dask connection serves inside one job: `DaskTaskPool` is the executor of
`verifier.workers.WorkerPool` under `Config.backend == "dask"` (the proof boxes of a bisection
and the case splits of many claims fan out over the cluster's workers). This module is the only
one that imports Dask.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ..errors import MissingToolError, VerifyCompressError

Task = TypeVar("Task")
Result = TypeVar("Result")

DASK_INSTALL_HINT = "pip install 'verify-compress[dask]'"


class BackendKind(enum.Enum):
    LOCAL = "local"
    DASK = "dask"


class Backend(Protocol):
    """Runs a function on tasks, `slots` at a time, yielding results as they finish."""

    name: str
    slots: int

    def map_unordered(
        self,
        function: Callable[[Task], Result],
        tasks: Sequence[Task],
        on_error: Callable[[Task, BaseException], Result],
    ) -> Iterator[tuple[int, Result]]: ...

    def __enter__(self) -> Backend: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class LocalBackend:
    """`jobs` tasks at a time on this machine (see the module docstring)."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise VerifyCompressError(f"--jobs must be 1 or more, got {jobs}")
        self.name = "local"
        self.slots = jobs
        self._executor = ThreadPoolExecutor(jobs, thread_name_prefix="verify-compress-job")

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # On an error (Ctrl-C) the running jobs are not waited for: their processes end by
        # themselves once this process is gone.
        self._executor.shutdown(wait=kind is None, cancel_futures=True)

    def map_unordered(
        self,
        function: Callable[[Task], Result],
        tasks: Sequence[Task],
        on_error: Callable[[Task, BaseException], Result],
    ) -> Iterator[tuple[int, Result]]:
        futures: dict[Future[Result], int] = {
            self._executor.submit(function, task): k for k, task in enumerate(tasks)
        }
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    yield index, future.result()
                except Exception as error:
                    yield index, on_error(tasks[index], error)
        finally:
            for future in futures:
                future.cancel()


def require_dask() -> None:
    """Raise `MissingToolError` (with the install hint) unless Dask distributed imports."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise MissingToolError(
            f"the dask backend needs Dask distributed, which is not installed: "
            f"{DASK_INSTALL_HINT}"
        ) from None


def _connect(scheduler: str, timeout: str = "20s") -> Any:
    """A client of the scheduler at `scheduler`; a bad or unreachable address is a
    `VerifyCompressError` naming it."""
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout=timeout)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise VerifyCompressError(f"dask scheduler {scheduler}: cannot connect ({error})") from None


def _local_cluster(workers: int, daemon: bool) -> Any:
    """A `LocalCluster` of `workers` processes of one thread each (`daemon=False`: its workers
    may start processes of their own)."""
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.worker.daemon": daemon}):
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            # No dashboard; the scheduler's HTTP routes on a free port, not 8787 (which
            # another cluster on this machine may hold).
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
        )


def _threads(client: Any) -> int:
    """Threads of the workers connected to `client`'s scheduler (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def check_scheduler(scheduler: str | None) -> None:
    """Fail early, before a run starts: Dask must import (else `MissingToolError` with the
    install hint) and a `scheduler` address must accept a connection (else a
    `VerifyCompressError` naming it). Connects once and closes."""
    require_dask()
    if scheduler:
        client = _connect(scheduler, timeout="10s")
        with contextlib.suppress(Exception):
            client.close()


class DaskBackend:
    """Tasks on a Dask distributed cluster (see the module docstring)."""

    def __init__(self, scheduler: str | None, jobs: int) -> None:
        if jobs < 1:
            raise VerifyCompressError(f"--jobs must be 1 or more, got {jobs}")
        require_dask()
        from dask.distributed import Client

        self.name = "dask"
        self._cluster: Any = None
        if scheduler:
            self._client: Any = _connect(scheduler)
            self.slots = _threads(self._client)
            self.name = f"dask ({scheduler})"
        else:
            self._cluster = _local_cluster(jobs, daemon=False)
            self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
            self.slots = jobs
            self.name = f"dask (LocalCluster, {jobs} workers)"

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()

    def map_unordered(
        self,
        function: Callable[[Task], Result],
        tasks: Sequence[Task],
        on_error: Callable[[Task, BaseException], Result],
    ) -> Iterator[tuple[int, Result]]:
        from dask.distributed import as_completed as dask_completed

        futures = [self._client.submit(function, task, pure=False) for task in tasks]
        index = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in dask_completed(futures):  # type: ignore[no-untyped-call]
                k = index[future.key]
                try:
                    yield k, future.result()
                except Exception as error:
                    yield k, on_error(tasks[k], error)
        finally:
            self._client.cancel([f for f in futures if not f.done()])


class DaskTaskPool:
    """The executor of one job's `verifier.workers.WorkerPool` on Dask: a cluster at
    `scheduler`, or a `LocalCluster` of `workers` processes (one thread each) when None.

    `shared` (the job's network) is sent to every worker once (`scatter(broadcast=True)`);
    `map(call, tasks)` runs `call(task, shared=<that object>, key=<its key>)` for every task
    on the cluster and returns the results in order: a task never carries `shared`, and `key`
    lets the worker keep what it derives from it (`verifier.workers.run_on_worker`). `call`
    and the tasks must pickle by reference to modules the workers import (verify-compress
    installed on every worker). A task that raises re-raises here (a lost worker:
    `KilledWorker`), as on local processes. `slots` is how many tasks run at once. `close()`
    releases the client and the LocalCluster it started.
    """

    def __init__(self, shared: Any, scheduler: str | None, workers: int) -> None:
        if workers < 1:
            raise VerifyCompressError(f"--workers must be 1 or more, got {workers}")
        require_dask()
        from dask.distributed import Client

        self._cluster: Any = None
        if scheduler:
            self._client: Any = _connect(scheduler)
            self.slots = _threads(self._client)
            self.name = f"dask ({scheduler})"
        else:
            self._cluster = _local_cluster(workers, daemon=True)
            self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
            self.slots = workers
            self.name = f"dask (LocalCluster, {workers} workers)"
        try:
            # In a list: scatter would send a sequence's items one by one.
            self._shared: Any = self._client.scatter([shared], broadcast=True)[0]
        except BaseException:
            self.close()
            raise

    def map(self, call: Callable[..., Result], tasks: Sequence[Any]) -> list[Result]:
        # One message for all the tasks (client.map), not one per task (submit).
        futures = self._client.map(
            call, list(tasks), shared=self._shared, key_of_shared=self._shared.key, pure=False
        )
        try:
            results: list[Result] = self._client.gather(futures)
        finally:
            running = [f for f in futures if not f.done()]
            if running:
                self._client.cancel(running)
        return results

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def make_backend(kind: BackendKind, jobs: int, scheduler: str | None = None) -> Backend:
    """The backend `kind`; a scheduler address is only for the Dask backend."""
    if kind is BackendKind.LOCAL:
        if scheduler:
            raise VerifyCompressError("--scheduler is for --backend dask only")
        return LocalBackend(jobs)
    return DaskBackend(scheduler, jobs)
