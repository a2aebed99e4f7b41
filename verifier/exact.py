"""Exact rational arithmetic for the reference semantics.

The reference semantics of a network is real arithmetic over its stored weights read as the
exact rationals they are (every finite float is a dyadic rational). To keep exact evaluation
fast on networks with ~10^5 weights, a rational array is stored as integer numerators (a numpy
object array of Python ints) over one common positive integer denominator; matrix products then
run on Python integers, never on `Fraction` objects, and nothing is ever rounded.

Use `Fraction` at the edges (certificates, single values); use `RationalArray` for bulk work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .kernel.scaled import Scaled

ObjArray = npt.NDArray[np.object_]


def as_fraction(value: Any) -> Fraction:
    """The exact rational value of a float, int, Fraction or decimal string."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, str):
        return Fraction(value)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"non-finite value {value!r} has no exact rational value")
    return Fraction(as_float)


def fraction_to_str(value: Fraction) -> str:
    """Canonical exact text of a rational: "p" or "p/q" (what certificates store)."""
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


@dataclasses.dataclass(frozen=True)
class RationalArray:
    """An exact rational array: `numerators / denominator`, elementwise.

    Invariant: `numerators` is an object array of Python ints and `denominator` a positive int.
    The representation is not reduced; equality and comparisons are exact regardless.
    """

    numerators: ObjArray
    denominator: int

    @staticmethod
    def from_array(values: npt.ArrayLike) -> RationalArray:
        """Exact conversion of floats, ints or Fractions (object arrays) to a rational array."""
        array = np.asarray(values)
        flat = array.reshape(-1)
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(flat)):
                raise ValueError("non-finite value has no exact rational value")
            # Every float is m * 2**e: one power-of-two scale makes them all integers.
            scaled = Scaled.from_floats(array)
            numerators = np.asarray(scaled.numerators * scaled.scale.numerator, dtype=object)
            return RationalArray(numerators.reshape(array.shape), scaled.scale.denominator)
        ratios = [as_fraction(v) for v in flat.tolist()]
        denominator = math.lcm(*(r.denominator for r in ratios)) if ratios else 1
        numerators = np.empty(len(ratios), dtype=object)
        for k, r in enumerate(ratios):
            numerators[k] = r.numerator * (denominator // r.denominator)
        return RationalArray(numerators.reshape(array.shape), denominator)

    @staticmethod
    def from_fractions(values: Iterable[Fraction]) -> RationalArray:
        array = np.empty(0, dtype=object)
        items = list(values)
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return RationalArray.from_array(array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.numerators.shape)

    def __len__(self) -> int:
        return int(self.numerators.shape[0])

    def matmul(self, vector: RationalArray) -> RationalArray:
        """Exact matrix-vector (or matrix-matrix) product."""
        product = np.dot(self.numerators, vector.numerators)
        return RationalArray(
            np.asarray(product, dtype=object), self.denominator * vector.denominator
        )

    def add(self, other: RationalArray) -> RationalArray:
        common = math.lcm(self.denominator, other.denominator)
        left = self.numerators * (common // self.denominator)
        right = other.numerators * (common // other.denominator)
        return RationalArray(np.asarray(left + right, dtype=object), common)

    def relu(self) -> RationalArray:
        clipped = np.array([n if n > 0 else 0 for n in self.numerators.reshape(-1)], dtype=object)
        return RationalArray(clipped.reshape(self.numerators.shape), self.denominator)

    def signs(self) -> npt.NDArray[np.int8]:
        """Exact sign (-1, 0, +1) of every entry."""
        flat = [(n > 0) - (n < 0) for n in self.numerators.reshape(-1)]
        return np.array(flat, dtype=np.int8).reshape(self.numerators.shape)

    def to_fractions(self) -> list[Fraction]:
        return [Fraction(int(n), self.denominator) for n in self.numerators.reshape(-1)]

    def to_float(self) -> npt.NDArray[np.float64]:
        """Nearest-ish float64 values (for display and hints only, never for decisions)."""
        return np.array(
            [float(Fraction(int(n), self.denominator)) for n in self.numerators.reshape(-1)],
            dtype=np.float64,
        ).reshape(self.numerators.shape)

    def row(self, index: int) -> RationalArray:
        return RationalArray(self.numerators[index], self.denominator)


def exact_dot(coefficients: Sequence[Fraction], values: Sequence[Fraction]) -> Fraction:
    return sum((c * v for c, v in zip(coefficients, values, strict=True)), Fraction(0))
