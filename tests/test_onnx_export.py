"""Tests for verifier.onnx_export: round trips, onnxruntime agreement, correct rounding."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ACAS_NETWORKS, MNIST_NETWORK, random_network, require_benchmarks
from tests.onnx_builders import run_onnxruntime
from verifier.errors import ModelError, NetworkError
from verifier.ir import AffineLayer, Network
from verifier.onnx_export import rounded_layers, save_onnx, to_onnx_model
from verifier.onnx_import import load_network, network_from_model

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
