"""`verify-compress NET.onnx` (the main job, command `run`) and `verify-compress check CERT`.

Thin command layer: it parses options, builds the domain and the `Config`, shows progress and
prints results; the work is `pipeline.run` and `check.check_certificate`.
Registered by `cli/main.py` (`run` is the default command, so `verify-compress NET.onnx` runs it).

Output policy: results go to stdout (a table for people, or with `--json` one JSON document and
nothing else); the progress display goes to stderr and is shown only when stdout is a terminal
and `--quiet` is not given. A network without ReLU still runs (exit 0), with the note
`NO_RELU_NOTE` on stderr (and as "note" in the `--json` document). Errors follow
`cli.user_errors` (exit 2, one line on stderr; with `--json` also an error document on
stdout). Ctrl-C exits with 130 and one line; the pipeline writes
its output directory atomically, so an interrupted run leaves no partial files.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from verify_compress import __version__
from verify_compress.cli import DebugOption, one_line, user_errors
from verify_compress.config import Config
from verify_compress.domain import (
    Domain,
    box_from_cli,
    load_bounds_file,
    parse_bound_values,
    parse_vnnlib,
)
from verify_compress.errors import DomainError, VerifyCompressError
from verify_compress.files import prepare_output
from verify_compress.report import render_report, rounding_bound_text

EXIT_CHECK_FAILED = 1
EXIT_INTERRUPTED = 130
DEFAULT_LOWER = 0.0
DEFAULT_UPPER = 1.0
DEFAULT_OUT_ROOT = Path("verify-compress-out")
"""The main job writes to `DEFAULT_OUT_ROOT/<network name>/` (relative to the current
directory) unless `--out` is given: outside any committed tree, so running the README's
example in the repository never overwrites the bundled `proofs/` (git ignores this folder)."""
OUTPUT_FILES = ("certificate.json", "compressed.onnx", "report.html")
MAX_LISTED_FAILURES = 20
NO_RELU_NOTE = "nothing to compress: the network has no ReLU"
"""Printed on stderr (and the `--json` field "note") after a run on a network without ReLU: the
run succeeds, but there is no neuron to find stable."""
STATUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stably_active", "stably active"),
    ("stably_inactive", "stably inactive"),
    ("unstable", "unstable"),
    ("unknown", "unknown"),
)


class Method(str, enum.Enum):
    single = "single"
    per_neuron = "per-neuron"


class PoolBackend(str, enum.Enum):
    local = "local"
    dask = "dask"


BackendOption = Annotated[
    PoolBackend,
    typer.Option(
        "--backend",
        help="Where the per-box and per-claim tasks run: 'local' processes (--workers), or "
        "'dask': a Dask LocalCluster of --workers processes, or the cluster at --scheduler "
        "(pip install 'verify-compress\\[dask]').",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Address of a Dask scheduler (tcp://host:8786) for --backend dask; its workers' "
        "threads replace --workers for those tasks.",
    ),
]


class ExportDtype(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as one JSON document on stdout (an error as "
        '{"error": ..., "exit_code": 2}).',
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="No progress display and no tables; print the verdict only.")
]


# ---------------------------------------------------------------------------------------------
# The main job


def run(
    network: Annotated[Path, typer.Argument(help="The ONNX network to compress.")],
    lower: Annotated[
        list[str] | None,
        typer.Option(
            "--lower",
            help="Lower bound of the input box: one value for every input, or one per input "
            "(repeat the option or separate values by commas). Default: 0.",
        ),
    ] = None,
    upper: Annotated[
        list[str] | None,
        typer.Option(
            "--upper",
            help="Upper bound of the input box, like --lower. Default: 1.",
        ),
    ] = None,
    vnnlib: Annotated[
        Path | None,
        typer.Option("--vnnlib", help="Take the domain from a VNN-LIB file's input constraints."),
    ] = None,
    bounds: Annotated[
        Path | None,
        typer.Option("--bounds", help="Take the domain from a bounds file (.npy or .json)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output directory. Default: `verify-compress-out/<network name>/` in the "
            "current directory.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace --out even if it is a file or a folder of other files (they are "
            "deleted). Without it, only an empty folder or a previous output is replaced.",
        ),
    ] = False,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="Wall-clock budget in seconds; neurons still undecided then are 'unknown' "
            "and kept (never a wrong result).",
        ),
    ] = 300.0,
    samples: Annotated[
        int, typer.Option("--samples", help="Random domain points tried as witnesses.")
    ] = 2000,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A .npy array of inputs (one row per input) tried as witnesses first; rows "
            "outside the domain are ignored.",
        ),
    ] = None,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="'single': one CP-SAT search for all candidate neurons; 'per-neuron': one "
            "search per neuron (for comparison).",
        ),
    ] = Method.single,
    workers: Annotated[int, typer.Option("--workers", help="Worker threads/processes.")] = 2,
    backend: BackendOption = PoolBackend.local,
    scheduler: SchedulerOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    max_subboxes: Annotated[
        int,
        typer.Option(
            "--max-subboxes",
            help="Most sub-boxes a domain box is bisected into when a claim needs a smaller "
            "box (inputs of at most 16 dimensions, as time allows); 1 disables input splitting.",
        ),
    ] = 4096,
    export_dtype: Annotated[
        ExportDtype | None,
        typer.Option(
            "--export-dtype",
            help="dtype of the compressed ONNX weights. Default: the original network's.",
        ),
    ] = None,
    strict_semantics: Annotated[
        bool,
        typer.Option(
            "--strict-semantics",
            help="Refuse a network whose import rounds a fold in float64 (BatchNormalization, "
            "divisions of constants): its results would hold for the rounded network only.",
        ),
    ] = False,
    no_confirm_smt: Annotated[
        bool,
        typer.Option(
            "--no-confirm-smt",
            help="Skip Z3's independent re-proof of the stable claims, which otherwise uses the "
            "time the proofs leave (shallow layers first; the certificate says which it "
            "confirmed). The kernel's exact check decides either way; without Z3 the run ends "
            "as soon as the proofs do.",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Compress NETWORK exactly on an input domain; write the compressed ONNX and a certificate.

    Domain: a box (--lower/--upper), a VNN-LIB file (--vnnlib) or a bounds file (--bounds).

    Give at most one of them. Without any, the domain is [0, 1] for every input (the default).

    Writes to --out (default: `verify-compress-out/<network name>/` in the current directory):
    certificate.json, compressed.onnx, report.html and smt/*.smt2.
    """
    started = time.monotonic()  # the time limit counts from here, imports included
    stdout = Console(quiet=quiet and not json_output, highlight=False, soft_wrap=True)
    with (
        interruptible(
            debug, "no files were written", "the run had finished: its output is complete"
        ) as interrupts,
        user_errors(debug, json_output),
    ):
        config = make_config(time_limit, samples, method, workers, seed, export_dtype, max_subboxes)
        config = dataclasses.replace(
            config,
            strict_semantics=strict_semantics,
            smt_tier=not no_confirm_smt,
            **backend_fields(backend, scheduler),
        )
        # Imported here: onnx and the solvers load slowly and are not needed for --help.
        from verify_compress.onnx_import import load_network
        from verify_compress.pipeline import run as run_pipeline

        net = load_network(network)
        domain, description = build_domain(lower, upper, vnnlib, bounds, net.input_size)
        rows = load_data(data, net.input_size) if data is not None else None
        out_dir = out if out is not None else DEFAULT_OUT_ROOT / network.stem
        prepare_output(out_dir, force)
        if not json_output:
            stdout.print(
                f"network: {escape(str(network))} ({net.input_size} inputs, "
                f"{len(net.layers)} affine layers)"
            )
            stdout.print(f"domain: {escape(description)}")
        with progress_display(
            not quiet and stdout.is_terminal,
            interrupts,
            budget=(started, config.time_limit),
            hidden=() if data is not None else (NO_DATA_STAGE,),
        ) as progress:
            result = run_pipeline(
                network,
                domain,
                out_dir,
                config,
                data=rows,
                progress=progress,
                write_report=render_report,
                started=started,
            )
    note = NO_RELU_NOTE if not net.hidden_neurons() else None
    if note is not None:
        typer.echo(note, err=True)
    hint = unknown_hint(result.certificate, config.time_limit, data is not None)
    if json_output:
        document = run_json(result.certificate, result.out_dir, network, description)
        if note is not None:
            document["note"] = note
        if hint is not None:
            document["hint"] = hint
        typer.echo(json.dumps(document, indent=2))
    elif quiet:
        typer.echo(f"certificate written: {result.out_dir / 'certificate.json'}")
    else:
        print_run(result.certificate, result.out_dir, stdout, hint=hint)


def unknown_hint(certificate: Mapping[str, Any], time_limit: float, data_given: bool) -> str | None:
    """One line on what may decide the run's unknown neurons; None when there are none."""
    unknown = int(certificate["summary"]["totals"]["unknown"])
    if unknown == 0:
        return None
    data = "more --data rows" if data_given else "--data with real inputs (say, the training set)"
    return (
        f"{unknown} neuron{'s' if unknown != 1 else ''} unknown (kept as they are): a longer "
        f"--time-limit (this run: {_number(time_limit)} s) or {data} may decide them"
    )


def make_config(
    time_limit: float,
    samples: int,
    method: Method,
    workers: int,
    seed: int,
    export_dtype: ExportDtype | None,
    max_subboxes: int = 4096,
) -> Config:
    """The run's `Config`; out-of-range numbers are user errors naming the option."""
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise VerifyCompressError(
            f"--time-limit must be a positive number of seconds, got {time_limit}"
        )
    if samples < 0:
        raise VerifyCompressError(f"--samples must be 0 or more, got {samples}")
    if workers < 1:
        raise VerifyCompressError(f"--workers must be 1 or more, got {workers}")
    if max_subboxes < 1:
        raise VerifyCompressError(f"--max-subboxes must be 1 or more, got {max_subboxes}")
    return Config(
        max_subboxes=max_subboxes,
        time_limit=time_limit,
        samples=samples,
        method="per-neuron" if method is Method.per_neuron else "single",
        workers=workers,
        seed=seed,
        export_dtype=None
        if export_dtype is None
        else ("float32" if export_dtype is ExportDtype.float32 else "float64"),
    )


def backend_fields(backend: PoolBackend, scheduler: str | None) -> dict[str, Any]:
    """`Config`'s backend fields, checked before any work: `--scheduler` only with
    `--backend dask`, Dask installed (else the install hint), the scheduler reachable (else
    its address is named). Exit 2 on each."""
    if backend is PoolBackend.local:
        if scheduler:
            raise VerifyCompressError("--scheduler is for --backend dask only")
        return {"backend": "local", "scheduler": None}
    from verify_compress.batch.backends import check_scheduler

    check_scheduler(scheduler)
    return {"backend": "dask", "scheduler": scheduler or None}


def build_domain(
    lower: Sequence[str] | None,
    upper: Sequence[str] | None,
    vnnlib: Path | None,
    bounds: Path | None,
    input_size: int,
) -> tuple[Domain, str]:
    """The domain the options describe, and a one-line description of it for the output."""
    box_given = bool(lower) or bool(upper)
    given = [
        name
        for name, present in (
            ("--lower/--upper", box_given),
            ("--vnnlib", vnnlib is not None),
            ("--bounds", bounds is not None),
        )
        if present
    ]
    if len(given) > 1:
        raise DomainError(f"give only one domain, got {' and '.join(given)}")
    if vnnlib is not None:
        domain = parse_vnnlib(vnnlib, input_size)
        return domain, describe_domain(domain, f"from {vnnlib}")
    if bounds is not None:
        domain = load_bounds_file(bounds, input_size)
        return domain, describe_domain(domain, f"from {bounds}")
    if not box_given:
        domain = box_from_cli([DEFAULT_LOWER], [DEFAULT_UPPER], input_size)
        return domain, f"{describe_domain(domain, '')} (default)"
    if not lower or not upper:
        missing = "--upper" if lower else "--lower"
        raise DomainError(
            f"{missing} is missing: give both --lower and --upper (or neither, for the "
            "default domain [0, 1] per input)"
        )
    domain = box_from_cli(
        parse_bound_values("--lower", lower, "down"),
        parse_bound_values("--upper", upper, "up"),
        input_size,
    )
    return domain, describe_domain(domain, "")


def _number(value: float) -> str:
    """Six significant digits: the description summarises; the certificate holds the bounds."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def describe_domain(domain: Domain, origin: str) -> str:
    """E.g. "[0, 1]^64", "box over 5 inputs, lower in [-0.3, 0.1], upper in [...]",
    "3 boxes over 5 inputs from prop.vnnlib"."""
    suffix = f" {origin}" if origin else ""
    if len(domain.boxes) == 1:
        box = domain.boxes[0]
        low, high = float(box.lower.min()), float(box.upper.max())
        if low == float(box.lower.max()) and high == float(box.upper.min()):
            return f"[{_number(low)}, {_number(high)}]^{box.size}{suffix}"
        return (
            f"box over {box.size} inputs, lower in [{_number(low)}, "
            f"{_number(float(box.lower.max()))}], upper in "
            f"[{_number(float(box.upper.min()))}, {_number(high)}]{suffix}"
        )
    return f"{len(domain.boxes)} boxes over {domain.size} inputs{suffix}"


def load_data(path: Path, input_size: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The `--data` rows: a numeric .npy array with `input_size` values per row."""
    if path.suffix.lower() != ".npy":
        raise DomainError(f"{path}: --data must be a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DomainError(f"{path}: no such data file") from None
    except (OSError, ValueError) as error:
        raise DomainError(f"{path}: not a numeric .npy array ({one_line(str(error))})") from None
    if array.dtype.kind not in "fiu" or array.ndim == 0:
        raise DomainError(
            f"{path}: --data must be a numeric array of rows, "
            f"got dtype {array.dtype} shape {array.shape}"
        )
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    if rows.shape[1] != input_size:
        raise DomainError(
            f"{path}: rows have {rows.shape[1]} values but the network has {input_size} inputs"
        )
    return np.asarray(rows, dtype=np.float64)


def run_json(
    certificate: Mapping[str, Any], out_dir: Path, network: Path, domain_description: str
) -> dict[str, Any]:
    """The `--json` document: the certificate's summary plus what was run on what (the network
    as given and its SHA-256, the domain, the tool's version), the comparisons beside the proof,
    timings and file locations. `rounding_bound` is the exact rational (a string);
    `rounding_bound_float` is a float at least as large (rounded up)."""
    compression = certificate["compression"]
    return {
        "tool_version": certificate["tool_version"],
        "versions": certificate["solvers"],
        "network": {"path": str(network), "sha256": certificate["network"]["sha256"]},
        "domain": {
            "source": certificate["domain"]["source"],
            "boxes": len(certificate["domain"]["boxes"]),
            "description": domain_description,
        },
        **certificate["summary"],
        "domain_boxes": len(certificate["domain"]["boxes"]),
        "proof_subboxes": certificate["proofs"]["sub_boxes"],
        "equivalence_proved": compression["equivalence"]["proved"],
        "rounding_bound": compression["rounding_bound"],
        "rounding_bound_float": float_upper_bound(compression["rounding_bound"]),
        "empirical": compression["empirical"],
        "semantics_note": certificate["network"]["semantics_note"],
        "timings": certificate["timings"],
        "files": {name: str(out_dir / name) for name in (*OUTPUT_FILES, "smt")},
        "check_command": f"verify-compress check {out_dir / 'certificate.json'}",
    }


def float_upper_bound(rational: str) -> float:
    """The least float64 at or above the exact rational `rational` ("p/q" or an integer);
    infinity beyond the float range."""
    value = Fraction(rational)
    try:
        nearest = float(value)  # correctly rounded to nearest
    except OverflowError:
        return math.inf
    return nearest if Fraction(nearest) >= value else math.nextafter(nearest, math.inf)


def print_run(
    certificate: Mapping[str, Any], out_dir: Path, console: Console, hint: str | None = None
) -> None:
    """The human summary of a run: stability per layer, counts, time per stage, files, and
    `hint` (see `unknown_hint`) when given."""
    summary = certificate["summary"]
    totals = summary["totals"]
    console.print(layer_table(summary["per_layer"], totals))
    console.print(counts_table(totals))
    console.print(timings_table(certificate["timings"]))
    note = certificate["network"]["semantics_note"]
    if note:
        console.print(f"[bold yellow]semantics:[/] {escape(note)}")
    subboxes = certificate["proofs"]["sub_boxes"]
    boxes = len(certificate["domain"]["boxes"])
    if subboxes > boxes:
        console.print(
            f"proofs made on {subboxes} sub-boxes bisected from the {boxes} domain "
            f"box{'es' if boxes != 1 else ''} (the halves of every cut cover the box)"
        )
    equivalence = certificate["compression"]["equivalence"]
    if equivalence["proved"]:
        console.print(
            "[green]equivalence proved[/green]: the compressed network equals the "
            "original on the domain (exact arithmetic)"
        )
    else:
        console.print(
            "[bold red]equivalence NOT proved[/bold red]: do not use the compressed "
            "network in place of the original"
        )
    stable = totals["stably_active"] + totals["stably_inactive"]
    if stable and not certificate["config"].get("smt_tier", True):
        console.print("Z3 confirmation of the stable neurons skipped (--no-confirm-smt)")
    elif stable:
        console.print(
            f"Z3 confirmed {totals['smt_confirmed']} of the {stable} stable neurons "
            "independently (the stability obligations in smt/; every one is proved by the "
            "kernel's exact check)"
        )
    console.print(
        "bound on the output change from rounding the exported weights: "
        f"{escape(rounding_bound_text(certificate['compression']['rounding_bound']))}"
    )
    empirical = certificate["compression"].get("empirical", {})
    skipped = empirical.get("skipped_at_time_limit", 0)
    console.print(
        f"exact evaluation at {empirical.get('points', 0)} domain points"
        + (f" ({skipped} more skipped at the time limit)" if skipped else "")
        + f": max |original - compressed| = {escape(str(empirical.get('max_abs_difference')))}"
    )
    runtime = empirical.get("onnxruntime", {})
    if "max_abs_difference" in runtime:
        console.print(
            f"onnxruntime on both ONNX files at {runtime['points']} domain points: "
            f"max |difference| = {runtime['max_abs_difference']:.3g} (float arithmetic)"
        )
    if hint is not None:
        console.print(f"[bold yellow]{escape(hint)}[/]")
    smt_files = len(list((out_dir / "smt").glob("*.smt2")))
    console.print(
        f"written to {escape(str(out_dir))}/: {', '.join(OUTPUT_FILES)}, "
        f"smt/ ({smt_files} SMT-LIB2 files)"
    )
    console.print(f"re-check: verify-compress check {escape(str(out_dir / 'certificate.json'))}")


def layer_table(per_layer: Sequence[Mapping[str, Any]], totals: Mapping[str, Any]) -> Table:
    """One row per hidden layer and a totals footer. Each column is as narrow as its longest
    header word or value, so the table fits 80 columns (headers wrap between words)."""
    headers = [
        "layer",
        "neurons",
        *(label for _, label in STATUS_COLUMNS),
        "conn. before",
        "conn. after",
    ]
    keys = [key for key, _ in STATUS_COLUMNS] + ["connections_before", "connections_after"]
    rows = [
        [str(layer["layer"]), str(layer["neurons"]), *(str(layer[key]) for key in keys)]
        for layer in per_layer
    ]
    # per_layer lists the ReLU layers; the rest of the totals' connections are the output's.
    output = [
        int(totals[key]) - sum(int(layer[key]) for layer in per_layer)
        for key in ("connections_before", "connections_after")
    ]
    if any(output):
        rows.append(["output", "-", "-", "-", "-", "-", *(str(count) for count in output)])
    footer = [
        "total",
        str(sum(int(layer["neurons"]) for layer in per_layer)),
        *(str(totals[key]) for key in keys),
    ]
    table = Table(
        title="neuron stability per layer",
        show_footer=True,
        caption="conn. = connections (nonzero weights) into the layer; "
        "output = the final affine layer (no ReLU)",
    )
    for position, header in enumerate(headers):
        cells = [row[position] for row in rows] + [footer[position]]
        width = max(*(len(word) for word in header.split()), *(len(cell) for cell in cells))
        table.add_column(
            header,
            footer=footer[position],
            width=width,
            justify="left" if position == 0 else "right",
        )
    for row in rows:
        table.add_row(*row)
    return table


def counts_table(totals: Mapping[str, Any]) -> Table:
    table = Table(title="compression")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for label, key in (
        ("neurons", "neurons"),
        ("layers", "layers"),
        ("connections", "connections"),
    ):
        table.add_row(label, str(totals[f"{key}_before"]), str(totals[f"{key}_after"]))
    table.add_row("connections removed", "", f"{float(totals['percent_connections_removed']):.2f}%")
    return table


def timings_table(timings: Mapping[str, Any]) -> Table:
    table = Table(title="time per stage")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in timings.items():
        table.add_row(escape(str(stage)), f"{float(seconds):.2f}")
    return table


# ---------------------------------------------------------------------------------------------
# check


def check(
    certificate: Annotated[Path, typer.Argument(help="The certificate.json to re-verify.")],
    smt: Annotated[
        str | None,
        typer.Option(
            "--solver",
            "--smt",
            help="SMT solver (z3 or cvc5) that re-runs the shipped SMT-LIB2 obligations (each "
            "first matched by SHA-256 with the one re-derived from the networks): the "
            "equivalence obligations always (with z3 when not given), the stability obligations "
            "only when given.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    backend: BackendOption = PoolBackend.local,
    scheduler: SchedulerOption = None,
    network: Annotated[
        Path | None,
        typer.Option(
            "--network",
            help="The original ONNX network, if it is not where the certificate says (it must "
            "have the recorded SHA-256). Default: the recorded path, then a file of the same "
            "name beside the certificate.",
        ),
    ] = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Re-verify a certificate from scratch, trusting only its domain and the ONNX file it names.

    Kernel tier: both ONNX hashes, every witness (exact evaluation), the certified bounds of
    every proof box (on --workers processes, or on Dask with --backend dask) and every case
    split (exact integer arithmetic), the recomputed
    compression and every derived field. SMT tier: the shipped equivalence and stability
    obligations, checked against the re-derived ones by SHA-256; the equivalence ones re-run by a
    fresh Z3 (or cvc5 with --smt), the stability ones re-run with --smt z3|cvc5 (the count of
    stable neurons the solver confirmed is printed).

    Exit status: 0 valid, 1 invalid (the first failing item is named), 2 unreadable certificate.
    """
    stdout = Console(highlight=False, soft_wrap=True)
    with (
        interruptible(
            debug, "the certificate was not fully checked", "the check had finished"
        ) as interrupts,
        user_errors(debug, json_output),
    ):
        if workers < 1:
            raise VerifyCompressError(f"--workers must be 1 or more, got {workers}")
        from verify_compress.check import check_certificate
        from verify_compress.smt import require_solver

        solver = smt or "z3"
        require_solver(solver)
        pool = backend_fields(backend, scheduler)

        show = not quiet and not json_output and stdout.is_terminal
        with progress_display(show, interrupts) as progress:
            report = check_certificate(
                certificate,
                progress=progress,
                solver=solver,
                workers=workers,
                network=network,
                stability_smt=smt is not None,
                backend=pool["backend"],
                scheduler=pool["scheduler"],
            )
    if json_output:
        document = {
            "certificate": str(certificate),
            "solver": solver,
            "backend": pool["backend"],
            "tool_version": __version__,
            **dataclass_json(report),
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        if not quiet:
            checked = ", ".join(
                f"{count} {kind.replace('_', ' ')}" for kind, count in report.counts.items()
            )
            stdout.print(
                f"checked {escape(str(certificate))} in {report.seconds:.1f} s"
                + (f": {escape(checked)}" if checked else "")
            )
        if report.valid:
            stdout.print("certificate valid")
        else:
            stdout.print(f"certificate INVALID: {escape(str(report.first_failure))}")
            if not quiet and len(report.failures) > 1:
                for failure in report.failures[1:MAX_LISTED_FAILURES]:
                    stdout.print(f"  also: {escape(failure)}")
    if not report.valid:
        raise typer.Exit(EXIT_CHECK_FAILED)


def dataclass_json(report: Any) -> dict[str, Any]:
    return {
        "valid": report.valid,
        "first_failure": report.first_failure,
        "failures": list(report.failures),
        "counts": dict(report.counts),
        "seconds": round(float(report.seconds), 4),
    }


# ---------------------------------------------------------------------------------------------
# Progress and interruption


NO_DATA_STAGE = "data"
"""The witness stage that tries the `--data` rows: hidden from the display without `--data`."""


@dataclasses.dataclass(frozen=True)
class StageStyle:
    """How the display shows a progress stage: its label, the unit of its count, and whether
    the reported total is only a cap (shown as "(limit N)", never as a bar to fill)."""

    label: str
    unit: str = ""
    capped: bool = False


STAGE_STYLES: Mapping[str, StageStyle] = {
    # the pipeline's (or check's) stage name -> how it is shown
    "bounds": StageStyle("certified bounds", "domain boxes"),
    "data": StageStyle("witnesses from --data", "neurons shown unstable"),
    "random": StageStyle("witnesses at random points", "neurons shown unstable"),
    "corner": StageStyle("witnesses at box corners", "neurons shown unstable"),
    "gradient": StageStyle("witnesses by gradient steps", "neurons shown unstable"),
    "sub-boxes": StageStyle("bisection of the domain boxes", "sub-boxes", capped=True),
    "case splits": StageStyle("case splits", "claims tried"),
    "proof boxes": StageStyle("certified bounds", "proof boxes"),
    "equivalence": StageStyle("equivalence", "step"),
}
"""Display of the known progress stages; see `stage_style` for the others."""


def stage_style(stage: str) -> StageStyle:
    """How to show a progress stage, e.g. "search box 0 layer 1" -> "CP-SAT search box 0 layer
    1", counting "claims resolved"; an unknown stage shows its own name and a bare count."""
    if stage in STAGE_STYLES:
        return STAGE_STYLES[stage]
    if stage.startswith("search"):
        return StageStyle(f"CP-SAT {stage}", "claims resolved")
    return StageStyle(stage)


def _clock(seconds: float, up: bool = False) -> str:
    """h:mm:ss, as rich shows elapsed time (whole seconds down, or up with `up`)."""
    whole = max(0, math.ceil(seconds) if up else math.floor(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def budget_text(started: float, time_limit: float, now: float) -> str:
    """The display's first line: the run's overall time limit, the time used and the most
    time left (the run ends by the limit, writing its output in a short reserve after it)."""
    used = now - started
    if used < time_limit:
        return (
            f"time limit {_clock(time_limit, up=True)}: {_clock(used)} used, "
            f"at most {_clock(time_limit - used, up=True)} left"
        )
    return f"time limit {_clock(time_limit, up=True)} reached: writing the output"


class CountColumn(ProgressColumn):
    """The count as `done/total unit`, or `done unit (limit N)` for a capped stage; the unit
    and cap come from the task's fields."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields.get("unit", ""))
        cap = task.fields.get("cap")
        done = int(task.completed)
        if cap:
            text = f"{done} {unit} (limit {cap})"
        elif task.total is not None:
            text = f"{done}/{int(task.total)} {unit}"
        else:
            text = f"{done} {unit}"
        return Text(" ".join(text.split()), style="progress.download")


class StateColumn(SpinnerColumn):
    """A spinner while the stage runs, a check mark once a later stage has started."""

    def render(self, task: Task) -> RenderableType:
        if task.stop_time is not None:
            return Text("✓", style="green")
        return super().render(task)


class BudgetProgress(Progress):
    """A `Progress` whose first line is the overall time limit and time left (`budget_text`),
    redrawn on every refresh (so the time left counts down between reports)."""

    def __init__(
        self,
        *columns: str | ProgressColumn,
        budget: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        self.budget = budget  # set first: Progress.__init__ already renders
        self.clock = clock
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterator[RenderableType]:
        if self.budget is not None:
            started, limit = self.budget
            yield Text(budget_text(started, limit, self.clock()))
        yield from super().get_renderables()


class StageProgress:
    """The pipeline's `progress(stage, done, total)` callback drawn as one rich task per stage.

    A stage's task appears when the stage first reports, labelled and counted in its unit
    (`stage_style`); when a later stage reports, the earlier ones are shown as finished (a
    check mark, their clock stopped, their counts as last reported). A stage with an unknown
    total (0) or a capped one shows a moving bar while it runs and a full one once finished.
    Stages in `hidden` are not drawn.
    """

    def __init__(self, display: Progress, hidden: Collection[str] = ()) -> None:
        self.display = display
        self.hidden = frozenset(hidden)
        self.tasks: dict[str, TaskID] = {}
        self.latest: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage in self.hidden:
            return
        style = stage_style(stage)
        shown_total = None if style.capped or not total else total
        if stage not in self.tasks:
            self.finish_latest()
            self.tasks[stage] = self.display.add_task(
                style.label,
                total=shown_total,
                unit=style.unit,
                cap=total if style.capped else None,
            )
        self.display.update(self.tasks[stage], completed=done, total=shown_total)
        self.latest = stage

    def finish_latest(self) -> None:
        if self.latest is None:
            return
        task = self.tasks[self.latest]
        current = self.display.tasks[task]
        if current.total is None:  # a full bar, the count as reported
            self.display.update(task, total=max(int(current.completed), 1))
        self.display.stop_task(task)
        self.latest = None


def _inside_finalizer(frame: object) -> bool:
    """Whether a `__del__` method is on the interrupted call stack."""
    current = frame if isinstance(frame, types.FrameType) else None
    while current is not None:
        if current.f_code.co_name == "__del__":
            return True
        current = current.f_back
    return False


class Interrupts:
    """SIGINT for the duration of one command: raise KeyboardInterrupt in this process only.

    - A worker process forked while the command runs inherits this handler and ignores the
      signal (a terminal's Ctrl-C reaches the whole process group): the parent alone ends the
      run, so workers print no tracebacks of their own.
    - A KeyboardInterrupt raised inside a finalizer (say Z3's `Context.__del__`) would be
      swallowed by Python with an "Exception ignored" traceback on stderr: inside one, the
      request is only remembered, and `raise_if_requested`, called at every progress report,
      raises it.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.requested = False

    def handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self.owner:
            return
        self.requested = True
        if not _inside_finalizer(frame):
            raise KeyboardInterrupt

    def raise_if_requested(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def progress_columns() -> tuple[ProgressColumn, ...]:
    return (
        StateColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
    )


@contextmanager
def progress_display(
    show: bool,
    interrupts: Interrupts,
    budget: tuple[float, float] | None = None,
    hidden: Collection[str] = (),
) -> Iterator[Callable[[str, int, int], None]]:
    """The progress callback for the pipeline: it re-raises a swallowed Ctrl-C, and when
    `show`, draws a `StageProgress` on stderr while the block runs, under a line with the
    overall time limit and the time left when `budget` (its `time.monotonic()` start, the
    limit in seconds) is given."""
    if not show:

        def report(stage: str, done: int, total: int) -> None:
            interrupts.raise_if_requested()

        yield report
        return
    display = BudgetProgress(
        *progress_columns(), budget=budget, console=Console(stderr=True), transient=True
    )
    with display:
        stages = StageProgress(display, hidden)

        def report_and_draw(stage: str, done: int, total: int) -> None:
            interrupts.raise_if_requested()
            stages(stage, done, total)

        yield report_and_draw
        stages.finish_latest()


@contextmanager
def interruptible(debug: bool, consequence: str, completed: str) -> Iterator[Interrupts]:
    """Ctrl-C ends the command at once with status 130 and one line (after the traceback with
    --debug, which never changes the exit status).

    The line says `consequence`; if the interrupt was swallowed (see `Interrupts`) and the
    work completed anyway, it says `completed` instead. By the time a KeyboardInterrupt
    arrives here the pipeline has removed its staging directory (it cleans up on any
    exception). The process then ends with `os._exit`: a normal interpreter exit would wait
    for the solver worker processes, possibly for as long as their current query runs.
    """
    started = time.monotonic()
    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts.handle)
    try:
        yield interrupts
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _exit_interrupted(started, consequence)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupts.requested:
        _exit_interrupted(started, completed)


def _exit_interrupted(started: float, message: str) -> NoReturn:
    typer.echo(f"interrupted after {time.monotonic() - started:.0f} s; {message}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)
