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


class DaskBackend:
    """Tasks on a Dask distributed cluster (see the module docstring)."""

    def __init__(self, scheduler: str | None, jobs: int) -> None:
        if jobs < 1:
            raise VerifyCompressError(f"--jobs must be 1 or more, got {jobs}")
        try:
            import dask
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise MissingToolError(
                f"the dask backend needs Dask distributed, which is not installed: "
                f"{DASK_INSTALL_HINT}"
            ) from None
        self.name = "dask"
        self._cluster: Any = None
        if scheduler:
            try:
                self._client: Any = Client(scheduler, timeout="20s")  # type: ignore[no-untyped-call]
            except (OSError, TimeoutError) as error:
                raise VerifyCompressError(
                    f"dask scheduler {scheduler}: cannot connect ({error})"
                ) from None
            workers = self._client.scheduler_info().get("workers", {})
            self.slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
            self.name = f"dask ({scheduler})"
        else:
            with dask.config.set({"distributed.worker.daemon": False}):
                self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
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


def make_backend(kind: BackendKind, jobs: int, scheduler: str | None = None) -> Backend:
    """The backend `kind`; a scheduler address is only for the Dask backend."""
    if kind is BackendKind.LOCAL:
        if scheduler:
            raise VerifyCompressError("--scheduler is for --backend dask only")
        return LocalBackend(jobs)
    return DaskBackend(scheduler, jobs)
