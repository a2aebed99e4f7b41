"""Tests for verify_compress.onnx_import: real benchmarks, fuzzed op forms, and every rejection."""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from verify_compress import onnx_import
from verify_compress.errors import ModelError, UnsupportedModelError
from verify_compress.ir import AffineLayer, Network
from verify_compress.onnx_import import (
    BATCH_NORMALIZATION_NOTE,
    SUPPORTED_OPS,
    load_network,
    network_from_model,
)

from conftest import ACAS_NETWORKS, MNIST_NETWORK, require_benchmarks
from onnx_builders import GraphBuilder, run_onnxruntime

BENCHMARK_NETWORKS = [*ACAS_NETWORKS, MNIST_NETWORK]


def _assert_matches(ours: np.ndarray, reference: np.ndarray, rtol: float = 1e-5) -> None:
    """Normwise agreement: every entry within rtol of the reference's largest magnitude."""
    scale = max(1.0, float(np.max(np.abs(reference))))
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * 0.1 * scale)


def _vnnlib_box(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The X bounds of a single-box VNN-LIB file (enough for the ACAS Xu properties)."""
    bounds: dict[str, dict[int, float]] = {"<=": {}, ">=": {}}
    pattern = r"\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)"
    for relation, index, value in re.findall(pattern, path.read_text()):
        bounds[relation][int(index)] = float(value)
    count = len(bounds["<="])
    lower = np.array([bounds[">="][i] for i in range(count)])
    upper = np.array([bounds["<="][i] for i in range(count)])
    return lower, upper


def _benchmark_inputs(path: Path, network: Network, count: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    if path.parent.name == "acasxu":
        lower, upper = _vnnlib_box(path.parent / "prop_1.vnnlib")
    else:
        lower, upper = np.zeros(network.input_size), np.ones(network.input_size)
    return rng.uniform(lower, upper, size=(count, network.input_size)).astype(np.float32)


# ---------------------------------------------------------------- public benchmarks


@pytest.mark.parametrize("path", BENCHMARK_NETWORKS, ids=lambda p: p.stem)
def test_every_benchmark_network_agrees_with_onnxruntime_on_1000_domain_points(path: Path) -> None:
    require_benchmarks()
    network = load_network(path)
    inputs = _benchmark_inputs(path, network, 1000)
    reference = run_onnxruntime(onnx.load(str(path)), inputs, (1, *network.input_shape))
    _assert_matches(network.forward(inputs).output, reference)


@pytest.mark.parametrize("path", BENCHMARK_NETWORKS, ids=lambda p: p.stem)
def test_exact_evaluation_of_benchmark_networks_equals_float64_up_to_rounding(path: Path) -> None:
    require_benchmarks()
    network = load_network(path)
    inputs = _benchmark_inputs(path, network, 20)
    floats = network.forward(inputs).output
    for point, expected in zip(inputs, floats, strict=True):
        exact = network.evaluate_exact(point).output.to_float()
        np.testing.assert_allclose(exact, expected, rtol=1e-12, atol=1e-12)


def test_acas_xu_folds_its_input_normalization_into_seven_affine_layers() -> None:
    require_benchmarks()
    for path in ACAS_NETWORKS:
        network = load_network(path)
        assert "Sub normalization" in network.folded_ops
        assert network.input_shape == (1, 1, 5)
        assert network.name == path.stem
        assert [layer.outputs for layer in network.layers] == [50] * 6 + [5]
        assert [layer.relu for layer in network.layers] == [True] * 6 + [False]


def test_acas_xu_keeps_float32_weights_that_are_its_initializers() -> None:
    require_benchmarks()
    for path in ACAS_NETWORKS:
        model = onnx.load(str(path))
        initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        assert not np.any(initializers["input_AvgImg"])  # so folding its Sub is exact
        weights = [v for name, v in initializers.items() if name.endswith("_MatMul_W")]
        biases = [v for name, v in initializers.items() if name.endswith("_Add_B")]
        network = load_network(path)
        assert len(network.layers) == len(weights) == len(biases) == 7
        for layer, w, b in zip(network.layers, weights, biases, strict=True):
            assert layer.weights.dtype == np.float32 and layer.bias.dtype == np.float32
            assert layer.weights.tobytes() == np.ascontiguousarray(w.T).tobytes()
            assert layer.bias.tobytes() == b.tobytes()


def test_plain_benchmark_layers_keep_the_onnx_initializers_bit_for_bit() -> None:
    require_benchmarks()
    model = onnx.load(str(MNIST_NETWORK))
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    network = load_network(MNIST_NETWORK)
    assert network.input_shape == (784, 1) and network.folded_ops == ()
    for index, layer in enumerate(network.layers):
        weights = initializers[f"layers.{2 * index}.weight"]
        assert layer.weights.dtype == np.float32
        assert layer.weights.tobytes() == weights.tobytes()
        assert layer.bias.tobytes() == initializers[f"layers.{2 * index}.bias"].tobytes()


# ---------------------------------------------------------------- fuzzed MLPs


LAYER_FORMS = ("gemm_plain", "gemm_scaled", "gemm_untransposed", "matmul_add", "bias_first",
               "matmul_sub")
PLAIN_FORMS = ("gemm_plain", "matmul_add", "bias_first")


@dataclasses.dataclass(frozen=True)
class MlpSpec:
    seed: int
    sizes: list[int]
    forms: list[str]
    normalization: str
    batch: int | str
    layout: str
    extra: str
    final_relu: bool
    dtype: type


@st.composite
def mlp_specs(draw: st.DrawFn) -> MlpSpec:
    hidden = draw(st.lists(st.integers(1, 8), max_size=3))
    sizes = [draw(st.integers(1, 6)), *hidden, draw(st.integers(1, 4))]
    return MlpSpec(
        seed=draw(st.integers(0, 2**32 - 1)),
        sizes=sizes,
        forms=draw(st.lists(st.sampled_from(LAYER_FORMS), min_size=len(sizes) - 1,
                            max_size=len(sizes) - 1)),
        normalization=draw(st.sampled_from(["none", "sub", "sub_div", "mul_add"])),
        batch=draw(st.sampled_from(["batch", 1, 0])),
        layout=draw(st.sampled_from(["flat", "acas", "reshape"])),
        extra=draw(st.sampled_from(["none", "dropout", "identity"])),
        final_relu=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
    )


def _dense(graph: GraphBuilder, h: str, weights: np.ndarray, bias: np.ndarray, form: str,
           rng: np.random.Generator) -> str:
    if form == "gemm_plain":
        return graph.node("Gemm", [h, graph.constant(weights), graph.constant(bias)], transB=1)
    if form == "gemm_scaled":
        alpha, beta = (float(v) for v in rng.choice([0.5, 2.0, 0.3, 1.0], size=2))
        scaled_bias = graph.constant(bias / np.asarray(beta, graph.dtype))
        return graph.node("Gemm", [h, graph.constant(weights / np.asarray(alpha, graph.dtype)),
                                   scaled_bias], transB=1, alpha=alpha, beta=beta)
    if form == "gemm_untransposed":
        return graph.node("Gemm", [h, graph.constant(weights.T), graph.constant(bias)], transB=0)
    product = graph.node("MatMul", [h, graph.constant(weights.T)])
    if form == "matmul_add":
        return graph.node("Add", [product, graph.constant(bias)])
    if form == "bias_first":
        return graph.node("Add", [graph.constant(bias), product])
    return graph.node("Sub", [product, graph.constant(-bias)])


def build_mlp(
    spec: MlpSpec,
) -> tuple[onnx.ModelProto, tuple[int, ...], list[tuple[np.ndarray, np.ndarray]]]:
    """The model of a spec, one input's full shape (batch 1), its (weights, bias) pairs."""
    rng = np.random.default_rng(spec.seed)
    n = spec.sizes[0]
    shapes = {"flat": [spec.batch, n], "acas": [spec.batch, 1, 1, n], "reshape": [spec.batch, n, 1]}
    graph = GraphBuilder(shapes[spec.layout], spec.dtype)
    h = graph.input_name
    stats_shape = [1] * (len(shapes[spec.layout]) - 1)
    stats_shape[-1 if spec.layout != "reshape" else -2] = n
    if spec.normalization in ("sub", "sub_div"):
        h = graph.node("Sub", [h, graph.constant(rng.normal(size=stats_shape))])
    if spec.normalization == "sub_div":
        h = graph.node("Div", [h, graph.constant(rng.uniform(0.5, 2.0, size=stats_shape))])
    if spec.normalization == "mul_add":
        h = graph.node("Mul", [graph.constant(rng.uniform(-2, 2, size=stats_shape)), h])
        h = graph.node("Add", [h, graph.constant(rng.normal(size=stats_shape))])
    if spec.layout == "acas":
        h = graph.node("Flatten", [h], axis=1)
    elif spec.layout == "reshape":
        target = [[0, -1], [-1, n], [1, n]][int(rng.integers(3))]
        h = graph.node("Reshape", [h, graph.int_constant(target)])
    layers = []
    for index, (n_in, n_out) in enumerate(zip(spec.sizes, spec.sizes[1:], strict=False)):
        weights = (rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)).astype(spec.dtype)
        bias = rng.normal(scale=0.3, size=n_out).astype(spec.dtype)
        layers.append((weights, bias))
        h = _dense(graph, h, weights, bias, spec.forms[index], rng)
        if index < len(spec.sizes) - 2 or spec.final_relu:
            h = graph.node("Relu", [h])
            if spec.extra == "dropout":
                h = graph.node("Dropout", [h, graph.constant(0.25)], outputs=2)
            elif spec.extra == "identity":
                h = graph.node("Identity", [h])
    full_shape = tuple(1 if d in (0, "batch") else int(d) for d in shapes[spec.layout])
    return graph.model(h), full_shape, layers


@settings(deadline=None, max_examples=150)
@given(spec=mlp_specs())
def test_random_mlps_in_many_op_forms_match_onnxruntime(spec: MlpSpec) -> None:
    model, full_shape, layers = build_mlp(spec)
    network = network_from_model(model)
    assert network.input_size == spec.sizes[0]
    expected_relu = [True] * (len(spec.sizes) - 2) + [spec.final_relu]
    assert [layer.relu for layer in network.layers] == expected_relu
    rng = np.random.default_rng(spec.seed)
    inputs = rng.uniform(-1, 1, size=(10, spec.sizes[0])).astype(spec.dtype)
    reference = run_onnxruntime(model, inputs, full_shape)
    _assert_matches(network.forward(inputs).output, reference)
    for index, (layer, (weights, bias)) in enumerate(zip(network.layers, layers, strict=True)):
        plain = spec.forms[index] in PLAIN_FORMS and (index > 0 or spec.normalization == "none")
        if plain:
            assert layer.weights.dtype == np.dtype(spec.dtype)
            assert layer.weights.tobytes() == weights.tobytes()
            assert layer.bias.tobytes() == bias.tobytes()


# ---------------------------------------------------------------- fuzzed conv nets


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    seed: int
    channels: int
    height: int
    width: int
    layout: str
    batch: int | str
    groups: int
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]
    auto_pad: str
    conv_bias: bool
    batch_norm: bool
    second_conv: bool
    flatten: str
    outputs: int


def _conv_output(size: int, kernel: int, stride: int, dilation: int, pads: int, auto: str) -> int:
    if auto.startswith("SAME"):
        return -(-size // stride)
    extent = (kernel - 1) * dilation + 1
    return (size + (0 if auto == "VALID" else pads) - extent) // stride + 1


@st.composite
def conv_specs(draw: st.DrawFn) -> ConvSpec:
    channels = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    dilations = (1, 1) if auto_pad.startswith("SAME") else (
        draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    spec = ConvSpec(
        seed=draw(st.integers(0, 2**32 - 1)),
        channels=channels, height=draw(st.integers(3, 6)), width=draw(st.integers(3, 6)),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        batch=draw(st.sampled_from(["batch", 1])),
        groups=groups, out_channels=groups * draw(st.integers(1, 2)),
        kernel=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        strides=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        dilations=dilations,
        pads=tuple(draw(st.integers(0, 1)) for _ in range(4)),  # type: ignore[arg-type]
        auto_pad=auto_pad,
        conv_bias=draw(st.booleans()), batch_norm=draw(st.booleans()),
        second_conv=draw(st.booleans()),
        flatten=draw(st.sampled_from(["Flatten", "Reshape", "TransposeFlatten"])),
        outputs=draw(st.integers(1, 3)),
    )
    for axis, size in enumerate((spec.height, spec.width)):
        padding = spec.pads[axis] + spec.pads[axis + 2]
        assume(_conv_output(size, spec.kernel[axis], spec.strides[axis], spec.dilations[axis],
                            padding, spec.auto_pad) >= 1)
    return spec


def build_conv_net(spec: ConvSpec) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """The model of a spec, and one input's full shape (batch 1)."""
    rng = np.random.default_rng(spec.seed)
    c, height, width = spec.channels, spec.height, spec.width
    shape = (1, c, height, width) if spec.layout == "NCHW" else (1, height, width, c)
    graph = GraphBuilder([spec.batch, *shape[1:]])
    h = graph.input_name
    if spec.layout == "NHWC":  # TF-exported style
        h = graph.node("Transpose", [h], perm=[0, 3, 1, 2])
    weights = rng.normal(size=(spec.out_channels, c // spec.groups, *spec.kernel))
    inputs = [h, graph.constant(weights)]
    if spec.conv_bias:
        inputs.append(graph.constant(rng.normal(size=spec.out_channels)))
    attributes = {"group": spec.groups, "strides": list(spec.strides),
                  "kernel_shape": list(spec.kernel)}
    if spec.auto_pad == "NOTSET":
        attributes |= {"pads": list(spec.pads), "dilations": list(spec.dilations)}
    else:
        attributes |= {"auto_pad": spec.auto_pad, "dilations": list(spec.dilations)}
    h = graph.node("Conv", inputs, **attributes)
    if spec.batch_norm:
        m = spec.out_channels
        parameters = [rng.uniform(0.5, 2, m), rng.normal(size=m), rng.normal(size=m),
                      rng.uniform(0.5, 2, m)]
        h = graph.node("BatchNormalization", [h, *map(graph.constant, parameters)], epsilon=1e-3)
    h = graph.node("Relu", [h])
    if spec.second_conv:
        h = graph.node("Conv", [h, graph.constant(rng.normal(size=(2, spec.out_channels, 1, 1)))])
        h = graph.node("Relu", [h])
    if spec.flatten == "Flatten":
        h = graph.node("Flatten", [h])
    elif spec.flatten == "Reshape":
        h = graph.node("Reshape", [h, graph.int_constant([0, -1])])
    else:
        h = graph.node("Flatten", [graph.node("Transpose", [h], perm=[0, 2, 3, 1])])
    probe = network_from_model(graph.model(h))
    dense = rng.normal(size=(spec.outputs, probe.layers[-1].outputs)) * 0.3
    bias = graph.constant(rng.normal(size=spec.outputs))
    h = graph.node("Gemm", [h, graph.constant(dense), bias], transB=1)
    return graph.model(h), shape


@settings(deadline=None, max_examples=100)
@given(spec=conv_specs())
def test_random_conv_nets_import_to_dense_layers_that_match_onnxruntime(spec: ConvSpec) -> None:
    model, shape = build_conv_net(spec)
    network = network_from_model(model)
    assert "Conv->dense" in network.folded_ops
    assert len(network.layers) == (3 if spec.second_conv else 2)
    assert network.input_shape == shape[1:]
    inputs = np.random.default_rng(spec.seed).uniform(-1, 1, size=(8, network.input_size))
    reference = run_onnxruntime(model, inputs.astype(np.float32), shape)
    _assert_matches(network.forward(inputs.astype(np.float32)).output, reference)


def test_a_conv_net_with_batch_normalization_is_its_float64_rounding_and_says_so() -> None:
    spec = ConvSpec(seed=3, channels=2, height=6, width=5, layout="NCHW", batch="N", groups=2,
                    out_channels=4, kernel=(3, 2), strides=(2, 1), dilations=(1, 2),
                    pads=(1, 0, 1, 1), auto_pad="NOTSET", conv_bias=True, batch_norm=True,
                    second_conv=False, flatten="Flatten", outputs=3)
    model, shape = build_conv_net(spec)
    network = network_from_model(model)
    assert network.folded_ops == ("Conv->dense", BATCH_NORMALIZATION_NOTE)
    assert BATCH_NORMALIZATION_NOTE == "BatchNormalization (float64-rounded: sqrt)"
    assert network.layers[0].weights.dtype == np.float64  # rounded fold: float64, no Fractions
    inputs = np.random.default_rng(0).uniform(-1, 1, size=(50, network.input_size))
    reference = run_onnxruntime(model, inputs.astype(np.float32), shape)
    _assert_matches(network.forward(inputs.astype(np.float32)).output, reference)


def test_a_conv_matrix_holds_the_kernel_weights_themselves() -> None:
    graph = GraphBuilder([1, 1, 3, 3])
    kernel = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2) / 3
    h = graph.node("Conv", [graph.input_name, graph.constant(kernel)], pads=[0, 0, 1, 1])
    network = network_from_model(graph.model(graph.node("Flatten", [h])))
    weights = network.layers[0].weights
    assert weights.shape == (9, 9) and weights.dtype == np.float32
    assert set(weights.reshape(-1).tolist()) == set(kernel.reshape(-1).tolist()) | {0.0}
    np.testing.assert_array_equal(weights[0], [kernel[0, 0, 0, 0], kernel[0, 0, 0, 1], 0,
                                               kernel[0, 0, 1, 0], kernel[0, 0, 1, 1], 0, 0, 0, 0])


# ---------------------------------------------------------------- exact semantics
#
# The reference semantics is exact rational arithmetic on the ONNX constants. `exact_onnx`
# below evaluates a graph that way, independently of the importer: numpy object arrays of
# Fractions through the ops the fuzzed graphs use.


def _fractions(array: np.ndarray) -> np.ndarray:
    """An ONNX tensor as exact values (floats as the rationals they are; integers as is)."""
    if array.dtype.kind in "iub":
        return array
    exact = np.empty(array.shape, dtype=object)
    exact.reshape(-1)[:] = [Fraction(float(v)) for v in array.reshape(-1)]
    return exact


def _exact_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                attributes: dict[str, Any]) -> np.ndarray:
    """ONNX Conv of one (1, C, H, W) input, exactly, straight from the operator's definition."""
    _, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = w.shape
    groups = attributes.get("group", 1)
    strides = attributes.get("strides", [1, 1])
    dilations = attributes.get("dilations", [1, 1])
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    extents = [(kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1]
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    elif auto_pad.startswith("SAME"):
        for axis, size in enumerate((height, width)):
            total = max(0, (-(-size // strides[axis]) - 1) * strides[axis] + extents[axis] - size)
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + 2] = (small, large) if auto_pad == "SAME_UPPER" else (
                large, small)
    padded = np.full((channels, height + pads[0] + pads[2], width + pads[1] + pads[3]),
                     Fraction(0), dtype=object)
    padded[:, pads[0]:pads[0] + height, pads[1]:pads[1] + width] = x[0]
    oh = (padded.shape[1] - extents[0]) // strides[0] + 1
    ow = (padded.shape[2] - extents[1]) // strides[1] + 1
    out = np.full((out_channels, oh, ow), Fraction(0), dtype=object)
    per_group = out_channels // groups
    for o in range(out_channels):
        first = (o // per_group) * group_channels
        for i in range(oh):
            for j in range(ow):
                out[o, i, j] = sum(
                    (w[o, c, a, e] * padded[first + c, i * strides[0] + a * dilations[0],
                                            j * strides[1] + e * dilations[1]]
                     for c in range(group_channels) for a in range(kh) for e in range(kw)),
                    Fraction(0))
        if b is not None:
            out[o] += b[o]
    return out[None]


def _exact_reshape(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    shape = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(target.reshape(-1))]
    return x.reshape(shape)


def _exact_gemm(inputs: list[np.ndarray], attributes: dict[str, Any]) -> np.ndarray:
    a = inputs[0].T if attributes.get("transA", 0) else inputs[0]
    b = inputs[1].T if attributes.get("transB", 0) else inputs[1]
    result = np.matmul(a, b) * Fraction(attributes.get("alpha", 1.0))
    if len(inputs) > 2:
        result = result + inputs[2] * Fraction(attributes.get("beta", 1.0))
    return result


_EXACT_OPS: dict[str, Any] = {
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Relu": lambda i, a: np.where(i[0] > 0, i[0], Fraction(0)),
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
    "Gemm": lambda i, a: _exact_gemm(i, a),
    "Conv": lambda i, a: _exact_conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "Flatten": lambda i, a: i[0].reshape(math.prod(i[0].shape[:a.get("axis", 1)]), -1),
    "Reshape": lambda i, a: _exact_reshape(i[0], i[1]),
    "Transpose": lambda i, a: np.transpose(i[0], a["perm"]),
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
}


def exact_onnx(model: onnx.ModelProto, point: np.ndarray, shape: tuple[int, ...]) -> list[Fraction]:
    """The graph's output on `point` (reshaped to the input's full shape) in exact arithmetic."""
    graph = model.graph
    values = {init.name: _fractions(onnx.numpy_helper.to_array(init)) for init in graph.initializer}
    values[graph.input[0].name] = _fractions(np.asarray(point).reshape(shape))
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values[node.output[0]] = _EXACT_OPS[node.op_type](
            [values[name] for name in node.input if name], attributes)
    return [Fraction(v) for v in values[graph.output[0].name].reshape(-1)]


def _imported_exactly(network: Network, point: np.ndarray) -> list[Fraction]:
    return network.evaluate_exact(np.asarray(point).reshape(-1)).output.to_fractions()


def _rounded_to_float64(network: Network) -> Network:
    """The same network with every weight rounded to float64 (what the importer used to store)."""
    return network.with_layers([AffineLayer(layer.float_weights, layer.float_bias, layer.relu)
                                for layer in network.layers])


def _normalized_gemm(dtype: type = np.float32) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """x -> (x - 0.1307) / 0.3081 -> Gemm(W, b): MNIST-style normalization inside the graph."""
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(3, 4)).astype(dtype)
    bias = rng.normal(size=3).astype(dtype)
    graph = GraphBuilder(["N", 4], dtype)
    h = graph.node("Sub", [graph.input_name, graph.constant(0.1307)])
    h = graph.node("Div", [h, graph.constant(0.3081)])
    h = graph.node("Gemm", [h, graph.constant(weights), graph.constant(bias)], transB=1)
    return graph.model(h), weights, bias


def test_a_div_normalization_folded_into_a_gemm_is_exact_and_not_just_float64_close() -> None:
    model, weights, bias = _normalized_gemm()
    network = network_from_model(model)
    layer = network.layers[0]
    assert layer.weights.dtype == object and layer.bias.dtype == object
    assert all(isinstance(v, Fraction) for v in layer.weights.reshape(-1))
    mean, std = Fraction(float(np.float32(0.1307))), Fraction(float(np.float32(0.3081)))
    w = [[Fraction(float(v)) for v in row] for row in weights]
    b = [Fraction(float(v)) for v in bias]
    points = np.random.default_rng(0).uniform(0, 1, size=(20, 4)).astype(np.float32)
    rounded = _rounded_to_float64(network)
    differs = 0
    for point in points:
        x = [(Fraction(float(v)) - mean) / std for v in point]
        by_hand = [sum((wi * xi for wi, xi in zip(row, x, strict=True)), bi)
                   for row, bi in zip(w, b, strict=True)]
        assert _imported_exactly(network, point) == by_hand
        differs += _imported_exactly(rounded, point) != by_hand
    assert differs == len(points)  # a float64 layer is only close: no float holds 1/0.3081
    reference = run_onnxruntime(model, points, (1, 4))
    _assert_matches(network.forward(points).output, reference)


def test_a_sub_div_mul_add_chain_of_per_input_constants_folds_exactly() -> None:
    rng = np.random.default_rng(4)
    graph = GraphBuilder(["N", 1, 1, 5])
    h = graph.node("Sub", [graph.input_name, graph.constant(rng.normal(size=(1, 1, 1, 5)))])
    h = graph.node("Div", [h, graph.constant([0.3, 0.25, 7.0, 1.1, 0.5])])
    h = graph.node("Mul", [graph.constant(rng.uniform(-2, 2, size=5)), h])
    h = graph.node("Add", [h, graph.constant(rng.normal(size=5))])
    h = graph.node("Flatten", [h])
    h = graph.node("MatMul", [h, graph.constant(rng.normal(size=(5, 3)))])
    h = graph.node("Relu", [graph.node("Add", [h, graph.constant(rng.normal(size=3))])])
    h = graph.node("Gemm", [h, graph.constant(rng.normal(size=(2, 3))),
                            graph.constant(rng.normal(size=2))], transB=1)
    model = graph.model(h)
    network = network_from_model(model)
    assert network.folded_ops == ("Sub normalization", "Div normalization",
                                  "Mul normalization", "Add normalization")
    assert network.layers[0].weights.dtype == object
    assert network.layers[1].weights.dtype == np.float32  # a plain Gemm: the initializer
    for point in rng.uniform(-3, 3, size=(10, 5)).astype(np.float32):
        assert _imported_exactly(network, point) == exact_onnx(model, point, (1, 1, 1, 5))


def test_offsets_that_no_float64_holds_are_kept_exact() -> None:
    graph = GraphBuilder(["N", 2], np.float64)
    h = graph.node("Sub", [graph.input_name, graph.constant([0.1, 0.7])])
    h = graph.node("Add", [h, graph.constant([3.0, 1e-20])])
    h = graph.node("MatMul", [h, graph.constant([[1.0], [1.0]])])
    model = graph.model(h)
    network = network_from_model(model)
    assert network.layers[0].weights.dtype == np.float64  # the initializer, untouched
    assert network.layers[0].bias.dtype == object
    exact_sum = Fraction(3) - Fraction(0.1) + Fraction(1e-20) - Fraction(0.7)
    assert network.layers[0].bias[0] == exact_sum
    assert _imported_exactly(network, np.zeros(2)) == exact_onnx(model, np.zeros(2), (1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_alpha_and_beta_of_a_tenth_are_exact(dtype: type) -> None:
    rng = np.random.default_rng(8)
    graph = GraphBuilder(["N", 4], dtype)
    h = graph.node("Gemm", [graph.input_name, graph.constant(rng.normal(size=(4, 3))),
                            graph.constant(rng.normal(size=3))], alpha=0.1, beta=0.1)
    model = graph.model(h)
    network = network_from_model(model)
    assert network.folded_ops == ("Gemm alpha", "Gemm beta")
    # float32 * float32 has at most 48 significant bits, so float64 holds it exactly; a
    # float64 weight times the float32 attribute 0.1 needs more: exact rationals.
    expected_kind = "f" if dtype == np.float32 else "O"
    assert network.layers[0].weights.dtype.kind == expected_kind
    for point in rng.uniform(-1, 1, size=(10, 4)).astype(dtype):
        assert _imported_exactly(network, point) == exact_onnx(model, point, (1, 4))
    points = rng.uniform(-1, 1, size=(10, 4)).astype(dtype)
    _assert_matches(network.forward(points).output, run_onnxruntime(model, points, (1, 4)))


def test_a_div_normalized_conv_has_exact_kernel_entries_and_exact_zeros() -> None:
    rng = np.random.default_rng(2)
    graph = GraphBuilder(["N", 2, 4, 4])
    h = graph.node("Sub", [graph.input_name, graph.constant([[[0.4914]], [[0.4822]]])])
    h = graph.node("Div", [h, graph.constant([[[0.2470]], [[0.2435]]])])
    h = graph.node("Conv", [h, graph.constant(rng.normal(size=(3, 2, 3, 3))),
                            graph.constant(rng.normal(size=3))], pads=[1, 1, 1, 1], strides=[2, 1])
    h = graph.node("Flatten", [graph.node("Relu", [h])])
    h = graph.node("Gemm", [h, graph.constant(rng.normal(size=(2, 24))),
                            graph.constant(rng.normal(size=2))], transB=1)
    model = graph.model(h)
    network = network_from_model(model)
    first = network.layers[0]
    assert first.weights.dtype == object and first.weights.shape == (24, 32)
    assert all(isinstance(v, Fraction) for v in first.weights.reshape(-1))
    assert first.connections == int(np.count_nonzero(first.float_weights))
    assert network.layers[1].weights.dtype == np.float32
    for point in rng.uniform(0, 1, size=(5, 32)).astype(np.float32):
        assert _imported_exactly(network, point) == exact_onnx(model, point, (1, 2, 4, 4))
    points = rng.uniform(0, 1, size=(10, 32)).astype(np.float32)
    _assert_matches(network.forward(points).output,
                    run_onnxruntime(model, points, (1, 2, 4, 4)))


def test_chained_matmuls_compose_exactly_into_one_layer() -> None:
    rng = np.random.default_rng(6)
    graph = GraphBuilder(["N", 5], np.float64)
    h = graph.node("MatMul", [graph.input_name, graph.constant(rng.normal(size=(5, 4)))])
    h = graph.node("Add", [h, graph.constant(rng.normal(size=4))])
    h = graph.node("MatMul", [h, graph.constant(rng.normal(size=(4, 3)))])
    h = graph.node("Add", [h, graph.constant(rng.normal(size=3))])
    model = graph.model(h)
    network = network_from_model(model)
    assert len(network.layers) == 1 and "MatMul composition" in network.folded_ops
    assert network.layers[0].weights.dtype == object  # float64 products need ~106 bits
    for point in rng.uniform(-1, 1, size=(5, 5)):
        assert _imported_exactly(network, point) == exact_onnx(model, point, (1, 5))


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_two_convolutions_without_a_relu_compose_exactly_in_any_chunking(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_import, "_PAIRS_PER_CHUNK", chunk)  # sparse product in pieces
    rng = np.random.default_rng(9)
    graph = GraphBuilder(["N", 2, 5, 5])
    h = graph.node("Div", [graph.input_name, graph.constant([[[0.3]], [[0.7]]])])
    h = graph.node("Conv", [h, graph.constant(rng.normal(size=(3, 2, 2, 2)))], pads=[1, 0, 0, 1])
    h = graph.node("Conv", [h, graph.constant(rng.normal(size=(2, 3, 3, 3))),
                            graph.constant(rng.normal(size=2))], strides=[2, 2])
    model = graph.model(graph.node("Flatten", [h]))
    network = network_from_model(model)
    assert len(network.layers) == 1 and network.layers[0].weights.shape == (8, 50)
    assert "Conv composition" not in network.folded_ops  # a Conv is noted as Conv->dense
    for point in rng.uniform(-1, 1, size=(3, 50)).astype(np.float32):
        assert _imported_exactly(network, point) == exact_onnx(model, point, (1, 2, 5, 5))


def test_a_composition_that_floats_hold_exactly_stays_float() -> None:
    graph = GraphBuilder(["N", 3])
    h = graph.node("Div", [graph.input_name, graph.constant([2.0, 0.5, -4.0])])
    h = graph.node("Transpose", [graph.node("Unsqueeze", [h, graph.int_constant([2])])],
                   perm=[0, 2, 1])
    h = graph.node("MatMul", [graph.node("Flatten", [h]),
                              graph.constant([[1.0, 3.0], [0.5, -2.0], [6.0, 0.25]])])
    h = graph.node("MatMul", [h, graph.constant([[2.0], [-1.5]])])
    network = network_from_model(graph.model(h))
    assert network.layers[0].weights.dtype == np.float32
    # (x / [2, 0.5, -4]) @ M1 @ M2 = x . ([-2.5, 4, 11.625] * [0.5, 2, -0.25])
    np.testing.assert_array_equal(network.layers[0].weights, [[-1.25, 8.0, -2.90625]])


def test_a_float64_rounded_batch_normalization_rounds_the_rest_of_its_layer_too() -> None:
    graph = GraphBuilder(["N", 2])
    h = graph.node("Div", [graph.input_name, graph.constant([0.3, 0.7])])
    h = graph.node("BatchNormalization", [h, *map(graph.constant, ([1.5, 0.5], [0.1, 0.2],
                                                                   [0.3, 0.4], [2.0, 3.0]))])
    h = graph.node("Gemm", [h, graph.constant([[1.0, 2.0]]), graph.constant([0.5])], transB=1)
    model = graph.model(h)
    network = network_from_model(model)
    assert network.folded_ops == ("Div normalization", BATCH_NORMALIZATION_NOTE)
    assert network.layers[0].weights.dtype == np.float64
    points = np.random.default_rng(1).uniform(-1, 1, size=(10, 2)).astype(np.float32)
    _assert_matches(network.forward(points).output, run_onnxruntime(model, points, (1, 2)))


def test_constant_folding_left_in_a_graph_is_exact_or_noted_as_rounded() -> None:
    graph = GraphBuilder(["N", 2])
    exact = graph.node("Mul", [graph.constant([0.5, 3.0]), graph.constant([0.1, 0.2])])
    rounded = graph.node("Div", [graph.constant([1.0, 1.0]), graph.constant([3.0, 0.1])])
    h = graph.node("Mul", [graph.node("Mul", [graph.input_name, exact]), rounded])
    network = network_from_model(graph.model(h))
    assert network.folded_ops == ("Div of constants (float64-rounded)", "Mul normalization")


@settings(deadline=None, max_examples=60)
@given(spec=mlp_specs())
def test_random_mlps_evaluate_exactly_as_their_onnx_graph_in_rational_arithmetic(
    spec: MlpSpec,
) -> None:
    model, full_shape, _ = build_mlp(spec)
    network = network_from_model(model)
    point = np.random.default_rng(spec.seed).uniform(-1, 1, size=spec.sizes[0]).astype(spec.dtype)
    assert _imported_exactly(network, point) == exact_onnx(model, point, full_shape)


@settings(deadline=None, max_examples=25)
@given(spec=conv_specs())
def test_random_conv_nets_without_batch_normalization_import_exactly(spec: ConvSpec) -> None:
    assume(not spec.batch_norm)
    model, shape = build_conv_net(spec)
    network = network_from_model(model)
    assert all(layer.weights.dtype == np.float32 for layer in network.layers)  # placement only
    point = np.random.default_rng(spec.seed).uniform(-1, 1, size=network.input_size)
    point = point.astype(np.float32)
    assert _imported_exactly(network, point) == exact_onnx(model, point, shape)


# ---------------------------------------------------------------- accepted forms


def test_initializers_listed_as_graph_inputs_are_constants_not_network_inputs() -> None:
    graph = GraphBuilder([1, 3])
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    h = graph.node("Gemm", [graph.input_name, graph.constant(weights), graph.constant([1, 2])],
                   transB=1)
    network = network_from_model(graph.model(h, opset=8, initializers_as_inputs=True))
    assert network.input_shape == (3,)
    np.testing.assert_array_equal(network.layers[0].weights, weights)


@pytest.mark.parametrize("batch", ["N", 1, 0])
def test_a_leading_batch_dimension_is_dropped_from_the_input_shape(batch: int | str) -> None:
    graph = GraphBuilder([batch, 2, 3])
    h = graph.node("Flatten", [graph.input_name])
    h = graph.node("MatMul", [h, graph.constant(np.ones((6, 2)))])
    assert network_from_model(graph.model(h)).input_shape == (2, 3)


def test_an_input_without_batch_dimension_keeps_its_shape() -> None:
    graph = GraphBuilder([4])
    h = graph.node("MatMul", [graph.constant(np.eye(4)[:2] * 3), graph.input_name])
    network = network_from_model(graph.model(h))
    assert network.input_shape == (4,)
    np.testing.assert_array_equal(network.forward(np.arange(4)).output, [[0, 3]])


@pytest.mark.parametrize("form", ["gemm_transA", "gemm_input_right", "matmul_batched_rows",
                                  "matmul_weight_left"])
def test_products_with_the_input_on_either_side_match_onnxruntime(form: str) -> None:
    rng = np.random.default_rng(5)
    shapes = {"gemm_transA": [3, 1], "gemm_input_right": [1, 3], "matmul_batched_rows": [1, 2, 3],
              "matmul_weight_left": [1, 3, 2]}
    graph = GraphBuilder(shapes[form])
    weights = graph.constant(rng.normal(size=(3, 4)))
    if form == "gemm_transA":
        h = graph.node("Gemm", ["x", weights, graph.constant(rng.normal(size=4))], transA=1,
                       alpha=0.5)
    elif form == "gemm_input_right":
        h = graph.node("Gemm", [graph.constant(rng.normal(size=(4, 3))), "x"], transB=1)
    elif form == "matmul_batched_rows":
        h = graph.node("MatMul", ["x", weights])
    else:
        h = graph.node("MatMul", [graph.constant(rng.normal(size=(4, 3))), "x"])
    model = graph.model(graph.node("Relu", [h]))
    network = network_from_model(model)
    inputs = rng.uniform(-1, 1, size=(20, network.input_size)).astype(np.float32)
    _assert_matches(network.forward(inputs).output, run_onnxruntime(model, inputs, shapes[form]))


def test_a_graph_ending_in_relu_keeps_the_relu_on_its_last_layer() -> None:
    graph = GraphBuilder(["N", 2])
    h = graph.node("Gemm", [graph.input_name, graph.constant(np.eye(2)), graph.constant([0, 1])])
    h = graph.node("Flatten", [graph.node("Relu", [h])])
    network = network_from_model(graph.model(h))
    assert [layer.relu for layer in network.layers] == [True]


def test_squeeze_unsqueeze_and_constant_nodes_are_shape_bookkeeping() -> None:
    graph = GraphBuilder(["N", 3])
    h = graph.node("Unsqueeze", [graph.input_name, graph.int_constant([1])])
    h = graph.node("Squeeze", [h, graph.int_constant([1])])
    offset = graph.node("Constant", [], value=onnx.numpy_helper.from_array(
        np.array([1.0, 2.0, 3.0], np.float32)))
    h = graph.node("Sub", [offset, h])
    network = network_from_model(graph.model(h))
    np.testing.assert_array_equal(network.forward([1.0, 1.0, 1.0]).output, [[0, 1, 2]])
    assert network.folded_ops == ("Sub normalization",)


def test_adding_two_linear_branches_of_the_same_layer_input_stays_affine() -> None:
    graph = GraphBuilder(["N", 2])
    left = graph.node("MatMul", [graph.input_name, graph.constant([[1.0], [2.0]])])
    right = graph.node("MatMul", [graph.input_name, graph.constant([[3.0], [-1.0]])])
    network = network_from_model(graph.model(graph.node("Add", [left, right])))
    np.testing.assert_array_equal(network.layers[0].weights, [[4.0, 1.0]])


def test_supported_ops_lists_the_op_table() -> None:
    assert "Gemm" in SUPPORTED_OPS and "Conv" in SUPPORTED_OPS
    assert list(SUPPORTED_OPS) == sorted(SUPPORTED_OPS)


# ---------------------------------------------------------------- rejections


def _import_error(model: onnx.ModelProto) -> str:
    with pytest.raises(UnsupportedModelError) as caught:
        network_from_model(model, "net.onnx")
    message = str(caught.value)
    assert message.startswith("net.onnx: ") and "\n" not in message
    return message


def test_every_unsupported_node_is_listed_in_one_error() -> None:
    graph = GraphBuilder(["N", 1, 4, 4])
    h = graph.node("Sigmoid", [graph.input_name], name="sig1")
    h = graph.node("MaxPool", [h], name="mp", kernel_shape=[2, 2])
    message = _import_error(graph.model(graph.node("Flatten", [h])))
    assert "unsupported nodes: sig1 (Sigmoid), mp (MaxPool); supported ops: Add," in message
    assert ", ".join(SUPPORTED_OPS) in message


def test_ops_from_other_domains_are_unsupported() -> None:
    graph = GraphBuilder(["N", 2])
    graph.nodes.append(helper.make_node("Fused", ["x"], ["y"], name="f", domain="com.example"))
    assert "f (com.example.Fused)" in _import_error(graph.model("y"))


def test_a_model_with_two_network_inputs_is_rejected_naming_both() -> None:
    graph = GraphBuilder(["N", 2])
    model = graph.model(graph.node("Add", ["x", "z"]))
    model.graph.input.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 2]))
    assert "found 'x', 'z'" in _import_error(model)


def test_a_model_with_two_outputs_is_rejected() -> None:
    graph = GraphBuilder(["N", 2])
    model = graph.model(graph.node("Relu", ["x"]))
    model.graph.output.append(helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None))
    assert "exactly one graph output" in _import_error(model)


def test_adding_a_relu_output_to_the_raw_input_is_rejected_as_not_a_chain() -> None:
    graph = GraphBuilder(["N", 2])
    h = graph.node("Relu", [graph.node("MatMul", ["x", graph.constant(np.eye(2))])])
    message = _import_error(graph.model(graph.node("Add", [h, "x"], name="skip")))
    assert "node skip (Add): input 'x'" in message and "not a chain" in message


def test_two_relus_on_one_tensor_are_rejected_as_branches() -> None:
    graph = GraphBuilder(["N", 2])
    a = graph.node("Relu", ["x"], name="r1")
    b = graph.node("Relu", ["x"], name="r2")
    message = _import_error(graph.model(graph.node("Add", [a, b], name="join")))
    assert "(Relu)" in message and "not a chain" in message


def test_a_product_of_two_input_dependent_tensors_is_rejected_as_nonlinear() -> None:
    graph = GraphBuilder(["N", 2])
    message = _import_error(graph.model(graph.node("Mul", ["x", "x"], name="square")))
    assert "node square (Mul)" in message and "nonlinear" in message


def test_dividing_by_the_input_is_rejected_as_nonlinear() -> None:
    graph = GraphBuilder(["N", 2])
    h = graph.node("Div", [graph.constant([1, 1]), "x"], name="inverse")
    assert "node inverse (Div)" in _import_error(graph.model(h))


def test_an_unsupported_attribute_value_names_node_op_and_attribute() -> None:
    graph = GraphBuilder(["N", 1, 3, 3])
    h = graph.node("Conv", ["x", graph.constant(np.ones((1, 1, 2, 2)))], name="c",
                   auto_pad="WRAP")
    assert "node c (Conv): attribute auto_pad=WRAP" in _import_error(graph.model(h))


def test_an_unknown_attribute_is_rejected_rather_than_ignored() -> None:
    graph = GraphBuilder(["N", 2])
    h = graph.node("Add", ["x", graph.constant([1, 1])], name="legacy", broadcast=1)
    assert "node legacy (Add): unsupported attribute broadcast=1" in _import_error(graph.model(h))


def test_training_mode_batch_normalization_is_rejected() -> None:
    graph = GraphBuilder(["N", 2])
    parameters = [graph.constant(np.ones(2)) for _ in range(4)]
    h = graph.node("BatchNormalization", ["x", *parameters], name="bn", training_mode=1)
    assert "node bn (BatchNormalization): attribute training_mode=1" in _import_error(
        graph.model(h))


def test_a_symbolic_non_batch_dimension_is_rejected() -> None:
    graph = GraphBuilder(["N", "width"])
    assert "dimension 'width' at axis 1" in _import_error(graph.model(graph.node("Relu", ["x"])))


def test_an_integer_input_is_rejected() -> None:
    graph = GraphBuilder(["N", 2])
    model = graph.model(graph.node("Relu", ["x"]))
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    assert "element type INT64" in _import_error(model)


def test_an_output_that_does_not_depend_on_the_input_is_rejected() -> None:
    graph = GraphBuilder(["N", 2])
    graph.node("Relu", ["x"])
    assert "does not depend on the input" in _import_error(graph.model(graph.constant([1.0])))


def test_a_missing_file_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"absent\.onnx: file not found"):
        load_network(tmp_path / "absent.onnx")


def test_a_text_file_is_not_an_onnx_model(tmp_path: Path) -> None:
    path = tmp_path / "net.txt"
    path.write_text("this is not a protobuf\n" * 3)
    with pytest.raises(ModelError, match=r"net.txt: not an ONNX model \(") as caught:
        load_network(path)
    assert "\n" not in str(caught.value)
