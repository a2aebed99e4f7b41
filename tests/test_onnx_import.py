"""Tests for verifier.onnx_import: real benchmarks, fuzzed op forms, and every rejection."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from tests.conftest import ACAS_NETWORKS, MNIST_NETWORK, require_benchmarks
from tests.onnx_builders import GraphBuilder, run_onnxruntime
from verifier.errors import ModelError, UnsupportedModelError
from verifier.ir import Network
from verifier.onnx_import import SUPPORTED_OPS, load_network, network_from_model

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


def test_a_conv_net_with_batch_normalization_imports_exactly() -> None:
    spec = ConvSpec(seed=3, channels=2, height=6, width=5, layout="NCHW", batch="N", groups=2,
                    out_channels=4, kernel=(3, 2), strides=(2, 1), dilations=(1, 2),
                    pads=(1, 0, 1, 1), auto_pad="NOTSET", conv_bias=True, batch_norm=True,
                    second_conv=False, flatten="Flatten", outputs=3)
    model, shape = build_conv_net(spec)
    network = network_from_model(model)
    assert network.folded_ops == ("Conv->dense", "BatchNormalization")
    assert network.layers[0].weights.dtype == np.float64  # folded: stored in float64
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
