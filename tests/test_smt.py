"""Obligations run in a fresh solver: unsat everywhere means proved, any sat means refuted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from verifier.check import check_certificate
from verifier.errors import MissingToolError, VerifyCompressError
from verifier.smt import Obligation, SmtVerdict, check, check_many, require_solver

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
