"""The main job's stages share one time limit, owned by one Budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verify_compress import pipeline
from verify_compress.budget import Budget
from verify_compress.config import Config
from verify_compress.domain import Domain

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits_l1.onnx"


class _Stop(Exception):
    pass


def _budget_of_the_analysis(
    monkeypatch: pytest.MonkeyPatch, out: Path, config: Config, started: float | None = None
) -> Budget:
    """The Budget the pipeline hands to the analysis (stopped there) for digits_l1 on [0,1]^64."""
    given: list[Budget] = []

    def analyse(_: Any, __: Any, config: Config, rng: Any, budget: Budget, *rest: Any) -> None:
        given.append(budget)
        raise _Stop

    monkeypatch.setattr(pipeline, "analyse", analyse)
    domain = Domain.box(np.zeros(64), np.ones(64))
    with pytest.raises(_Stop):
        pipeline.run(DIGITS, domain, out, config, started=started)
    (budget,) = given
    return budget


@pytest.mark.parametrize("time_limit", [1.0, 0.01])
def test_the_analysis_leaves_time_for_the_equivalence_proof_and_the_outputs(
    time_limit: float, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    budget = _budget_of_the_analysis(monkeypatch, tmp_path / "out", Config(time_limit=time_limit))
    weights = 64 * 32 + 32 * 32 + 32 * 10  # digits_l1: 64-32-32-10, no zero weights
    assert budget.weights == weights
    held_back = budget.deadline - budget.analysis_deadline()
    output = min(0.02 * time_limit + 2.5, 0.1 * time_limit)
    smt = 0.1 * time_limit
    assert held_back == pytest.approx(output + min(0.25 * time_limit, 3e-5 * weights) + smt)
    assert budget.limit == time_limit


@pytest.mark.parametrize("smt_tier", [True, False])
def test_the_limit_counts_from_the_given_start_and_without_smt_its_reserve_is_the_analysis(
    smt_tier: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = Config(time_limit=60.0, smt_tier=smt_tier)
    budget = _budget_of_the_analysis(monkeypatch, tmp_path / "out", config, started=12.5)
    assert budget.deadline == 72.5
    assert budget.reserve("smt") == (6.0 if smt_tier else 0.0)


def test_a_job_started_a_limit_ago_has_no_time_left_for_its_analysis(tmp_path: Path) -> None:
    domain = Domain.box(np.zeros(64), np.ones(64))
    config = Config(time_limit=30.0, smt_tier=False)
    late = pipeline.run(DIGITS, domain, tmp_path / "late", config, started=time.monotonic() - 30)
    on_time = pipeline.run(DIGITS, domain, tmp_path / "on-time", config)
    assert late.certificate["summary"]["totals"]["unknown"] > 0
    assert on_time.certificate["summary"]["totals"]["unknown"] == 0
