"""What a deployment gains: onnxruntime latency and throughput of the original and the compressed
ONNX file on the same inputs, and both files' sizes.

Stage: after the certificate and the compressed file are written (the batch mode measures every
job; `verifier.report` shows the result in its "Deployment" section). It proves nothing and is
not part of the certificate: the figures are timings on the machine that ran the job.

`measure_deployment(original, compressed, domain, rng)` samples one batch of domain points and,
for each file, times single-input runs (latency) and runs of the whole batch (throughput): the
median of `repeats` timed runs after a warm-up, the two files timed alternately so that a
change in the machine's load hits both. A file whose batch dimension is fixed (ACAS Xu and the
VNN-COMP MNIST nets declare batch 1) runs the batch as a loop of single inputs. Sessions use
one thread, so jobs running side by side do not compete for cores within one measurement.

onnxruntime is optional (part of the `test` extra): without it only the file sizes are given,
with a "skipped" note.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .domain import Domain

FloatArray = npt.NDArray[np.float64]
JsonDict = dict[str, Any]

BATCH = 256
"""Domain points in the batch both files run on."""
REPEATS = 15
"""Timed runs per figure (the median is reported)."""
WARMUP = 3
"""Untimed runs before timing (session initialisation, caches)."""
SKIPPED_NO_ONNXRUNTIME = "onnxruntime is not installed: latency and throughput not measured"


def file_sizes(original: Path, compressed: Path) -> JsonDict:
    """Both files' sizes in bytes, and compressed / original."""
    before, after = Path(original).stat().st_size, Path(compressed).stat().st_size
    return {
        "original_bytes": before,
        "compressed_bytes": after,
        "size_ratio": round(after / before, 4) if before else None,
    }


def measure_deployment(
    original: Path,
    compressed: Path,
    domain: Domain,
    rng: np.random.Generator,
    batch: int = BATCH,
    repeats: int = REPEATS,
) -> JsonDict:
    """The deployment figures of both files as a JSON-ready dict (see the module docstring).

    Keys: the `file_sizes` keys; with onnxruntime also `onnxruntime` (its version), `batch`,
    `repeats`, `threads`, `original` and `compressed` (each `latency_ms`: median time of one
    input, `throughput_per_s`: inputs per second over the batch), `latency_speedup` and
    `throughput_speedup` (original / compressed time); without it `skipped`.
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be positive, got {batch} and {repeats}")
    sizes = file_sizes(original, compressed)
    try:
        import onnxruntime  # optional: part of the `test` extra
    except ImportError:
        return {**sizes, "skipped": SKIPPED_NO_ONNXRUNTIME}
    points = domain.sample(batch, rng)
    runners = {
        "original": _runner(onnxruntime, original, points),
        "compressed": _runner(onnxruntime, compressed, points),
    }
    latency: dict[str, list[float]] = {name: [] for name in runners}
    whole: dict[str, list[float]] = {name: [] for name in runners}
    for single, full in runners.values():
        for _ in range(WARMUP):
            single()
            full()
    for _ in range(repeats):
        for name, (single, full) in runners.items():  # alternately, see the module docstring
            latency[name].append(_seconds(single))
            whole[name].append(_seconds(full))
    figures = {
        name: {
            "latency_ms": round(1000.0 * statistics.median(latency[name]), 6),
            "throughput_per_s": round(batch / statistics.median(whole[name]), 1),
        }
        for name in runners
    }
    return {
        **sizes,
        "onnxruntime": str(onnxruntime.__version__),
        "batch": batch,
        "repeats": repeats,
        "threads": 1,
        **figures,
        "latency_speedup": _ratio(
            statistics.median(latency["original"]), statistics.median(latency["compressed"])
        ),
        "throughput_speedup": _ratio(
            statistics.median(whole["original"]), statistics.median(whole["compressed"])
        ),
    }


def _ratio(before: float, after: float) -> float | None:
    return round(before / after, 3) if after > 0 else None


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _runner(
    onnxruntime: Any, path: Path, points: FloatArray
) -> tuple[Callable[[], object], Callable[[], object]]:
    """Two calls on an onnxruntime session of `path`: one input, and the whole batch."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    spec = session.get_inputs()[0]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    shape = list(spec.shape)
    name = str(spec.name)
    if shape and not isinstance(shape[0], int):  # a symbolic batch dimension
        rest = [int(d) for d in shape[1:]]
        one = points[:1].astype(dtype).reshape([1, *rest])
        feed = points.astype(dtype).reshape([len(points), *rest])
        return (
            lambda: session.run(None, {name: one}),
            lambda: session.run(None, {name: feed}),
        )
    fixed = [int(d) for d in shape]
    inputs = [point.astype(dtype).reshape(fixed) for point in points]

    def loop() -> None:
        for item in inputs:
            session.run(None, {name: item})

    return (lambda: session.run(None, {name: inputs[0]}), loop)
