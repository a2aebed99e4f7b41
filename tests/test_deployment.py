"""The deployment figures: both files' sizes, and onnxruntime latency and throughput of the
original and the compressed network on the same inputs; without onnxruntime, the sizes and a
note; the report shows them in a "Deployment" section only when given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from verify_compress.deployment import SKIPPED_NO_ONNXRUNTIME, measure_deployment
from verify_compress.domain import Domain
from verify_compress.report import render_report

from onnx_builders import GraphBuilder

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = REPO / "models" / "digits_l1.onnx"
COMPRESSED = REPO / "proofs" / "digits_l1" / "compressed.onnx"
CERTIFICATE = REPO / "proofs" / "digits_l1" / "certificate.json"
UNIT_BOX = Domain.box(np.zeros(64), np.ones(64))


def test_both_files_are_timed_on_the_same_inputs_and_their_sizes_are_the_files() -> None:
    figures = measure_deployment(
        ORIGINAL, COMPRESSED, UNIT_BOX, np.random.default_rng(0), batch=32, repeats=3
    )
    assert figures["original_bytes"] == ORIGINAL.stat().st_size
    assert figures["compressed_bytes"] == COMPRESSED.stat().st_size
    assert figures["size_ratio"] == pytest.approx(
        COMPRESSED.stat().st_size / ORIGINAL.stat().st_size, abs=1e-4
    )
    for role in ("original", "compressed"):
        assert figures[role]["latency_ms"] > 0
        assert figures[role]["throughput_per_s"] > 0
    assert figures["batch"] == 32 and figures["repeats"] == 3 and figures["threads"] == 1
    assert figures["latency_speedup"] > 0 and figures["throughput_speedup"] > 0
    json.dumps(figures)  # JSON-ready as written to deployment.json


def test_a_network_with_a_fixed_batch_of_one_runs_the_batch_one_input_at_a_time(
    tmp_path: Path,
) -> None:
    builder = GraphBuilder([1, 3])
    hidden = builder.node(
        "Relu",
        [
            builder.node(
                "Gemm", ["x", builder.constant(np.eye(3)), builder.constant(np.zeros(3))], transB=1
            )
        ],
    )
    path = tmp_path / "fixed.onnx"
    onnx.save(builder.model(hidden), path)
    figures = measure_deployment(
        path, path, Domain.box(np.zeros(3), np.ones(3)), np.random.default_rng(0), 8, 2
    )
    assert figures["original"]["throughput_per_s"] > 0
    assert figures["size_ratio"] == 1.0


def test_without_onnxruntime_only_the_sizes_are_given_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    figures = measure_deployment(ORIGINAL, COMPRESSED, UNIT_BOX, np.random.default_rng(0))
    assert figures["skipped"] == SKIPPED_NO_ONNXRUNTIME
    assert figures["compressed_bytes"] == COMPRESSED.stat().st_size
    assert "original" not in figures


def test_the_report_shows_the_deployment_section_only_when_given_the_figures() -> None:
    certificate = json.loads(CERTIFICATE.read_text())
    figures = measure_deployment(
        ORIGINAL, COMPRESSED, UNIT_BOX, np.random.default_rng(0), batch=16, repeats=2
    )
    shown = render_report(certificate, figures)
    assert "<h2>Deployment</h2>" in shown
    assert f"{figures['compressed_bytes']:,} bytes" in shown
    assert "latency (one input, median)" in shown and "throughput (batch of 16)" in shown
    assert "<h2>Deployment</h2>" not in render_report(certificate)


def test_the_report_says_why_latency_was_not_measured() -> None:
    certificate = json.loads(CERTIFICATE.read_text())
    shown = render_report(
        certificate, {"original_bytes": 10, "compressed_bytes": 5, "skipped": "no <runtime>"}
    )
    assert "not measured: no &lt;runtime&gt;" in shown
    assert "latency (one input" not in shown
