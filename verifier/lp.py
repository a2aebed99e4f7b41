"""Every LP call goes through this one small class (OR-Tools GLOP, floating point).

Stage: ... -> search -> **branching** (proposing multipliers) -> statuses ...

UNTRUSTED. The triangle relaxation of a network's first layers on one box is an LP whose
optimal dual values on the layer equations g_k = W_k h_{k-1} + b_k are the best multipliers
nu_k of the dual function the kernel evaluates (`verifier.kernel.bounds`): by LP duality its
optimum equals max_nu D(nu). GLOP's duals are floats and may be wrong or missing; the kernel
computes the bound they give exactly, and any multipliers at all give a sound bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from ortools.linear_solver import pywraplp

from .domain import Box
from .ir import Network
from .status import Neuron, Phase

FloatArray = npt.NDArray[np.float64]

SMALLEST_COEFFICIENT = 1e-9
"""Coefficients below this (relative to the row's largest) are left out of the LP: GLOP
returns ABNORMAL on rows of tiny weights (seen on L1-trained nets, weights below 1e-6).
Leaving them out changes only the proposed multipliers, never a bound."""


SLACK = 1e-6
"""Relative slack added to the pre-activation bounds in the LP (see `TriangleLp`)."""


class TriangleLp:
    """The triangle relaxation of layers 0 .. layer-1 on a box, over given bounds of their
    pre-activations, built once; `multipliers` solves it for one target row of `layer`."""

    def __init__(
        self,
        network: Network,
        box: Box,
        lowers: Sequence[FloatArray],
        uppers: Sequence[FloatArray],
        layer: int,
    ) -> None:
        self.network = network
        self.layer = layer
        solver = pywraplp.Solver.CreateSolver("GLOP")
        if solver is None:
            raise RuntimeError("OR-Tools GLOP is not available")
        # Measured on mnist-net_256x2's prop_1_0.05 triangle LP: 10.5 ms a solve with the dual
        # simplex against 23.7 ms with GLOP's default (each solve changes the objective).
        solver.SetSolverSpecificParametersAsString("use_dual_simplex: true")
        self._solver = solver
        previous = [
            solver.NumVar(float(lo), float(hi), "")
            for lo, hi in zip(box.lower, box.upper, strict=True)
        ]
        self._inputs = previous
        self.point: FloatArray | None = None
        """The input part of the last optimal solution (a candidate witness: where the
        relaxation's optimum is an actual network point, the claim is false there)."""
        self._equations: list[list[pywraplp.Constraint]] = []
        self._slacks: list[pywraplp.Variable] = []
        self._unstable: dict[Neuron, tuple[pywraplp.Constraint, float, float]] = {}
        self._g: list[list[pywraplp.Variable]] = []
        self._h: list[list[pywraplp.Variable]] = []
        for k in range(layer):
            weights = network.layers[k].float_weights
            bias = network.layers[k].float_bias
            # Proved bounds can be tight to the last bit (the first layer's are exact): a
            # little slack keeps GLOP's tolerances from calling the LP infeasible.
            slack = SLACK * (1.0 + np.maximum(np.abs(lowers[k]), np.abs(uppers[k])))
            lower, upper = lowers[k] - slack, uppers[k] + slack
            g = [
                solver.NumVar(float(lo), float(hi), "") for lo, hi in zip(lower, upper, strict=True)
            ]
            h = [
                solver.NumVar(max(float(lo), 0.0), max(float(hi), 0.0), "")
                for lo, hi in zip(lower, upper, strict=True)
            ]
            equations = []
            for i in range(weights.shape[0]):
                row = solver.Constraint(float(bias[i]), float(bias[i]))
                row.SetCoefficient(g[i], 1.0)
                coefficients = weights[i]
                cutoff = SMALLEST_COEFFICIENT * float(np.abs(coefficients).max(initial=0.0))
                for j in np.flatnonzero(np.abs(coefficients) > cutoff).tolist():
                    row.SetCoefficient(previous[j], -float(coefficients[j]))
                # Slacks, fixed at 0 but in the infeasibility LP (`infeasibility_ray`).
                for sign in (1.0, -1.0):
                    slack_variable = solver.NumVar(0.0, 0.0, "")
                    row.SetCoefficient(slack_variable, sign)
                    self._slacks.append(slack_variable)
                equations.append(row)
                lo, hi = float(lower[i]), float(upper[i])
                if lo >= 0:
                    same = solver.Constraint(0.0, 0.0)
                    same.SetCoefficient(h[i], 1.0)
                    same.SetCoefficient(g[i], -1.0)
                elif hi > 0:
                    above = solver.Constraint(0.0, solver.infinity())  # h - g >= 0
                    above.SetCoefficient(h[i], 1.0)
                    above.SetCoefficient(g[i], -1.0)
                    slope = hi / (hi - lo)
                    below = solver.Constraint(slope * lo, solver.infinity())  # s g - h >= s l
                    below.SetCoefficient(g[i], slope)
                    below.SetCoefficient(h[i], -1.0)
                    self._unstable[Neuron(k, i)] = (below, slope * lo, slope)
            self._equations.append(equations)
            self._g.append(g)
            self._h.append(h)
            previous = h

    def multipliers(
        self,
        neuron: Neuron,
        phase: Phase,
        assumptions: Mapping[Neuron, Phase] | None = None,
        time_limit: float = 10.0,
    ) -> list[FloatArray] | None:
        """Optimal multipliers for the bound of `neuron` (a neuron of `self.layer`) that can
        show `phase` where the phase assumptions hold, or None if GLOP does not solve it."""
        if neuron.layer != self.layer:
            raise ValueError(f"this LP bounds layer {self.layer}, not {neuron}")
        changed = [self._assume(n, p) for n, p in (assumptions or {}).items()]
        try:
            return self._solve(neuron, phase, time_limit)
        finally:
            for restore in changed:
                restore()

    def infeasibility_ray(
        self, assumptions: Mapping[Neuron, Phase], time_limit: float = 10.0
    ) -> list[FloatArray] | None:
        """Where the phase assumptions leave the relaxation empty (the LP is infeasible):
        multipliers nu with min over the relaxation of nu.(W h + b - g) > 0, read from the
        duals of the LP that minimises the layer equations' total violation. Added, scaled
        up, to any multipliers they raise the bound without limit: the kernel then proves the
        case vacuous. None if GLOP finds the relaxation feasible or fails."""
        changed = [self._assume(n, p) for n, p in assumptions.items()]
        objective = self._solver.Objective()
        objective.Clear()
        for slack_variable in self._slacks:
            slack_variable.SetUb(self._solver.infinity())
            objective.SetCoefficient(slack_variable, 1.0)
        objective.SetMinimization()
        try:
            self._solver.SetTimeLimit(max(1, int(time_limit * 1000)))
            if self._solver.Solve() != pywraplp.Solver.OPTIMAL or objective.Value() <= 0:
                return None
            return self._equation_duals()
        finally:
            objective.Clear()
            for slack_variable in self._slacks:
                slack_variable.SetUb(0.0)
            for restore in changed:
                restore()

    def _assume(self, neuron: Neuron, phase: Phase) -> Callable[[], None]:
        """Narrow an unstable neuron to one phase (active: g >= 0 and h = g; inactive: g <= 0
        and h = 0); returns what undoes it. Other neurons already have one phase."""
        entry = self._unstable.get(neuron)
        if entry is None:
            return lambda: None
        below, rhs, slope = entry
        g = self._g[neuron.layer][neuron.index]
        h = self._h[neuron.layer][neuron.index]
        g_bounds, h_bounds = (g.lb(), g.ub()), (h.lb(), h.ub())
        if phase is Phase.ACTIVE:
            g.SetLb(0.0)
            below.SetCoefficient(g, 1.0)  # g - h >= 0, with h - g >= 0: h = g
            below.SetLb(0.0)
        else:
            g.SetUb(0.0)
            h.SetUb(0.0)

        def restore() -> None:
            g.SetBounds(*g_bounds)
            h.SetBounds(*h_bounds)
            below.SetCoefficient(g, slope)
            below.SetLb(rhs)

        return restore

    def _solve(self, neuron: Neuron, phase: Phase, time_limit: float) -> list[FloatArray] | None:
        sign = -1.0 if phase is Phase.INACTIVE else 1.0
        objective = self._solver.Objective()
        objective.Clear()
        weights = self.network.layers[self.layer].float_weights[neuron.index]
        previous = self._h[-1]
        for j in np.flatnonzero(weights).tolist():
            objective.SetCoefficient(previous[j], sign * float(weights[j]))
        objective.SetMinimization()
        self._solver.SetTimeLimit(max(1, int(time_limit * 1000)))
        if self._solver.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        self.point = np.array([x.solution_value() for x in self._inputs])
        return self._equation_duals()

    def _equation_duals(self) -> list[FloatArray] | None:
        """The last solve's dual values of the layer equations, one vector per layer (None if
        any is not finite)."""
        found = [np.array([row.dual_value() for row in rows]) for rows in self._equations]
        return found if all(np.all(np.isfinite(m)) for m in found) else None
