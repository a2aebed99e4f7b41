"""The whole method on the public benchmark networks (skipped when ../shared is absent): the
kernel certifies what float CROWN decides, and the main job decides every neuron of the small
boxes with a certificate `check` accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verify_compress.bounds import symbolic_bounds
from verify_compress.check import check_certificate
from verify_compress.config import Config
from verify_compress.domain import parse_vnnlib
from verify_compress.kernel.bounds import ExactNetwork, box_bounds
from verify_compress.onnx_import import load_network
from verify_compress.pipeline import run

CASES = [
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_3.vnnlib"),
    ("mnistfc/mnist-net_256x2.onnx", "mnistfc/prop_0_0.03.vnnlib"),
]


def decided(lower: list[np.ndarray], upper: list[np.ndarray]) -> set[tuple[int, int]]:
    return {
        (k, i)
        for k, (lo, hi) in enumerate(zip(lower, upper, strict=True))
        for i in np.flatnonzero((lo >= 0) | (hi <= 0))
    }


@pytest.mark.parametrize(("network", "vnnlib"), CASES)
def test_the_kernel_certifies_every_neuron_float_crown_decides(
    benchmarks: Path, network: str, vnnlib: str
) -> None:
    net = load_network(benchmarks / network)
    box = parse_vnnlib(benchmarks / vnnlib, net.input_size).boxes[0]
    certified = box_bounds(ExactNetwork(net), box)
    layers = len(certified.lower)
    floating = symbolic_bounds(net, box)
    assert decided(floating.lower[:layers], floating.upper[:layers]) <= decided(
        list(certified.lower), list(certified.upper)
    )


@pytest.mark.parametrize(("network", "vnnlib"), CASES)
def test_the_main_job_decides_every_neuron_of_a_small_box_and_check_accepts_it(
    benchmarks: Path, network: str, vnnlib: str, tmp_path: Path
) -> None:
    domain = parse_vnnlib(benchmarks / vnnlib, load_network(benchmarks / network).input_size)
    # The SMT tier would use all the time the analysis leaves (bench/end_to_end.py runs it).
    config = Config(time_limit=60, smt_tier=False)
    result = run(benchmarks / network, domain, tmp_path / "out", config)
    totals = result.summary["totals"]
    assert totals["unknown"] == 0
    assert totals["stably_active"] + totals["stably_inactive"] > 0
    report = check_certificate(
        result.out_dir / "certificate.json", workers=2, network=benchmarks / network
    )
    assert report.valid, report.first_failure
