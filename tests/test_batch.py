"""The batch mode (`verify-compress batch JOBS`): jobs files read with clear errors, every job
run as the main job with its certificate checked, a broken job recorded while the others
finish, an index that agrees with each job's certificate, `--resume` that reruns nothing, and
the same batch on a real Dask LocalCluster.

The runs use the bundled models (and, when ../shared/benchmarks is present, a few public
cases) with short time limits; one local batch and one Dask batch are shared by the tests
that read them (module fixtures)."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from verify_compress.batch import (
    CheckVerdict,
    DaskBackend,
    DomainKind,
    JobLimits,
    JobSettings,
    JobsFileError,
    JobSpec,
    JobStatus,
    LocalBackend,
    load_jobs,
    run_batch,
    run_job,
)
from verify_compress.batch.execute import JobResult
from verify_compress.batch.index import render_index
from verify_compress.batch.jobs import DomainSource
from verify_compress.cli.batch import BatchDisplay, jobs_table
from verify_compress.cli.main import main
from verify_compress.errors import MissingToolError

from conftest import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
TIME_LIMIT = "15"
SHARED_CASES = [
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_3.vnnlib"),
    ("acasxu/ACASXU_run2a_2_1_batch_2000.onnx", "acasxu/prop_4.vnnlib"),
]
"""Public cases added to the local batch when the benchmarks are present (a few s each)."""


def run_cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify_compress.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rows_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in document["jobs"]}


def assert_index_agrees_with_the_certificates(document: dict[str, Any], out: Path) -> None:
    """Every ok row says what its job's certificate.json says, and links to its report."""
    for row in document["jobs"]:
        if row["status"] != "ok":
            continue
        certificate = json.loads((out / row["certificate"]).read_text())
        totals = certificate["summary"]["totals"]
        assert row["stable"] == totals["stably_active"] + totals["stably_inactive"]
        for key in ("unstable", "unknown", "connections_before", "connections_after"):
            assert row[key] == totals[key], (row["name"], key)
        assert row["percent_connections_removed"] == totals["percent_connections_removed"]
        assert row["run_seconds"] == certificate["timings"]["total"]
        assert row["equivalence_proved"] is certificate["summary"]["equivalence_proved"]
        assert row["check"]["result"] == "valid", row["check"]
        assert (out / row["report"]).is_file()
    ran = [r for r in document["jobs"] if r["status"] == "ok"]
    assert document["totals"]["stable"] == sum(r["stable"] for r in ran)
    assert document["totals"]["ok"] == len(ran)
    assert document["finished"] == document["jobs_total"] == len(document["jobs"])


# ---------------------------------------------------------------------------------------------
# Jobs files


def test_a_csv_jobs_file_gives_one_job_per_row_with_paths_relative_to_its_folder(
    tmp_path: Path,
) -> None:
    jobs = write(
        tmp_path / "suite" / "jobs.csv",
        "name,network,vnnlib,bounds,lower,upper,time_limit,seed\n"
        "first,nets/a.onnx,props/p.vnnlib,,,,20,3\n"
        ",nets/b.onnx,,b.json,,,,\n"
        "# a comment row\n"
        ',nets/c.onnx,,,"0,0.5",1;2,,\n'
        ",nets/c.onnx,,,,,,\n",
    )
    first, second, third, fourth = load_jobs(jobs, time_limit=300, seed=7)
    suite = tmp_path / "suite"
    assert first == JobSpec(
        "first",
        suite / "nets/a.onnx",
        DomainSource(DomainKind.VNNLIB, path=suite / "props/p.vnnlib"),
        20.0,
        3,
        f"{jobs} row 2",
    )
    assert second.domain == DomainSource(DomainKind.BOUNDS, path=suite / "b.json")
    assert (second.time_limit, second.seed) == (300.0, 7)
    assert third.domain.kind is DomainKind.BOX
    assert (third.domain.lower, third.domain.upper) == ((0.0, 0.5), (1.0, 2.0))
    assert fourth.domain.kind is DomainKind.DEFAULT
    assert fourth.origin == f"{jobs} row 6"


def test_a_toml_jobs_file_reads_the_same_keys(tmp_path: Path) -> None:
    jobs = write(
        tmp_path / "jobs.toml",
        "[[job]]\n"
        'network = "a.onnx"\nvnnlib = "p.vnnlib"\ntime_limit = 12.5\nseed = 2\n'
        "[[job]]\n"
        'name = "box"\nnetwork = "a.onnx"\nlower = 0\nupper = [1, "0.5"]\n',
    )
    first, second = load_jobs(jobs, time_limit=300, seed=0)
    assert (first.name, first.time_limit, first.seed) == ("a_p", 12.5, 2)
    assert first.domain == DomainSource(DomainKind.VNNLIB, path=tmp_path / "p.vnnlib")
    assert second.name == "box"
    assert second.domain.lower == (0.0,)
    assert second.domain.upper[0] == 1.0 and second.domain.upper[1] >= 0.5


def test_an_instances_csv_is_read_as_onnx_vnnlib_and_timeout(tmp_path: Path) -> None:
    jobs = write(
        tmp_path / "instances.csv",
        "onnx/net_1.onnx,vnnlib/prop_1.vnnlib,116\nonnx/net_1.onnx,vnnlib/prop_2.vnnlib,60.5\n",
    )
    first, second = load_jobs(jobs, time_limit=300, seed=0)
    assert first.network == tmp_path / "onnx" / "net_1.onnx"
    assert first.domain == DomainSource(DomainKind.VNNLIB, path=tmp_path / "vnnlib/prop_1.vnnlib")
    assert (first.time_limit, second.time_limit) == (116.0, 60.5)
    assert (first.name, second.name) == ("net_1_prop_1", "net_1_prop_2")


def test_default_names_are_the_network_and_domain_stems_made_unique_beside_given_ones(
    tmp_path: Path,
) -> None:
    jobs = write(
        tmp_path / "jobs.csv",
        "network,vnnlib,name\n"
        "a.onnx,p.vnnlib,\n"
        "a.onnx,p.vnnlib,\n"
        "a.onnx,,\n"
        "b c.onnx,,a-2\n"
        "a.onnx,p.vnnlib,\n",
    )
    names = [spec.name for spec in load_jobs(jobs, 300, 0)]
    assert names == ["a_p", "a_p-2", "a", "a-2", "a_p-3"]
    spaced = write(tmp_path / "spaced.csv", "network\nmy net (v2).onnx\n")
    assert load_jobs(spaced, 300, 0)[0].name == "my_net__v2_"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("jobs.csv", "network,epsilon\na.onnx,0.1\n", "row 1: unknown column 'epsilon'"),
        (
            "jobs.csv",
            "network,vnnlib,bounds\na.onnx,p.vnnlib,b.npy\n",
            "row 2: give only one domain",
        ),
        ("jobs.csv", "network,lower\na.onnx,0\n", "row 2: upper is missing"),
        ("jobs.csv", "network,lower,upper\na.onnx,1,0\n", "row 2: a lower bound exceeds"),
        ("jobs.csv", "network,lower,upper\na.onnx,x,1\n", "row 2: lower"),
        ("jobs.csv", "network,time_limit\na.onnx,0\na.onnx,-1\n", "row 2: time limit must be"),
        ("jobs.csv", "network,seed\na.onnx,1.5\n", "row 2: seed must be an integer"),
        ("jobs.csv", "network,name\na.onnx,x\nb.onnx,X\n", "row 3: job name 'X' is already used"),
        ("jobs.csv", "network,name\na.onnx,../up\n", "row 2: name '../up' is not a folder name"),
        ("jobs.csv", "network,vnnlib\n,p.vnnlib\n", "row 2: no network given"),
        ("jobs.csv", "network\na.onnx,extra\n", "row 2: 2 cells, the header names 1"),
        ("jobs.csv", "a.onnx,p.vnnlib\n", "row 1: expected a header"),
        ("instances.csv", "a.onnx,p.vnnlib,60\nb.onnx,p.vnnlib\n", "row 2: an instances.csv row"),
        ("instances.csv", "a.onnx,p.vnnlib,soon\n", "row 1: time limit must be"),
        ("jobs.csv", "network\n", "holds no jobs"),
        ("jobs.toml", '[[job]]\nnetwork = "a.onnx"\nvnlib = "p"\n', "job 1: unknown key 'vnlib'"),
        ("jobs.toml", '[[jobs]]\nnetwork = "a.onnx"\n', "unknown top-level key 'jobs'"),
        ("jobs.toml", "[[job]\n", "not valid TOML"),
        ("jobs.toml", '[[job]]\nnetwork = "a.onnx"\nseed = true\n', "job 1: seed must be"),
    ],
)
def test_a_bad_jobs_file_is_refused_naming_the_file_and_the_row(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    jobs = write(tmp_path / name, text)
    with pytest.raises(JobsFileError) as raised:
        load_jobs(jobs, 300, 0)
    assert str(jobs) in str(raised.value)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_jobs_file_is_an_error_exiting_2(tmp_path: Path) -> None:
    result = run_cli("batch", tmp_path / "nothing.csv", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "error": f"{tmp_path / 'nothing.csv'}: no such jobs file",
        "exit_code": 2,
    }


# ---------------------------------------------------------------------------------------------
# The local backend, through the command


def shared_rows() -> str:
    if not BENCHMARKS.is_dir():
        return ""
    return "".join(f"{BENCHMARKS / net},{BENCHMARKS / prop},,,\n" for net, prop in SHARED_CASES)


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path, float]:
    """One batch, two jobs at a time: two bundled models, a broken network file, a domain of
    the wrong size, and (when present) the shared cases."""
    folder = tmp_path_factory.mktemp("local-batch")
    write(folder / "broken.onnx", "this is not an ONNX file")
    acas_box = write(
        folder / "acas_box.json", '{"lower": [0, 0, 0, 0, 0], "upper": [1, 1, 1, 1, 1]}'
    )
    jobs = write(
        folder / "jobs.csv",
        "network,vnnlib,bounds,lower,upper\n"
        f"{MODELS / 'digits_l1.onnx'},,,0,1\n"
        f"{MODELS / 'digits_nol1.onnx'},,,0,0.5\n"
        "broken.onnx,,,,\n"
        f"{MODELS / 'digits_l1_strong.onnx'},,{acas_box.name},,\n" + shared_rows(),
    )
    out = folder / "out"
    started = time.monotonic()
    result = run_cli(
        "batch", jobs, "--out", out, "--jobs", "2", "--time-limit", TIME_LIMIT, "--json"
    )
    return result, out, jobs, time.monotonic() - started


def test_every_job_runs_and_a_broken_network_is_recorded_as_failed_while_the_others_finish(
    local_batch: Any,
) -> None:
    result, out, _, _ = local_batch
    assert result.returncode == 1, result.stderr  # some jobs failed: exit 1, after all ran
    document = json.loads(result.stdout)
    rows = rows_by_name(document)
    broken = rows["broken"]
    assert broken["status"] == "failed"
    assert broken["error"].startswith(f"{out.parent / 'broken.onnx'}: not an ONNX model")
    assert broken["report"] is None and not (out / "broken").exists()
    wrong_size = rows["digits_l1_strong_acas_box"]
    assert wrong_size["status"] == "failed"
    assert (
        wrong_size["error"]
        == f"{out.parent / 'acas_box.json'}: has 5 inputs but the network has 64"
    )
    for name in ("digits_l1", "digits_nol1"):
        assert rows[name]["status"] == "ok"
        assert rows[name]["check"]["result"] == "valid"
    assert rows["digits_nol1"]["domain"] == "box [0, 0.5]"
    assert document["totals"]["failed"] == 2
    assert_index_agrees_with_the_certificates(document, out)
    assert json.loads((out / "index.json").read_text()) == document


def test_each_job_folder_holds_the_main_jobs_files_and_the_deployment_figures(
    local_batch: Any,
) -> None:
    _, out, _, _ = local_batch
    job = out / "digits_l1"
    for name in ("certificate.json", "compressed.onnx", "report.html", "deployment.json"):
        assert (job / name).is_file(), name
    assert list((job / "smt").glob("*.smt2"))
    figures = json.loads((job / "deployment.json").read_text())
    assert figures["compressed_bytes"] == (job / "compressed.onnx").stat().st_size
    assert figures["original"]["latency_ms"] > 0
    report = (job / "report.html").read_text()
    assert "<h2>Deployment</h2>" in report
    row = rows_by_name(json.loads((out / "index.json").read_text()))["digits_l1"]
    assert row["deployment"] == figures
    assert not list(out.glob(".*")), "no temporary folders are left"


def test_the_index_page_links_each_report_and_shows_each_error(local_batch: Any) -> None:
    _, out, _, _ = local_batch
    page = (out / "index.html").read_text()
    document = json.loads((out / "index.json").read_text())
    for row in document["jobs"]:
        if row["report"]:
            assert f'href="{row["report"]}"' in page
        else:
            assert html.escape(row["error"]) in page
    assert "acas_box.json: has 5 inputs but the network has 64" in page
    assert "<script" not in page


def test_the_shared_cases_run_in_the_batch_with_certificates_the_check_accepts(
    local_batch: Any,
) -> None:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"public benchmarks not found at {BENCHMARKS} (only present in CI/dev)")
    _, out, _, _ = local_batch
    rows = rows_by_name(json.loads((out / "index.json").read_text()))
    for network, prop in SHARED_CASES:
        name = f"{Path(network).stem}_{Path(prop).stem}"
        assert rows[name]["status"] == "ok", rows[name]["error"]
        assert rows[name]["check"]["result"] == "valid"
        assert rows[name]["stable"] > 0


def test_resume_reruns_nothing_that_has_a_valid_certificate(local_batch: Any) -> None:
    _, out, jobs, _ = local_batch
    before = {
        path: path.stat().st_mtime_ns
        for path in out.glob("*/*")
        if path.name in ("certificate.json", "compressed.onnx", "report.html")
    }
    assert before
    result = run_cli("batch", jobs, "--out", out, "--jobs", "2", "--resume", "--json")
    assert result.returncode == 1  # the broken jobs fail again
    document = json.loads(result.stdout)
    after = {path: path.stat().st_mtime_ns for path in before}
    assert after == before
    for row in document["jobs"]:
        assert row["resumed"] is (row["status"] == "ok")
    assert document["totals"]["resumed"] == document["totals"]["ok"] > 0
    assert_index_agrees_with_the_certificates(document, out)


def test_resume_runs_a_job_again_when_its_domain_changed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = write(
        tmp_path / "a" / "jobs.csv",
        f"network,lower,upper,name\n{MODELS / 'digits_nol1.onnx'},0,1,job\n",
    )
    changed = write(
        tmp_path / "b" / "jobs.csv",
        f"network,lower,upper,name\n{MODELS / 'digits_nol1.onnx'},0,0.25,job\n",
    )
    settings = JobSettings(out, resume=True, measure=False)
    with LocalBackend(1) as backend:
        run_batch(load_jobs(first, 10, 0), settings, backend, first)
        document = run_batch(load_jobs(changed, 10, 0), settings, backend, changed)
    (row,) = document["jobs"]
    assert row["status"] == "ok" and row["resumed"] is False
    certificate = json.loads((out / "job" / "certificate.json").read_text())
    assert certificate["domain"]["boxes"][0]["upper"][0] == "0.25"


# ---------------------------------------------------------------------------------------------
# Time limits, Dask


def test_a_job_past_its_hard_limit_is_killed_and_recorded_as_timed_out(tmp_path: Path) -> None:
    spec = JobSpec(
        "slow", MODELS / "mnist_l1_2x100.onnx", DomainSource(DomainKind.DEFAULT), 0.2, 0, "test"
    )
    settings = JobSettings(tmp_path, limits=JobLimits(grace_seconds=0.0, run_factor=0.0))
    started = time.monotonic()
    result = run_job(spec, settings)
    assert result.status is JobStatus.TIMED_OUT
    assert result.error == "no result within 0.2 s (time limit 0.2 s plus the grace)"
    assert result.check.verdict is CheckVerdict.NOT_RUN
    assert time.monotonic() - started < 10
    assert not list(tmp_path.iterdir()), "a killed job leaves no files"


@pytest.fixture(scope="module")
def dask_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("dask-batch")
    write(folder / "broken.onnx", "not ONNX")
    acas = ""
    if BENCHMARKS.is_dir():
        net, prop = SHARED_CASES[0]
        acas = f"{BENCHMARKS / net},{BENCHMARKS / prop},,\n"
    jobs = write(
        folder / "jobs.csv",
        "network,vnnlib,lower,upper\n"
        f"{MODELS / 'digits_l1.onnx'},,0,1\n"
        f"{MODELS / 'digits_l1_strong.onnx'},,0,1\n"
        "broken.onnx,,,\n" + acas,
    )
    with DaskBackend(None, 2) as backend:
        assert backend.slots == 2
        document = run_batch(load_jobs(jobs, 15, 0), JobSettings(folder / "out"), backend, jobs)
    return document, folder / "out"


def test_a_dask_local_cluster_runs_the_batch_and_its_index_agrees_with_each_certificate(
    dask_batch: tuple[dict[str, Any], Path],
) -> None:
    document, out = dask_batch
    assert document["backend"] == "dask (LocalCluster, 2 workers)"
    rows = rows_by_name(document)
    assert rows["broken"]["status"] == "failed"
    assert rows["digits_l1"]["status"] == rows["digits_l1_strong"]["status"] == "ok"
    assert len(rows) == (4 if BENCHMARKS.is_dir() else 3)
    assert_index_agrees_with_the_certificates(document, out)


def test_without_dask_the_dask_backend_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingToolError, match=r"pip install 'verify-compress\[dask\]'"):
        DaskBackend(None, 1)
    jobs = write(tmp_path / "jobs.csv", f"network\n{MODELS / 'digits_l1.onnx'}\n")
    with pytest.raises(SystemExit) as exited:
        main(["batch", str(jobs), "--backend", "dask", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("error: the dask backend needs Dask distributed")
    assert not (tmp_path / "out").exists()


def test_a_scheduler_address_without_the_dask_backend_is_refused(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", f"network\n{MODELS / 'digits_l1.onnx'}\n")
    result = run_cli("batch", jobs, "--scheduler", "tcp://localhost:8786")
    assert result.returncode == 2
    assert result.stderr == "error: --scheduler is for --backend dask only\n"


# ---------------------------------------------------------------------------------------------
# Display


def result_of(name: str, status: JobStatus, totals: dict[str, int] | None) -> JobResult:
    spec = JobSpec(name, Path(f"{name}.onnx"), DomainSource(DomainKind.DEFAULT), 10, 0, "test")
    return JobResult(spec, status, totals=totals, wall_seconds=1.0)


def test_the_progress_display_shows_the_running_jobs_and_the_finished_ones() -> None:
    display = BatchDisplay(["a", "b", "c"], 2, Progress())
    console = Console(width=100, record=True)
    console.print(display)
    shown = console.export_text()
    assert "a" in shown and "b" in shown and shown.count("running") == 2
    display(
        0,
        result_of(
            "a",
            JobStatus.OK,
            {"stably_active": 1, "stably_inactive": 2, "unstable": 3, "unknown": 0},
        ),
    )
    console.print(display)
    shown = console.export_text(clear=True)
    assert "3/3/0" in shown and shown.count("running") == 2  # b and c now
    display(1, result_of("b", JobStatus.FAILED, None))
    console.print(display)
    assert "failed" in console.export_text()


def test_the_jobs_table_and_index_page_escape_names() -> None:
    results = [result_of("a<b>", JobStatus.FAILED, None)]
    from verify_compress.batch.index import index_document

    document = index_document(results, 1, Path("jobs.csv"), "local", 1.0)
    console = Console(width=120, record=True)
    console.print(jobs_table(document["jobs"], document["totals"]))
    assert "a<b>" in console.export_text()
    page = render_index(document)
    assert "a&lt;b&gt;" in page and "<b>" not in page
