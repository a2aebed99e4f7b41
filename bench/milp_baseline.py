"""Bench-only baseline: one HiGHS MILP per neuron and phase (the approach the paper improves on).

Not part of verify-compress (nothing in `verifier/` imports it) and not a proof: HiGHS works in
floating point with tolerances. It is the reference the paper's experiment compares against:
the per-neuron mixed-integer maximization (resp. minimization) of each candidate neuron's
pre-activation over the input box, ReLUs of earlier layers encoded with binaries (big-M from
the tool's float bounds, widened). Its verdicts are "truth where it finishes".

    stably inactive  <=> max pre-activation <= 0    (HiGHS's dual bound <= MILP_TOLERANCE)
    stably active    <=> min pre-activation >= 0

Needs `highspy` (pip install highspy); the bench says so when it is missing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from verify_compress.bounds import LayerBounds
from verify_compress.ir import Network

MILP_TOLERANCE = 1e-6
"""A dual bound within this of 0 counts as "stable" (HiGHS's own feasibility tolerance)."""
WIDEN = 1e-6
"""Relative widening of the float bounds used as big-M constants."""


@dataclasses.dataclass(frozen=True)
class MilpVerdicts:
    stable: dict[tuple[int, int], str]
    """(layer, index) -> "active" / "inactive" for neurons the MILPs showed stable."""
    unstable: set[tuple[int, int]]
    timed_out: set[tuple[int, int]]
    solves: int
    seconds: float


def per_neuron_milp(
    network: Network,
    lower: np.ndarray,
    upper: np.ndarray,
    bounds: LayerBounds,
    candidates: Sequence[tuple[int, int]],
    seen_active: set[tuple[int, int]],
    seen_inactive: set[tuple[int, int]],
    seconds_per_solve: float,
    deadline: float,
) -> MilpVerdicts:
    """Decide each candidate with at most two MILPs (only the phases not seen in the data)."""
    import highspy

    started = time.monotonic()
    stable: dict[tuple[int, int], str] = {}
    unstable: set[tuple[int, int]] = set()
    timed_out: set[tuple[int, int]] = set()
    solves = 0
    by_layer: dict[int, list[int]] = {}
    for layer, index in sorted(candidates):
        by_layer.setdefault(layer, []).append(index)
    for layer, indices in sorted(by_layer.items()):
        model = _layer_model(highspy, network, lower, upper, bounds, layer)
        for index in indices:
            neuron = (layer, index)
            verdict = None
            for sense in ("max", "min"):
                if (sense == "max" and neuron in seen_active) or (
                    sense == "min" and neuron in seen_inactive
                ):
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    verdict = "timeout"
                    break
                solves += 1
                decided = model.solve(index, sense, min(seconds_per_solve, left))
                if decided is None:
                    verdict = "timeout"
                    break
                if decided:
                    verdict = "inactive" if sense == "max" else "active"
                    break
                verdict = "unstable"
            if verdict in ("active", "inactive"):
                stable[neuron] = verdict
            elif verdict == "timeout":
                timed_out.add(neuron)
            else:
                unstable.add(neuron)
    return MilpVerdicts(stable, unstable, timed_out, solves, time.monotonic() - started)


class _LayerModel:
    """Inputs and layers 0..layer-1 as a big-M MILP; the objective is set per solve."""

    def __init__(self, highs: object, target_weights: np.ndarray, target_bias: np.ndarray,
                 columns: int, first_target: int) -> None:
        self.highs = highs
        self.weights = target_weights
        self.bias = target_bias
        self.columns = columns
        self.first = first_target

    def solve(self, index: int, sense: str, seconds: float) -> bool | None:
        """True: the phase cannot occur (the bound crosses 0 the right way); False: a point
        shows it; None: undecided in time."""
        import highspy

        highs = self.highs
        # Always minimize, with a cutoff at 0: minimize -g (max check) or g (min check). Nodes
        # that cannot go below 0 are pruned, and the first solution below 0 stops the solve,
        # so HiGHS answers the sign question, not the optimization.
        sign = -1.0 if sense == "max" else 1.0
        cost = np.zeros(self.columns)
        cost[self.first:self.first + self.weights.shape[1]] = sign * self.weights[index]
        highs.changeColsCost(self.columns, np.arange(self.columns, dtype=np.int32), cost)
        highs.changeObjectiveOffset(sign * float(self.bias[index]))
        highs.changeObjectiveSense(highspy.ObjSense.kMinimize)
        highs.setOptionValue("objective_bound", -MILP_TOLERANCE)
        highs.setOptionValue("mip_max_improving_sols", 1)
        highs.setOptionValue("time_limit", float(max(seconds, 0.01)))
        highs.clearSolver()
        highs.run()
        info = highs.getInfo()
        status = highs.getModelStatus()
        if info.primal_solution_status and info.objective_function_value < -MILP_TOLERANCE:
            return False
        if status in (
            highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kObjectiveBound,
            highspy.HighsModelStatus.kOptimal,
        ):
            return True
        return None


def _layer_model(
    highspy: object, network: Network, lower: np.ndarray, upper: np.ndarray,
    bounds: LayerBounds, layer: int,
) -> _LayerModel:
    """Columns: inputs, then per earlier layer its post-activations h (and binaries z for its
    unstable neurons). Rows: h >= g, h <= g - L(1 - z), h <= U z (unstable); h = g (active);
    h fixed to 0 (inactive), with g = W h_prev + b."""
    import highspy as hs

    col_lower = list(np.asarray(lower, dtype=float))
    col_upper = list(np.asarray(upper, dtype=float))
    integrality = [hs.HighsVarType.kContinuous] * len(col_lower)
    rows: list[tuple[dict[int, float], float, float]] = []
    previous = list(range(len(col_lower)))
    for k in range(layer):
        affine = network.layers[k]
        weights = affine.float_weights
        bias = np.asarray(affine.bias, dtype=float)
        low = bounds.lower[k] - WIDEN * (1 + np.abs(bounds.lower[k]))
        high = bounds.upper[k] + WIDEN * (1 + np.abs(bounds.upper[k]))
        # Post-activations first (contiguous columns: the next layer's objective reads them).
        current = list(range(len(col_lower), len(col_lower) + weights.shape[0]))
        col_lower.extend([0.0] * len(current))
        col_upper.extend(np.maximum(high, 0.0).tolist())
        integrality.extend([hs.HighsVarType.kContinuous] * len(current))
        for i, h in enumerate(current):
            row = {previous[j]: -float(w) for j, w in enumerate(weights[i]) if w != 0.0}
            if high[i] <= 0.0:
                col_upper[h] = 0.0
                continue
            if low[i] >= 0.0:
                rows.append(({**row, h: 1.0}, float(bias[i]), float(bias[i])))
                continue
            z = len(col_lower)
            col_lower.append(0.0)
            col_upper.append(1.0)
            integrality.append(hs.HighsVarType.kInteger)
            rows.append(({**row, h: 1.0}, float(bias[i]), hs.kHighsInf))
            rows.append(({**row, h: 1.0, z: -float(low[i])}, -hs.kHighsInf,
                         float(bias[i] - low[i])))
            rows.append(({h: 1.0, z: -float(high[i])}, -hs.kHighsInf, 0.0))
        previous = current
    target = network.layers[layer]
    # The objective's columns must be contiguous: the target's inputs are `previous`.
    first = previous[0]
    lp = hs.HighsLp()
    lp.num_col_ = len(col_lower)
    lp.num_row_ = len(rows)
    lp.col_cost_ = np.zeros(len(col_lower))
    lp.col_lower_ = np.array(col_lower)
    lp.col_upper_ = np.array(col_upper)
    lp.row_lower_ = np.array([r[1] for r in rows])
    lp.row_upper_ = np.array([r[2] for r in rows])
    starts, indices, values = [0], [], []
    for entries, _, _ in rows:
        for column, value in entries.items():
            indices.append(column)
            values.append(value)
        starts.append(len(indices))
    lp.a_matrix_.format_ = hs.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(indices, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(values)
    lp.integrality_ = integrality
    highs = hs.Highs()
    highs.silent()
    highs.setOptionValue("threads", 1)
    highs.passModel(lp)
    weights = target.float_weights
    return _LayerModel(highs, weights, np.asarray(target.bias, dtype=float), lp.num_col_, first)
