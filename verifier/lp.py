"""Every LP call goes through this one small class (OR-Tools GLOP, floating point).

Stage: ... -> stability search -> **certification** (finding proofs) -> ...

LP results are hints: their dual values are turned into exact Farkas certificates by
`verifier.certify`, which checks them in rational arithmetic. Nothing here is trusted.

Problem form: variables with finite bounds lo <= z <= hi; rows `row . z >= rhs` or
`row . z == rhs`; maximize `objective . z`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from ortools.linear_solver import pywraplp

FloatArray = npt.NDArray[np.float64]


class LpStatus(enum.Enum):
    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class SparseRow:
    """sum(coefficients[k] * z[indices[k]]) (>= or ==) rhs."""

    indices: npt.NDArray[np.int64]
    coefficients: FloatArray
    rhs: float
    equality: bool


@dataclasses.dataclass(frozen=True)
class LpSolution:
    status: LpStatus
    value: float
    primal: FloatArray
    row_duals: FloatArray
    """Multipliers y with objective . z <= value for feasible z read as
    objective = -sum(y_r * row_r) + reduced costs; y_r >= 0 for >= rows (see `certify`)."""


class LinearProgram:
    """A GLOP model built once; the objective can be changed and re-solved (warm start)."""

    def __init__(self, lower: FloatArray, upper: FloatArray, rows: Sequence[SparseRow]) -> None:
        self._solver = pywraplp.Solver.CreateSolver("GLOP")
        if self._solver is None:
            raise RuntimeError("OR-Tools GLOP is not available")
        infinity = self._solver.infinity()
        self._variables = [
            self._solver.NumVar(float(lo), float(hi), "")
            for lo, hi in zip(lower, upper, strict=True)
        ]
        self._constraints = []
        for row in rows:
            upper_limit = row.rhs if row.equality else infinity
            constraint = self._solver.Constraint(row.rhs, upper_limit)
            for index, coefficient in zip(
                row.indices.tolist(), row.coefficients.tolist(), strict=True
            ):
                if coefficient != 0.0:
                    constraint.SetCoefficient(self._variables[index], coefficient)
            self._constraints.append(constraint)
        self._objective_indices: list[int] = []

    def set_variable_bounds(self, index: int, lower: float, upper: float) -> None:
        self._variables[index].SetBounds(float(lower), float(upper))

    def set_row_bounds(self, row: int, lower: float, upper: float) -> None:
        """Change a row's range; `upper = lower` turns an inequality into an equality."""
        self._constraints[row].SetBounds(float(lower), float(upper))

    @property
    def infinity(self) -> float:
        return float(self._solver.infinity())

    @property
    def size(self) -> int:
        return len(self._variables)

    def maximize(self, objective: FloatArray, time_limit_seconds: float = 30.0) -> LpSolution:
        solver_objective = self._solver.Objective()
        for index in self._objective_indices:
            solver_objective.SetCoefficient(self._variables[index], 0.0)
        nonzero = np.flatnonzero(objective).tolist()
        for index in nonzero:
            solver_objective.SetCoefficient(self._variables[index], float(objective[index]))
        self._objective_indices = nonzero
        solver_objective.SetMaximization()
        self._solver.SetTimeLimit(max(1, int(time_limit_seconds * 1000)))
        status = self._solver.Solve()
        if status == pywraplp.Solver.INFEASIBLE:
            return LpSolution(LpStatus.INFEASIBLE, float("-inf"), np.empty(0), np.empty(0))
        if status != pywraplp.Solver.OPTIMAL:
            return LpSolution(LpStatus.FAILED, float("nan"), np.empty(0), np.empty(0))
        primal = np.array([variable.solution_value() for variable in self._variables])
        duals = np.array([constraint.dual_value() for constraint in self._constraints])
        return LpSolution(LpStatus.OPTIMAL, solver_objective.Value(), primal, duals)
