"""The main job's stages share one time limit, owned by one Budget."""

from __future__ import annotations

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


@pytest.mark.parametrize("time_limit", [1.0, 0.01])
def test_the_analysis_leaves_time_for_the_equivalence_proof_and_the_outputs(
    time_limit: float, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given: list[Budget] = []

    def analyse(_: Any, __: Any, config: Config, rng: Any, budget: Budget, *rest: Any) -> None:
        given.append(budget)
        raise _Stop

    monkeypatch.setattr(pipeline, "analyse", analyse)
    domain = Domain.box(np.zeros(64), np.ones(64))
    with pytest.raises(_Stop):
        pipeline.run(DIGITS, domain, tmp_path / "out", Config(time_limit=time_limit))
    (budget,) = given
    weights = 64 * 32 + 32 * 32 + 32 * 10  # digits_l1: 64-32-32-10, no zero weights
    assert budget.weights == weights
    held_back = budget.deadline - budget.analysis_deadline()
    output = min(0.02 * time_limit + 2.5, 0.1 * time_limit)
    smt = 0.1 * time_limit
    assert held_back == pytest.approx(output + min(0.25 * time_limit, 3e-5 * weights) + smt)
    assert budget.limit == time_limit
