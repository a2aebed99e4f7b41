"""`verify-compress inspect`, the command routing and the error policy, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verify_compress.cli.main import DEFAULT_COMMAND, command_names, route

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verify_compress.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def gemm_relu_gemm(path: Path, hidden_op: str = "Relu") -> Path:
    """A 3-4-2 network: Gemm, `hidden_op`, Gemm; two first-layer weights are exactly zero."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 3)).astype(np.float32)
    w1[0, 0] = w1[2, 1] = 0.0
    w2 = rng.normal(size=(2, 4)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.ones(2, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="dense_1", transB=1),
        helper.make_node(hidden_op, ["h"], ["a"], name="activation_1"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="dense_2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_inspect_json_reports_each_layer_and_the_totals(tmp_path: Path) -> None:
    result = run_cli("inspect", str(gemm_relu_gemm(tmp_path / "tiny.onnx")), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["input_shape"] == [3]
    assert isinstance(summary["name"], str) and isinstance(summary["folded_ops"], list)
    assert summary["layers"] == [
        {"inputs": 3, "outputs": 4, "relu": True, "connections": 10, "parameters": 16},
        {"inputs": 4, "outputs": 2, "relu": False, "connections": 8, "parameters": 10},
    ]
    assert summary["totals"] == {
        "layers": 2,
        "relu_neurons": 4,
        "parameters": 26,
        "connections": 18,
    }


def test_inspect_prints_a_table_for_people(tmp_path: Path) -> None:
    result = run_cli("inspect", str(gemm_relu_gemm(tmp_path / "tiny.onnx")))
    assert result.returncode == 0, result.stderr
    for text in ("connections", "parameters", "4 neurons", "26", "18", "folded"):
        assert text in result.stdout
    assert result.stderr == ""


def test_a_missing_network_exits_2_with_one_line_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    result = run_cli("inspect", str(missing))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and str(missing) in lines[0]
    assert result.stdout == ""


def test_an_unsupported_op_exits_2_naming_the_node(tmp_path: Path) -> None:
    result = run_cli("inspect", str(gemm_relu_gemm(tmp_path / "sig.onnx", "Sigmoid")), "--json")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "activation_1" in line and "Sigmoid" in line
    assert "Traceback" not in result.stderr
    # --json was given: the same error as one JSON document on stdout
    assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": 2}


def test_debug_shows_the_traceback_of_an_error(tmp_path: Path) -> None:
    result = run_cli("inspect", str(tmp_path / "absent.onnx"), "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelError" in result.stderr


def test_help_lists_the_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "inspect" in result.stdout and "train" in result.stdout


def test_the_app_registers_inspect_and_train() -> None:
    assert {"inspect", "train"} <= command_names()


@pytest.mark.parametrize(
    ("args", "commands", "expected"),
    [
        (["net.onnx", "--lower", "0"], {"inspect", "run"}, ["run", "net.onnx", "--lower", "0"]),
        (["--lower", "0", "net.onnx"], {"inspect", "run"}, ["run", "--lower", "0", "net.onnx"]),
        (["inspect", "net.onnx"], {"inspect", "run"}, ["inspect", "net.onnx"]),
        (["check", "cert.json"], {"check", "run"}, ["check", "cert.json"]),
        (["--help"], {"inspect", "run"}, ["--help"]),
        ([], {"inspect", "run"}, []),
        (["net.onnx"], {"inspect"}, ["net.onnx"]),
    ],
)
def test_routing_puts_the_default_command_in_front_of_a_network(
    args: list[str], commands: set[str], expected: list[str]
) -> None:
    assert DEFAULT_COMMAND == "run"
    assert route(args, commands) == expected
