"""The LP relaxation of a network on one box: variables, rows and their exact meaning.

Stage: ... -> stability search -> **certification** (the constraint system it reasons about).

Given proved facts about the neurons of layers < `layer` (bounds L <= g <= U, from lemmas) and
optional case-split assumptions (a neuron's phase), the relaxation has variables

    x_j           network inputs, within the box
    g_k_i, a_k_i  pre- and post-activation of neuron (k, i), for every layer k < `layer`

with finite bounds, and rows, each a statement that holds for the REAL network on the box:

    def:k:i       g_k_i - W_k[i] . a_{k-1} - b_k[i] == 0        (a_{-1} = x)
    identity:k:i  a_k_i - g_k_i == 0    neuron active (proved, assumed) or without ReLU
    above:k:i     a_k_i - g_k_i >= 0    unstable ReLU: relu(g) >= g
    triangle:k:i  U g_k_i - (U - L) a_k_i - U L >= 0   unstable ReLU with L < 0 < U: the chord

Variable bounds: g in [L, U] (intersected with the phase), a in [0, U] for an unstable ReLU,
a in [max(L, 0), U] for an active one, a = 0 for an inactive one, the box for x. Every row
and bound follows from the definitions of the network and the facts it is given; this is what
makes any nonnegative combination of rows a proof (see `verifier.certify`).

The same builder serves the floating-point LP (hints) and the exact checker (rationals).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from verifier.domain import Box
from verifier.ir import Network
from verifier.lp import LinearProgram, SparseRow
from verifier.status import Neuron, Phase

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class NeuronFact:
    """Proved bounds of one neuron's pre-activation on one box: lower <= g <= upper."""

    lower: Fraction
    upper: Fraction

    @property
    def phase(self) -> Phase | None:
        if self.lower >= 0:
            return Phase.ACTIVE
        if self.upper <= 0:
            return Phase.INACTIVE
        return None


class Treatment:
    """How a neuron enters the relaxation."""

    ACTIVE = "active"  # a == g, g >= 0
    INACTIVE = "inactive"  # a == 0, g <= 0
    UNSTABLE = "unstable"  # triangle relaxation
    LINEAR = "linear"  # layer without ReLU: a == g


@dataclasses.dataclass(frozen=True)
class Variables:
    """Index layout of the relaxation's variables for targets in layer `layer`."""

    input_size: int
    layer_sizes: tuple[int, ...]

    def x(self, j: int) -> int:
        return j

    def g(self, k: int, i: int) -> int:
        return self.input_size + 2 * sum(self.layer_sizes[:k]) + i

    def a(self, k: int, i: int) -> int:
        return self.input_size + 2 * sum(self.layer_sizes[:k]) + self.layer_sizes[k] + i

    @property
    def count(self) -> int:
        return self.input_size + 2 * sum(self.layer_sizes)

    def name(self, index: int) -> str:
        if index < self.input_size:
            return f"x_{index}"
        offset = index - self.input_size
        for k, size in enumerate(self.layer_sizes):
            if offset < 2 * size:
                return f"g_{k}_{offset}" if offset < size else f"a_{k}_{offset - size}"
            offset -= 2 * size
        raise IndexError(index)


def treatment(
    network: Network, neuron: Neuron, fact: NeuronFact, assumptions: Mapping[Neuron, Phase]
) -> str:
    if not network.layers[neuron.layer].relu:
        return Treatment.LINEAR
    phase = assumptions.get(neuron) or fact.phase
    if phase is Phase.ACTIVE:
        return Treatment.ACTIVE
    if phase is Phase.INACTIVE:
        return Treatment.INACTIVE
    return Treatment.UNSTABLE


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """The exact constraint system for targets in `layer` on one box (see module docstring)."""

    network: Network
    box: Box
    layer: int
    facts: Mapping[Neuron, NeuronFact]
    assumptions: Mapping[Neuron, Phase]

    @property
    def variables(self) -> Variables:
        sizes = tuple(self.network.layers[k].outputs for k in range(self.layer))
        return Variables(self.network.input_size, sizes)

    def treatment_of(self, neuron: Neuron) -> str:
        return treatment(self.network, neuron, self.facts[neuron], self.assumptions)

    def variable_bounds(self) -> tuple[list[Fraction], list[Fraction]]:
        """Exact lower and upper bound of every variable."""
        return self._variable_bounds

    def scaled_variable_bounds(self) -> tuple[list[int], list[int], int]:
        """The variable bounds as integer numerators over one common denominator."""
        return self._scaled_variable_bounds

    @functools.cached_property
    def _scaled_variable_bounds(self) -> tuple[list[int], list[int], int]:
        lower, upper = self._variable_bounds
        denominator = math.lcm(*(v.denominator for v in (*lower, *upper)))
        return (
            [v.numerator * (denominator // v.denominator) for v in lower],
            [v.numerator * (denominator // v.denominator) for v in upper],
            denominator,
        )

    @functools.cached_property
    def _variable_bounds(self) -> tuple[list[Fraction], list[Fraction]]:
        layout = self.variables
        lower: list[Fraction] = [Fraction(0)] * layout.count
        upper: list[Fraction] = [Fraction(0)] * layout.count
        for j in range(layout.input_size):
            lower[j] = Fraction(float(self.box.lower[j]))
            upper[j] = Fraction(float(self.box.upper[j]))
        zero = Fraction(0)
        for k in range(self.layer):
            for i in range(self.network.layers[k].outputs):
                neuron = Neuron(k, i)
                fact = self.facts[neuron]
                kind = self.treatment_of(neuron)
                g_low, g_high = fact.lower, fact.upper
                if kind == Treatment.ACTIVE:
                    g_low = max(g_low, zero)
                    a_low, a_high = g_low, g_high
                elif kind == Treatment.INACTIVE:
                    g_high = min(g_high, zero)
                    a_low, a_high = zero, zero
                elif kind == Treatment.UNSTABLE:
                    a_low, a_high = zero, max(g_high, zero)
                else:
                    a_low, a_high = g_low, g_high
                lower[layout.g(k, i)], upper[layout.g(k, i)] = g_low, g_high
                lower[layout.a(k, i)], upper[layout.a(k, i)] = a_low, a_high
        return lower, upper

    def small_rows(self) -> dict[str, tuple[dict[int, Fraction], Fraction, bool]]:
        """Every row except the `def` rows: key -> (coefficients, constant, is_equality).

        A row states `sum(coefficients[v] * z_v) + constant (>= or ==) 0`.
        """
        return self._small_rows

    @functools.cached_property
    def _small_rows(self) -> dict[str, tuple[dict[int, Fraction], Fraction, bool]]:
        layout = self.variables
        rows: dict[str, tuple[dict[int, Fraction], Fraction, bool]] = {}
        for k in range(self.layer):
            for i in range(self.network.layers[k].outputs):
                neuron = Neuron(k, i)
                g, a = layout.g(k, i), layout.a(k, i)
                kind = self.treatment_of(neuron)
                if neuron in self.assumptions and self.facts[neuron].phase is None:
                    # A case-split branch keeps the neuron's triangle rows (still valid: its
                    # proved bounds L < 0 < U hold on the whole box), so that a branch LP is
                    # the unsplit LP with changed bounds.
                    rows.update(self._triangle_rows(neuron))
                if kind in (Treatment.ACTIVE, Treatment.LINEAR):
                    rows[f"identity:{k}:{i}"] = (
                        {a: Fraction(1), g: Fraction(-1)},
                        Fraction(0),
                        True,
                    )
                elif kind == Treatment.UNSTABLE:
                    rows.update(self._triangle_rows(neuron))
        return rows

    def _triangle_rows(
        self, neuron: Neuron
    ) -> dict[str, tuple[dict[int, Fraction], Fraction, bool]]:
        """relu(g) >= g and the chord U(g - L) - (U - L) a >= 0, valid when L < 0 < U."""
        layout = self.variables
        k, i = neuron
        g, a = layout.g(k, i), layout.a(k, i)
        fact = self.facts[neuron]
        low, high = fact.lower, fact.upper
        return {
            f"above:{k}:{i}": ({a: Fraction(1), g: Fraction(-1)}, Fraction(0), False),
            f"triangle:{k}:{i}": ({g: high, a: low - high}, -high * low, False),
        }

    def lp_rows(self) -> tuple[list[str], list[SparseRow]]:
        """All rows in floating point for GLOP, `def` rows included, with their keys."""
        layout = self.variables
        keys: list[str] = []
        rows: list[SparseRow] = []
        for k in range(self.layer):
            layer = self.network.layers[k]
            previous = (
                np.arange(layout.input_size)
                if k == 0
                else np.array([layout.a(k - 1, j) for j in range(layer.inputs)])
            )
            for i in range(layer.outputs):
                weights = layer.float_weights[i]
                nonzero = np.flatnonzero(weights)
                indices = np.concatenate([[layout.g(k, i)], previous[nonzero]]).astype(np.int64)
                coefficients = np.concatenate([[1.0], -weights[nonzero]])
                keys.append(f"def:{k}:{i}")
                rows.append(SparseRow(indices, coefficients, float(layer.float_bias[i]), True))
        for key, (coefficients_map, constant, equality) in self.small_rows().items():
            keys.append(key)
            indices = np.array(list(coefficients_map), dtype=np.int64)
            values = np.array([float(c) for c in coefficients_map.values()])
            rows.append(SparseRow(indices, values, -float(constant), equality))
        return keys, rows

    def linear_program(self) -> tuple[list[str], LinearProgram]:
        lower, upper = self.variable_bounds()
        keys, rows = self.lp_rows()
        program = LinearProgram(
            np.array([float(v) for v in lower]), np.array([float(v) for v in upper]), rows
        )
        return keys, program

    def target_objective(self, neuron: Neuron, sign: int) -> tuple[FloatArray, float]:
        """sign * g_target as (coefficients over the variables, constant), floats."""
        layout = self.variables
        layer = self.network.layers[neuron.layer]
        objective = np.zeros(layout.count)
        previous = (
            np.arange(layout.input_size)
            if neuron.layer == 0
            else np.array([layout.a(neuron.layer - 1, j) for j in range(layer.inputs)])
        )
        objective[previous] = sign * layer.float_weights[neuron.index]
        return objective, sign * float(layer.float_bias[neuron.index])
