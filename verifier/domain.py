"""Input domains: a finite union of axis-aligned boxes over the flattened network input.

Stage: ONNX -> IR -> **domain** and bounds -> ...

A neuron is stable on a domain only if it is stable (with the same phase) on every box. Bounds
are stored as float64 arrays; the exact domain is those floats read as exact rationals (VNN-LIB
decimals are parsed exactly and rounded outward to float64 so the float box contains the
decimal box).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from verifier.errors import DomainError

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, eq=False)
class Box:
    """lower <= x <= upper, elementwise, over the flattened input."""

    lower: FloatArray
    upper: FloatArray

    def __post_init__(self) -> None:
        lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        if lower.shape != upper.shape:
            raise DomainError(
                f"lower has {lower.size} values but upper has {upper.size}"
            )
        for name, values in (("lower", lower), ("upper", upper)):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise DomainError(f"{name} bound of input {int(bad[0])} is {values[bad[0]]}")
        inverted = np.flatnonzero(lower > upper)
        if inverted.size:
            i = int(inverted[0])
            raise DomainError(f"input {i}: lower bound {lower[i]} > upper bound {upper[i]}")
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def size(self) -> int:
        return int(self.lower.size)

    def contains(self, point: npt.ArrayLike) -> bool:
        x = np.asarray(point, dtype=np.float64).reshape(-1)
        return bool(x.shape == self.lower.shape and np.all(x >= self.lower) and np.all(x <= self.upper))

    def sample(self, count: int, rng: np.random.Generator) -> FloatArray:
        """`count` uniform points of the box, shape (count, size)."""
        return rng.uniform(self.lower, self.upper, size=(count, self.size))

    def center(self) -> FloatArray:
        return (self.lower + self.upper) / 2.0


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """A non-empty union of boxes of the same dimension."""

    boxes: tuple[Box, ...]
    source: str = "box"

    def __post_init__(self) -> None:
        if not self.boxes:
            raise DomainError("a domain needs at least one box")
        sizes = {box.size for box in self.boxes}
        if len(sizes) != 1:
            raise DomainError(f"boxes of a domain differ in dimension: {sorted(sizes)}")

    @property
    def size(self) -> int:
        return self.boxes[0].size

    def contains(self, point: npt.ArrayLike) -> bool:
        return any(box.contains(point) for box in self.boxes)

    def sample(self, count: int, rng: np.random.Generator) -> FloatArray:
        """`count` points, spread over the boxes in proportion to nothing but their order."""
        per_box = np.array_split(np.arange(count), len(self.boxes))
        return np.concatenate(
            [box.sample(len(part), rng) for box, part in zip(self.boxes, per_box, strict=True)]
        )

    def check_dimension(self, input_size: int) -> None:
        if self.size != input_size:
            raise DomainError(
                f"domain has {self.size} inputs but the network expects {input_size}"
            )

    @staticmethod
    def box(lower: npt.ArrayLike, upper: npt.ArrayLike, source: str = "box") -> Domain:
        return Domain((Box(np.asarray(lower), np.asarray(upper)),), source)
