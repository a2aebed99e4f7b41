"""A brute-force stability oracle for small networks (tests only).

It enumerates the activation patterns of every hidden neuron by depth-first search, keeping a
pattern only if its region of the box is non-empty (an exact QF_LRA check in Z3: under a fixed
pattern every pre-activation is affine in x). Within each feasible pattern region it then asks,
for every neuron not yet shown in a phase, whether a point with g > 0 (resp. g < 0) exists,
again exactly. This matches the project's semantics: a neuron is stably ACTIVE iff g >= 0 on
the whole box (no point has g < 0), stably INACTIVE iff g <= 0 (no point has g > 0), and a
witness needs a strict sign. Weights and box bounds are read as the exact rationals they are.
Meant for networks with at most ~12 hidden neurons.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import z3

from verify_compress.domain import Box
from verify_compress.ir import Network
from verify_compress.status import Neuron, Phase


@dataclasses.dataclass(frozen=True)
class OracleVerdict:
    """The phases of each hidden neuron for which a strict witness exists in the box."""

    shown: dict[Neuron, frozenset[Phase]]
    feasible_patterns: int

    def stable_phases(self, neuron: Neuron) -> set[Phase]:
        """The phases the neuron is stable in: both when g == 0 on the whole box."""
        return {phase for phase in Phase if phase.opposite not in self.shown[neuron]}

    def unstable(self) -> set[Neuron]:
        return {n for n, phases in self.shown.items() if len(phases) == 2}


def _real(value: object) -> z3.ArithRef:
    fraction = Fraction(value)  # type: ignore[arg-type]
    return z3.RealVal(f"{fraction.numerator}/{fraction.denominator}")


def _affine(
    weights: list[list[z3.ArithRef]], bias: list[z3.ArithRef], inputs: list[z3.ArithRef]
) -> list[z3.ArithRef]:
    return [
        z3.simplify(z3.Sum([w * v for w, v in zip(row, inputs, strict=True)]) + b)
        for row, b in zip(weights, bias, strict=True)
    ]


def stability_oracle(network: Network, box: Box) -> OracleVerdict:
    """Exact stability of every hidden neuron of `network` on `box`."""
    x = [z3.Real(f"x{j}") for j in range(network.input_size)]
    solver = z3.Solver()
    for j, variable in enumerate(x):
        solver.add(variable >= _real(float(box.lower[j])), variable <= _real(float(box.upper[j])))
    exact_layers = [
        (
            [[_real(w) for w in row] for row in layer.weights.tolist()],
            [_real(b) for b in layer.bias.tolist()],
            layer.relu,
        )
        for layer in network.layers
    ]
    hidden = network.hidden_neurons()
    shown: dict[Neuron, set[Phase]] = {n: set() for n in hidden}
    feasible = 0

    def explore(layer_index: int, values: list[z3.ArithRef]) -> None:
        nonlocal feasible
        if layer_index == len(exact_layers) or not any(
            relu for _, _, relu in exact_layers[layer_index:]
        ):
            feasible += 1
            return
        weights, bias, relu = exact_layers[layer_index]
        g = _affine(weights, bias, values)
        if not relu:
            explore(layer_index + 1, g)
            return
        assign(layer_index, g, 0, [])

    def assign(layer_index: int, g: list[z3.ArithRef], row: int, post: list[z3.ArithRef]) -> None:
        if row == len(g):
            record_witnesses(layer_index, g)
            explore(layer_index + 1, post)
            return
        for active in (True, False):
            solver.push()
            solver.add(g[row] >= 0 if active else g[row] <= 0)
            if solver.check() == z3.sat:
                assign(layer_index, g, row + 1, [*post, g[row] if active else z3.RealVal(0)])
            solver.pop()

    def record_witnesses(layer_index: int, g: list[z3.ArithRef]) -> None:
        # Inside this pattern region every g of the layer is affine: strict witnesses exactly.
        for row, value in enumerate(g):
            neuron = Neuron(layer_index, row)
            for phase in set(Phase) - shown[neuron]:
                solver.push()
                solver.add(value > 0 if phase is Phase.ACTIVE else value < 0)
                if solver.check() == z3.sat:
                    shown[neuron].add(phase)
                solver.pop()

    explore(0, list(x))
    return OracleVerdict({n: frozenset(p) for n, p in shown.items()}, feasible)
