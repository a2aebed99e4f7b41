"""One job of a batch, run in a process of its own under a hard time limit.

Stage: jobs -> backend -> **one main job** -> index. `run_job(spec, settings)` is what every
backend runs (in a thread of this process for the local backend, in a Dask worker for the Dask
backend). It starts a child process (from a forkserver that has the verifier imported, so a
job starts at once) and supervises it; the child runs, in order:

1. with `resume`: if `OUT/<name>/` holds a certificate for this network (the same SHA-256) and
   this domain that `verifier.check.check_certificate` accepts, nothing more is run: the job
   is reported from that certificate, marked resumed;
2. the main job, the very function `verify-compress NET.onnx` calls (`verifier.pipeline.run`,
   with the same HTML report), writing `OUT/<name>/` atomically;
3. the deployment figures (`verifier.deployment`), written to `OUT/<name>/deployment.json`, and
   the report re-rendered with its "Deployment" section;
4. the kernel check of the new certificate (`check_certificate`), the index's check result.

The child reports each step over a pipe. The supervisor enforces the limits (`JobLimits`): a
run that has not reported by its deadline is killed and the job is TIMED_OUT; a check past its
own deadline is killed and recorded as timed out (the job's output stays). An exception in
the child makes the job FAILED with its one-line message; nothing is raised to the batch.
The child exits by itself when its supervisor's process is gone (say a Ctrl-C'd batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ..batch.jobs import JobSpec
from ..certificate import sha256_of
from ..check import check_certificate
from ..config import Config
from ..deployment import measure_deployment
from ..domain import Domain
from ..errors import VerifyCompressError
from ..files import (
    CERTIFICATE_NAME,
    atomic_write_text,
    is_previous_output,
    prepare_output,
    remove_tree,
)
from ..onnx_import import load_network
from ..pipeline import run as run_pipeline
from ..report import render_report

JsonDict = dict[str, Any]
DEPLOYMENT_NAME = "deployment.json"
REPORT_NAME = "report.html"
DAEMON_HINT = (
    "start the Dask workers with DASK_DISTRIBUTED__WORKER__DAEMON=False so they may start processes"
)
WATCHDOG_SECONDS = 1.0
EXIT_SECONDS = 10.0
"""How long a job's process that has reported everything may take to exit before it is
killed (a solver's finalizer could hang)."""
"""How often a job's process looks whether its supervisor is still there."""


class JobStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed-out"


class CheckVerdict(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    TIMED_OUT = "timed out"
    NOT_RUN = "not run"


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    verdict: CheckVerdict
    first_failure: str | None = None
    seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class JobLimits:
    """The hard limits a supervisor enforces (the pipeline itself ends by the time limit, so
    these only catch a job that overruns: the network import, a slow solver call, a hang).

    The run must report by `time_limit * (1 + run_factor) + grace_seconds` after it starts; the
    deployment figures and the check then have `max(time_limit, run seconds) * check_factor +
    grace_seconds` (checking a certificate costs about as much as the proofs it re-does)."""

    grace_seconds: float = 30.0
    run_factor: float = 0.25
    check_factor: float = 2.0

    def run_seconds(self, time_limit: float) -> float:
        return time_limit * (1.0 + self.run_factor) + self.grace_seconds

    def check_seconds(self, time_limit: float, run_seconds: float) -> float:
        return max(time_limit, run_seconds) * self.check_factor + self.grace_seconds


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What every job of a batch shares."""

    out_root: Path
    workers: int = 1
    """Worker processes inside one job (`Config.workers`); the batch runs jobs side by side."""
    resume: bool = False
    force: bool = False
    """Replace a job's output folder even if it holds files other than a previous output."""
    check: bool = True
    measure: bool = True
    """Measure the deployment figures (onnxruntime) of each job."""
    limits: JobLimits = JobLimits()


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What the index says of one job."""

    spec: JobSpec
    status: JobStatus
    error: str | None = None
    resumed: bool = False
    totals: Mapping[str, Any] | None = None
    """The certificate's summary totals (neurons, connections, statuses)."""
    equivalence_proved: bool | None = None
    run_seconds: float | None = None
    """The run's own time (the certificate's `timings.total`)."""
    wall_seconds: float = 0.0
    """The whole job: start of its process to its last report (run, deployment, check)."""
    check: CheckOutcome = CheckOutcome(CheckVerdict.NOT_RUN)
    deployment: Mapping[str, Any] | None = None


def failed_result(spec: JobSpec, error: BaseException | str) -> JobResult:
    """A FAILED result whose error is one line (for a job that could not even be started)."""
    text = error if isinstance(error, str) else _describe(error)
    return JobResult(spec, JobStatus.FAILED, error=text)


# ---------------------------------------------------------------------------------------------
# The supervisor


def run_job(spec: JobSpec, settings: JobSettings) -> JobResult:
    """Run `spec` in a child process under `settings.limits`; never raises for the job's own
    errors (see the module docstring)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(spec, settings, sender, os.getpid()),
        name=f"verify-compress job {spec.name}",
    )
    try:
        process.start()  # the first start in a process also starts the forkserver
    except AssertionError as error:  # multiprocessing's "daemonic processes are not allowed
        receiver.close()  # to have children": a Dask worker started as a daemon
        sender.close()
        return failed_result(spec, f"cannot start the job's process here ({error}): {DAEMON_HINT}")
    sender.close()
    started = time.monotonic()
    limits = settings.limits
    deadline = started + limits.run_seconds(spec.time_limit)
    phase = "run"
    fields: JsonDict = {}
    reported_all = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _timed_out(spec, phase, fields, started, limits)
            try:
                ready = receiver.poll(min(remaining, 0.5))
                message = receiver.recv() if ready else None
            except (EOFError, OSError):
                return _ended(spec, fields, process, started)
            if message is None:
                continue
            kind, value = message
            if kind == "phase":
                phase = value
                limit = (
                    limits.check_seconds(spec.time_limit, 0.0)
                    if value == "check"
                    else limits.run_seconds(spec.time_limit)
                )
                deadline = time.monotonic() + limit
            elif kind == "failed":
                reported_all = True
                return JobResult(spec, JobStatus.FAILED, error=value, wall_seconds=_since(started))
            elif kind == "ran":
                fields.update(value)
                phase = "check"
                deadline = time.monotonic() + limits.check_seconds(
                    spec.time_limit, float(value.get("run_seconds") or 0.0)
                )
            elif kind == "deployment":
                fields["deployment"] = value
            elif kind == "checked":
                reported_all = True
                fields["check"] = value
                return _ok(spec, fields, started)
    finally:
        receiver.close()
        if reported_all:  # so it exits by itself
            process.join(EXIT_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
            _remove_staging(settings.out_root, spec.name)


def _remove_staging(out_root: Path, name: str) -> None:
    """The pipeline's temporary output folder of a killed job (it removes it itself on any
    exception, but a killed process runs no cleanup)."""
    for staging in out_root.glob(f".{name}.tmp-*"):
        remove_tree(staging)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _ok(spec: JobSpec, fields: JsonDict, started: float) -> JobResult:
    return JobResult(
        spec,
        JobStatus.OK,
        resumed=bool(fields.get("resumed", False)),
        totals=fields.get("totals"),
        equivalence_proved=fields.get("equivalence_proved"),
        run_seconds=fields.get("run_seconds"),
        wall_seconds=_since(started),
        check=fields.get("check", CheckOutcome(CheckVerdict.NOT_RUN)),
        deployment=fields.get("deployment"),
    )


def _timed_out(
    spec: JobSpec,
    phase: str,
    fields: JsonDict,
    started: float,
    limits: JobLimits,
) -> JobResult:
    if "totals" in fields:  # the run finished; its check (or the figures) did not
        seconds = limits.check_seconds(spec.time_limit, float(fields.get("run_seconds") or 0))
        fields["check"] = CheckOutcome(
            CheckVerdict.TIMED_OUT, f"the check took longer than {seconds:.3g} s", seconds
        )
        return _ok(spec, fields, started)
    if phase == "check":
        message = (
            f"checking the previous output took longer than "
            f"{limits.check_seconds(spec.time_limit, 0.0):.3g} s"
        )
    else:
        message = (
            f"no result within {limits.run_seconds(spec.time_limit):.3g} s "
            f"(time limit {spec.time_limit:g} s plus the grace)"
        )
    return JobResult(spec, JobStatus.TIMED_OUT, error=message, wall_seconds=_since(started))


def _ended(
    spec: JobSpec, fields: JsonDict, process: multiprocessing.process.BaseProcess, started: float
) -> JobResult:
    process.join(5.0)
    code = process.exitcode
    reason = f"the job's process ended unexpectedly (exit code {code})"
    if "totals" in fields:
        fields["check"] = CheckOutcome(CheckVerdict.INVALID, f"check not finished: {reason}")
        return _ok(spec, fields, started)
    return JobResult(spec, JobStatus.FAILED, error=reason, wall_seconds=_since(started))


# ---------------------------------------------------------------------------------------------
# The child


def _child(spec: JobSpec, settings: JobSettings, sender: Connection, supervisor: int) -> None:
    threading.Thread(target=_watch, args=(supervisor,), daemon=True).start()
    try:
        _job(spec, settings, lambda kind, value: sender.send((kind, value)))
    except BaseException as error:  # reported as the job's failure, never raised further
        with contextlib.suppress(OSError):
            sender.send(("failed", _describe(error)))
    finally:
        sender.close()


def _watch(supervisor: int) -> None:
    """End this process when the supervisor's process is gone."""
    while True:
        time.sleep(WATCHDOG_SECONDS)
        try:
            os.kill(supervisor, 0)
        except ProcessLookupError:
            os._exit(3)
        except PermissionError:
            pass


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or type(error).__name__}"
    elif isinstance(error, VerifyCompressError):
        text = str(error) or type(error).__name__
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " ".join(text.split())


def _job(spec: JobSpec, settings: JobSettings, send: Callable[[str, Any], None]) -> None:
    if not spec.network.is_file():
        raise VerifyCompressError(f"{spec.network}: network file not found")
    network = load_network(spec.network)
    domain = spec.domain.load(network.input_size)
    out_dir = settings.out_root / spec.name
    rng = np.random.default_rng(spec.seed)
    if settings.resume:
        send("phase", "check")
        previous = _previous_check(spec, domain, out_dir, settings)
        if previous is not None:
            document = json.loads((out_dir / CERTIFICATE_NAME).read_text(encoding="utf-8"))
            send("ran", {**_ran(document), "resumed": True})
            deployment = _read_json(out_dir / DEPLOYMENT_NAME)
            if deployment is None and settings.measure:
                deployment = _deployment(spec, out_dir, domain, document, rng)
            send("deployment", deployment)
            send("checked", previous)
            return
        send("phase", "run")
    prepare_output(out_dir, settings.force)
    config = Config(time_limit=spec.time_limit, seed=spec.seed, workers=settings.workers)
    result = run_pipeline(spec.network, domain, out_dir, config, write_report=render_report)
    send("ran", _ran(result.certificate))
    if settings.measure:
        send("deployment", _deployment(spec, out_dir, domain, result.certificate, rng))
    checked = _check(out_dir, settings) if settings.check else CheckOutcome(CheckVerdict.NOT_RUN)
    send("checked", checked)


def _ran(certificate: Mapping[str, Any]) -> JsonDict:
    return {
        "totals": dict(certificate["summary"]["totals"]),
        "equivalence_proved": bool(certificate["summary"]["equivalence_proved"]),
        "run_seconds": float(certificate["timings"]["total"]),
    }


def _previous_check(
    spec: JobSpec, domain: Domain, out_dir: Path, settings: JobSettings
) -> CheckOutcome | None:
    """The check of a previous output of this very job (network by SHA-256, domain bit for
    bit) when `check_certificate` accepts it, else None (the job runs again)."""
    if not is_previous_output(out_dir):
        return None
    document = _read_json(out_dir / CERTIFICATE_NAME)
    if (
        document is None
        or document.get("network", {}).get("sha256") != sha256_of(spec.network)
        or document.get("domain") != domain.to_json()
    ):
        return None
    outcome = _check(out_dir, settings, network=spec.network)
    return outcome if outcome.verdict is CheckVerdict.VALID else None


def _check(out_dir: Path, settings: JobSettings, network: Path | None = None) -> CheckOutcome:
    started = time.perf_counter()
    try:
        report = check_certificate(
            out_dir / CERTIFICATE_NAME, workers=settings.workers, network=network
        )
    except VerifyCompressError as error:
        return CheckOutcome(CheckVerdict.INVALID, _describe(error), _seconds(started))
    if report.valid:
        return CheckOutcome(CheckVerdict.VALID, None, round(report.seconds, 3))
    return CheckOutcome(CheckVerdict.INVALID, report.first_failure, round(report.seconds, 3))


def _seconds(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _deployment(
    spec: JobSpec,
    out_dir: Path,
    domain: Domain,
    certificate: Mapping[str, Any],
    rng: np.random.Generator,
) -> JsonDict:
    """The deployment figures, written beside the certificate, and the report re-rendered
    with them. A failure here is noted in the figures, never the job's failure."""
    try:
        figures = measure_deployment(spec.network, out_dir / "compressed.onnx", domain, rng)
    except Exception as error:  # the figures are an extra: the job's output stands
        figures = {"skipped": f"measurement failed: {_describe(error)}"}
    atomic_write_text(out_dir / DEPLOYMENT_NAME, json.dumps(figures, indent=1))
    atomic_write_text(out_dir / REPORT_NAME, render_report(certificate, figures))
    return figures


def _read_json(path: Path) -> JsonDict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None
