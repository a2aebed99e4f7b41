"""Exact arithmetic in bulk: integer arrays times one rational scale.

Part of the TRUSTED kernel. Every stored float is m * 2**e, so an array of floats is exactly an
integer array times one power of two; network weights folded from preprocessing may be other
rationals, so the scale is any positive `Fraction`. Bulk work happens on Python integers in
numpy object arrays (elementwise) and on python-flint's `fmpz_mat` (matrix products, much
faster than numpy's object matmul: measured 0.07 s against about 2 s for 256x256 by 256x784);
`Fraction` appears only for scalars (scales and final per-row sums), never in inner loops.
Nothing here rounds unless a function says so, and then only in the direction it names.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from fractions import Fraction
from typing import Any

import flint
import numpy as np
import numpy.typing as npt

ObjArray = npt.NDArray[np.object_]
FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Scaled:
    """The exact array `numerators * scale`: Python ints in an object array, scale > 0."""

    numerators: ObjArray
    scale: Fraction

    @staticmethod
    def from_floats(values: npt.ArrayLike) -> Scaled:
        """The exact value of finite floats (float32 or float64), over one power of two."""
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError("a non-finite float has no exact value")
        mantissas, exponents = np.frexp(array)
        ints = (mantissas * 2.0**53).astype(np.int64)
        shifts = exponents.astype(np.int64) - 53
        nonzero = ints != 0
        # Strip trailing zero bits so the integers are as small as the values allow.
        lowest_bit = np.where(nonzero, ints & -ints, 1)
        zeros = np.round(np.log2(lowest_bit.astype(np.float64))).astype(np.int64)
        ints = np.where(nonzero, ints >> zeros, 0)
        shifts = shifts + zeros
        low = int(shifts[nonzero].min()) if nonzero.any() else 0
        lift = np.where(nonzero, shifts - low, 0).astype(object)
        numerators = np.asarray(ints.astype(object) << lift, dtype=object)
        return Scaled(numerators.reshape(array.shape), Fraction(2) ** low)

    @staticmethod
    def from_values(values: npt.ArrayLike) -> Scaled:
        """Exact value of floats, ints or Fractions (an object array of Fractions is common
        after exact folds of preprocessing ops)."""
        array = np.asarray(values)
        if array.dtype.kind == "f":
            return Scaled.from_floats(array)
        flat = [Fraction(v) for v in array.reshape(-1).tolist()]
        denominator = math.lcm(*(v.denominator for v in flat)) if flat else 1
        numerators = np.empty(len(flat), dtype=object)
        for k, v in enumerate(flat):
            numerators[k] = v.numerator * (denominator // v.denominator)
        return Scaled(numerators.reshape(array.shape), Fraction(1, denominator))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.numerators.shape)

    def at_scale(self, scale: Fraction) -> ObjArray:
        """The numerators over a finer `scale` (self.scale / scale must be an integer)."""
        factor = self.scale / scale
        if factor.denominator != 1:
            raise ValueError(f"scale {scale} is not a divisor of {self.scale}")
        if factor == 1:
            return self.numerators
        return np.asarray(self.numerators * int(factor), dtype=object)

    def value(self, index: Any) -> Fraction:
        return Fraction(int(self.numerators[index])) * self.scale

    def to_float(self, direction: str) -> FloatArray:
        """float64 values rounded `down` or `up` (never to nearest): outward bounds."""
        if direction not in ("down", "up"):
            raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
        flat = self.numerators.reshape(-1).tolist()
        out = np.empty(len(flat), dtype=np.float64)
        exponent = _power_of_two(self.scale)
        for k, numerator in enumerate(flat):
            value = None if exponent is None else _round_dyadic(int(numerator), exponent, direction)
            if value is None:
                value = round_fraction(Fraction(int(numerator)) * self.scale, direction)
            out[k] = value
        return out.reshape(self.numerators.shape)


def _power_of_two(scale: Fraction) -> int | None:
    """e with scale == 2**e, or None when the scale is not a power of two."""
    numerator, denominator = scale.numerator, scale.denominator
    if denominator == 1 and numerator & (numerator - 1) == 0:
        return numerator.bit_length() - 1
    if numerator == 1 and denominator & (denominator - 1) == 0:
        return 1 - denominator.bit_length()
    return None


def _round_dyadic(numerator: int, exponent: int, direction: str) -> float | None:
    """numerator * 2**exponent rounded to float64 in `direction`, or None where this fast path
    does not apply (the result would leave the normal float range).

    float(numerator) is correctly rounded (to nearest), and comparing int(float) with the
    integer exactly tells which side it fell on; scaling by 2**exponent is then exact because
    the result is a normal float (checked on its binary exponent before scaling)."""
    if numerator == 0:
        return 0.0
    if numerator.bit_length() > 1000:
        return None
    nearest = float(numerator)
    back = int(nearest)
    if direction == "down" and back > numerator:
        nearest = math.nextafter(nearest, -math.inf)
    elif direction == "up" and back < numerator:
        nearest = math.nextafter(nearest, math.inf)
    if nearest == 0.0:
        return None
    # |nearest| lies in [2**(binary - 1), 2**binary); the scaled value must stay normal.
    binary = math.frexp(nearest)[1] + exponent
    if binary - 1 < sys.float_info.min_exp - 1 or binary > sys.float_info.max_exp:
        return None
    return math.ldexp(nearest, exponent)


def common_scale(*scales: Fraction) -> Fraction:
    """The largest scale every given scale is an integer multiple of."""
    numerator = math.gcd(*(s.numerator for s in scales))
    denominator = math.lcm(*(s.denominator for s in scales))
    return Fraction(numerator, denominator)


def round_fraction(value: Fraction, direction: str) -> float:
    """The float64 next to `value` in `direction` ("down": largest float <= value, "up":
    smallest float >= value); overflow is an error, never infinity."""
    nearest = float(value)  # correctly rounded by Python
    if not math.isfinite(nearest):
        raise OverflowError(f"{value} does not fit in float64")
    exact = Fraction(nearest)
    if direction == "down" and exact > value:
        nearest = math.nextafter(nearest, -math.inf)
    elif direction == "up" and exact < value:
        nearest = math.nextafter(nearest, math.inf)
    elif direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
    return nearest


def floor_to_bits(values: ObjArray, scale: Fraction, bits: int) -> tuple[ObjArray, Fraction]:
    """Round `values * scale` DOWN onto a coarser power-of-two grid so that no numerator has
    more than `bits` bits. Callers use it only where any value is sound (dual multipliers)."""
    if values.size == 0:
        return values, scale
    largest = max(int(values.max()), -int(values.min()))
    shift = largest.bit_length() - bits
    if shift <= 0:
        return values, scale
    return np.asarray(values >> shift, dtype=object), scale * 2**shift


def to_flint(values: ObjArray) -> flint.fmpz_mat:
    rows, columns = values.shape
    # Python ints (or fmpz) already: flint takes them as they are.
    return flint.fmpz_mat(rows, columns, values.reshape(-1).tolist())


def from_flint(matrix: flint.fmpz_mat) -> ObjArray:
    entries = np.array([int(v) for v in matrix.entries()], dtype=object)
    return entries.reshape(matrix.nrows(), matrix.ncols())


def matmul(left: ObjArray, right: flint.fmpz_mat) -> ObjArray:
    """Exact integer product of an object matrix and an fmpz matrix."""
    if left.shape[0] == 0 or right.ncols() == 0 or left.shape[1] == 0:
        return np.zeros((left.shape[0], right.ncols()), dtype=object)
    return from_flint(to_flint(left) * right)
