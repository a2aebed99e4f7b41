"""The main job (`verify-compress NET.onnx`) and `verify-compress check`, run as a user would.

Subprocess tests of `cli/run.py`: exit codes (0 success, 1 invalid certificate, 2 bad input,
130 Ctrl-C), the files written, the `--json` document, the tables, and `check` on tampered
certificates. A few in-process tests cover the option parsing helpers.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.progress import Progress

from verify_compress import __version__
from verify_compress.cli.main import main
from verify_compress.cli.run import (
    DEFAULT_OUT_ROOT,
    NO_DATA_STAGE,
    OUTPUT_FILES,
    BudgetProgress,
    Interrupts,
    StageProgress,
    budget_text,
    build_domain,
    describe_domain,
    float_upper_bound,
    progress_columns,
    unknown_hint,
)
from verify_compress.errors import DomainError

REPO = Path(__file__).resolve().parents[1]
README_MODEL = REPO / "models" / "digits_l1.onnx"
"""The bundled model of the README's main-job command."""


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify_compress.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def mlp(path: Path, sizes: list[int], hidden_op: str = "Relu", seed: int = 1) -> Path:
    """A Gemm/`hidden_op` MLP. Biases +-5 and +-3 on neurons 0-3 of each hidden layer make
    those neurons stable on [0, 1]^n, so the main job has something to remove and fold."""
    rng = np.random.default_rng(seed)
    initializers, nodes, current = [], [], "x"
    last = len(sizes) - 2
    for k, (inputs, outputs) in enumerate(itertools.pairwise(sizes)):
        weights = (rng.normal(size=(outputs, inputs)) * 0.5).astype(np.float32)
        bias = np.zeros(outputs, np.float32)
        if k < last:
            bias[:4] = [5.0, -5.0, 3.0, -3.0]
        initializers += [
            numpy_helper.from_array(weights, f"w{k}"),
            numpy_helper.from_array(bias, f"b{k}"),
        ]
        nodes.append(helper.make_node("Gemm", [current, f"w{k}", f"b{k}"], [f"g{k}"], transB=1))
        current = f"g{k}"
        if k < last:
            nodes.append(helper.make_node(hidden_op, [current], [f"h{k}"], name=f"act{k}"))
            current = f"h{k}"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, sizes[-1]])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp(tmp_path_factory.mktemp("net") / "tiny.onnx", [4, 8, 8, 2])


@pytest.fixture(scope="module")
def main_job(
    tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of the main job on the tiny network (shared: it takes seconds)."""
    out = tmp_path_factory.mktemp("run") / "tiny_out"
    return run_cli(str(tiny), "--out", str(out)), out


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a bad-input failure (exit 2, nothing on stdout)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The main job


def test_the_main_job_writes_certificate_compressed_network_report_and_smt_files(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = main_job
    assert result.returncode == 0, result.stderr
    for name in ("certificate.json", "compressed.onnx", "report.html"):
        assert (out / name).is_file(), name
    assert list((out / "smt").glob("*.smt2"))
    assert not list(out.parent.glob(".tiny_out*")), "a staging directory was left behind"
    onnx.checker.check_model(onnx.load(str(out / "compressed.onnx")))
    assert "<svg" in (out / "report.html").read_text(encoding="utf-8")


def test_the_main_job_prints_the_default_domain_the_tables_and_the_recheck_command(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = main_job
    assert "domain: [0, 1]^4 (default)" in result.stdout
    assert "neuron stability per layer" in result.stdout
    assert "time per stage" in result.stdout
    assert "equivalence proved" in result.stdout
    assert f"verify-compress check {out / 'certificate.json'}" in result.stdout
    # stdout is not a terminal: no progress display anywhere
    assert result.stderr == ""


def test_the_printed_table_agrees_with_the_certificate(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = main_job
    certificate = json.loads((out / "certificate.json").read_text())
    totals = certificate["summary"]["totals"]
    total_row = next(line for line in result.stdout.splitlines() if line.startswith("│ total "))
    cells = [cell.strip() for cell in total_row.split("│")[2:-1]]
    expected = [
        sum(layer["neurons"] for layer in certificate["summary"]["per_layer"]),
        totals["stably_active"],
        totals["stably_inactive"],
        totals["unstable"],
        totals["unknown"],
        totals["connections_before"],
        totals["connections_after"],
    ]
    assert cells == [str(value) for value in expected]
    # the bias pattern makes neurons 0-3 of the first layer stable
    first = certificate["summary"]["per_layer"][0]
    assert first["stably_active"] + first["stably_inactive"] >= 4


def test_json_output_is_one_document_with_the_per_layer_summary(tiny: Path, tmp_path: Path) -> None:
    result = run_cli(str(tiny), "--out", str(tmp_path / "out"), "--json", "--seed", "3")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [layer["layer"] for layer in document["per_layer"]] == [0, 1]
    assert document["totals"]["neurons_before"] == 16
    assert document["equivalence_proved"] is True
    assert Path(document["files"]["certificate.json"]).is_file()
    certificate = json.loads((tmp_path / "out" / "certificate.json").read_text())
    assert document["per_layer"] == certificate["summary"]["per_layer"]
    assert certificate["config"]["seed"] == 3


def test_json_output_says_what_ran_on_what_and_the_comparisons_beside_the_proof(
    tiny: Path, tmp_path: Path
) -> None:
    result = run_cli(str(tiny), "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    certificate = json.loads((tmp_path / "out" / "certificate.json").read_text())
    assert document["tool_version"] == __version__
    assert document["versions"] == certificate["solvers"]
    assert document["network"] == {
        "path": str(tiny),
        "sha256": hashlib.sha256(tiny.read_bytes()).hexdigest(),
    }
    assert document["domain"] == {"source": "box", "boxes": 1, "description": "[0, 1]^4 (default)"}
    empirical = document["empirical"]
    assert empirical == certificate["compression"]["empirical"]
    assert empirical["points"] > 0 and empirical["agree"] is True
    assert "max_abs_difference" in empirical["onnxruntime"]
    bound = Fraction(document["rounding_bound"])
    assert document["rounding_bound"] == certificate["compression"]["rounding_bound"]
    assert Fraction(document["rounding_bound_float"]) >= bound
    assert "hint" not in document  # every neuron decided


def test_rounding_bound_float_is_the_least_float_at_or_above_the_rational() -> None:
    for text in ("0", "1/3", "2/3", "1/1048576", f"{10**60 + 1}/{10**62}", "-1/3"):
        value, bound = Fraction(text), float_upper_bound(text)
        assert Fraction(bound) >= value
        assert Fraction(math.nextafter(bound, -math.inf)) < value
    assert float_upper_bound("1/1048576") == 2.0**-20  # exact when the float is exact
    assert float_upper_bound(str(10**400)) == math.inf


@pytest.mark.parametrize(
    "args",
    [
        ("{tmp}/absent.onnx", "--json"),
        ("{tiny}", "--json", "--time-limit", "-1", "--out", "{tmp}/o"),
        ("check", "{tmp}/absent.json", "--json"),
        ("inspect", "{tmp}/absent.onnx", "--json"),
    ],
    ids=["main job: missing network", "main job: bad option", "check", "inspect"],
)
def test_a_user_error_under_json_is_a_json_document_on_stdout_and_one_line_on_stderr(
    tiny: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_cli(*(a.format(tmp=tmp_path, tiny=tiny) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": 2}
    assert not (tmp_path / "o").exists()


def test_a_command_line_that_does_not_parse_under_json_is_a_json_document_too(
    tiny: Path,
) -> None:
    result = run_cli(str(tiny), "--method", "fastest", "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "--method" in document["error"]
    assert "fastest" in result.stderr  # click's own usage message stays on stderr


def test_a_run_with_unknown_neurons_has_the_hint_in_its_json_document(tmp_path: Path) -> None:
    network = mlp(tmp_path / "deep.onnx", [6, 40, 40, 40, 2], seed=2)
    result = run_cli(str(network), "--out", str(tmp_path / "o"), "--time-limit", "0.05", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["totals"]["unknown"] > 0
    assert document["hint"].startswith(f"{document['totals']['unknown']} neurons unknown")


def test_a_box_domain_from_the_command_line_is_used(tiny: Path, tmp_path: Path) -> None:
    result = run_cli(
        str(tiny),
        "--lower",
        "-1,0,0",
        "--lower",
        "0",
        "--upper=0.5",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"certificate written: {tmp_path / 'out' / 'certificate.json'}"
    domain = json.loads((tmp_path / "out" / "certificate.json").read_text())["domain"]
    assert domain["boxes"] == [{"lower": ["-1", "0", "0", "0"], "upper": ["0.5"] * 4}]


NO_RELU_NOTE = "nothing to compress: the network has no ReLU"


def test_a_network_without_relu_is_run_with_a_note_on_stderr(tmp_path: Path) -> None:
    network = mlp(tmp_path / "affine.onnx", [4, 2])
    result = run_cli(str(network), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [NO_RELU_NOTE]
    assert (tmp_path / "o" / "certificate.json").is_file()


def test_a_network_without_relu_has_a_note_in_the_json_document(tmp_path: Path) -> None:
    network = mlp(tmp_path / "affine.onnx", [4, 2])
    result = run_cli(str(network), "--out", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["note"] == NO_RELU_NOTE
    assert result.stderr.strip().splitlines() == [NO_RELU_NOTE]


def test_a_network_with_relu_has_no_note(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = main_job
    assert NO_RELU_NOTE not in result.stderr


def test_max_subboxes_one_keeps_every_domain_box_whole(tiny: Path, tmp_path: Path) -> None:
    result = run_cli(str(tiny), "--max-subboxes", "1", "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    certificate = json.loads((tmp_path / "out" / "certificate.json").read_text())
    assert certificate["config"]["max_subboxes"] == 1
    assert certificate["proofs"]["trees"] == [0]
    assert certificate["proofs"]["sub_boxes"] == 1


def test_max_subboxes_below_one_is_refused_naming_the_option(tiny: Path, tmp_path: Path) -> None:
    result = run_cli(str(tiny), "--max-subboxes", "0", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "--max-subboxes must be 1 or more, got 0" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# check


def test_check_accepts_the_certificate_of_the_main_job(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = main_job
    result = run_cli("check", str(out / "certificate.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "certificate valid"
    assert "witnesses" in result.stdout and "proof boxes" in result.stdout


def test_check_json_reports_validity_and_counts(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = main_job
    result = run_cli("check", str(out / "certificate.json"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["first_failure"] is None
    assert report["counts"]["witnesses"] > 0
    assert report["certificate"] == str(out / "certificate.json")
    assert report["solver"] == "z3" and report["tool_version"] == __version__


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "--debug"])
def test_check_with_a_solver_that_is_not_installed_exits_2_with_an_install_hint(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug: bool,
) -> None:
    _, out = main_job
    monkeypatch.setitem(sys.modules, "cvc5", None)  # `import cvc5` now raises ImportError
    args = ["check", str(out / "certificate.json"), "--solver", "cvc5"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--debug"] if debug else args)
    captured = capsys.readouterr()
    assert exited.value.code == 2, captured.out + captured.err
    assert "INVALID" not in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cvc5" in last
    assert "pip install 'verify-compress[cvc5]'" in last
    assert ("Traceback" in captured.err) == debug


def tampered(out: Path, name: str, certificate: dict[str, Any]) -> Path:
    """A tampered copy beside the original (its ONNX paths are relative to that directory)."""
    path = out / f"tampered_{name}.json"
    path.write_text(json.dumps(certificate))
    return path


def invalid_verdict(path: Path) -> str:
    result = run_cli("check", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = next(line for line in result.stdout.splitlines() if "INVALID" in line)
    assert verdict.startswith("certificate INVALID: ")
    return verdict


def test_check_rejects_a_witness_moved_to_a_point_showing_the_other_phase(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = main_job
    original = json.loads((out / "certificate.json").read_text())
    neuron = next(
        n
        for n in original["neurons"]
        if n["status"] == "unstable" and n["evidence"]["active"] != n["evidence"]["inactive"]
    )
    certificate = copy.deepcopy(original)
    active, inactive = neuron["evidence"]["active"], neuron["evidence"]["inactive"]
    # still inside the domain, but now the 'active' witness shows the neuron inactive
    certificate["witnesses"][active]["point"] = original["witnesses"][inactive]["point"]
    verdict = invalid_verdict(tampered(out, "witness", certificate))
    assert "witness" in verdict


def test_check_rejects_a_witness_coordinate_outside_the_domain(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = main_job
    certificate = json.loads((out / "certificate.json").read_text())
    certificate["witnesses"][0]["point"][0] = "2"
    verdict = invalid_verdict(tampered(out, "witness_outside", certificate))
    assert "witness 0" in verdict


@pytest.mark.parametrize(
    ("before", "after"),
    [("unstable", "stably_inactive"), ("stably_active", "stably_inactive")],
)
def test_check_rejects_a_flipped_neuron_status_naming_the_neuron(
    main_job: tuple[subprocess.CompletedProcess[str], Path], before: str, after: str
) -> None:
    _, out = main_job
    certificate = json.loads((out / "certificate.json").read_text())
    neuron = next(n for n in certificate["neurons"] if n["status"] == before)
    neuron["status"] = after
    verdict = invalid_verdict(tampered(out, f"{before}_to_{after}", certificate))
    assert f"neuron ({neuron['layer']},{neuron['index']})" in verdict


def test_check_rejects_a_changed_network_hash(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = main_job
    certificate = json.loads((out / "certificate.json").read_text())
    digest = certificate["network"]["sha256"]
    certificate["network"]["sha256"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    verdict = invalid_verdict(tampered(out, "hash", certificate))
    assert "network" in verdict and "sha256" in verdict


def test_check_of_a_missing_or_malformed_certificate_is_a_bad_input(tmp_path: Path) -> None:
    assert "no such certificate" in one_error_line(run_cli("check", str(tmp_path / "no.json")))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert "garbage.json" in one_error_line(run_cli("check", str(garbage)))


# ---------------------------------------------------------------------------------------------
# Help


@pytest.mark.parametrize(
    "args",
    [("NET.onnx", "--help"), ("check", "--help"), ("inspect", "--help"), ("--help",)],
    ids=["main job", "check", "inspect", "app"],
)
def test_help_shows_boolean_options_as_plain_flags_not_as_taking_a_value(
    args: tuple[str, ...],
) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout, result.stdout
    if args[0] != "--help":
        assert "--debug" in result.stdout


def test_help_reflows_docstring_paragraphs_and_keeps_placeholders() -> None:
    wide = subprocess.run(
        [sys.executable, "-m", "verify_compress.cli.main", "check", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert wide.returncode == 0, wide.stderr
    # One source paragraph spans several docstring lines; in the help it is one line.
    assert (
        "(exact evaluation), the certified bounds of every proof box (on --workers processes, "
        "or on Dask with --backend dask) and every case split"
    ) in wide.stdout
    main_job = run_cli("NET.onnx", "--help")
    assert "verify-compress-out/<network name>/" in " ".join(main_job.stdout.split())


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem, no files


def test_a_missing_network_file_is_named(tmp_path: Path) -> None:
    line = one_error_line(run_cli(str(tmp_path / "absent.onnx"), "--out", str(tmp_path / "o")))
    assert "absent.onnx" in line and "not found" in line
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_not_onnx_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for")
    line = one_error_line(run_cli(str(text), "--out", str(tmp_path / "o")))
    assert "notes.onnx" in line and "not an ONNX model" in line
    assert not (tmp_path / "o").exists()


def test_an_unsupported_op_is_named(tmp_path: Path) -> None:
    model = mlp(tmp_path / "sigmoid.onnx", [3, 4, 2], hidden_op="Sigmoid")
    line = one_error_line(run_cli(str(model), "--out", str(tmp_path / "o")))
    assert "Sigmoid" in line
    assert not (tmp_path / "o").exists()


def test_an_out_folder_with_user_files_is_refused_without_force(
    tiny: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("mine")
    line = one_error_line(run_cli(str(tiny), "--out", str(folder)))
    assert str(folder) in line and "--force" in line
    assert [p.name for p in tmp_path.iterdir()] == ["thesis"]
    assert (folder / "chapter1.tex").read_text() == "mine"


def test_an_out_path_that_is_a_file_is_refused_without_force(tiny: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    line = one_error_line(run_cli(str(tiny), "--out", str(notes)))
    assert str(notes) in line and "not a directory" in line
    assert notes.read_text() == "mine"


def test_an_out_that_cannot_be_written_is_refused_before_the_run_naming_it(
    tiny: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "out"
    line = one_error_line(run_cli(str(tiny), "--out", str(out), "--force"))
    assert line.startswith(f"error: {out}: ")  # the user's path, not a temporary one


def test_force_replaces_an_out_folder_with_user_files_and_a_previous_output_needs_no_force(
    tiny: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("mine")
    forced = run_cli(str(tiny), "--out", str(folder), "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in folder.iterdir()) == [*sorted(OUTPUT_FILES), "smt"]
    again = run_cli(str(tiny), "--out", str(folder), "--quiet")
    assert again.returncode == 0, again.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["thesis"], "an old or staging folder left"


def test_an_inverted_domain_names_the_input(tiny: Path, tmp_path: Path) -> None:
    line = one_error_line(
        run_cli(str(tiny), "--lower", "1", "--upper", "0", "--out", str(tmp_path / "o"))
    )
    assert "input 0" in line and "lower bound 1.0 > upper bound 0.0" in line
    assert not (tmp_path / "o").exists()


def test_a_vnnlib_syntax_error_names_the_file_and_line(tiny: Path, tmp_path: Path) -> None:
    vnnlib = tmp_path / "broken.vnnlib"
    vnnlib.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1.0)\n")
    line = one_error_line(run_cli(str(tiny), "--vnnlib", str(vnnlib), "--out", str(tmp_path / "o")))
    assert "broken.vnnlib" in line
    assert not (tmp_path / "o").exists()


def test_two_domain_options_at_once_are_refused(tiny: Path, tmp_path: Path) -> None:
    bounds = tmp_path / "b.json"
    bounds.write_text(json.dumps({"lower": [0] * 4, "upper": [1] * 4}))
    line = one_error_line(
        run_cli(
            str(tiny),
            "--lower",
            "0",
            "--upper",
            "1",
            "--bounds",
            str(bounds),
            "--out",
            str(tmp_path / "o"),
        )
    )
    assert "--lower/--upper" in line and "--bounds" in line


def test_debug_adds_the_traceback_of_a_bad_input_and_keeps_exit_code_2(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "absent.onnx"), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "absent.onnx" in last


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_files(tmp_path: Path) -> None:
    network = mlp(tmp_path / "net.onnx", [6, 12, 12, 2], seed=2)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "verify_compress.cli.main", str(network), "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a shell may start background jobs with SIGINT ignored; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("domain:"):  # printed just before the pipeline starts
            break
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, stderr
    # The last line is ours, and no KeyboardInterrupt traceback (not even the "Exception
    # ignored" note Python prints when an interrupt lands inside Z3's Context finalizer).
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted after"), stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left"
    if last.endswith("no files were written"):
        assert not out.exists()
    else:  # the interrupt was swallowed by a finalizer and the run completed first
        assert last.endswith("the run had finished: its output is complete")
        assert (out / "certificate.json").is_file()


# ---------------------------------------------------------------------------------------------
# The README's command on the first bundled model


def readme_commands() -> list[list[str]]:
    """The `verify-compress` commands of the README's first code block ("Install and use"),
    split into arguments, without the program name and the trailing comments."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Install and use", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [
        shlex.split(line.split("#", 1)[0])[1:]
        for line in block.splitlines()
        if line.startswith("verify-compress ")
    ]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(not README_MODEL.is_file(), reason=f"{README_MODEL} is not bundled")
def test_the_readme_commands_leave_the_bundled_proofs_as_committed(tmp_path: Path) -> None:
    """README: `verify-compress models/digits_l1.onnx`, then `check` on what it wrote, run
    verbatim in a copy of the repository's models/ and proofs/: the main job writes to
    verify-compress-out/ (ignored by git), and the bundled proofs/ stay byte for byte."""
    commands = readme_commands()
    assert [args[0] for args in commands] == ["models/digits_l1.onnx", "check"], commands
    copy = tmp_path / "clone"
    for folder in ("models", "proofs"):
        shutil.copytree(REPO / folder, copy / folder)
    bundled = tree_bytes(copy / "proofs")
    assert bundled, "no bundled proofs to compare"

    result = run_cli(*commands[0], cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "domain: [0, 1]^64 (default)" in result.stdout
    assert "equivalence proved" in result.stdout
    out = copy / DEFAULT_OUT_ROOT / README_MODEL.stem
    assert (out / "certificate.json").is_file()
    assert "re-check: verify-compress check verify-compress-out/digits_l1/certificate.json" in (
        result.stdout
    )
    checked = run_cli(*commands[1], cwd=copy)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().splitlines()[-1] == "certificate valid"

    assert tree_bytes(copy / "proofs") == bundled
    assert sorted(p.name for p in copy.iterdir()) == ["models", "proofs", "verify-compress-out"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ignores_the_default_output_folder() -> None:
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True, check=False
    )
    if inside.returncode != 0:
        pytest.skip(f"{REPO} is not a git work tree")
    path = DEFAULT_OUT_ROOT / README_MODEL.stem / "certificate.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"git does not ignore {path}"


def test_the_default_output_folder_is_named_in_the_help() -> None:
    result = run_cli("NET.onnx", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Default: verify-compress-out/<network name>/ in the current directory" in text


# ---------------------------------------------------------------------------------------------
# Progress (in process) and the hint after a run with unknown neurons


def drawn(display: Progress) -> str:
    """What `display` shows on a terminal now, as plain text."""
    console = Console(file=io.StringIO(), width=140, record=True, force_terminal=True)
    console.print(display.get_renderable())
    return console.export_text()


def test_the_progress_display_shows_the_time_limit_and_the_time_left() -> None:
    now = [1000.0]
    display = BudgetProgress(*progress_columns(), budget=(1000.0, 300.0), clock=lambda: now[0])
    now[0] = 1012.4
    assert drawn(display).splitlines()[0] == (
        "time limit 0:05:00: 0:00:12 used, at most 0:04:48 left"
    )
    now[0] = 1301.0
    assert drawn(display).splitlines()[0] == "time limit 0:05:00 reached: writing the output"
    assert budget_text(0.0, 3600.0, 0.5) == "time limit 1:00:00: 0:00:00 used, at most 1:00:00 left"


def test_progress_counts_carry_units_and_a_finished_stage_keeps_its_count() -> None:
    display = BudgetProgress(*progress_columns())
    stages = StageProgress(display, hidden=(NO_DATA_STAGE,))
    stages("bounds", 1, 1)
    stages("data", 95, 95)  # no --data given: not drawn
    stages("random", 70, 110)
    stages("sub-boxes", 93, 4096)
    stages("search box 0 layer 1", 2, 13)
    lines = [" ".join(line.split()) for line in drawn(display).splitlines()]
    assert not any("data" in line for line in lines), lines
    assert any(
        line.startswith("✓ certified bounds") and "1/1 domain boxes" in line for line in lines
    )
    # finished, but as reported: not filled up to the total
    assert any(
        "witnesses at random points" in line and "70/110 neurons shown unstable" in line
        for line in lines
    ), lines
    # the sub-box total is a cap, not a goal
    assert any("93 sub-boxes (limit 4096)" in line for line in lines), lines
    assert any(
        "CP-SAT search box 0 layer 1" in line and "2/13 claims resolved" in line for line in lines
    ), lines


def test_an_unknown_stage_is_drawn_under_its_own_name() -> None:
    display = BudgetProgress(*progress_columns())
    StageProgress(display)("lemmas", 668, 0)
    assert "lemmas" in drawn(display) and "668" in drawn(display)


def test_a_run_with_unknown_neurons_says_in_one_line_what_may_decide_them(
    tmp_path: Path,
) -> None:
    network = mlp(tmp_path / "deep.onnx", [6, 40, 40, 40, 2], seed=2)
    result = run_cli(str(network), "--out", str(tmp_path / "o"), "--time-limit", "0.05")
    assert result.returncode == 0, result.stderr
    certificate = json.loads((tmp_path / "o" / "certificate.json").read_text())
    unknown = certificate["summary"]["totals"]["unknown"]
    assert unknown > 0, "the time limit decided every neuron: make the network harder"
    hints = [line for line in result.stdout.splitlines() if "may decide them" in line]
    assert hints == [
        f"{unknown} neurons unknown (kept as they are): a longer --time-limit (this run: "
        "0.05 s) or --data with real inputs (say, the training set) may decide them"
    ]


def test_the_unknown_hint_counts_and_names_what_may_help() -> None:
    def certificate(unknown: int) -> dict[str, Any]:
        return {"summary": {"totals": {"unknown": unknown}}}

    assert unknown_hint(certificate(0), 300.0, False) is None
    one = unknown_hint(certificate(1), 300.0, True)
    assert one is not None and one.startswith("1 neuron unknown")
    assert "--time-limit (this run: 300 s)" in one and "more --data rows" in one


def test_a_run_without_unknown_neurons_gives_no_hint(
    main_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = main_job
    certificate = json.loads((out / "certificate.json").read_text())
    assert certificate["summary"]["totals"]["unknown"] == 0
    assert "may decide them" not in result.stdout


# ---------------------------------------------------------------------------------------------
# Option helpers (in process)


def test_bound_options_accept_repeats_and_commas() -> None:
    domain, _ = build_domain(["0,0.5", "-1", " 2 "], ["3"], None, None, 4)
    assert domain.boxes[0].lower.tolist() == [0.0, 0.5, -1.0, 2.0]
    with pytest.raises(DomainError, match="--upper: 'x' is not a number"):
        build_domain(["0"], ["1,x"], None, None, 2)


def test_decimal_bound_options_are_rounded_outward_so_the_box_contains_the_typed_one() -> None:
    domain, description = build_domain(["0.1"], ["0.3"], None, None, 2)
    box = domain.boxes[0]
    assert all(Fraction(value) <= Fraction("0.1") for value in box.lower.tolist())
    assert all(Fraction(value) >= Fraction("0.3") for value in box.upper.tolist())
    assert description == "[0.1, 0.3]^2"


def test_without_domain_options_the_domain_is_the_unit_box_and_says_so() -> None:
    domain, description = build_domain(None, None, None, None, 64)
    assert description == "[0, 1]^64 (default)"
    assert domain.boxes[0].lower.tolist() == [0.0] * 64
    assert domain.boxes[0].upper.tolist() == [1.0] * 64


def test_one_bound_alone_is_refused_naming_the_missing_one() -> None:
    with pytest.raises(DomainError, match="--upper is missing"):
        build_domain(["0"], None, None, None, 4)


def test_a_domain_description_summarises_per_input_bounds_and_boxes() -> None:
    domain, description = build_domain(["0,0.25"], ["1,2"], None, None, 2)
    assert description == "box over 2 inputs, lower in [0, 0.25], upper in [1, 2]"
    assert describe_domain(domain, "from x.vnnlib").endswith(" from x.vnnlib")


def test_a_ctrl_c_landing_in_a_finalizer_is_raised_at_the_next_progress_report() -> None:
    frames: list[Any] = []

    class Finalized:
        def __del__(self) -> None:
            frames.append(sys._getframe())

    Finalized()
    interrupts = Interrupts()
    interrupts.handle(signal.SIGINT, frames[0])  # Python would only "ignore" a raise here
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_requested()
    with pytest.raises(KeyboardInterrupt):
        Interrupts().handle(signal.SIGINT, sys._getframe())


def test_check_smt_cvc5_reruns_the_shipped_obligations_with_cvc5() -> None:
    pytest.importorskip("cvc5")
    certificate = REPO / "proofs" / "digits_l1" / "certificate.json"
    result = run_cli("check", str(certificate), "--smt", "cvc5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "certificate valid"


def test_without_smt_confirmation_no_stability_obligation_is_written_and_the_summary_says_so(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = run_cli(str(REPO / "models" / "digits_l1.onnx"), "--out", str(out), "--no-confirm-smt")
    assert result.returncode == 0, result.stderr
    certificate = json.loads((out / "certificate.json").read_text())
    totals = certificate["summary"]["totals"]
    assert totals["stably_active"] + totals["stably_inactive"] > 0
    assert totals["smt_confirmed"] == 0
    assert certificate["config"]["smt_tier"] is False
    assert certificate["proofs"]["smt_obligations"] == []
    assert not list((out / "smt").glob("stability-*.smt2"))
    assert "Z3 confirmation of the stable neurons skipped (--no-confirm-smt)" in result.stdout
