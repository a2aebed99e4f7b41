"""Obligations run in a fresh solver: unsat everywhere means proved, any sat means refuted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from verify_compress.check import check_certificate
from verify_compress.errors import MissingToolError, VerifyCompressError
from verify_compress.smt import (
    Obligation,
    SmtVerdict,
    SolverPool,
    check,
    check_many,
    require_solver,
)

PROVABLE = Obligation(
    "provable",
    "(set-logic QF_LRA)\n(declare-const x Real)\n(assert (<= 0.0 x))\n(assert (<= x 1.0))\n"
    "(assert (> (+ (* (/ 1.0 3.0) x) 0.5) 1.0))\n(check-sat)\n(reset)\n"
    "(set-logic QF_LRA)\n(declare-const y Real)\n"
    "(assert (not (= (* 2.0 y) (+ y y))))\n(check-sat)\n",
)
FALSE = Obligation(
    "false",
    "(set-logic QF_LRA)\n(declare-const x Real)\n(assert (<= 0.0 x))\n(assert (<= x 3.0))\n"
    "(assert (> (* (/ 1.0 3.0) x) 0.5))\n(check-sat)\n",
)
BUNDLED = Path(__file__).resolve().parents[1] / "proofs" / "digits_l1" / "certificate.json"


@pytest.mark.parametrize("solver", ["z3", "cvc5"])
def test_an_obligation_whose_queries_are_all_unsat_is_proved(solver: str) -> None:
    if solver == "cvc5":
        pytest.importorskip("cvc5")
    assert check(PROVABLE, 10.0, solver).verdict is SmtVerdict.PROVED


@pytest.mark.parametrize("solver", ["z3", "cvc5"])
def test_an_obligation_with_a_satisfiable_query_is_refuted(solver: str) -> None:
    if solver == "cvc5":
        pytest.importorskip("cvc5")
    assert check(FALSE, 10.0, solver).verdict is SmtVerdict.REFUTED


def test_a_script_without_check_sat_proves_nothing() -> None:
    empty = Obligation("empty", "(set-logic QF_LRA)\n(declare-const x Real)\n")
    assert check(empty).verdict is SmtVerdict.UNKNOWN


def test_an_unknown_solver_is_rejected() -> None:
    with pytest.raises(ValueError, match="supported: z3, cvc5"):
        check(PROVABLE, 1.0, "yices")


def test_a_solver_that_is_not_installed_is_refused_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cvc5", None)  # `import cvc5` now raises ImportError
    with pytest.raises(MissingToolError, match=r"pip install 'verify-compress\[cvc5\]'"):
        require_solver("cvc5")


def test_z3_is_always_available_and_an_unknown_solver_is_a_user_error() -> None:
    require_solver("z3")
    with pytest.raises(VerifyCompressError, match="supported: z3, cvc5"):
        require_solver("yices")


def test_parallel_checks_give_the_same_verdicts_in_order() -> None:
    obligations = [PROVABLE, FALSE] * 5
    verdicts = [r.verdict for r in check_many(obligations, 10.0, workers=2)]
    assert verdicts == [SmtVerdict.PROVED, SmtVerdict.REFUTED] * 5


def test_cvc5_independently_accepts_a_bundled_certificate() -> None:
    pytest.importorskip("cvc5")
    if not BUNDLED.is_file():
        pytest.skip("no bundled certificate")
    report = check_certificate(BUNDLED, solver="cvc5")
    assert report.valid, report.first_failure


PREFIX = (
    "(set-logic QF_LRA)\n(declare-const x Real)\n(assert (<= 0.0 x))\n(assert (<= x 1.0))\n"
    "(define-fun g () Real (+ (* 2.0 x) (- 1.0)))\n"
)
BLOCKS_UNSAT = PREFIX + (
    "(push 1)\n(assert (> g 1.0))\n(check-sat)\n(pop 1)\n"
    "(push 1)\n; a comment (with parentheses\n(assert (< g (- 1.0)))\n(check-sat)\n(pop 1)\n"
)
BLOCKS_ONE_SAT = PREFIX + (
    "(push 1)\n(assert (> g 1.0))\n(check-sat)\n(pop 1)\n"
    "(push 1)\n(assert (>= x 0.5))\n(assert (> g 0.5))\n(check-sat)\n(pop 1)\n"
)


@pytest.mark.parametrize("solver", ["z3", "cvc5"])
def test_a_push_pop_script_holds_iff_every_block_is_unsat_with_the_prefix(solver: str) -> None:
    if solver == "cvc5":
        pytest.importorskip("cvc5")
    assert check(Obligation("blocks", BLOCKS_UNSAT), 10.0, solver).verdict is SmtVerdict.PROVED
    refuted = check(Obligation("one-sat", BLOCKS_ONE_SAT), 10.0, solver)
    assert refuted.verdict is SmtVerdict.REFUTED


def test_an_obligation_not_started_by_its_deadline_is_not_run_and_not_proved() -> None:
    import time

    past = time.monotonic() - 1.0
    results = check_many([PROVABLE, FALSE], 10.0, workers=1, deadline=past)
    assert [r.verdict for r in results] == [SmtVerdict.NOT_RUN, SmtVerdict.NOT_RUN]


def test_z3_re_proves_the_bundled_first_layer_claims_and_never_refutes_any() -> None:
    """`check --smt z3` on a bundled certificate: every stability obligation re-derived and run;
    at least the claims the run confirmed are confirmed (2 s per obligation: the second layer's
    exact LP over 64 inputs takes Z3 longer, see docs/BENCHMARKS.md)."""
    import json

    recorded = json.loads(BUNDLED.read_text())["summary"]["totals"]["smt_confirmed"]
    report = check_certificate(BUNDLED, stability_smt=True, stability_timeout=2.0)
    assert report.valid, report.first_failure
    assert report.counts["stable_neurons_confirmed_by_z3"] >= recorded > 0


def _slow_to_parse(variables: int) -> str:
    """A satisfiable QF_LRA script whose parsing alone takes Z3 seconds (no timeout covers it)."""
    declarations = "".join(f"(declare-const x{i} Real)\n" for i in range(variables))
    rows = "".join(
        f"(assert (< (+ x{i} x{(i + 1) % variables}) (* 3.0 x{(i + 7) % variables})))\n"
        for i in range(variables)
    )
    return f"(set-logic QF_LRA)\n{declarations}{rows}(check-sat)\n"


def test_a_solver_worker_busy_past_the_deadline_is_stopped_and_its_obligation_unconfirmed() -> None:
    text = _slow_to_parse(300_000)
    started = time.monotonic()
    alone = check(Obligation("alone", text), 100.0, "z3", started + 0.5)
    overrun = time.monotonic() - started
    assert overrun > 2.5, "the script parses too fast to show anything on this machine"
    started = time.monotonic()
    with SolverPool(2) as pool:
        results = pool.check_lazily(
            [(Obligation("a", text), 100.0), (Obligation("b", text), 100.0)], started + 0.5
        )
    assert time.monotonic() - started < overrun
    assert alone.verdict is not SmtVerdict.PROVED
    assert [r.verdict for r in results] == [SmtVerdict.UNKNOWN, SmtVerdict.UNKNOWN]
    assert all(r.detail == "stopped at the time limit" for r in results)
