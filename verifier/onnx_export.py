"""ONNX exporter: the network IR back to a plain ONNX file.

Stage: ... -> **compression** -> equivalence -> certificate and report. The compressed
network leaves the tool through here; `onnx_import` reads the result back for the equivalence
checks on files.

Format: one `Gemm` (transB = 1, alpha = beta = 1) per layer, followed by a `Relu` when the
layer has one; opset 17; graph input "input" of shape ["batch", n] (symbolic batch, flattened
input), graph output "output". Weights are stored in float32 (default) or float64.

Rounding contract: a float weight that the dtype holds exactly is stored bit for bit; any
other value (an exact rational from compression, or a float64 exported as float32) is rounded
to the NEAREST value of the dtype (ties to even), computed from its exact value, never by
double rounding through float64. `rounded_layers` returns exactly the arrays that are stored,
so callers can bound the deviation they introduce. A value that overflows the dtype is an
error, never infinity.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from verifier.errors import ModelError, NetworkError
from verifier.exact import as_fraction
from verifier.files import atomic_write_bytes
from verifier.ir import Network

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17; widely loadable
INPUT_NAME = "input"
OUTPUT_NAME = "output"

_DTYPES: dict[str, tuple[np.dtype[Any], int]] = {
    "float32": (np.dtype(np.float32), onnx.TensorProto.FLOAT),
    "float64": (np.dtype(np.float64), onnx.TensorProto.DOUBLE),
}


def _export_dtype(dtype: str) -> tuple[np.dtype[Any], int]:
    if dtype not in _DTYPES:
        raise ModelError(f"cannot export with dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _float32_neighbour(value: float, upward: bool) -> float:
    return float(np.nextafter(np.float32(value), np.float32(np.inf if upward else -np.inf)))


def _nearest_float32(value: Fraction) -> float:
    """The float32 nearest to an exact rational (ties to even), without double rounding.

    Rounding to float64 first and then to float32 can land on the wrong side of a float32
    midpoint; the correct result is the float32 conversion of float(value) or its neighbour
    toward `value`, and the exact distances decide.
    """
    if abs(value) >= 2**128:
        return math.inf
    candidate = float(np.float32(float(value)))
    if math.isinf(candidate) or Fraction(candidate) == value:
        return candidate
    neighbour = _float32_neighbour(candidate, upward=Fraction(candidate) < value)
    if math.isinf(neighbour):
        return candidate
    gap = abs(Fraction(candidate) - value) - abs(Fraction(neighbour) - value)
    if gap != 0:
        return candidate if gap < 0 else neighbour
    even = struct.unpack("<I", struct.pack("<f", candidate))[0] % 2 == 0
    return candidate if even else neighbour


def _rounded(values: npt.NDArray[Any], dtype: np.dtype[Any], what: str) -> npt.NDArray[Any]:
    """`values` (floats or exact rationals) rounded to nearest in `dtype`."""
    if values.dtype.kind == "f":
        # A float -> float conversion is one correctly rounded step (exact when widening).
        with np.errstate(over="ignore"):
            result = values.astype(dtype)
    else:
        flat = [as_fraction(v) for v in values.reshape(-1)]
        if dtype == np.dtype(np.float64):
            rounded = [float(v) if abs(v) < 2**1024 else np.inf for v in flat]
            result = np.array(rounded, dtype=np.float64)
        else:
            result = np.array([_nearest_float32(v) for v in flat], dtype=np.float32)
        result = result.reshape(values.shape)
    if not np.all(np.isfinite(result)):
        raise NetworkError(f"{what}: a value overflows {dtype} when exported")
    return result


def rounded_layers(
    network: Network, dtype: str = "float32"
) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """(weights, bias) of every layer exactly as `to_onnx_model` stores them."""
    numpy_dtype, _ = _export_dtype(dtype)
    return [
        (
            _rounded(layer.weights, numpy_dtype, f"layer {index} weights"),
            _rounded(layer.bias, numpy_dtype, f"layer {index} bias"),
        )
        for index, layer in enumerate(network.layers)
    ]


def to_onnx_model(network: Network, dtype: str = "float32") -> onnx.ModelProto:
    """The network as a checked ONNX model: Gemm (+ Relu) per layer, opset 17."""
    _, element_type = _export_dtype(dtype)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = INPUT_NAME
    layers = rounded_layers(network, dtype)
    for index, ((weights, bias), layer) in enumerate(zip(layers, network.layers, strict=True)):
        last = index == len(layers) - 1
        weight_name, bias_name = f"layer{index}.weight", f"layer{index}.bias"
        initializers.append(numpy_helper.from_array(weights, weight_name))
        initializers.append(numpy_helper.from_array(bias, bias_name))
        gemm_output = OUTPUT_NAME if last and not layer.relu else f"layer{index}.gemm"
        nodes.append(
            helper.make_node(
                "Gemm", [current, weight_name, bias_name], [gemm_output],
                name=f"layer{index}.gemm", transB=1,
            )
        )
        current = gemm_output
        if layer.relu:
            relu_output = OUTPUT_NAME if last else f"layer{index}.relu"
            relu = helper.make_node("Relu", [current], [relu_output], name=f"layer{index}.relu")
            nodes.append(relu)
            current = relu_output
    graph = helper.make_graph(
        nodes,
        network.name,
        [helper.make_tensor_value_info(INPUT_NAME, element_type, ["batch", network.input_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, element_type, ["batch", network.output_size])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="verify-compress",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(network: Network, path: str | Path, dtype: str = "float32") -> None:
    """Write the network to `path` as ONNX (atomically: all or nothing)."""
    atomic_write_bytes(path, to_onnx_model(network, dtype).SerializeToString())
