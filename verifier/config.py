"""The run configuration: one frozen dataclass passed to every stage (no global settings)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np


@dataclasses.dataclass(frozen=True)
class Config:
    """Knobs of an analysis run. Defaults are what the CLI uses."""

    time_limit: float = 300.0
    """Global wall-clock budget in seconds. Reaching it never makes a result wrong: whatever is
    undecided becomes unknown."""
    samples: int = 2000
    """Random domain points evaluated in the witness search."""
    gradient_steps: int = 40
    """Steps of the sign-gradient witness search per start."""
    method: Literal["single", "per-neuron"] = "single"
    workers: int = 2
    backend: Literal["local", "dask"] = "local"
    """Where one job's per-box and per-claim tasks run (`verifier.workers.WorkerPool`): "local"
    processes, or the workers of a Dask cluster ("dask": a `LocalCluster` of `workers`
    processes, or the cluster at `scheduler`). Never changes what a result proves: the
    backend only runs the tasks."""
    scheduler: str | None = None
    """A Dask scheduler's address (tcp://host:8786) for backend "dask"; None: a LocalCluster."""
    seed: int = 0
    search_scale: int = 1000
    """Integer scale of weights and inputs in the CP-SAT model."""
    max_split_depth: int = 6
    """Deepest phase case split tried when one relaxation does not prove a claim."""
    max_subboxes: int = 4096
    """Most sub-boxes one domain box is bisected into for certification (1: no input
    splitting). Splitting is tried only on inputs of at most 16 dimensions, and only while the
    time limit allows it."""
    strict_semantics: bool = False
    """Refuse a network whose import rounds a fold in float64 (BatchNormalization's sqrt, a
    division of constants): its claims would hold for the rounded network only."""
    export_dtype: Literal["float32", "float64"] | None = None
    """dtype of the compressed ONNX; None keeps the original network's dtype."""
    smt_tier: bool = True
    """After the analysis, Z3 re-proves the stability obligations in worker processes as time
    allows (`verifier.stability.confirm_with_smt`); False writes them but runs none (every
    stable neuron's evidence then says `smt: not-run`). Never changes a status."""

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)
