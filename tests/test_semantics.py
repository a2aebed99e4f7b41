"""A float64-rounded fold (BatchNormalization's square root) is said in words everywhere a
result is shown, refused under --strict-semantics, and never accepted in a compressed file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from verify_compress.check import check_certificate
from verify_compress.config import Config
from verify_compress.domain import Domain
from verify_compress.errors import ModelError
from verify_compress.pipeline import run

from onnx_builders import GraphBuilder

ROOT = Path(__file__).resolve().parents[1]


def _batch_normalized(path: Path) -> Path:
    """2 -> BatchNormalization -> 3 (ReLU) -> 1: the BN's factor 1/sqrt(1 + 2^-52) rounds to 1."""
    graph = GraphBuilder(["N", 2])
    h = graph.node(
        "BatchNormalization",
        [graph.input_name, *map(graph.constant, ([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]))],
        epsilon=2.0**-52,
    )
    h = graph.node(
        "Gemm",
        [
            h,
            graph.constant([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.25]]),
            graph.constant([0.1, -2.0, 0.3]),
        ],
        transB=1,
    )
    h = graph.node("Relu", [h])
    h = graph.node("Gemm", [h, graph.constant([[1.0, 2.0, -1.0]]), graph.constant([0.0])], transB=1)
    onnx.save(graph.model(h), path)
    return path


def test_strict_semantics_refuses_a_float64_rounded_fold(tmp_path: Path) -> None:
    network = _batch_normalized(tmp_path / "bn.onnx")
    domain = Domain.box(-np.ones(2), np.ones(2))
    with pytest.raises(ModelError, match="BatchNormalization"):
        run(network, domain, tmp_path / "out", Config(time_limit=10, strict_semantics=True))
    assert not (tmp_path / "out").exists()


def test_without_strict_semantics_the_rounding_is_said_in_the_certificate_json_and_report(
    tmp_path: Path,
) -> None:
    network = _batch_normalized(tmp_path / "bn.onnx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verify_compress.cli.main",
            str(network),
            "--out",
            str(tmp_path / "out"),
            "--lower",
            "-1",
            "--upper",
            "1",
            "--json",
            "--time-limit",
            "20",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    note = json.loads(result.stdout)["semantics_note"]
    assert "BatchNormalization" in note and "rounded network" in note
    certificate = json.loads((tmp_path / "out" / "certificate.json").read_text())
    assert certificate["network"]["semantics_note"] == note
    assert "Semantics:" in (tmp_path / "out" / "report.html").read_text()
    assert check_certificate(tmp_path / "out" / "certificate.json", workers=1).valid
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "verify_compress.cli.main",
            str(network),
            "--out",
            str(tmp_path / "strict"),
            "--strict-semantics",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert refused.returncode == 2 and "BatchNormalization" in refused.stderr
