"""`verify-compress batch JOBS`: the main job on every row of a jobs file, and one index.

Thin command layer: it parses options, shows progress and prints the result; the work is
`verifier/batch/` (jobs file, backends, one process per job, index). Registered by `cli/main.py`.

Output policy (as the main job's): results on stdout (a table, or with `--json` the index
document and nothing else); the progress display (jobs finished, ETA, the running jobs and the
last finished ones) on stderr, only when stdout is a terminal and `--quiet` is not given.
Exit status: 0 when every job is ok and its certificate passed the check, 1 when a job failed,
timed out or its check did not accept its certificate (the batch still ran every job), 2 for
a bad jobs file or option or a missing tool (one line on stderr, see `cli.user_errors`), 130
interrupted (the index then lists the jobs finished so far).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from verify_compress.cli import DebugOption, user_errors
from verify_compress.cli.run import EXIT_CHECK_FAILED, JsonOption, QuietOption, interruptible

DEFAULT_OUT_ROOT = Path("verify-compress-out")
RECENT_ROWS = 8
"""Finished jobs shown in the progress display (the most recent ones)."""


class BackendChoice(str, enum.Enum):
    local = "local"
    dask = "dask"


def batch(
    jobs_file: Annotated[
        Path,
        typer.Argument(
            metavar="JOBS",
            help="A jobs file: CSV with a header (network, vnnlib | bounds | lower+upper, "
            "name, time_limit, seed), TOML (\\[\\[job]] tables with those keys), or a VNN-COMP "
            "instances.csv (onnx, vnnlib, timeout; no header). Paths are relative to its "
            "folder.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output directory: `OUT/<job name>/` per job, OUT/index.json and "
            "OUT/index.html. Default: `verify-compress-out/<jobs file name>/`.",
        ),
    ] = None,
    backend: Annotated[
        BackendChoice,
        typer.Option(
            "--backend",
            help="'local': processes on this machine; 'dask': a Dask cluster "
            "(pip install 'verify-compress\\[dask]').",
        ),
    ] = BackendChoice.local,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Jobs at a time (local), or the worker processes of the Dask LocalCluster "
            "started when no --scheduler is given.",
        ),
    ] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Address of a Dask scheduler (tcp://host:8786); --backend dask."
        ),
    ] = None,
    time_limit: Annotated[
        float,
        typer.Option("--time-limit", help="Time limit in seconds of each job without its own."),
    ] = 300.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of each job without its own.")] = 0,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes inside each job.")
    ] = 1,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip a job whose output folder holds a certificate of its network (by "
            "SHA-256) and domain that check accepts.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a job's output folder even if it holds files other than a "
            "previous output (they are deleted).",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Compress every network of a jobs file on its domain; write one index of all the jobs.

    Each job writes what the main job writes (certificate.json, compressed.onnx, report.html,
    smt/) to `OUT/<job name>/`, plus deployment.json (onnxruntime timings), and its certificate
    is re-checked by the kernel. A failed or timed-out job is recorded and the batch goes on.
    """
    stdout = Console(quiet=quiet and not json_output, highlight=False, soft_wrap=True)
    with (
        interruptible(
            debug,
            "the index lists the jobs finished so far",
            "the batch had finished: its index is complete",
        ),
        user_errors(debug, json_output),
    ):
        # Imported here: the verifier loads slowly and is not needed for --help.
        from verify_compress.batch import (
            BackendKind,
            JobSettings,
            load_jobs,
            make_backend,
            run_batch,
        )
        from verify_compress.errors import VerifyCompressError

        if workers < 1:
            raise VerifyCompressError(f"--workers must be 1 or more, got {workers}")
        specs = load_jobs(jobs_file, time_limit, seed)
        out_root = out if out is not None else DEFAULT_OUT_ROOT / jobs_file.stem
        settings = JobSettings(out_root, workers=workers, resume=resume, force=force)
        with make_backend(BackendKind(backend.value), jobs, scheduler) as runner:
            names = [spec.name for spec in specs]
            show = not quiet and not json_output and stdout.is_terminal
            with batch_display(show, names, runner.slots) as on_result:
                document = run_batch(specs, settings, runner, jobs_file, on_result)
    if json_output:
        typer.echo(json.dumps(document, indent=2))
    elif quiet:
        typer.echo(f"index written: {out_root / 'index.json'}")
    else:
        stdout.print(jobs_table(document["jobs"], document["totals"]))
        for row in document["jobs"]:
            problem = row["error"] or row["check"]["first_failure"]
            if problem:
                stdout.print(f"[bold red]{escape(row['name'])}:[/] {escape(problem)}")
        stdout.print(totals_line(document["totals"], float(document["seconds"])))
        stdout.print(f"index: {escape(str(out_root / 'index.html'))}")
    if not all_passed(document):
        raise typer.Exit(EXIT_CHECK_FAILED)


def all_passed(document: Mapping[str, Any]) -> bool:
    """Every job ok and its certificate accepted by the check."""
    return all(
        row["status"] == "ok" and row["check"]["result"] == "valid" for row in document["jobs"]
    )


def _cell(value: object, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def jobs_table(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, Any]) -> Table:
    """One row per job (as in index.json) and a totals footer. Every column but the job's is
    as wide as its longest header word or value; the job names fold into what is left."""
    headers = ["job", "status", "stable", "unstable", "unknown", "removed", "run s", "check"]
    headers.append("speed-up")
    cells = []
    for row in rows:
        removed = row["percent_connections_removed"]
        gain = (row.get("deployment") or {}).get("latency_speedup")
        status = "resumed" if row["resumed"] and row["status"] == "ok" else row["status"]
        cells.append(
            [
                escape(row["name"]),
                status if row["status"] == "ok" else f"[bold red]{status}[/]",
                _cell(row["stable"]),
                _cell(row["unstable"]),
                _cell(row["unknown"]),
                "-" if removed is None else f"{removed:.1f}%",
                _cell(row["run_seconds"], 1),
                "-" if row["check"]["result"] == "not run" else row["check"]["result"],
                "-" if gain is None else f"{gain:.2f}x",
            ]
        )
    footer = [
        f"{totals['jobs']} jobs",
        f"{totals['ok']} ok",
        *(str(totals[key]) for key in ("stable", "unstable", "unknown")),
        f"{_cell(totals['percent_connections_removed'], 1)}%",
        _cell(totals["run_seconds"], 1),
        f"{totals['check_valid']} ok",
        "",
    ]
    table = Table(
        title="jobs",
        show_footer=True,
        box=box.SIMPLE_HEAD,
        caption="removed: connections removed; resumed: ok, kept from a previous run; "
        "speed-up: onnxruntime latency, original / compressed",
    )
    for position, header in enumerate(headers):
        if position == 0:
            table.add_column(header, footer=footer[0], overflow="fold", min_width=12)
            continue
        texts = [Text.from_markup(row[position]).plain for row in cells]
        width = max(len(header), len(footer[position]), *(len(t) for t in texts))
        table.add_column(
            header,
            footer=footer[position],
            width=width,
            no_wrap=True,
            justify="left" if header in ("status", "check") else "right",
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    return table


def totals_line(totals: Mapping[str, Any], seconds: float) -> str:
    failures = totals["failed"] + totals["timed-out"]
    return (
        f"{totals['jobs']} jobs in {seconds:.1f} s: {totals['ok']} ok "
        f"({totals['resumed']} resumed), {totals['failed']} failed, "
        f"{totals['timed-out']} timed out; {totals['check_valid']} certificates valid"
        + (" - see the errors in the index" if failures else "")
    )


class BatchDisplay:
    """The live progress of a batch: jobs finished with an ETA, the running jobs (the first
    `slots` unfinished ones, in the jobs file's order, as the backends start them) with their
    time so far, and the last finished jobs."""

    def __init__(self, names: Sequence[str], slots: int, progress: Progress) -> None:
        self.names = list(names)
        self.slots = slots
        self.progress = progress
        self.task = progress.add_task("jobs", total=len(names))
        self.finished: dict[int, Any] = {}
        self.started: dict[int, float] = {}
        self._start_next()

    def _start_next(self) -> None:
        waiting = [k for k in range(len(self.names)) if k not in self.finished]
        for k in waiting[: self.slots]:
            self.started.setdefault(k, time.monotonic())

    def __call__(self, index: int, result: Any) -> None:
        self.finished[index] = result
        self.progress.advance(self.task)
        self._start_next()

    def __rich__(self) -> RenderableType:
        table = Table(box=None, show_header=True, pad_edge=False)
        table.add_column("job")
        table.add_column("state")
        table.add_column("stable/unstable/unknown", justify="right")
        table.add_column("s", justify="right")
        now = time.monotonic()
        running = [k for k in self.started if k not in self.finished]
        for k in running:
            table.add_row(escape(self.names[k]), "running", "", f"{now - self.started[k]:.0f}")
        for k in list(self.finished)[-RECENT_ROWS:]:
            result = self.finished[k]
            totals = result.totals or {}
            counts = (
                f"{totals['stably_active'] + totals['stably_inactive']}/"
                f"{totals['unstable']}/{totals['unknown']}"
                if totals
                else ""
            )
            state = result.status.value
            if result.status.value == "ok":
                state += f", check {result.check.verdict.value}"
            table.add_row(escape(self.names[k]), state, counts, f"{result.wall_seconds:.0f}")
        return Group(self.progress, table)


@contextmanager
def batch_display(show: bool, names: Sequence[str], slots: int) -> Iterator[Any]:
    """The `on_result` callback of `run_batch`: drawing a `BatchDisplay` on stderr when
    `show`, else doing nothing."""
    if not show:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    display = BatchDisplay(names, slots, progress)
    with Live(display, console=Console(stderr=True), transient=True, refresh_per_second=2):
        yield display
