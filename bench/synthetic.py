"""Seeded synthetic networks of shapes the public benchmarks lack, for `bench/end_to_end.py`.

Not a test. The product is used on networks that are not in ../shared: these cases check that
a run keeps to its time limit and decides what it can on a wide MNIST-sized net, a small
convolutional net and a deep narrow net. The weights are random (He-scaled), so the figures
say nothing about trained networks; they are regenerated identically from the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _write_vnnlib(path: Path, lower: np.ndarray, upper: np.ndarray, outputs: int) -> None:
    lines = [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(outputs)]
    for i, (low, high) in enumerate(zip(lower.tolist(), upper.tolist(), strict=True)):
        lines += [f"(assert (>= X_{i} {low!r}))", f"(assert (<= X_{i} {high!r}))"]
    lines.append("(assert (>= Y_0 Y_1))")
    path.write_text("\n".join(lines) + "\n")


def _dense_model(sizes: list[int], rng: np.random.Generator, name: str) -> onnx.ModelProto:
    nodes, initializers, previous = [], [], "x"
    for k in range(len(sizes) - 1):
        weights = rng.standard_normal((sizes[k + 1], sizes[k])) * np.sqrt(2 / sizes[k])
        bias = rng.standard_normal(sizes[k + 1]) * 0.05
        initializers += [
            numpy_helper.from_array(weights.astype(np.float32), f"W{k}"),
            numpy_helper.from_array(bias.astype(np.float32), f"b{k}"),
        ]
        nodes.append(helper.make_node("Gemm", [previous, f"W{k}", f"b{k}"], [f"z{k}"], transB=1))
        previous = f"z{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"h{k}"]))
            previous = f"h{k}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, sizes[-1]])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _conv_model(rng: np.random.Generator) -> onnx.ModelProto:
    """1x28x28 -> Conv 4x3x3 stride 2 -> ReLU -> 32 -> ReLU -> 10."""
    arrays = {
        "W1": rng.standard_normal((4, 1, 3, 3)) * 0.4,
        "b1": rng.standard_normal(4) * 0.05,
        "W2": rng.standard_normal((4 * 13 * 13, 32)) * np.sqrt(2 / 676),
        "b2": rng.standard_normal(32) * 0.05,
        "W3": rng.standard_normal((32, 10)) * 0.25,
        "b3": np.zeros(10),
    }
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f1"]),
        helper.make_node("MatMul", ["f1", "W2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["z2"]),
        helper.make_node("Relu", ["z2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "W3"], ["m3"]),
        helper.make_node("Add", ["m3", "b3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _around(centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(centre - radius, 0.0), np.minimum(centre + radius, 1.0)


def write_cases(directory: Path, seed: int = 0) -> list[tuple[str, Path, Path]]:
    """Write the networks and their VNN-LIB domains; returns (case name, onnx, vnnlib)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []

    wide = directory / "wide_784-256x4-10.onnx"
    onnx.save(_dense_model([784, 256, 256, 256, 256, 10], rng, "wide"), wide)
    _write_vnnlib(directory / "wide.vnnlib", *_around(rng.uniform(0, 1, 784), 0.01), 10)
    cases.append(("synthetic wide 784-256x4-10 eps 0.01", wide, directory / "wide.vnnlib"))

    conv = directory / "conv_1x28x28-4c-32-10.onnx"
    onnx.save(_conv_model(rng), conv)
    _write_vnnlib(directory / "conv.vnnlib", *_around(rng.uniform(0, 1, 784), 0.02), 10)
    cases.append(("synthetic conv 1x28x28-4c-32-10 eps 0.02", conv, directory / "conv.vnnlib"))

    deep = directory / "deep_5-20x8-3.onnx"
    onnx.save(_dense_model([5] + [20] * 8 + [3], rng, "deep"), deep)
    _write_vnnlib(directory / "deep.vnnlib", -np.ones(5), np.ones(5), 3)
    cases.append(("synthetic deep 5-20x8-3 [-1,1]^5", deep, directory / "deep.vnnlib"))
    return cases
