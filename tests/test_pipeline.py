"""The main job's stages share one time limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verifier import pipeline
from verifier.config import Config
from verifier.domain import Domain

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits_l1.onnx"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("time_limit", [1.0, 0.01])
def test_the_analysis_leaves_time_for_the_equivalence_proof(
    time_limit: float, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given: list[Config] = []

    def analyse(network: Any, domain: Any, config: Config, *_: Any) -> None:
        given.append(config)
        raise _Stop

    monkeypatch.setattr(pipeline, "analyse", analyse)
    domain = Domain.box(np.zeros(64), np.ones(64))
    with pytest.raises(_Stop):
        pipeline.run(DIGITS, domain, tmp_path / "out", Config(time_limit=time_limit))
    (config,) = given
    weights = 64 * 32 + 32 * 32 + 32 * 10  # digits_l1: 64-32-32-10, no zero weights
    expected = 0.02 * time_limit + min(
        0.25 * time_limit, pipeline.EQUIVALENCE_SECONDS_PER_WEIGHT * weights
    )
    assert config.time_limit == pytest.approx(time_limit - expected)
    assert config.time_limit < time_limit
