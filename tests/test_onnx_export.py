"""Tests for verify_compress.onnx_export: round trips, onnxruntime agreement, correct rounding, and
the original's interface (names, shapes, dtype) kept by the export."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.compress import compress
from verify_compress.errors import ModelError, NetworkError
from verify_compress.ir import AffineLayer, Network
from verify_compress.onnx_export import rounded_layers, save_onnx, to_onnx_model
from verify_compress.onnx_import import (
    Interface,
    interface_from_model,
    load_network,
    network_from_model,
    read_interface,
)
from verify_compress.status import Neuron, Status

from conftest import ACAS_NETWORKS, MNIST_NETWORK, random_network, require_benchmarks
from onnx_builders import GraphBuilder, run_onnxruntime

DTYPES = {"float32": np.float32, "float64": np.float64}


def _fraction_array(values: list[list[Fraction]] | list[Fraction]) -> np.ndarray:
    array = np.empty(np.shape(values), dtype=object)
    array[...] = values
    return array


def _exact_network(weights: list[list[Fraction]], bias: list[Fraction]) -> Network:
    return Network((AffineLayer(_fraction_array(weights), _fraction_array(bias), relu=False),))


def _assert_bit_identical(left: np.ndarray, right: np.ndarray) -> None:
    assert left.dtype == right.dtype and left.shape == right.shape
    assert left.tobytes() == right.tobytes()


@settings(deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 8), min_size=2, max_size=5),
    final_relu=st.booleans(),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_exporting_then_importing_a_float_network_is_bit_identical_and_agrees_with_onnxruntime(
    seed: int, sizes: list[int], final_relu: bool, dtype: str
) -> None:
    rng = np.random.default_rng(seed)
    network = random_network(rng, sizes, final_relu=final_relu, dtype=DTYPES[dtype])
    model = to_onnx_model(network, dtype)
    back = network_from_model(model)
    assert back.input_shape == (sizes[0],)
    for original, imported in zip(network.layers, back.layers, strict=True):
        _assert_bit_identical(imported.weights, original.weights)
        _assert_bit_identical(imported.bias, original.bias)
        assert imported.relu == original.relu
    inputs = rng.uniform(-1, 1, size=(10, sizes[0])).astype(DTYPES[dtype])
    reference = run_onnxruntime(model, inputs, (1, sizes[0]))
    scale = max(1.0, float(np.max(np.abs(reference))))
    np.testing.assert_allclose(network.forward(inputs).output, reference, rtol=1e-5,
                               atol=1e-6 * scale)


def test_a_float32_network_exported_as_float64_keeps_its_values() -> None:
    network = random_network(np.random.default_rng(1), [3, 4, 2], dtype=np.float32)
    back = network_from_model(to_onnx_model(network, "float64"))
    for original, imported in zip(network.layers, back.layers, strict=True):
        assert imported.weights.dtype == np.float64
        np.testing.assert_array_equal(imported.weights, original.weights)


def test_a_float64_network_exported_as_float32_stores_exactly_the_rounded_layers() -> None:
    network = random_network(np.random.default_rng(2), [3, 5, 2], dtype=np.float64)
    stored = rounded_layers(network, "float32")
    back = network_from_model(to_onnx_model(network, "float32"))
    for (weights, bias), original, imported in zip(stored, network.layers, back.layers,
                                                   strict=True):
        _assert_bit_identical(imported.weights, weights)
        _assert_bit_identical(imported.bias, bias)
        _assert_bit_identical(weights, original.weights.astype(np.float32))


def test_exact_rational_weights_are_rounded_to_the_nearest_float() -> None:
    third, tiny = Fraction(1, 3), Fraction(-5, 7 * 2**140)
    network = _exact_network([[third, tiny]], [Fraction(10**20, 3)])
    (weights32, bias32), = rounded_layers(network, "float32")
    (weights64, bias64), = rounded_layers(network, "float64")
    np.testing.assert_array_equal(weights64, [[1 / 3, float(tiny)]])
    assert bias64[0] == float(Fraction(10**20, 3))
    for exact, rounded in ((third, weights32[0, 0]), (tiny, weights32[0, 1]),
                           (Fraction(10**20, 3), bias32[0])):
        step = np.nextafter(rounded, np.float32(np.inf)) - rounded
        assert abs(Fraction(float(rounded)) - exact) <= Fraction(float(step)) / 2


def test_rounding_to_float32_avoids_double_rounding_through_float64() -> None:
    midpoint = Fraction(1) + Fraction(1, 2**24)  # halfway between 1 and the next float32
    just_above = midpoint + Fraction(1, 2**80)  # float64 rounds this onto the midpoint
    network = _exact_network([[just_above, midpoint]], [midpoint + Fraction(1, 2**23)])
    (weights, bias), = rounded_layers(network, "float32")
    assert float(np.float32(float(just_above))) == 1.0  # the naive route is wrong
    assert weights[0, 0] == np.float32(1 + 2**-23)  # nearest to the exact value
    assert weights[0, 1] == np.float32(1.0)  # exact tie: to even
    assert bias[0] == np.float32(1 + 2**-22)  # exact tie: to even (upward this time)


def test_an_exported_exact_network_round_trips_to_its_rounded_layers(tmp_path: Path) -> None:
    network = _exact_network([[Fraction(1, 3), Fraction(2)], [Fraction(-1, 10), Fraction(0)]],
                             [Fraction(1, 7), Fraction(0)])
    path = tmp_path / "exact.onnx"
    save_onnx(network, path, "float64")
    back = load_network(path)
    (weights, bias), = rounded_layers(network, "float64")
    _assert_bit_identical(back.layers[0].weights, weights)
    _assert_bit_identical(back.layers[0].bias, bias)
    assert back.name == "exact"
    assert [p.name for p in tmp_path.iterdir()] == ["exact.onnx"]  # no temporary left behind


def test_values_too_large_for_the_dtype_are_an_error_not_infinity() -> None:
    huge = _exact_network([[Fraction(2**200)]], [Fraction(0)])
    with pytest.raises(NetworkError, match="layer 0 weights: a value overflows float32"):
        to_onnx_model(huge, "float32")
    wide = Network((AffineLayer(np.array([[1e300]]), np.zeros(1), relu=False),))
    with pytest.raises(NetworkError, match="overflows float32"):
        rounded_layers(wide, "float32")


def test_an_unknown_export_dtype_is_rejected() -> None:
    network = random_network(np.random.default_rng(0), [2, 2])
    with pytest.raises(ModelError, match="cannot export with dtype 'float16'"):
        to_onnx_model(network, "float16")


def test_the_exported_graph_is_gemm_and_relu_with_a_symbolic_batch() -> None:
    network = random_network(np.random.default_rng(3), [4, 3, 2], final_relu=True)
    model = to_onnx_model(network)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu"]
    assert all(a.i == 1 for a in model.graph.node[0].attribute if a.name == "transB")
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "input" and graph_output.name == "output"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 4
    assert model.graph.node[-1].output[0] == "output"


def test_a_benchmark_network_survives_export_and_reimport_unchanged(tmp_path: Path) -> None:
    require_benchmarks()
    for path in [MNIST_NETWORK, ACAS_NETWORKS[0]]:
        network = load_network(path)
        copy_path = tmp_path / f"{path.stem}.onnx"
        save_onnx(network, copy_path)
        back = load_network(copy_path)
        for original, imported in zip(network.layers, back.layers, strict=True):
            _assert_bit_identical(imported.weights, original.weights)
            _assert_bit_identical(imported.bias, original.bias)
        inputs = np.random.default_rng(0).uniform(0, 1, size=(50, network.input_size))
        inputs = inputs.astype(np.float32)
        original_outputs = run_onnxruntime(onnx.load(str(path)), inputs,
                                           (1, *network.input_shape))
        exported_outputs = run_onnxruntime(onnx.load(str(copy_path)), inputs,
                                           (1, network.input_size))
        np.testing.assert_allclose(exported_outputs, original_outputs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The original's interface: the export is a drop-in replacement


@dataclass(frozen=True)
class _Form:
    """An original network: its input's declared shape and how the graph gets to the Gemms."""

    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...] | None  # None: the original declares no output shape
    input_name: str
    output_name: str
    dtype: type = np.float32
    head: str = "gemm"  # gemm: Gemm on the input; flatten: Flatten first; matmul: MatMul + Add


FORMS = {
    "symbolic batch [N, k]": _Form(("N", 6), ("N", 3), "x", "y"),
    "fixed batch [1, k]": _Form((1, 6), (1, 3), "obs", "scores", np.float64),
    "no batch [k]": _Form((6,), (3,), "state", "advice", head="matmul"),
    "image [N, 1, 28, 28] with Flatten": _Form(("N", 1, 28, 28), None, "image", "logits",
                                               head="flatten"),
    "the default names swapped": _Form(("batch", 6), ("batch", 3), "output", "input"),
    "names of the exporter's own tensors": _Form(("batch", 6), ("batch", 3), "layer0.weight",
                                                 "output.flat"),
}


def _original(form: _Form, seed: int = 0) -> onnx.ModelProto:
    """A two-layer ReLU network of the given form, built as another tool would write it."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder(form.input_shape, form.dtype, form.input_name)
    current = form.input_name
    inputs = int(np.prod([d for d in form.input_shape if isinstance(d, int)]))
    if form.head == "flatten":
        current = builder.node("Flatten", [current], axis=1)
    for position, (n_in, n_out) in enumerate([(inputs, 8), (8, 3)]):
        weights = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        bias = rng.normal(scale=0.5, size=n_out)
        if form.head == "matmul":
            product = builder.node("MatMul", [current, builder.constant(weights.T)])
            current = builder.node("Add", [product, builder.constant(bias)])
        else:
            current = builder.node("Gemm", [current, builder.constant(weights),
                                            builder.constant(bias)], transB=1)
        if position == 0:
            current = builder.node("Relu", [current])
    builder.nodes[-1].output[0] = form.output_name
    model = builder.model(form.output_name)
    if form.output_shape is not None:
        element = model.graph.output[0].type.tensor_type.elem_type
        model.graph.output[0].CopyFrom(
            onnx.helper.make_tensor_value_info(form.output_name, element,
                                               list(form.output_shape))
        )
        onnx.checker.check_model(model, full_check=True)  # (it wants every output's shape)
    return model


def _session(model: onnx.ModelProto | Path) -> Any:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def _seen_by_onnxruntime(session: Any) -> list[tuple[str, list[Any], str]]:
    """Name, shape and element type of every input and output, as a caller sees them."""
    values = [*session.get_inputs(), *session.get_outputs()]
    return [(value.name, list(value.shape), value.type) for value in values]


def _declared(value: onnx.ValueInfoProto) -> tuple[str, int, list[Any]]:
    dims = value.type.tensor_type.shape.dim
    return (value.name, value.type.tensor_type.elem_type,
            [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in dims])


def _feed(session: Any, batch: int, rng: np.random.Generator) -> np.ndarray:
    """A random input of the declared shape (`batch` rows where the batch is symbolic)."""
    spec = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else batch for d in spec.shape]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    return rng.uniform(0, 1, size=shape).astype(dtype)


def _run(session: Any, feed: np.ndarray) -> np.ndarray:
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: feed})[0]
    return result


def _assert_drop_in(original: onnx.ModelProto | Path, exported: Path) -> None:
    """Same names, shapes and dtype as onnxruntime sees them, and the same declared input."""
    original_model = onnx.load(str(original)) if isinstance(original, Path) else original
    exported_model = onnx.load(str(exported))
    assert _seen_by_onnxruntime(_session(exported)) == _seen_by_onnxruntime(_session(original))
    constants = {init.name for init in original_model.graph.initializer}
    (original_input,) = [v for v in original_model.graph.input if v.name not in constants]
    assert [_declared(v) for v in exported_model.graph.input] == [_declared(original_input)]
    declared_output = original_model.graph.output[0]
    if declared_output.type.tensor_type.HasField("shape"):
        assert _declared(exported_model.graph.output[0]) == _declared(declared_output)


@pytest.mark.parametrize("form", FORMS.values(), ids=list(FORMS))
def test_the_exported_network_keeps_the_original_input_and_output_names_shapes_and_dtype(
    form: _Form, tmp_path: Path
) -> None:
    original = _original(form)
    path = tmp_path / "original.onnx"
    onnx.save(original, str(path))
    exported = tmp_path / "exported.onnx"
    save_onnx(load_network(path), exported, interface=read_interface(path))
    _assert_drop_in(original, exported)


@pytest.mark.parametrize("form", FORMS.values(), ids=list(FORMS))
def test_the_exported_network_runs_on_inputs_of_the_original_shape_with_the_same_outputs(
    form: _Form, tmp_path: Path
) -> None:
    original = _original(form, seed=1)
    exported = tmp_path / "exported.onnx"
    save_onnx(network_from_model(original), exported, interface=interface_from_model(original))
    rng = np.random.default_rng(2)
    for batch in (1, 5):
        feed = _feed(_session(original), batch, rng)
        expected = _run(_session(original), feed)
        result = _run(_session(exported), feed)
        assert result.shape == expected.shape and result.dtype == expected.dtype
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS.values(), ids=list(FORMS))
def test_the_exported_network_imports_back_to_the_same_layers_and_input_shape(
    form: _Form, tmp_path: Path
) -> None:
    original = network_from_model(_original(form))
    exported = tmp_path / "exported.onnx"
    save_onnx(original, exported, interface=interface_from_model(_original(form)))
    back = load_network(exported)  # what `check` reads: the same layers, bit for bit
    assert back.input_shape == original.input_shape and not back.folded_ops
    for before, after in zip(original.layers, back.layers, strict=True):
        _assert_bit_identical(after.weights, before.weights)
        _assert_bit_identical(after.bias, before.bias)
        assert after.relu == before.relu


def test_the_interface_is_read_as_declared_and_an_open_output_shape_is_inferred() -> None:
    image = FORMS["image [N, 1, 28, 28] with Flatten"]
    assert interface_from_model(_original(image)) == Interface(
        "image", ("N", 1, 28, 28), "logits", ("N", 3), onnx.TensorProto.FLOAT
    )
    fixed = interface_from_model(_original(FORMS["fixed batch [1, k]"]))
    assert fixed == Interface("obs", (1, 6), "scores", (1, 3), onnx.TensorProto.DOUBLE)
    assert fixed.has_batch
    no_batch = interface_from_model(_original(FORMS["no batch [k]"]))
    assert no_batch.input_shape == (6,) and no_batch.output_shape == (3,)
    assert not no_batch.has_batch


def test_a_compressed_network_exported_with_the_original_interface_is_a_drop_in_replacement(
    tmp_path: Path,
) -> None:
    form = FORMS["image [N, 1, 28, 28] with Flatten"]
    original = _original(form, seed=3)
    first = original.graph.initializer[1]  # the first Gemm's bias: two neurons made stable
    bias = onnx.numpy_helper.to_array(first).copy()
    bias[:2] = [-100.0, 100.0]  # inactive and active on [0, 1]^784 (|weights| are small)
    first.CopyFrom(onnx.numpy_helper.from_array(bias, first.name))
    network = network_from_model(original)
    statuses = {neuron: Status.UNSTABLE for neuron in network.hidden_neurons()}
    statuses[Neuron(0, 0)], statuses[Neuron(0, 1)] = Status.STABLY_INACTIVE, Status.STABLY_ACTIVE
    compressed = compress(network, statuses).network
    assert compressed.layers[0].outputs < network.layers[0].outputs
    exported = tmp_path / "compressed.onnx"
    save_onnx(compressed, exported, interface=interface_from_model(original))
    _assert_drop_in(original, exported)
    feed = _feed(_session(original), 7, np.random.default_rng(4))
    np.testing.assert_allclose(_run(_session(exported), feed), _run(_session(original), feed),
                               rtol=1e-4, atol=1e-3)


def test_the_benchmark_networks_exported_with_their_interface_are_drop_in_replacements(
    tmp_path: Path,
) -> None:
    require_benchmarks()
    rng = np.random.default_rng(5)
    for path in [*ACAS_NETWORKS, MNIST_NETWORK]:
        exported = tmp_path / f"{path.stem}.onnx"
        save_onnx(load_network(path), exported, interface=read_interface(path))
        _assert_drop_in(path, exported)
        for _ in range(20):
            feed = _feed(_session(path), 1, rng)
            expected = _run(_session(path), feed)
            result = _run(_session(exported), feed)
            assert result.shape == expected.shape and result.dtype == expected.dtype
            np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_an_explicit_export_dtype_changes_only_the_element_type(tmp_path: Path) -> None:
    original = _original(FORMS["symbolic batch [N, k]"])
    exported = tmp_path / "exported.onnx"
    save_onnx(network_from_model(original), exported, "float64",
              interface=interface_from_model(original))
    graph = onnx.load(str(exported)).graph
    (graph_input,), (graph_output,) = graph.input, graph.output
    assert _declared(graph_input) == ("x", onnx.TensorProto.DOUBLE, ["N", 6])
    assert _declared(graph_output) == ("y", onnx.TensorProto.DOUBLE, ["N", 3])


def test_an_interface_that_does_not_fit_the_network_is_an_error() -> None:
    network = random_network(np.random.default_rng(6), [6, 4, 3])
    element = onnx.TensorProto.FLOAT
    with pytest.raises(ModelError, match=r"input shape \['N', 5\]: the network has 6 inputs"):
        to_onnx_model(network, interface=Interface("x", ("N", 5), "y", ("N", 3), element))
    with pytest.raises(ModelError, match=r"output shape \['N', 4\]: the network has 3 outputs"):
        to_onnx_model(network, interface=Interface("x", ("N", 6), "y", ("N", 4), element))
    with pytest.raises(ModelError, match="input and output both named 'x'"):
        to_onnx_model(network, interface=Interface("x", ("N", 6), "x", ("N", 3), element))
