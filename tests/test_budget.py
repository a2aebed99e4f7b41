"""The Budget owns every time share; tested with a fake clock."""

from __future__ import annotations

import pytest

from verify_compress.budget import Budget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_is_the_limit_after_creation_and_remaining_never_goes_negative() -> None:
    clock = FakeClock()
    budget = Budget(60.0, clock=clock)
    assert budget.deadline == 160.0
    clock.now = 130.0
    assert budget.remaining() == 30.0
    clock.now = 200.0
    assert budget.remaining() == 0.0


def test_the_equivalence_reserve_grows_with_the_weights_up_to_a_quarter_of_the_limit() -> None:
    clock = FakeClock()
    assert Budget(100.0, weights=1000, clock=clock).reserve("equivalence") == pytest.approx(0.03)
    assert Budget(100.0, weights=10**9, clock=clock).reserve("equivalence") == 25.0


def test_a_stage_gets_its_share_of_what_the_analysis_has_left_now() -> None:
    clock = FakeClock()
    budget = Budget(100.0, weights=0, clock=clock)
    analysis_end = budget.analysis_deadline()
    assert analysis_end == pytest.approx(185.5)
    clock.now = 150.0
    assert budget.stage_deadline("search") == pytest.approx(150.0 + 0.15 * 35.5)
    assert budget.stage_deadline("proofs") == pytest.approx(150.0 + 0.85 * 35.5)


def test_a_stage_past_the_analysis_deadline_gets_no_time() -> None:
    clock = FakeClock()
    budget = Budget(10.0, clock=clock)
    clock.now = 500.0
    assert budget.stage_deadline("witnesses") == 500.0


def test_unknown_stage_and_reserve_names_are_errors_listing_the_known_ones() -> None:
    budget = Budget(10.0, clock=FakeClock())
    with pytest.raises(KeyError, match="witnesses, proofs, search"):
        budget.stage_deadline("lp")
    with pytest.raises(KeyError, match="equivalence, output, smt"):
        budget.reserve("z3")


def test_a_job_started_before_the_budget_was_made_counts_from_its_start() -> None:
    clock = FakeClock()
    budget = Budget(60.0, clock=clock, started=90.0)
    assert budget.deadline == 150.0
    assert budget.remaining() == 50.0


def test_the_smt_tier_runs_from_the_analysis_end_to_the_equivalence_reserve() -> None:
    clock = FakeClock()
    budget = Budget(100.0, weights=10**6, clock=clock)
    # limit 100: output 4.5 s, equivalence min(25, 30) = 25 s, smt 10 s
    assert budget.reserve("smt") == pytest.approx(10.0)
    assert budget.smt_deadline() == pytest.approx(200.0 - 4.5 - 25.0)
    assert budget.analysis_deadline() == pytest.approx(budget.smt_deadline() - 10.0)
    assert budget.smt_deadline() < budget.output_deadline()


def test_without_the_smt_tier_the_analysis_keeps_its_reserve() -> None:
    clock = FakeClock()
    with_tier = Budget(100.0, weights=10**6, clock=clock)
    without = Budget(100.0, weights=10**6, clock=clock, smt_reserved=False)
    assert without.reserve("smt") == 0.0
    assert without.analysis_deadline() == without.smt_deadline() == with_tier.smt_deadline()
    assert without.analysis_deadline() == pytest.approx(with_tier.analysis_deadline() + 10.0)
