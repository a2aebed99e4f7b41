"""The batch itself: every job on a backend, the index rewritten as each one finishes.

Stage: jobs -> backend -> one main job each -> index, wired here: `run_batch` hands each
`JobSpec` to `verifier.batch.execute.run_job` on the backend and, as results come back (in
any order), rewrites `OUT/index.json` and `OUT/index.html` (rows in the jobs file's order) and
tells the caller (`on_result`, the CLI's progress display). A job's failure is its row; only
an unusable output folder stops the batch, before any job starts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..batch.backends import Backend
from ..batch.execute import JobResult, JobSettings, failed_result, run_job
from ..batch.index import index_document, write_index
from ..batch.jobs import JobSpec
from ..errors import OutputError

ResultCallback = Callable[[int, JobResult], None]


def prepare_batch_output(out_root: Path) -> None:
    """`out_root` made a directory (refused, naming it, when it is a file)."""
    if out_root.exists() and not out_root.is_dir():
        raise OutputError(f"{out_root}: exists and is not a directory; the batch needs one")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise OutputError(f"{out_root}: cannot be created ({reason})") from None


def run_batch(
    specs: Sequence[JobSpec],
    settings: JobSettings,
    backend: Backend,
    jobs_file: Path,
    on_result: ResultCallback | None = None,
) -> dict[str, Any]:
    """Run every job on `backend`; return the final index document (also written to
    `settings.out_root`)."""
    started = time.monotonic()
    prepare_batch_output(settings.out_root)
    results: dict[int, JobResult] = {}
    work = functools.partial(run_job, settings=settings)

    def document() -> dict[str, Any]:
        ordered = [results[k] for k in sorted(results)]
        seconds = time.monotonic() - started
        return index_document(ordered, len(specs), jobs_file, backend.name, seconds)

    final = document()
    write_index(settings.out_root, final)
    for index, result in backend.map_unordered(work, specs, on_error=failed_result):
        results[index] = result
        final = document()
        write_index(settings.out_root, final)
        if on_result is not None:
            on_result(index, result)
    return final
