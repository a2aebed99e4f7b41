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
silently: the one op that cannot be folded exactly (BatchNormalization) is named in
`Network.folded_ops` as rounded (see below).

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
The reference semantics is exact real arithmetic over the ONNX constants read as the exact
rationals they are (every finite float is one). ONNX runtimes evaluate a float32 graph in
float32; that rounding is NOT part of the reference semantics. An imported layer is the exact
real composition of its ops on those constants:
- `Sub(x, m)` is exactly x - m, `Mul(x, k)` exactly k * x, `Add(x, c)` exactly x + c, and
  `Div(x, s)` exactly x * (1/s) with s the exact rational of the stored float (so dividing by
  the float32 0.3081 gives weights that no float holds);
- Gemm is exactly alpha * A' @ B' + beta * C with alpha and beta the exact values of the
  (float32) attributes; MatMul chains, Add/Sub of two branches, transposes, reshapes and the
  placement of Conv kernels into a dense matrix are exact.
Composition runs on floats wherever that is provably exact (error-free transformations prove
each float product and sum exact: Dekker's two-product and Knuth's two-sum with a zero error
term; float matrix products are used only when every term and partial sum fits on one 53-bit
integer grid), and otherwise on exact rationals (`RationalArray`: integer numerators over one
common denominator; sparse, so a convolution's zeros cost nothing). Each stored array is then
- bit for bit the ONNX initializer, in the graph's dtype, when no arithmetic happened (a plain
  Gemm with alpha = beta = 1, or MatMul + Add): the fast path;
- a float array (the graph's dtype when it holds every value exactly, else float64) when every
  composed value is exactly a float, e.g. ACAS Xu's all-zero `Sub` keeps float32;
- otherwise an object array of `fractions.Fraction`: the exact composed values. Evaluate it
  with `AffineLayer.float_weights` (float64, rounded) for speed, `exact_weights` for proofs.

The exception: BatchNormalization computes scale * (x - mean) / sqrt(var + epsilon) + B, and a
square root is irrational in general, so no rational layer equals it. Its layer is folded in
float64: the exact composition so far is rounded to nearest float64 there, and the fold and
every later op of that layer run in float64 (relative error <= 2**-53 per op), and
`Network.folded_ops` records "BatchNormalization (float64-rounded: sqrt)". The IR's
float64 layer is then, from there on, the network every later stage proves things about: it
is the float64 rounding of the ONNX semantics, not the ONNX semantics itself. Likewise a float
op on two constants (constant folding left in the graph) that no float64 holds exactly is
recorded as "<op> of constants (float64-rounded)".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from .errors import ModelError, UnsupportedModelError
from .exact import RationalArray
from .ir import AffineLayer, Network

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
ObjArray = npt.NDArray[np.object_]
AnyArray = npt.NDArray[Any]

_FLOAT_TYPES: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
}
_DEFAULT_DOMAINS = ("", "ai.onnx")
BATCH_NORMALIZATION_NOTE = "BatchNormalization (float64-rounded: sqrt)"


# ---------------------------------------------------------------- exact float arithmetic
#
# These decide whether float64 arithmetic on exact values happened to be exact; a False or
# None answer only sends the work to the rational path, so they may be conservative.

_SPLITTER = 2.0**27 + 1.0  # Veltkamp's constant: splits a float64 into two 26-bit halves
_DEKKER_LOW, _DEKKER_HIGH = 2.0**-450, 2.0**450  # magnitudes where no step under/overflows


def _split(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    scaled = _SPLITTER * values
    high = scaled - (scaled - values)
    return high, values - high


def _product_if_exact(left: FloatArray, right: FloatArray) -> FloatArray | None:
    """left * right (same shapes) when every product is exactly a float64, else None.

    Dekker's two-product: with no overflow or underflow (every nonzero magnitude within
    [2**-450, 2**450]), p + error equals the real product exactly, so error == 0 proves p
    exact. Values outside that range are not tried (None).
    """
    for values in (left, right):
        magnitudes = np.abs(values[values != 0])
        if magnitudes.size and (magnitudes.min() < _DEKKER_LOW or magnitudes.max() > _DEKKER_HIGH):
            return None
    product = left * right
    left_high, left_low = _split(left)
    right_high, right_low = _split(right)
    error = left_low * right_low - (
        ((product - left_high * right_high) - left_low * right_high) - left_high * right_low
    )
    return None if np.any(error) else product


def _sum_if_exact(left: FloatArray, right: FloatArray) -> FloatArray | None:
    """left + right (same shapes) when every sum is exactly a float64, else None.

    Knuth's two-sum is error-free for all finite floats (subnormals included) unless the sum
    overflows, which the finiteness check catches."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = left + right
        if not np.all(np.isfinite(total)):
            return None
        right_part = total - left
        error = (left - (total - right_part)) + (right - right_part)
    return None if np.any(error) else total


def _grid(values: FloatArray) -> tuple[int, int] | None:
    """(low, high): every nonzero value is an integer multiple of 2**low of magnitude below
    2**high; None when all values are zero."""
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return None
    mantissas, exponents = np.frexp(nonzero)
    integers = np.abs(mantissas * 2.0**53).astype(np.int64)
    trailing = np.frexp((integers & -integers).astype(np.float64))[1] - 1
    return int(np.min(exponents - 53 + trailing)), int(np.max(exponents))


def _float_product_is_exact(left: FloatArray, right: FloatArray) -> bool:
    """Whether `left @ right` in float64 is exact, by a sufficient condition.

    Every term is a multiple of 2**(low_l + low_r) below 2**(high_l + high_r), so every
    partial sum of k terms (in any order, fused or not) is such a multiple below
    2**(high_l + high_r + ceil(log2 k)); when that spans at most 53 bits within the float64
    range, no partial sum rounds.
    """
    left_grid, right_grid = _grid(left), _grid(right)
    if left_grid is None or right_grid is None:
        return True  # one factor is zero: every entry of the product is exactly 0
    low = left_grid[0] + right_grid[0]
    high = left_grid[1] + right_grid[1] + (max(left.shape[-1], 1) - 1).bit_length()
    return high - low <= 53 and low >= -1074 and high <= 1023


# ---------------------------------------------------------------- exact rational vectors

_Vector: TypeAlias = "FloatArray | RationalArray"
"""1-D values, exact either way: a float64 array stands for exactly the floats it holds."""


def _rational_from_floats(values: FloatArray) -> RationalArray:
    """The exact rationals of finite floats (vectorized; one power-of-two denominator)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    mantissas, exponents = np.frexp(flat)
    integers = (mantissas * 2.0**53).astype(np.int64)
    trailing = np.frexp((np.abs(integers) & -np.abs(integers)).astype(np.float64))[1] - 1
    used = integers != 0
    integers = np.where(used, integers >> np.maximum(trailing, 0), 0)
    shifts = exponents.astype(np.int64) - 53 + np.maximum(trailing, 0)
    lowest = min(int(shifts[used].min()), 0) if used.any() else 0
    shifts = np.where(used, shifts - lowest, 0)
    numerators = integers.astype(object) << shifts.astype(object)
    return RationalArray(np.asarray(numerators, dtype=object).reshape(flat.shape), 1 << -lowest)


def _exact(values: _Vector) -> RationalArray:
    return values if isinstance(values, RationalArray) else _rational_from_floats(values)


def _floats_if_exact(values: RationalArray) -> FloatArray | None:
    """The float64 values when every rational is exactly one, else None."""
    numerators = values.numerators.reshape(-1)
    denominator = values.denominator
    try:  # int / int is correctly rounded in Python, whatever the sizes
        floats = np.array([n / denominator for n in numerators.tolist()], dtype=np.float64)
    except OverflowError:
        return None
    back = _rational_from_floats(floats)
    same = numerators * back.denominator == back.numerators * denominator
    return floats.reshape(values.shape) if bool(np.all(same)) else None


def _reduced(values: RationalArray) -> RationalArray:
    """The same rationals over the smallest common denominator (keeps integers small)."""
    divisor = math.gcd(values.denominator, *values.numerators.reshape(-1).tolist())
    if divisor == 1:
        return values
    return RationalArray(values.numerators // divisor, values.denominator // divisor)


def _settled(values: RationalArray) -> _Vector:
    """Floats when they hold the values exactly (fast later), else the reduced rationals."""
    floats = _floats_if_exact(values)
    return floats if floats is not None else _reduced(values)


def _fraction_array(values: RationalArray) -> ObjArray:
    """The values as an object array of `Fraction`; equal values share one object (a
    convolution repeats each kernel weight at every position)."""
    denominator = values.denominator
    shared: dict[int, Fraction] = {}
    fractions = np.empty(values.shape, dtype=object)
    fractions.reshape(-1)[:] = [
        shared.get(n) or shared.setdefault(n, Fraction(n, denominator))
        for n in values.numerators.reshape(-1).tolist()
    ]
    return fractions


def _rounded(values: _Vector) -> FloatArray:
    """Nearest float64 values (for float64-rounded layers only)."""
    if isinstance(values, np.ndarray):
        return values
    denominator = values.denominator
    floats = [n / denominator for n in values.numerators.reshape(-1).tolist()]
    return np.array(floats, dtype=np.float64).reshape(values.shape)


def _vector_product(left: _Vector, right: _Vector, rounded: bool) -> _Vector:
    if rounded:
        return _rounded(left) * _rounded(right)
    if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
        product = _product_if_exact(left, right)
        if product is not None:
            return product
    exact_left, exact_right = _exact(left), _exact(right)
    return _settled(RationalArray(exact_left.numerators * exact_right.numerators,
                                  exact_left.denominator * exact_right.denominator))


def _vector_sum(left: _Vector, right: _Vector, rounded: bool) -> _Vector:
    if rounded:
        return _rounded(left) + _rounded(right)
    if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
        total = _sum_if_exact(left, right)
        if total is not None:
            return total
    return _settled(_exact(left).add(_exact(right)))


def _vector_negated(values: _Vector) -> _Vector:
    if isinstance(values, np.ndarray):
        return -values
    return RationalArray(-values.numerators, values.denominator)


def _vector_selected(values: _Vector, index: IndexArray) -> _Vector:
    if isinstance(values, np.ndarray):
        return values[index]
    return RationalArray(values.numerators[index], values.denominator)


def _reciprocal(divisors: FloatArray, rounded: bool) -> _Vector:
    """1 / divisors exactly (nonzero divisors): floats when exact (powers of two), else
    rationals."""
    reciprocal = 1.0 / divisors
    if rounded:
        return reciprocal
    check = _product_if_exact(reciprocal, divisors)
    if check is not None and bool(np.all(check == 1.0)):
        return reciprocal
    distinct, position = np.unique(divisors, return_inverse=True)
    inverses = np.empty(distinct.size, dtype=object)
    inverses[:] = [1 / Fraction(float(d)) for d in distinct]
    exact = RationalArray.from_array(inverses)
    return RationalArray(exact.numerators[position.reshape(-1)], exact.denominator)


# ---------------------------------------------------------------- exact sparse matrices


def _ranges(starts: IndexArray, lengths: IndexArray) -> IndexArray:
    """The concatenation of arange(s, s + n) for every (s, n)."""
    offsets = np.cumsum(lengths) - lengths
    return np.asarray(np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum())))


_PAIRS_PER_CHUNK = 1 << 22  # bounds the memory of one step of a sparse product


@dataclasses.dataclass(frozen=True)
class _Sparse:
    """An exact matrix of `shape` in coordinate form: entry (rows[k], columns[k]) is
    `values[k]` (a 1-D rational array), every other entry is 0; coordinates are distinct."""

    rows: IndexArray
    columns: IndexArray
    values: RationalArray
    shape: tuple[int, int]

    @staticmethod
    def from_dense(matrix: FloatArray) -> _Sparse:
        rows, columns = np.nonzero(matrix)
        values = _rational_from_floats(matrix[rows, columns])
        return _Sparse(rows, columns, values, (int(matrix.shape[0]), int(matrix.shape[1])))

    @staticmethod
    def of(matrix: _Dense) -> _Sparse:
        return matrix if isinstance(matrix, _Sparse) else _Sparse.from_dense(matrix)

    @staticmethod
    def summed(rows: IndexArray, columns: IndexArray, numerators: ObjArray, denominator: int,
               shape: tuple[int, int]) -> _Sparse:
        """Entries at repeated coordinates added up; exact zeros dropped."""
        keys = rows.astype(np.int64) * shape[1] + columns
        order = np.argsort(keys, kind="stable")
        keys, numerators = keys[order], numerators[order]
        if keys.size:
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            if starts.size < keys.size:
                keys, numerators = keys[starts], np.add.reduceat(numerators, starts)
        kept = np.asarray(numerators != 0, dtype=bool)
        keys = keys[kept]
        numerators = np.asarray(numerators[kept], dtype=object)
        return _Sparse(keys // shape[1], keys % shape[1], RationalArray(numerators, denominator),
                       shape)

    def _with(self, numerators: ObjArray, denominator: int) -> _Sparse:
        return _Sparse(self.rows, self.columns, RationalArray(numerators, denominator), self.shape)

    def rows_scaled(self, factors: RationalArray) -> _Sparse:
        return self._with(self.values.numerators * factors.numerators[self.rows],
                          self.values.denominator * factors.denominator)

    def columns_scaled(self, factors: RationalArray) -> _Sparse:
        return self._with(self.values.numerators * factors.numerators[self.columns],
                          self.values.denominator * factors.denominator)

    def negated(self) -> _Sparse:
        return self._with(-self.values.numerators, self.values.denominator)

    def rows_selected(self, index: IndexArray) -> _Sparse:
        """Row k of the result is row index[k] of self."""
        order = np.argsort(self.rows, kind="stable")
        counts = np.bincount(self.rows, minlength=self.shape[0])
        starts = np.cumsum(counts) - counts
        source = order[_ranges(starts[index], counts[index])]
        rows = np.repeat(np.arange(index.size), counts[index])
        values = RationalArray(self.values.numerators[source], self.values.denominator)
        return _Sparse(rows, self.columns[source], values, (int(index.size), self.shape[1]))

    def columns_placed(self, placement: IndexArray, width: int) -> _Sparse:
        """Column j of self added into column placement[j] of a matrix of `width` columns."""
        return _Sparse.summed(self.rows, placement[self.columns], self.values.numerators,
                              self.values.denominator, (self.shape[0], width))

    def plus(self, other: _Sparse) -> _Sparse:
        common = math.lcm(self.values.denominator, other.values.denominator)
        numerators = np.concatenate([
            self.values.numerators * (common // self.values.denominator),
            other.values.numerators * (common // other.values.denominator),
        ])
        return _Sparse.summed(np.concatenate([self.rows, other.rows]),
                              np.concatenate([self.columns, other.columns]),
                              numerators, common, self.shape)

    def dense_numerators(self) -> ObjArray:
        numerators = np.zeros(self.shape, dtype=object)
        numerators[self.rows, self.columns] = self.values.numerators
        return numerators

    def times(self, right: _Sparse) -> _Sparse:
        """self @ right, exactly: a dense integer product when the matrices are dense, else
        one term per pair of matching nonzeros (in chunks, to bound memory)."""
        denominator = self.values.denominator * right.values.denominator
        shape = (self.shape[0], right.shape[1])
        counts = np.bincount(right.rows, minlength=right.shape[0])
        repeats = counts[self.columns]
        if self.shape[0] * self.shape[1] * right.shape[1] <= 4 * int(repeats.sum()):
            product = np.asarray(np.dot(self.dense_numerators(), right.dense_numerators()))
            rows, columns = np.nonzero(np.asarray(product != 0, dtype=bool))
            return _Sparse(rows, columns, RationalArray(product[rows, columns], denominator),
                           shape)
        order = np.argsort(right.rows, kind="stable")
        starts = (np.cumsum(counts) - counts)[self.columns]
        bounds = np.searchsorted(np.cumsum(repeats), np.arange(
            _PAIRS_PER_CHUNK, int(repeats.sum()), _PAIRS_PER_CHUNK), side="right")
        parts = []
        for chunk in np.split(np.arange(self.columns.size), bounds):
            left = np.repeat(chunk, repeats[chunk])
            source = order[_ranges(starts[chunk], repeats[chunk])]
            numerators = self.values.numerators[left] * right.values.numerators[source]
            parts.append(_Sparse.summed(self.rows[left], right.columns[source],
                                        np.asarray(numerators, dtype=object), denominator, shape))
        if len(parts) == 1:
            return parts[0]
        return _Sparse.summed(np.concatenate([p.rows for p in parts]),
                              np.concatenate([p.columns for p in parts]),
                              np.concatenate([p.values.numerators for p in parts]),
                              denominator, shape)

    def times_vector(self, vector: RationalArray) -> RationalArray:
        """self @ vector, exactly."""
        products = self.values.numerators * vector.numerators[self.columns]
        totals = np.zeros(self.shape[0], dtype=object)
        if products.size:
            order = np.argsort(self.rows, kind="stable")
            rows, products = self.rows[order], products[order]
            starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
            totals[rows[starts]] = np.add.reduceat(products, starts)
        return RationalArray(totals, self.values.denominator * vector.denominator)

    def floats_if_exact(self) -> FloatArray | None:
        values = _floats_if_exact(self.values)
        if values is None:
            return None
        matrix = np.zeros(self.shape)
        matrix[self.rows, self.columns] = values
        return matrix

    def rounded(self) -> FloatArray:
        matrix = np.zeros(self.shape)
        matrix[self.rows, self.columns] = _rounded(self.values)
        return matrix

    def fractions(self) -> ObjArray:
        """The exact values as an object array of `Fraction`."""
        matrix = np.full(self.shape, Fraction(0), dtype=object)
        matrix[self.rows, self.columns] = _fraction_array(self.values)
        return matrix


_Dense: TypeAlias = "FloatArray | _Sparse"
"""A matrix with exact values: a float64 array (exactly its floats) or a `_Sparse`."""


def _settled_matrix(matrix: _Sparse) -> _Dense:
    floats = matrix.floats_if_exact()
    if floats is not None:
        return floats
    return _Sparse(matrix.rows, matrix.columns, _reduced(matrix.values), matrix.shape)


def _dense_rounded(matrix: _Dense) -> FloatArray:
    return matrix if isinstance(matrix, np.ndarray) else matrix.rounded()


def _scaled_if_exact(matrix: FloatArray, factors: FloatArray, axis: int) -> FloatArray | None:
    """matrix scaled by `factors` along rows (axis 0) or columns (axis 1) when every product
    of a nonzero entry is exactly a float64, else None."""
    if bool(np.all(np.abs(factors) == 1.0)):
        return matrix * (factors[:, None] if axis == 0 else factors[None, :])
    rows, columns = np.nonzero(matrix)
    products = _product_if_exact(matrix[rows, columns], factors[rows if axis == 0 else columns])
    if products is None:
        return None
    result = np.zeros(matrix.shape)
    result[rows, columns] = products
    return result


def _matrix_rows_scaled(matrix: _Dense, factors: _Vector, rounded: bool) -> _Dense:
    if rounded:
        return _dense_rounded(matrix) * _rounded(factors)[:, None]
    if isinstance(matrix, np.ndarray) and isinstance(factors, np.ndarray):
        scaled = _scaled_if_exact(matrix, factors, axis=0)
        if scaled is not None:
            return scaled
    return _settled_matrix(_Sparse.of(matrix).rows_scaled(_exact(factors)))


def _matrix_product(linear: FloatArray, matrix: _Dense, rounded: bool) -> _Dense:
    """linear @ matrix, `linear` a float matrix of ONNX constants (exact)."""
    if rounded:
        return linear @ _dense_rounded(matrix)
    if isinstance(matrix, np.ndarray) and _float_product_is_exact(linear, matrix):
        return linear @ matrix
    return _settled_matrix(_Sparse.from_dense(linear).times(_Sparse.of(matrix)))


def _matrix_vector(linear: FloatArray, vector: _Vector, rounded: bool) -> _Vector:
    """linear @ vector, `linear` a float matrix of ONNX constants (exact)."""
    if rounded:
        return linear @ _rounded(vector)
    if isinstance(vector, np.ndarray):
        if not np.any(vector):
            return np.zeros(linear.shape[0])
        if _float_product_is_exact(linear, vector):
            return linear @ vector
    return _settled(_Sparse.from_dense(linear).times_vector(_exact(vector)))


def _matrix_sum(left: _Dense, right: _Dense, rounded: bool) -> _Dense:
    if rounded:
        return _dense_rounded(left) + _dense_rounded(right)
    if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
        total = _sum_if_exact(left, right)
        if total is not None:
            return total
    return _settled_matrix(_Sparse.of(left).plus(_Sparse.of(right)))


def _matrix_negated(matrix: _Dense) -> _Dense:
    return -matrix if isinstance(matrix, np.ndarray) else matrix.negated()


def _matrix_rows(matrix: _Dense, index: IndexArray) -> _Dense:
    return matrix[index] if isinstance(matrix, np.ndarray) else matrix.rows_selected(index)


# ---------------------------------------------------------------- affine expressions


@dataclasses.dataclass(frozen=True)
class _RowMap:
    """A matrix with one entry per row: M[r, columns[r]] = coefficients[r], `width` columns.

    Selections, permutations (Transpose), broadcasts and diagonal scalings (normalization)
    stay in this form, so composing them with a later product costs no dense n x n matrix.
    """

    columns: IndexArray
    coefficients: _Vector
    width: int

    def dense(self) -> _Dense:
        if isinstance(self.coefficients, RationalArray):
            rows = np.arange(self.columns.size)
            return _Sparse(rows, self.columns, self.coefficients, (rows.size, self.width))
        matrix = np.zeros((self.columns.size, self.width))
        matrix[np.arange(self.columns.size), self.columns] = self.coefficients
        return matrix

    def left_multiplied(self, linear: FloatArray, rounded: bool) -> _Dense:
        """linear @ self: floats when provably exact (or `rounded`), else exact rationals."""
        unique = np.unique(self.columns).size == self.columns.size
        if rounded or isinstance(self.coefficients, np.ndarray):
            coefficients = _rounded(self.coefficients)
            contributions = (linear * coefficients[None, :] if rounded
                             else _scaled_if_exact(linear, coefficients, axis=1))
            if contributions is not None and (unique or rounded):
                result = np.zeros((linear.shape[0], self.width))
                if unique:
                    result[:, self.columns] = contributions
                else:
                    np.add.at(result.T, self.columns, contributions.T)
                return result
        scaled = _Sparse.from_dense(linear).columns_scaled(_exact(self.coefficients))
        return _settled_matrix(scaled.columns_placed(self.columns, self.width))


_Matrix: TypeAlias = "_Dense | _RowMap | None"


@dataclasses.dataclass(frozen=True)
class _Affine:
    """value = matrix @ h + offset (flattened, C order), reshaped to `shape`.

    `h` is the output of layer `base - 1` (the network input when `base` is 0). A `matrix` of
    None is the identity (the tensor is `h` itself, maybe reshaped); an `offset` of None is
    exactly zero. Keeping both symbolic avoids any arithmetic on plain layers. Matrix and
    offset hold exact values (floats or rationals) unless `rounded`: then they are float64
    and every later op of this layer rounds to float64 (after a BatchNormalization).
    """

    matrix: _Matrix
    offset: _Vector | None
    shape: tuple[int, ...]
    base: int
    rounded: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_identity(self) -> bool:
        return self.matrix is None and self.offset is None

    @property
    def before_weights(self) -> bool:
        """No weight matrix applied yet in this layer (only selections and scalings)."""
        return self.matrix is None or isinstance(self.matrix, _RowMap)

    def dense_matrix(self) -> _Dense:
        if self.matrix is None:
            return np.eye(self.size)
        return self.matrix.dense() if isinstance(self.matrix, _RowMap) else self.matrix

    def dense_offset(self) -> _Vector:
        return np.zeros(self.size) if self.offset is None else self.offset

    def _row_map(self) -> _RowMap:
        """The identity or row-map matrix as a row map (only when `before_weights`)."""
        if isinstance(self.matrix, _RowMap):
            return self.matrix
        return _RowMap(np.arange(self.size), np.ones(self.size), self.size)

    def as_rounded(self) -> _Affine:
        """This expression rounded to float64, marked so that later ops round too."""
        if self.rounded:
            return self
        matrix: _Matrix = self.matrix
        if isinstance(matrix, _RowMap):
            matrix = _RowMap(matrix.columns, _rounded(matrix.coefficients), matrix.width)
        elif isinstance(matrix, _Sparse):
            matrix = matrix.rounded()
        offset = None if self.offset is None else _rounded(self.offset)
        return _Affine(matrix, offset, self.shape, self.base, rounded=True)

    def reshaped(self, shape: tuple[int, ...]) -> _Affine:
        return dataclasses.replace(self, shape=shape)

    def reindexed(self, index: IndexArray, shape: tuple[int, ...]) -> _Affine:
        """Element k of the result is element index[k] of self (exact: a selection)."""
        offset = None if self.offset is None else _vector_selected(self.offset, index)
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            matrix = _RowMap(rows.columns[index], _vector_selected(rows.coefficients, index),
                             rows.width)
        else:
            matrix = _matrix_rows(cast(_Dense, self.matrix), index)
        return _Affine(matrix, offset, shape, self.base, self.rounded)

    def broadcast_to(self, shape: tuple[int, ...]) -> _Affine:
        if shape == self.shape:
            return self
        positions = np.arange(self.size).reshape(self.shape)
        return self.reindexed(np.broadcast_to(positions, shape).reshape(-1), shape)

    def mapped(self, linear: FloatArray, shape: tuple[int, ...]) -> _Affine:
        """linear @ self: a linear map (a matrix of ONNX constants) of the flattened value."""
        matrix: _Dense
        if self.matrix is None:
            matrix = linear
        elif isinstance(self.matrix, _RowMap):
            matrix = self.matrix.left_multiplied(linear, self.rounded)
        else:
            matrix = _matrix_product(linear, self.matrix, self.rounded)
        offset = None if self.offset is None else _matrix_vector(linear, self.offset,
                                                                 self.rounded)
        return _Affine(matrix, offset, shape, self.base, self.rounded)

    def scaled(self, factors: _Vector) -> _Affine:
        """Elementwise product with flattened `factors`."""
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            coefficients = _vector_product(rows.coefficients, factors, self.rounded)
            matrix = _RowMap(rows.columns, coefficients, rows.width)
        else:
            matrix = _matrix_rows_scaled(cast(_Dense, self.matrix), factors, self.rounded)
        offset = (None if self.offset is None
                  else _vector_product(self.offset, factors, self.rounded))
        return _Affine(matrix, offset, self.shape, self.base, self.rounded)

    def negated(self) -> _Affine:
        """-self (exact: sign flips)."""
        matrix: _Matrix
        if self.before_weights:
            rows = self._row_map()
            matrix = _RowMap(rows.columns, _vector_negated(rows.coefficients), rows.width)
        else:
            matrix = _matrix_negated(cast(_Dense, self.matrix))
        offset = None if self.offset is None else _vector_negated(self.offset)
        return _Affine(matrix, offset, self.shape, self.base, self.rounded)

    def divided(self, divisors: FloatArray) -> _Affine:
        """Elementwise quotient by flattened nonzero `divisors`: exactly self * (1/divisors)."""
        return self.scaled(_reciprocal(divisors, self.rounded))

    def shifted(self, values: _Vector) -> _Affine:
        offset: _Vector
        if self.offset is None or (isinstance(self.offset, np.ndarray) and not self.offset.any()):
            offset = values.copy() if isinstance(values, np.ndarray) else values
        else:
            offset = _vector_sum(self.offset, values, self.rounded)
        return dataclasses.replace(self, offset=offset)

    def combined(self, other: _Affine, sign: float) -> _Affine:
        """self + sign * other (sign +-1), both of the same base and shape."""
        rounded = self.rounded or other.rounded
        left, right = (self.as_rounded(), other.as_rounded()) if rounded else (self, other)
        if sign < 0:
            right = right.negated()
        matrix = _matrix_sum(left.dense_matrix(), right.dense_matrix(), rounded)
        offset = _vector_sum(left.dense_offset(), right.dense_offset(), rounded)
        return _Affine(matrix, offset, self.shape, self.base, rounded)


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
        weights = _stored_matrix(value.dense_matrix(), self.dtype)
        bias = _stored_vector(value.dense_offset(), self.dtype)
        self.layers.append(AffineLayer(weights, bias, relu))
        self.base_size = value.size
        return _Affine(None, None, value.shape, self.base)


def _stored_floats(values: FloatArray, dtype: np.dtype[Any]) -> AnyArray:
    """The graph's dtype when it holds `values` exactly, else float64 (never rounds)."""
    narrowed = values.astype(dtype)
    if np.array_equal(narrowed.astype(np.float64), values):
        return narrowed
    return values


def _stored_matrix(matrix: _Dense, dtype: np.dtype[Any]) -> AnyArray:
    """Floats when they hold the exact values, else an object array of `Fraction`."""
    if isinstance(matrix, _Sparse):
        floats = matrix.floats_if_exact()
        if floats is None:
            return matrix.fractions()
        matrix = floats
    return _stored_floats(matrix, dtype)


def _stored_vector(values: _Vector, dtype: np.dtype[Any]) -> AnyArray:
    if isinstance(values, RationalArray):
        floats = _floats_if_exact(values)
        if floats is None:
            return _fraction_array(values)
        values = floats
    return _stored_floats(values, dtype)


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
    return _finite(node, value, position)


def _finite(node: _Node, value: AnyArray, position: int) -> AnyArray:
    """A constant operand, rejected when it holds NaN or an infinity (no exact value)."""
    if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
        raise node.error(f"input {position} ('{node.proto.input[position]}') holds NaN or "
                         "infinity")
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


_INTEGER_ARITHMETIC: dict[str, Callable[[AnyArray, AnyArray], AnyArray]] = {
    "Add": lambda a, b: np.asarray(a + b),
    "Sub": lambda a, b: np.asarray(a - b),
    "Mul": lambda a, b: np.asarray(a * b),
    "Div": _integer_divide,
}


def _float_arithmetic(op: str, left: FloatArray, right: FloatArray) -> tuple[FloatArray, bool]:
    """(the float64 result of `left op right`, whether it is the exact real result)."""
    if op in ("Add", "Sub"):
        addend = right if op == "Add" else -right
        return left + addend, _sum_if_exact(left, addend) is not None
    if op == "Mul":
        return left * right, _product_if_exact(left, right) is not None
    quotient = left / right
    check = _product_if_exact(quotient, right)
    return quotient, check is not None and bool(np.array_equal(check, left))


def _constant_arithmetic(node: _Node, left: AnyArray, right: AnyArray, chain: _Chain) -> AnyArray:
    """Add, Sub, Mul, Div of two constants: integers exactly (ONNX integer semantics), floats
    in float64, noted as rounded when a result is not the exact real value."""
    if node.op == "Div" and not np.all(right != 0):
        raise node.error("divides by a constant containing zero")
    if left.dtype.kind in "iub" and right.dtype.kind in "iub":
        return _INTEGER_ARITHMETIC[node.op](left, right)
    left_floats, right_floats = np.broadcast_arrays(_as_float(left), _as_float(right))
    result, exact = _float_arithmetic(node.op, left_floats, right_floats)
    if not exact:
        chain.note(f"{node.op} of constants (float64-rounded)")
    return result


def _arithmetic(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Add, Sub, Mul, Div with numpy broadcasting; at most one operand may be variable,
    except for Add/Sub of two expressions of the same layer input (still affine)."""
    left, right = _input(node, inputs, 0), _input(node, inputs, 1)
    if not isinstance(left, _Affine) and not isinstance(right, _Affine):
        return [_constant_arithmetic(node, _finite(node, left, 0), _finite(node, right, 1), chain)]
    if isinstance(left, _Affine) and isinstance(right, _Affine):
        if node.op not in ("Add", "Sub"):
            raise _nonlinear(node)
        shape = _broadcast_shape(node, left.shape, right.shape)
        chain.note(f"{node.op} of two linear branches")
        sign = -1.0 if node.op == "Sub" else 1.0
        return [left.broadcast_to(shape).combined(right.broadcast_to(shape), sign)]
    variable_first = isinstance(left, _Affine)
    variable = cast(_Affine, left if variable_first else right)
    constant = _finite(node, cast(AnyArray, right if variable_first else left),
                       1 if variable_first else 0)
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
        return [operand.negated().shifted(values)]
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
        return [_data_times(node, left, _finite(node, cast(AnyArray, right), 1), chain)]
    if isinstance(right, _Affine):
        return [_times_data(node, _finite(node, left, 0), right, chain)]
    return [_constant_product(node, _finite(node, left, 0), _finite(node, right, 1), chain)]


def _constant_product(node: _Node, left: AnyArray, right: AnyArray, chain: _Chain) -> AnyArray:
    """A product of two constants: integers exactly, floats in float64 (noted as rounded
    unless provably exact)."""
    if left.dtype.kind in "iub" and right.dtype.kind in "iub":
        return np.asarray(np.matmul(left, right))
    left_floats, right_floats = _as_float(left), _as_float(right)
    if not _float_product_is_exact(left_floats, right_floats):
        chain.note(f"{node.op} of constants (float64-rounded)")
    return np.asarray(np.matmul(left_floats, right_floats))


def _transposed_matrix(node: _Node, value: _Value, role: str) -> _Value:
    if isinstance(value, _Affine):
        if len(value.shape) != 2:
            raise node.error(f"{role} must be 2-D, got shape {value.shape}")
        return _transpose_value(value, (1, 0))
    return np.asarray(value.T)


def _gemm(node: _Node, inputs: _Inputs, chain: _Chain) -> list[_Value]:
    """Y = alpha * A' @ B' + beta * C, A' = A or A^T, B' = B or B^T; one of A, B constant.

    Exactly: alpha and beta are the exact values of the (float32) attributes."""
    left, right = _input(node, inputs, 0), _input(node, inputs, 1)
    if node.int_attribute("transA", 0):
        left = _transposed_matrix(node, left, "A")
    if node.int_attribute("transB", 0):
        right = _transposed_matrix(node, right, "B")
    alpha = node.float_attribute("alpha", 1.0)
    beta = node.float_attribute("beta", 1.0)
    addend = _optional_constant(node, inputs, 2, "bias C")
    if isinstance(left, _Affine) and isinstance(right, _Affine):
        raise _nonlinear(node)
    if not isinstance(left, _Affine) and not isinstance(right, _Affine):
        return [_constant_gemm(node, (_finite(node, left, 0), _finite(node, right, 1)), alpha,
                               beta, addend, chain)]
    if isinstance(left, _Affine):
        product = _data_times(node, left, _finite(node, cast(AnyArray, right), 1), chain)
    else:
        product = _times_data(node, _finite(node, left, 0), cast(_Affine, right), chain)
    if alpha != 1.0:
        chain.note("Gemm alpha")
        product = product.scaled(np.full(product.size, alpha))
    if addend is None:
        return [product]
    if beta != 1.0:
        chain.note("Gemm beta")
    shape = product.shape
    if _broadcast_shape(node, shape, tuple(addend.shape)) != shape:
        raise node.error(f"bias C of shape {addend.shape} does not broadcast to {shape}")
    values: _Vector = np.broadcast_to(_as_float(addend), shape).reshape(-1)
    if beta != 1.0:
        values = _vector_product(values, np.full(product.size, beta), product.rounded)
    return [product.shifted(values)]


def _constant_gemm(node: _Node, operands: tuple[AnyArray, AnyArray], alpha: float, beta: float,
                   addend: AnyArray | None, chain: _Chain) -> AnyArray:
    """Gemm of two constants in float64, noted as rounded unless every step is exact."""
    product = _as_float(_constant_product(node, *operands, chain))
    exact = True
    if alpha != 1.0:
        product, exact = _float_arithmetic("Mul", product, np.full(product.shape, alpha))
    if addend is not None:
        bias = _as_float(addend)
        if beta != 1.0:
            bias, bias_exact = _float_arithmetic("Mul", bias, np.full(bias.shape, beta))
            exact = exact and bias_exact
        if _broadcast_shape(node, product.shape, bias.shape) != product.shape:
            raise node.error(f"bias C of shape {bias.shape} does not broadcast to "
                             f"{product.shape}")
        product, sum_exact = _float_arithmetic("Add", *np.broadcast_arrays(product, bias))
        exact = exact and sum_exact
    if not exact:
        chain.note("Gemm of constants (float64-rounded)")
    return product


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
    """y = scale * (x - mean) / sqrt(var + epsilon) + B, folded to y = f * x + (B - mean * f).

    The square root makes f irrational in general, so this fold is done in float64 and the
    whole layer is marked rounded (`BATCH_NORMALIZATION_NOTE`)."""
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
    if not np.all(variance + epsilon > 0):
        raise node.error("input_var + epsilon is not positive")
    factor = scale / np.sqrt(variance + epsilon)
    shift = bias - mean * factor
    chain.note(BATCH_NORMALIZATION_NOTE)
    if not isinstance(value, _Affine):
        folded = value * factor.reshape((1, -1) + (1,) * (len(shape) - 2))
        return [np.asarray(folded + shift.reshape((1, -1) + (1,) * (len(shape) - 2)))]
    scaled = value.as_rounded().scaled(_channel_broadcast(factor, shape))
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


def _load_model(path: str | Path) -> onnx.ModelProto:
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
    return model


def load_network(path: str | Path) -> Network:
    """Read an ONNX file and import it (`ModelError` naming the file when it cannot)."""
    return network_from_model(_load_model(path), str(path))


# ---------------------------------------------------------------- the graph's interface

Dim: TypeAlias = int | str | None
"""One declared dimension: a fixed size, a symbolic name (dim_param), or None (unnamed)."""


@dataclasses.dataclass(frozen=True)
class Interface:
    """What a caller of an ONNX model sees: the graph input and output as declared.

    `input_shape` and `output_shape` hold the declared dimensions (batch dimension included,
    exactly as the file has it); `output_shape` is None when neither the file nor ONNX shape
    inference gives one with at most one open dimension. `elem_type` is the ONNX element type
    of the input (`onnx.TensorProto.FLOAT` or `DOUBLE`). The exporter writes a network with
    this interface (`verifier.onnx_export.save_onnx(..., interface=...)`)."""

    input_name: str
    input_shape: tuple[Dim, ...]
    output_name: str
    output_shape: tuple[Dim, ...] | None
    elem_type: int

    @property
    def has_batch(self) -> bool:
        """Whether the input has a batch dimension (the importer's rule: rank >= 2 and a
        leading dimension that is symbolic, 0 or 1)."""
        if len(self.input_shape) < 2:
            return False
        leading = self.input_shape[0]
        return not isinstance(leading, int) or leading in (0, 1)


def _declared_dims(value: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(str(dim.dim_param))
        else:
            dims.append(None)
    return tuple(dims)


def _inferred_output_dims(model: onnx.ModelProto, name: str) -> tuple[Dim, ...] | None:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only a help here: a model it rejects keeps what it says
        return None
    for value in inferred.graph.output:
        if value.name == name:
            return _declared_dims(value)
    return None


def _open_dims(dims: tuple[Dim, ...]) -> int:
    return sum(1 for d in dims if not isinstance(d, int) or d < 1)


def interface_from_model(model: onnx.ModelProto, source: str = "<model>") -> Interface:
    """The input and output of an ONNX model as declared (see `Interface`); an output shape
    the file leaves open is completed by ONNX shape inference, dimension by dimension."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    network_input = _network_input(graph, constants, source)
    element = network_input.type.tensor_type.elem_type
    _input_dtype(network_input, source)
    input_dims = _declared_dims(network_input)
    if not input_dims:
        raise UnsupportedModelError(
            f"{source}: input '{network_input.name}' has no declared shape"
        )
    if len(graph.output) != 1:
        names = ", ".join(f"'{value.name}'" for value in graph.output) or "none"
        raise UnsupportedModelError(f"{source}: expected exactly one graph output, found {names}")
    output = graph.output[0]
    output_dims = _declared_dims(output)
    if output_dims is None or None in output_dims:
        inferred = _inferred_output_dims(model, output.name)
        if output_dims is None:
            output_dims = inferred
        elif inferred is not None and len(inferred) == len(output_dims):
            output_dims = tuple(
                known if known is not None else guess
                for known, guess in zip(output_dims, inferred, strict=True)
            )
    if output_dims is not None and (not output_dims or _open_dims(output_dims) > 1):
        output_dims = None
    return Interface(network_input.name, input_dims, output.name, output_dims, element)


def read_interface(path: str | Path) -> Interface:
    """The `Interface` of an ONNX file (`ModelError` naming the file when it cannot)."""
    return interface_from_model(_load_model(path), str(path))
