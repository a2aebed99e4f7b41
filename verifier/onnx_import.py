"""ONNX importer: an ONNX graph of linear ops and ReLUs becomes the network IR.

Stage: **ONNX -> IR** -> domain and bounds -> witnesses -> stability search -> certification
-> compression -> equivalence -> certificate and report.

Contract
--------
`network_from_model` accepts a graph whose single input flows through a chain of linear ops
(Gemm, MatMul, Conv, BatchNormalization, elementwise Add/Sub/Mul/Div with constants, reshapes
and transposes) separated by ReLUs, and returns a `Network` whose layer l computes exactly the
composition of the linear ops between the (l-1)-th and l-th ReLU. Anything else is rejected
with an `UnsupportedModelError` naming the file, the node and the op; nothing is approximated
silently.

How it works
------------
Each tensor of the graph is either a constant (a numpy array) or an `_Affine` expression
`value = A @ h + c` (flattened in C order, with its ONNX shape) of `h`, the output of the last
ReLU (or the network input). A `Relu` closes the pending expression into an `AffineLayer` and
starts a new identity expression on its output; the graph output closes the last layer
(without ReLU) unless the graph ends right after a ReLU. Every op is an entry of the explicit
table `_OPS` (op type -> handler and allowed attributes); a handler only sees its node's inputs.

Conv is turned into its dense matrix (output elements x input elements), since the IR is a
chain of dense affine layers; memory grows accordingly (a 16-channel conv on a 32x32x3 image
is a 4096 x 3072 layer). Selections, transposes and normalizations before the first product of
a layer are kept as one-entry-per-row maps (`_RowMap`) so they never cost an n x n matrix.

Batch dimension: a graph input of rank >= 2 whose leading dimension is 0, 1 or symbolic has a
batch dimension; it is fixed to 1 (the IR is a function of ONE input) and dropped from
`Network.input_shape`.

Semantics of the stored weights (what the reference semantics reads as exact rationals)
--------------------------------------------------------------------------------------
Linear ops are composed in float64. When a layer is a plain Gemm (alpha = beta = 1) or
MatMul + Add of the graph's initializers, no arithmetic happens at all: the stored weights are
the initializer values themselves, bit for bit, in the graph's dtype. Folded layers (input
normalization, BatchNormalization, Conv turned dense, composed products) are the float64
results of that composition; each float64 operation rounds with relative error <= 2**-53, so
a folded layer may differ from the real-arithmetic composition of the ONNX values by that much.
The IR's folded float64 weights are, from then on, the network that every later stage proves
things about. A layer is stored in the graph's dtype (float32) whenever all its composed values
are exactly representable there (so a no-op fold such as ACAS Xu's zero `Sub` keeps float32),
and in float64 otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from verifier.errors import ModelError, UnsupportedModelError
from verifier.ir import AffineLayer, Network

FloatArray = npt.NDArray[np.float64]
AnyArray = npt.NDArray[Any]

_FLOAT_TYPES: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
}
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass(frozen=True)
class _RowMap:
    """A matrix with one entry per row: M[r, columns[r]] = coefficients[r], `width` columns.

    Selections, permutations (Transpose), broadcasts and diagonal scalings (normalization)
    stay in this form, so composing them with a later product costs no dense n x n matrix.
    """

    columns: npt.NDArray[np.intp]
    coefficients: FloatArray
    width: int

    def dense(self) -> FloatArray:
        matrix = np.zeros((self.columns.size, self.width))
        matrix[np.arange(self.columns.size), self.columns] = self.coefficients
        return matrix

    def left_multiplied(self, linear: FloatArray) -> FloatArray:
        """linear @ self."""
        contributions = linear * self.coefficients[None, :]
        result = np.zeros((linear.shape[0], self.width))
        if np.unique(self.columns).size == self.columns.size:
            result[:, self.columns] = contributions
        else:
            np.add.at(result.T, self.columns, contributions.T)
        return result


_Matrix: TypeAlias = "FloatArray | _RowMap | None"


@dataclasses.dataclass(frozen=True)
class _Affine:
    """value = matrix @ h + offset (flattened, C order), reshaped to `shape`.

    `h` is the output of layer `base - 1` (the network input when `base` is 0). A `matrix` of
    None is the identity (the tensor is `h` itself, maybe reshaped); an `offset` of None is
    exactly zero. Keeping both symbolic avoids any arithmetic on plain layers.
    """

    matrix: _Matrix
    offset: FloatArray | None
    shape: tuple[int, ...]
    base: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_identity(self) -> bool:
        return self.matrix is None and self.offset is None

    @property
    def before_weights(self) -> bool:
        """No weight matrix applied yet in this layer (only selections and scalings)."""
        return not isinstance(self.matrix, np.ndarray)

    def dense_matrix(self) -> FloatArray:
        if self.matrix is None:
            return np.eye(self.size)
        return self.matrix.dense() if isinstance(self.matrix, _RowMap) else self.matrix

    def dense_offset(self) -> FloatArray:
        return np.zeros(self.size) if self.offset is None else self.offset

    def _row_map(self) -> _RowMap:
        """The identity or row-map matrix as a row map (only when `before_weights`)."""
        if isinstance(self.matrix, _RowMap):
            return self.matrix
        return _RowMap(np.arange(self.size), np.ones(self.size), self.size)

    def reshaped(self, shape: tuple[int, ...]) -> _Affine:
        return dataclasses.replace(self, shape=shape)

    def reindexed(self, index: npt.NDArray[np.intp], shape: tuple[int, ...]) -> _Affine:
        """Element k of the result is element index[k] of self (exact: a selection)."""
        offset = None if self.offset is None else self.offset[index]
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            matrix = _RowMap(rows.columns[index], rows.coefficients[index], rows.width)
        else:
            matrix = self.dense_matrix()[index]
        return _Affine(matrix, offset, shape, self.base)

    def broadcast_to(self, shape: tuple[int, ...]) -> _Affine:
        if shape == self.shape:
            return self
        positions = np.arange(self.size).reshape(self.shape)
        return self.reindexed(np.broadcast_to(positions, shape).reshape(-1), shape)

    def mapped(self, linear: FloatArray, shape: tuple[int, ...]) -> _Affine:
        """linear @ self: a linear map of the flattened value."""
        matrix: FloatArray
        if self.matrix is None:
            matrix = linear
        elif isinstance(self.matrix, _RowMap):
            matrix = self.matrix.left_multiplied(linear)
        else:
            matrix = linear @ self.matrix
        offset = None if self.offset is None else linear @ self.offset
        return _Affine(matrix, offset, shape, self.base)

    def scaled(self, factors: FloatArray) -> _Affine:
        """Elementwise product with flattened `factors`."""
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            matrix = _RowMap(rows.columns, rows.coefficients * factors, rows.width)
        else:
            matrix = self.dense_matrix() * factors[:, None]
        offset = None if self.offset is None else self.offset * factors
        return _Affine(matrix, offset, self.shape, self.base)

    def divided(self, divisors: FloatArray) -> _Affine:
        """Elementwise quotient by flattened nonzero `divisors`."""
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            matrix = _RowMap(rows.columns, rows.coefficients / divisors, rows.width)
        else:
            matrix = self.dense_matrix() / divisors[:, None]
        offset = None if self.offset is None else self.offset / divisors
        return _Affine(matrix, offset, self.shape, self.base)

    def shifted(self, values: FloatArray) -> _Affine:
        offset = values.copy() if self.offset is None else self.offset + values
        return dataclasses.replace(self, offset=offset)

    def combined(self, other: _Affine, sign: float) -> _Affine:
        """self + sign * other, both of the same base and shape."""
        matrix = self.dense_matrix() + sign * other.dense_matrix()
        offset = self.dense_offset() + sign * other.dense_offset()
        return _Affine(matrix, offset, self.shape, self.base)


_Value: TypeAlias = "AnyArray | _Affine"


class _Chain:
    """The layers built so far; `base` counts them (the base of the current expressions)."""

    def __init__(self, source: str, input_size: int, dtype: np.dtype[Any]) -> None:
        self.source = source
        self.dtype = dtype
        self.layers: list[AffineLayer] = []
        self.folded: list[str] = []
        self.base_size = input_size

    @property
    def base(self) -> int:
        return len(self.layers)

    def note(self, kind: str) -> None:
        if kind not in self.folded:
            self.folded.append(kind)

    def close(self, value: _Affine, relu: bool) -> _Affine:
        """Turn `value` into a layer; return the identity expression of the layer's output."""
        weights = _stored(value.dense_matrix(), self.dtype)
        bias = _stored(value.dense_offset(), self.dtype)
        self.layers.append(AffineLayer(weights, bias, relu))
        self.base_size = value.size
        return _Affine(None, None, value.shape, self.base)


def _stored(values: FloatArray, dtype: np.dtype[Any]) -> AnyArray:
    """The graph's dtype when it holds `values` exactly, else float64 (never rounds)."""
    narrowed = values.astype(dtype)
    if np.array_equal(narrowed.astype(np.float64), values):
        return narrowed
    return values


@dataclasses.dataclass(frozen=True)
class _Node:
    """One ONNX node with its decoded attributes, for handlers and error messages."""

    proto: onnx.NodeProto
    label: str
    source: str
    attributes: dict[str, Any]

    @property
    def op(self) -> str:
        return str(self.proto.op_type)

    def error(self, message: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{self.source}: node {self.label} ({self.op}): {message}")

    def int_attribute(self, name: str, default: int) -> int:
        return int(self.attributes.get(name, default))

    def float_attribute(self, name: str, default: float) -> float:
        return float(self.attributes.get(name, default))

    def ints_attribute(self, name: str) -> list[int] | None:
        value = self.attributes.get(name)
        return None if value is None else [int(v) for v in value]


_Inputs: TypeAlias = "Sequence[_Value | None]"
_Handler: TypeAlias = "Callable[[_Node, _Inputs, _Chain], list[_Value]]"


# ---------------------------------------------------------------- input access helpers


def _input(node: _Node, inputs: _Inputs, position: int) -> _Value:
    if position >= len(inputs) or inputs[position] is None:
        raise node.error(f"input {position} is missing")
    return cast(_Value, inputs[position])


def _optional_input(inputs: _Inputs, position: int) -> _Value | None:
    return inputs[position] if position < len(inputs) else None


def _constant(node: _Node, inputs: _Inputs, position: int, role: str) -> AnyArray:
    value = _input(node, inputs, position)
    if isinstance(value, _Affine):
        raise node.error(
            f"input {position} ('{node.proto.input[position]}', the {role}) depends on the "
            "network input; it must be a constant"
        )
    return value


def _optional_constant(node: _Node, inputs: _Inputs, position: int, role: str) -> AnyArray | None:
    if _optional_input(inputs, position) is None:
        return None
    return _constant(node, inputs, position, role)


def _as_float(array: AnyArray) -> FloatArray:
    return np.asarray(array, dtype=np.float64)


def _broadcast_shape(node: _Node, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise node.error(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def _nonlinear(node: _Node) -> UnsupportedModelError:
    return node.error(
        "combines two input-dependent tensors nonlinearly; only products with constants are "
        "linear"
    )


# ---------------------------------------------------------------- elementwise arithmetic


def _integer_divide(left: AnyArray, right: AnyArray) -> AnyArray:
    """ONNX integer Div truncates toward zero."""
    quotient = np.abs(left) // np.abs(right)
    return np.asarray(quotient * np.sign(left) * np.sign(right))


def _divide_constants(left: AnyArray, right: AnyArray) -> AnyArray:
    if left.dtype.kind in "iu" and right.dtype.kind in "iu":
        return _integer_divide(left, right)
    return np.asarray(np.divide(left, right))


_CONSTANT_ARITHMETIC: dict[str, Callable[[AnyArray, AnyArray], AnyArray]] = {
    "Add": lambda a, b: np.asarray(a + b),
    "Sub": lambda a, b: np.asarray(a - b),
    "Mul": lambda a, b: np.asarray(a * b),
    "Div": _divide_constants,
}


def _arithmetic(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Add, Sub, Mul, Div with numpy broadcasting; at most one operand may be variable,
    except for Add/Sub of two expressions of the same layer input (still affine)."""
    left, right = _input(node, inputs, 0), _input(node, inputs, 1)
    if not isinstance(left, _Affine) and not isinstance(right, _Affine):
        return [_CONSTANT_ARITHMETIC[node.op](left, right)]
    if isinstance(left, _Affine) and isinstance(right, _Affine):
        if node.op not in ("Add", "Sub"):
            raise _nonlinear(node)
        shape = _broadcast_shape(node, left.shape, right.shape)
        chain.note(f"{node.op} of two linear branches")
        sign = -1.0 if node.op == "Sub" else 1.0
        return [left.broadcast_to(shape).combined(right.broadcast_to(shape), sign)]
    variable_first = isinstance(left, _Affine)
    variable = cast(_Affine, left if variable_first else right)
    constant = cast(AnyArray, right if variable_first else left)
    shape = _broadcast_shape(node, variable.shape, tuple(constant.shape))
    operand = variable.broadcast_to(shape)
    values = np.broadcast_to(_as_float(constant), shape).reshape(-1)
    on_layer_input = variable.before_weights
    if node.op != "Add" or on_layer_input:
        chain.note(f"{node.op} normalization" if on_layer_input else f"{node.op} folded")
    if node.op == "Add":
        return [operand.shifted(values)]
    if node.op == "Sub":
        if variable_first:
            return [operand.shifted(-values)]
        return [operand.scaled(np.full(values.size, -1.0)).shifted(values)]
    if node.op == "Mul":
        return [operand.scaled(values)]
    if not variable_first:
        raise node.error("divides a constant by an input-dependent tensor (nonlinear)")
    if np.any(values == 0):
        raise node.error("divides by a constant containing zero")
    return [operand.divided(values)]


# ---------------------------------------------------------------- matrix products


def _weight_block(node: _Node, weights: AnyArray) -> FloatArray:
    if weights.ndim not in (1, 2):
        raise node.error(f"constant operand of rank {weights.ndim} is not supported (1 or 2)")
    return _as_float(weights if weights.ndim == 2 else weights[:, None])


def _weight_rows(node: _Node, weights: AnyArray) -> FloatArray:
    """A left operand (m, k) or (k,) as an (m, k) or (1, k) block."""
    block: FloatArray = _weight_block(node, weights.T).T
    return block


def _kron_identity(count: int, block: FloatArray) -> FloatArray:
    return block if count == 1 else np.asarray(np.kron(np.eye(count), block), dtype=np.float64)


def _data_times(node: _Node, data: _Affine, weights: AnyArray, chain: _Chain) -> _Affine:
    """data @ weights, weights a constant of shape (k, m) or (k,)."""
    block = _weight_block(node, weights)
    if not data.shape or data.shape[-1] != block.shape[0]:
        raise node.error(f"cannot multiply a tensor of shape {data.shape} by {weights.shape}")
    leading = data.shape[:-1]
    shape = leading + (tuple(weights.shape[1:]) if weights.ndim == 2 else ())
    if not data.before_weights:
        chain.note(f"{node.op} composition")
    return data.mapped(_kron_identity(math.prod(leading), block.T), shape)


def _times_data(node: _Node, weights: AnyArray, data: _Affine, chain: _Chain) -> _Affine:
    """weights @ data, weights a constant of shape (m, k) or (k,)."""
    block = _weight_rows(node, weights)
    rows = tuple(weights.shape[:1]) if weights.ndim == 2 else ()
    if not data.before_weights:
        chain.note(f"{node.op} composition")
    if len(data.shape) == 1 and data.shape[0] == block.shape[1]:
        return data.mapped(block, rows)
    if len(data.shape) < 2 or data.shape[-2] != block.shape[1]:
        raise node.error(f"cannot multiply {weights.shape} by a tensor of shape {data.shape}")
    leading, columns = data.shape[:-2], data.shape[-1]
    per_item = np.asarray(np.kron(block, np.eye(columns)), dtype=np.float64)
    linear = _kron_identity(math.prod(leading), per_item)
    return data.mapped(linear, leading + rows + (columns,))


def _matmul(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    left, right = _input(node, inputs, 0), _input(node, inputs, 1)
    if isinstance(left, _Affine) and isinstance(right, _Affine):
        raise _nonlinear(node)
    if isinstance(left, _Affine):
        return [_data_times(node, left, cast(AnyArray, right), chain)]
    if isinstance(right, _Affine):
        return [_times_data(node, left, right, chain)]
    return [np.asarray(np.matmul(left, right))]


def _transposed_matrix(node: _Node, value: _Value, role: str) -> _Value:
    if isinstance(value, _Affine):
        if len(value.shape) != 2:
            raise node.error(f"{role} must be 2-D, got shape {value.shape}")
        return _transpose_value(value, (1, 0))
    return np.asarray(value.T)


def _gemm(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Y = alpha * A' @ B' + beta * C, A' = A or A^T, B' = B or B^T; one of A, B constant."""
    left, right = _input(node, inputs, 0), _input(node, inputs, 1)
    if node.int_attribute("transA", 0):
        left = _transposed_matrix(node, left, "A")
    if node.int_attribute("transB", 0):
        right = _transposed_matrix(node, right, "B")
    alpha = node.float_attribute("alpha", 1.0)
    beta = node.float_attribute("beta", 1.0)
    product: _Value
    if isinstance(left, _Affine) and isinstance(right, _Affine):
        raise _nonlinear(node)
    if isinstance(left, _Affine):
        right = cast(AnyArray, right)
        weights = _as_float(right) if alpha == 1.0 else _as_float(right) * alpha
        product = _data_times(node, left, weights, chain)
    elif isinstance(right, _Affine):
        weights = _as_float(left) if alpha == 1.0 else _as_float(left) * alpha
        product = _times_data(node, weights, right, chain)
    else:
        product = np.asarray(alpha * (left @ right))
    if alpha != 1.0:
        chain.note("Gemm alpha")
    addend = _optional_constant(node, inputs, 2, "bias C")
    if addend is None:
        return [product]
    scaled = _as_float(addend) if beta == 1.0 else _as_float(addend) * beta
    if beta != 1.0:
        chain.note("Gemm beta")
    shape = tuple(product.shape)
    if _broadcast_shape(node, shape, tuple(scaled.shape)) != shape:
        raise node.error(f"bias C of shape {scaled.shape} does not broadcast to {shape}")
    if isinstance(product, _Affine):
        return [product.shifted(np.broadcast_to(scaled, shape).reshape(-1))]
    return [np.asarray(product + scaled)]


# ---------------------------------------------------------------- ReLU, shapes, no-ops


def _relu(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    if isinstance(value, _Affine):
        return [chain.close(value, relu=True)]
    return [np.maximum(value, 0)]


def _reshape_value(value: _Value, shape: tuple[int, ...]) -> _Value:
    if isinstance(value, _Affine):
        return value.reshaped(shape)
    return value.reshape(shape)


def _shape_of(value: _Value) -> tuple[int, ...]:
    return value.shape if isinstance(value, _Affine) else tuple(value.shape)


def _flatten(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    shape = _shape_of(value)
    axis = node.int_attribute("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise node.error(f"attribute axis={node.attributes['axis']} is out of range for {shape}")
    return [_reshape_value(value, (math.prod(shape[:axis]), math.prod(shape[axis:])))]


def _reshape_target(node: _Node, shape: tuple[int, ...], request: list[int]) -> tuple[int, ...]:
    allow_zero = node.int_attribute("allowzero", 0) == 1
    target = [shape[i] if d == 0 and not allow_zero and i < len(shape) else d
              for i, d in enumerate(request)]
    if target.count(-1) > 1 or any(d < -1 for d in target) or 0 in target:
        raise node.error(f"shape {request} is not a valid reshape of {shape}")
    known = math.prod(d for d in target if d != -1)
    size = math.prod(shape)
    if -1 in target:
        if known == 0 or size % known:
            raise node.error(f"cannot reshape {shape} to {request}")
        target[target.index(-1)] = size // known
    if math.prod(target) != size:
        raise node.error(f"cannot reshape {shape} to {request}")
    return tuple(target)


def _reshape(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    if "shape" in node.attributes:
        request = node.ints_attribute("shape") or []
    else:
        request = [int(d) for d in _constant(node, inputs, 1, "target shape").reshape(-1)]
    return [_reshape_value(value, _reshape_target(node, _shape_of(value), request))]


def _axes(node: _Node, inputs: _Inputs) -> list[int] | None:
    if "axes" in node.attributes:
        return node.ints_attribute("axes")
    axes = _optional_constant(node, inputs, 1, "axes")
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def _squeeze(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    shape = _shape_of(value)
    axes = _axes(node, inputs)
    chosen = {i for i, d in enumerate(shape) if d == 1} if axes is None else {
        a + len(shape) if a < 0 else a for a in axes
    }
    if any(not 0 <= a < len(shape) or shape[a] != 1 for a in chosen):
        raise node.error(f"axes {axes} do not name dimensions of size 1 in {shape}")
    return [_reshape_value(value, tuple(d for i, d in enumerate(shape) if i not in chosen))]


def _unsqueeze(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    shape = _shape_of(value)
    axes = _axes(node, inputs)
    if axes is None:
        raise node.error("axes are missing")
    rank = len(shape) + len(axes)
    chosen = {a + rank if a < 0 else a for a in axes}
    if len(chosen) != len(axes) or any(not 0 <= a < rank for a in chosen):
        raise node.error(f"axes {axes} are invalid for shape {shape}")
    dims = iter(shape)
    return [_reshape_value(value, tuple(1 if i in chosen else next(dims) for i in range(rank)))]


def _transpose_value(value: _Value, permutation: Sequence[int]) -> _Value:
    if not isinstance(value, _Affine):
        return np.transpose(value, permutation)
    if list(permutation) == sorted(permutation):
        return value
    positions = np.arange(value.size).reshape(value.shape).transpose(permutation)
    shape = tuple(int(d) for d in positions.shape)
    return value.reindexed(positions.reshape(-1), shape)


def _transpose(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    value = _input(node, inputs, 0)
    rank = len(_shape_of(value))
    permutation = node.ints_attribute("perm") or list(reversed(range(rank)))
    if sorted(permutation) != list(range(rank)):
        raise node.error(f"attribute perm={permutation} is not a permutation of {rank} axes")
    if isinstance(value, _Affine) and permutation != list(range(rank)):
        chain.note("Transpose")
    return [_transpose_value(value, permutation)]


def _identity(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    return [_input(node, inputs, 0)]


def _dropout(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Inference-mode Dropout is the identity; its mask output is all true."""
    value = _input(node, inputs, 0)
    training = _optional_constant(node, inputs, 2, "training_mode")
    if training is not None and bool(np.any(training)):
        raise node.error("training_mode is true; only inference-mode Dropout is supported")
    return [value, np.ones(_shape_of(value), dtype=bool)]


def _constant_node(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    if len(node.attributes) != 1:
        raise node.error("needs exactly one value attribute")
    (name, value), = node.attributes.items()
    if name == "value":
        return [numpy_helper.to_array(value)]
    dtypes = {"value_float": np.float32, "value_floats": np.float32,
              "value_int": np.int64, "value_ints": np.int64}
    return [np.asarray(value, dtype=dtypes[name])]


# ---------------------------------------------------------------- BatchNormalization, Conv


def _channel_broadcast(values: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """Per-channel values (axis 1) spread over a tensor of `shape`, flattened."""
    per_channel = values.reshape((1, -1) + (1,) * (len(shape) - 2))
    return np.broadcast_to(per_channel, shape).reshape(-1)


def _batch_normalization(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """y = scale * (x - mean) / sqrt(var + epsilon) + B, folded to y = f * x + (B - mean * f)."""
    if node.int_attribute("training_mode", 0):
        raise node.error("attribute training_mode=1 is not supported (inference only)")
    if node.int_attribute("spatial", 1) != 1:
        raise node.error("attribute spatial=0 is not supported")
    value = _input(node, inputs, 0)
    shape = _shape_of(value)
    roles = ("scale", "bias B", "input_mean", "input_var")
    scale, bias, mean, variance = (
        _as_float(_constant(node, inputs, i + 1, role)).reshape(-1) for i, role in enumerate(roles)
    )
    channels = shape[1] if len(shape) >= 2 else -1
    if any(p.size != channels for p in (scale, bias, mean, variance)):
        raise node.error(f"parameters do not match the {channels} channels of shape {shape}")
    epsilon = node.float_attribute("epsilon", 1e-5)
    factor = scale / np.sqrt(variance + epsilon)
    shift = bias - mean * factor
    if not isinstance(value, _Affine):
        folded = value * factor.reshape((1, -1) + (1,) * (len(shape) - 2))
        return [np.asarray(folded + shift.reshape((1, -1) + (1,) * (len(shape) - 2)))]
    chain.note("BatchNormalization")
    scaled = value.scaled(_channel_broadcast(factor, shape))
    return [scaled.shifted(_channel_broadcast(shift, shape))]


@dataclasses.dataclass(frozen=True)
class _ConvGeometry:
    """Spatial geometry of one Conv: per spatial axis input, kernel, output sizes."""

    inputs: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    outputs: tuple[int, ...]


def _conv_geometry(node: _Node, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> _ConvGeometry:
    rank = len(spatial)
    strides = tuple(node.ints_attribute("strides") or [1] * rank)
    dilations = tuple(node.ints_attribute("dilations") or [1] * rank)
    pads = node.ints_attribute("pads") or [0] * (2 * rank)
    declared = node.ints_attribute("kernel_shape")
    if declared is not None and tuple(declared) != kernel:
        raise node.error(f"attribute kernel_shape={declared} does not match weights {kernel}")
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise node.error(f"strides/dilations/pads do not match {rank} spatial axes")
    if min(strides + dilations) < 1 or min(pads) < 0:
        raise node.error("strides and dilations must be positive and pads non-negative")
    auto_pad = node.attributes.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        outputs = [-(-n // s) for n, s in zip(spatial, strides, strict=True)]
        totals = [max(0, (o - 1) * s + e - n)
                  for o, s, e, n in zip(outputs, strides, extents, spatial, strict=True)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        pads = begin + [t - b for t, b in zip(totals, begin, strict=True)]
    elif auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad != "NOTSET":
        raise node.error(f"attribute auto_pad={auto_pad} is not supported")
    outputs = [(n + pads[i] + pads[i + rank] - e) // s + 1
               for i, (n, e, s) in enumerate(zip(spatial, extents, strides, strict=True))]
    if min(outputs) < 1:
        raise node.error(f"kernel does not fit the input of spatial shape {spatial}")
    return _ConvGeometry(spatial, kernel, strides, dilations, tuple(pads[:rank]), tuple(outputs))


def _conv_matrix(
    weights: FloatArray, groups: int, channels: int, geometry: _ConvGeometry
) -> FloatArray:
    """The dense matrix of a convolution of one (channels, *spatial) input, exactly.

    Each (output position, input position) pair is reached by at most one kernel offset
    (offset = (input - output * stride + pad) / dilation), so every matrix entry is a single
    weight or zero: the matrix holds the ONNX weights themselves, with no arithmetic.
    """
    out_channels, group_channels = weights.shape[:2]
    per_group = out_channels // groups
    in_size, out_size = math.prod(geometry.inputs), math.prod(geometry.outputs)
    matrix = np.zeros((out_channels * out_size, channels * in_size))
    out_positions = np.indices(geometry.outputs).reshape(len(geometry.outputs), -1)
    out_flat = np.arange(out_size)
    out_channel = np.arange(out_channels)
    in_channel = (out_channel // per_group)[:, None] * group_channels + np.arange(group_channels)
    kernel_weights = weights.reshape(out_channels, group_channels, -1)
    for kernel_index, offset in enumerate(np.ndindex(*geometry.kernel)):
        position = [
            out_positions[d] * geometry.strides[d] - geometry.pads_begin[d]
            + offset[d] * geometry.dilations[d]
            for d in range(len(offset))
        ]
        inside = [(p >= 0) & (p < n) for p, n in zip(position, geometry.inputs, strict=True)]
        valid = np.all(inside, axis=0)
        in_flat = np.ravel_multi_index([p[valid] for p in position], geometry.inputs)
        rows = out_channel[:, None, None] * out_size + out_flat[valid][None, None, :]
        columns = in_channel[:, :, None] * in_size + in_flat[None, None, :]
        values = kernel_weights[:, :, kernel_index, None]
        matrix[rows, columns] = np.broadcast_to(values, columns.shape)
    return matrix


def _conv(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Conv (any number of spatial axes) as an exact dense linear map, plus its bias."""
    value = _input(node, inputs, 0)
    if not isinstance(value, _Affine):
        raise node.error("convolution of a constant tensor is not supported")
    weights = _as_float(_constant(node, inputs, 1, "weights W"))
    bias = _optional_constant(node, inputs, 2, "bias B")
    groups = node.int_attribute("group", 1)
    shape = value.shape
    if len(shape) < 3 or weights.ndim != len(shape):
        raise node.error(f"input of shape {shape} does not match weights of shape {weights.shape}")
    batch, channels = shape[0], shape[1]
    out_channels = weights.shape[0]
    if groups < 1 or channels % groups or out_channels % groups:
        raise node.error(f"attribute group={groups} does not divide the channels")
    if weights.shape[1] * groups != channels:
        raise node.error(f"weights of shape {weights.shape} do not match {channels} channels")
    geometry = _conv_geometry(node, shape[2:], tuple(weights.shape[2:]))
    matrix = _conv_matrix(weights, groups, channels, geometry)
    chain.note("Conv->dense")
    out_shape = (batch, out_channels, *geometry.outputs)
    result = value.mapped(_kron_identity(batch, matrix), out_shape)
    if bias is None:
        return [result]
    if bias.size != out_channels:
        raise node.error(f"bias of size {bias.size} does not match {out_channels} channels")
    return [result.shifted(_channel_broadcast(_as_float(bias), out_shape))]


# ---------------------------------------------------------------- the op table


@dataclasses.dataclass(frozen=True)
class _OpSpec:
    handler: _Handler
    attributes: frozenset[str] = frozenset()


_OPS: dict[str, _OpSpec] = {
    "Add": _OpSpec(_arithmetic),
    "BatchNormalization": _OpSpec(
        _batch_normalization, frozenset({"epsilon", "momentum", "spatial", "training_mode"})
    ),
    "Constant": _OpSpec(
        _constant_node,
        frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"}),
    ),
    "Conv": _OpSpec(
        _conv, frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
    ),
    "Div": _OpSpec(_arithmetic),
    "Dropout": _OpSpec(_dropout, frozenset({"ratio", "seed", "is_test"})),
    "Flatten": _OpSpec(_flatten, frozenset({"axis"})),
    "Gemm": _OpSpec(_gemm, frozenset({"alpha", "beta", "transA", "transB"})),
    "Identity": _OpSpec(_identity),
    "MatMul": _OpSpec(_matmul),
    "Mul": _OpSpec(_arithmetic),
    "Relu": _OpSpec(_relu),
    "Reshape": _OpSpec(_reshape, frozenset({"allowzero", "shape"})),
    "Squeeze": _OpSpec(_squeeze, frozenset({"axes"})),
    "Sub": _OpSpec(_arithmetic),
    "Transpose": _OpSpec(_transpose, frozenset({"perm"})),
    "Unsqueeze": _OpSpec(_unsqueeze, frozenset({"axes"})),
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_OPS))


# ---------------------------------------------------------------- graph walking


def _node_label(node: onnx.NodeProto, index: int) -> str:
    if node.name:
        return str(node.name)
    output = node.output[0] if node.output else "?"
    return f"#{index} (output '{output}')"


def _op_name(node: onnx.NodeProto) -> str:
    return str(node.op_type) if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def _reject_unsupported_ops(graph: onnx.GraphProto, source: str) -> None:
    unsupported = [
        f"{_node_label(node, index)} ({_op_name(node)})"
        for index, node in enumerate(graph.node)
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in _OPS
    ]
    if unsupported:
        raise UnsupportedModelError(
            f"{source}: unsupported nodes: {', '.join(unsupported)}; "
            f"supported ops: {', '.join(SUPPORTED_OPS)}"
        )


def _shown(value: Any) -> str:
    """A one-line rendering of an attribute value for error messages."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (int, float, str)) or (isinstance(value, list) and len(value) <= 8):
        return repr(value)
    return f"<{type(value).__name__}>"


def _decoded_node(proto: onnx.NodeProto, index: int, source: str) -> _Node:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute}
    node = _Node(proto, _node_label(proto, index), source, attributes)
    unknown = sorted(set(attributes) - _OPS[node.op].attributes)
    if unknown:
        raise node.error(f"unsupported attribute {unknown[0]}={_shown(attributes[unknown[0]])}")
    return node


def _network_input(graph: onnx.GraphProto, constants: set[str], source: str) -> onnx.ValueInfoProto:
    """The one graph input that is not an initializer (old ONNX lists weights as inputs)."""
    candidates = [value for value in graph.input if value.name not in constants]
    if len(candidates) != 1:
        names = ", ".join(f"'{value.name}'" for value in candidates) or "none"
        raise UnsupportedModelError(
            f"{source}: expected exactly one network input (not an initializer), found {names}"
        )
    chosen: onnx.ValueInfoProto = candidates[0]
    return chosen


def _input_dtype(value: onnx.ValueInfoProto, source: str) -> np.dtype[Any]:
    element = value.type.tensor_type.elem_type
    if element not in _FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(element) if element else "undefined"
        raise UnsupportedModelError(
            f"{source}: input '{value.name}' has element type {name}; only FLOAT and DOUBLE"
        )
    return _FLOAT_TYPES[element]


def _input_shape(value: onnx.ValueInfoProto, source: str) -> tuple[tuple[int, ...], bool]:
    """(the input's shape with any batch dimension fixed to 1, whether it has one)."""
    if not value.type.tensor_type.HasField("shape"):
        raise UnsupportedModelError(f"{source}: input '{value.name}' has no declared shape")
    dims = list(value.type.tensor_type.shape.dim)
    if not dims:
        raise UnsupportedModelError(f"{source}: input '{value.name}' is a scalar")
    leading = dims[0]
    has_batch = len(dims) >= 2 and (
        not leading.HasField("dim_value") or leading.dim_value in (0, 1)
    )
    shape = [1] if has_batch else []
    for axis, dim in enumerate(dims[1:] if has_batch else dims, start=int(has_batch)):
        if not dim.HasField("dim_value") or dim.dim_value < 1:
            shown = dim.dim_param if dim.HasField("dim_param") else dim.dim_value
            raise UnsupportedModelError(
                f"{source}: input '{value.name}' has dimension {shown!r} at axis {axis}; only a "
                "leading batch dimension may be symbolic or 0"
            )
        shape.append(int(dim.dim_value))
    return tuple(shape), has_batch


def _needed_nodes(
    graph: onnx.GraphProto, output: str, available: set[str], source: str
) -> list[int]:
    """Indices of the nodes the output depends on, in a topological order (file order
    where possible). Nodes feeding nothing are ignored (they cannot change the output)."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and (name in producer or name in available):
                raise ModelError(f"{source}: tensor '{name}' is defined more than once")
            if name:
                producer[name] = index
    needed: set[int] = set()
    pending = [output]
    while pending:
        name = pending.pop()
        if name in available:
            continue
        if name not in producer:
            raise ModelError(f"{source}: tensor '{name}' is used but never defined")
        if producer[name] not in needed:
            needed.add(producer[name])
            pending.extend(n for n in graph.node[producer[name]].input if n)
    order: list[int] = []
    defined = set(available)
    remaining = sorted(needed)
    while remaining:
        waiting = []
        for index in remaining:  # one pass suffices for a graph stored in topological order
            if all(not name or name in defined for name in graph.node[index].input):
                order.append(index)
                defined.update(graph.node[index].output)
            else:
                waiting.append(index)
        if len(waiting) == len(remaining):
            raise ModelError(f"{source}: the graph has a cycle")
        remaining = waiting
    return order


def _chain_error(node: _Node, name: str, base: int, current: int) -> UnsupportedModelError:
    where = "the network input" if base == 0 else f"the output of ReLU layer {base - 1}"
    return node.error(
        f"input '{name}' is computed from {where}, but {current} ReLU layer(s) were already "
        "applied: the graph is not a chain of affine layers and ReLUs (branches and skip "
        "connections are not supported)"
    )


def _walk(graph: onnx.GraphProto, chain: _Chain, values: dict[str, _Value], output: str) -> None:
    for index in _needed_nodes(graph, output, set(values), chain.source):
        node = _decoded_node(graph.node[index], index, chain.source)
        inputs: list[_Value | None] = []
        for name in node.proto.input:
            if name and name not in values:
                raise node.error(f"input '{name}' is an output this importer does not produce")
            value = values[name] if name else None
            if isinstance(value, _Affine) and value.base != chain.base:
                raise _chain_error(node, name, value.base, chain.base)
            inputs.append(value)
        results = _OPS[node.op].handler(node, inputs, chain)
        for name, result in zip(node.proto.output, results, strict=False):
            if name:
                values[name] = result


def network_from_model(model: onnx.ModelProto, source: str = "<model>") -> Network:
    """The network IR of an ONNX model; `source` names the model in error messages."""
    graph = model.graph
    _reject_unsupported_ops(graph, source)
    if graph.sparse_initializer:
        raise UnsupportedModelError(f"{source}: sparse initializers are not supported")
    values: dict[str, _Value] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    network_input = _network_input(graph, set(values), source)
    if len(graph.output) != 1:
        names = ", ".join(f"'{value.name}'" for value in graph.output) or "none"
        raise UnsupportedModelError(f"{source}: expected exactly one graph output, found {names}")
    output = graph.output[0].name
    shape, has_batch = _input_shape(network_input, source)
    chain = _Chain(source, math.prod(shape), _input_dtype(network_input, source))
    values[network_input.name] = _Affine(None, None, shape, 0)
    _walk(graph, chain, values, output)
    final = values.get(output)
    if not isinstance(final, _Affine):
        raise UnsupportedModelError(f"{source}: output '{output}' does not depend on the input")
    if final.base != chain.base:
        raise UnsupportedModelError(
            f"{source}: output '{output}' bypasses the last ReLU; the graph is not a chain"
        )
    if not final.is_identity or not chain.layers:
        chain.close(final, relu=False)
    name = Path(source).stem if source != "<model>" else (graph.name or "network")
    return Network(
        tuple(chain.layers),
        input_shape=shape[1:] if has_batch else shape,
        folded_ops=tuple(chain.folded),
        name=name,
    )


def load_network(path: str | Path) -> Network:
    """Read an ONNX file and import it (`ModelError` naming the file when it cannot)."""
    source = str(path)
    if not Path(path).is_file():
        raise ModelError(f"{source}: file not found")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises several unrelated types for garbage input
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"{source}: not an ONNX model ({detail})") from error
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"{source}: not an ONNX model (no graph)")
    return network_from_model(model, source)
