"""Shared test fixtures: the public benchmarks folder (skipped when absent) and small nets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from verify_compress.ir import AffineLayer, Network

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
ACAS_NETWORKS = sorted(BENCHMARKS.glob("acasxu/*.onnx"))
MNIST_NETWORK = BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx"


def require_benchmarks() -> Path:
    """The benchmarks folder, or skip the calling test with a clear reason."""
    if not BENCHMARKS.is_dir():
        pytest.skip(f"public benchmarks not found at {BENCHMARKS} (only present in CI/dev)")
    return BENCHMARKS


@pytest.fixture
def benchmarks() -> Path:
    return require_benchmarks()


def network(*layers: tuple[list[list[float]], list[float]]) -> Network:
    """A float64 network from (weights, bias) pairs: ReLU after every layer but the last."""
    return Network(
        tuple(
            AffineLayer(
                np.array(weights, dtype=np.float64),
                np.array(bias, dtype=np.float64),
                k < len(layers) - 1,
            )
            for k, (weights, bias) in enumerate(layers)
        )
    )


def random_network(
    rng: np.random.Generator,
    sizes: list[int],
    final_relu: bool = False,
    dtype: type = np.float32,
) -> Network:
    """A dense ReLU network with the given layer sizes (inputs first) and random weights."""
    layers = []
    for position, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = position == len(sizes) - 2
        weights = rng.normal(size=(n_out, n_in)).astype(dtype)
        bias = rng.normal(scale=0.5, size=n_out).astype(dtype)
        layers.append(AffineLayer(weights, bias, relu=final_relu or not last))
    return Network(tuple(layers))
