"""ONNX exporter: the network IR back to a plain ONNX file.

Stage: ... -> **compression** -> equivalence -> certificate and report. The compressed
network leaves the tool through here; `onnx_import` reads the result back for the equivalence
checks on files.

Format: one `Gemm` (transB = 1, alpha = beta = 1) per layer, followed by a `Relu` when the
layer has one; opset 17. Weights are stored in float32 (default) or float64, and the graph's
input and output have that element type. Without an interface, the graph input is "input" of
shape ["batch", n] (symbolic batch, flattened input) and the graph output "output" of shape
["batch", m]. With the original's `Interface` (`verifier.onnx_import.read_interface`), the file
is a drop-in replacement: the input and output keep the original's names and declared shapes,
batch dimension included (symbolic, fixed 1 or absent, as the original has it); a `Flatten`
before the first Gemm and a `Reshape` after the last layer (each only when needed) map them
to and from the flattened rows. The element type is the export dtype, which the pipeline
takes from the original unless told otherwise (`--export-dtype`).

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

from .errors import ModelError, NetworkError
from .exact import as_fraction
from .files import atomic_write_bytes
from .ir import Network
from .onnx_import import Dim, Interface

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


_ELEMENT_DTYPES = {element: name for name, (_, element) in _DTYPES.items()}


def _default_interface(network: Network, element_type: int) -> Interface:
    return Interface(
        INPUT_NAME, ("batch", network.input_size), OUTPUT_NAME, ("batch", network.output_size),
        element_type,
    )


def _checked_interface(network: Network, interface: Interface) -> Interface:
    """`interface` if it fits the network's input and output sizes (else `ModelError`)."""
    dims = interface.input_shape[1:] if interface.has_batch else interface.input_shape
    sizes = [d for d in dims if isinstance(d, int) and d >= 1]
    if len(sizes) != len(dims) or math.prod(sizes) != network.input_size:
        raise ModelError(
            f"cannot export with input shape {list(interface.input_shape)}: the network has "
            f"{network.input_size} inputs"
        )
    if interface.output_shape is not None:
        sizes = [d for d in interface.output_shape if isinstance(d, int) and d >= 1]
        open_dims = len(interface.output_shape) - len(sizes)
        if open_dims > 1 or math.prod(sizes) != network.output_size:
            raise ModelError(
                f"cannot export with output shape {list(interface.output_shape)}: the network "
                f"has {network.output_size} outputs"
            )
    if interface.input_name == interface.output_name:
        raise ModelError(f"cannot export with input and output both named {interface.input_name!r}")
    return interface


def _output_target(network: Network, interface: Interface) -> list[int] | None:
    """The Reshape target from the Gemm's [rows, m] to the declared output (None: none
    needed). An open output dimension (the batch) becomes -1."""
    if interface.output_shape is None:
        return None if interface.has_batch else [network.output_size]
    target = [d if isinstance(d, int) and d >= 1 else -1 for d in interface.output_shape]
    rows_fixed = not interface.has_batch or isinstance(interface.input_shape[0], int)
    if target == [-1, network.output_size] or (rows_fixed and target == [1, network.output_size]):
        return None
    return target


def _declared_output(network: Network, interface: Interface) -> tuple[Dim, ...]:
    if interface.output_shape is not None:
        return interface.output_shape
    if interface.has_batch:
        return (interface.input_shape[0], network.output_size)
    return (network.output_size,)


def to_onnx_model(
    network: Network, dtype: str | None = None, interface: Interface | None = None
) -> onnx.ModelProto:
    """The network as a checked ONNX model: Gemm (+ Relu) per layer, opset 17.

    `dtype` (float32 or float64) is the dtype of the weights and of the graph's input and
    output; None means the interface's element type (float32 without an interface). With
    `interface`, the graph input and output have its names and declared shapes (see the
    module docstring)."""
    if dtype is None:
        dtype = "float32" if interface is None else _ELEMENT_DTYPES.get(interface.elem_type, "")
    _, element_type = _export_dtype(dtype)
    interface = (
        _default_interface(network, element_type)
        if interface is None
        else _checked_interface(network, interface)
    )
    reserved = {interface.input_name, interface.output_name}

    def internal(name: str) -> str:
        while name in reserved:
            name += "_"
        return name

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = interface.input_name
    if len(interface.input_shape) != 2 or not interface.has_batch:
        flat = internal("input.flat")
        nodes.append(
            helper.make_node(
                "Flatten", [current], [flat], name=flat, axis=1 if interface.has_batch else 0
            )
        )
        current = flat
    target = _output_target(network, interface)
    layers = rounded_layers(network, dtype)
    for index, ((weights, bias), layer) in enumerate(zip(layers, network.layers, strict=True)):
        last = index == len(layers) - 1
        result = interface.output_name if last and target is None else internal("output.flat")
        weight_name = internal(f"layer{index}.weight")
        bias_name = internal(f"layer{index}.bias")
        initializers.append(numpy_helper.from_array(weights, weight_name))
        initializers.append(numpy_helper.from_array(bias, bias_name))
        gemm_name = internal(f"layer{index}.gemm")
        gemm_output = result if last and not layer.relu else gemm_name
        nodes.append(
            helper.make_node(
                "Gemm", [current, weight_name, bias_name], [gemm_output],
                name=gemm_name, transB=1,
            )
        )
        current = gemm_output
        if layer.relu:
            relu_name = internal(f"layer{index}.relu")
            relu_output = result if last else relu_name
            relu = helper.make_node("Relu", [current], [relu_output], name=relu_name)
            nodes.append(relu)
            current = relu_output
    if target is not None:
        shape_name = internal("output.shape")
        initializers.append(numpy_helper.from_array(np.array(target, np.int64), shape_name))
        nodes.append(
            helper.make_node(
                "Reshape", [current, shape_name], [interface.output_name],
                name=internal("output.reshape"),
            )
        )
    graph = helper.make_graph(
        nodes,
        network.name,
        [helper.make_tensor_value_info(interface.input_name, element_type,
                                       list(interface.input_shape))],
        [helper.make_tensor_value_info(interface.output_name, element_type,
                                       list(_declared_output(network, interface)))],
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


def save_onnx(
    network: Network,
    path: str | Path,
    dtype: str | None = None,
    interface: Interface | None = None,
) -> None:
    """Write the network to `path` as ONNX (atomically: all or nothing).

    With `interface` (the original's, `verifier.onnx_import.read_interface`), the file keeps
    the original's input and output names and declared shapes; `dtype` None means the
    interface's element type (float32 without one). See `to_onnx_model`."""
    atomic_write_bytes(path, to_onnx_model(network, dtype, interface).SerializeToString())
