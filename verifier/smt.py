"""Running proof obligations with Z3 (the only module that imports z3), or with cvc5.

Stage: ... -> certification / equivalence -> **smt** -> certificate.

Every obligation is a self-contained SMT-LIB2 script (QF_LRA or QF_LIRA) whose `(check-sat)`
answers must all be `unsat` for the obligation to hold. Scripts are written by the stages that
find proofs (certify, equivalence) and re-derived by the checker; this module only runs them,
each in a fresh Z3 context so that no state leaks between queries.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

import z3

from verifier.errors import MissingToolError, VerifyCompressError


class SmtVerdict(enum.Enum):
    PROVED = "proved"
    """Every (check-sat) in the script answered unsat."""
    REFUTED = "refuted"
    """Some (check-sat) answered sat: the obligation is false."""
    UNKNOWN = "unknown"
    """The solver gave up or timed out; never treated as proved."""


@dataclasses.dataclass(frozen=True)
class Obligation:
    """A named SMT-LIB2 script; it holds iff every check-sat in it is unsat."""

    id: str
    smtlib: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.smtlib.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.id}.smt2"


@dataclasses.dataclass(frozen=True)
class SmtResult:
    verdict: SmtVerdict
    seconds: float
    detail: str = ""


def solver_versions() -> dict[str, str]:
    return {"z3": z3.get_version_string()}


SOLVERS = ("z3", "cvc5")
CVC5_INSTALL_HINT = "pip install 'verify-compress[cvc5]'"


def require_solver(name: str) -> None:
    """Raise unless the solver `name` can run: `MissingToolError` (with the install command)
    for cvc5 when its Python package cannot be imported, `VerifyCompressError` for a name
    that is not in `SOLVERS`. Z3 is a dependency, so always there.

    Call it before a job that uses the solver: `check` would otherwise answer every
    obligation "unknown" (cvc5 is not installed), which reads as an invalid certificate.
    """
    if name not in SOLVERS:
        raise VerifyCompressError(
            f"solver {name!r} is not supported; supported: {', '.join(SOLVERS)}"
        )
    if name == "cvc5":
        try:
            import cvc5  # noqa: F401  (optional: the extra `verify-compress[cvc5]`)
        except ImportError:
            raise MissingToolError(
                f"the cvc5 solver is not installed; install it with: {CVC5_INSTALL_HINT}"
            ) from None


def smt_number(value: Fraction) -> str:
    """An exact rational as an SMT-LIB2 Real term: 3.0, (/ 1.0 3.0), (- (/ 1.0 3.0))."""
    return smt_ratio(value.numerator, value.denominator)


def smt_ratio(numerator: int, denominator: int) -> str:
    """numerator/denominator (denominator > 0, in lowest terms) as an SMT-LIB2 Real term."""
    magnitude = -numerator if numerator < 0 else numerator
    text = f"{magnitude}.0" if denominator == 1 else f"(/ {magnitude}.0 {denominator}.0)"
    return f"(- {text})" if numerator < 0 else text


def check(obligation: Obligation, timeout_seconds: float = 60.0, solver: str = "z3") -> SmtResult:
    """Run one obligation in a fresh solver context; PROVED only if every check-sat is unsat.

    `solver` is "z3" (default) or "cvc5" (the optional extra `verify-compress[cvc5]`), so that
    two independent solvers can agree on the same SMT-LIB2 text.
    """
    if solver == "cvc5":
        return _check_with_cvc5(obligation, timeout_seconds)
    if solver != "z3":
        raise ValueError(f"unknown solver {solver!r}; supported: {', '.join(SOLVERS)}")
    started = time.perf_counter()
    _context, z3_solver = _fresh_solver(timeout_seconds)
    answers: list[str] = []
    try:
        for query in _split_queries(obligation.smtlib):
            z3_solver.reset()
            z3_solver.from_string(query)
            answers.append(str(_check_interruptibly(z3_solver)))
    except z3.Z3Exception as error:
        return SmtResult(SmtVerdict.UNKNOWN, time.perf_counter() - started, f"z3 error: {error}")
    return _verdict(answers, time.perf_counter() - started)


def _fresh_solver(timeout_seconds: float) -> tuple[z3.Context, z3.Solver]:
    """A solver in a context of its own, so no state leaks between obligations."""
    context = z3.Context()
    # Interval propagation first: residual-bound queries (one long linear row over boxed
    # variables) are decided by it in milliseconds, where plain simplex pivots on big rationals.
    solver = z3.Then(
        z3.Tactic("simplify", ctx=context),
        z3.Tactic("propagate-ineqs", ctx=context),
        z3.Tactic("smt", ctx=context),
        ctx=context,
    ).solver()
    solver.set("timeout", max(1, int(timeout_seconds * 1000)))
    return context, solver


def _check_interruptibly(solver: z3.Solver) -> z3.CheckSatResult:
    answer = solver.check()
    if answer == z3.unknown and "interrupted" in solver.reason_unknown():
        # Z3 catches Ctrl-C and answers unknown; the user asked to stop, not to go on.
        raise KeyboardInterrupt
    return answer


def _split_queries(script: str) -> list[str]:
    """Split a script at each (check-sat) into independent queries.

    Convention for obligation scripts: each query is a block ending in `(check-sat)`, preceded
    by its own declarations and assertions, and blocks are separated by `(reset)`. Z3's Python
    `from_string` ignores check-sat commands, so the blocks are run one by one.
    """
    blocks = [block.strip() for block in script.split("(reset)")]
    queries = []
    for block in blocks:
        if "(check-sat)" not in block:
            continue
        queries.append(block.replace("(check-sat)", "").replace("(exit)", ""))
    return queries


def find_model(
    smtlib: str, names: Sequence[str], timeout_seconds: float = 60.0
) -> dict[str, Fraction] | None:
    """Values of the named real constants in a model of the first satisfiable query of a
    script, or None if every query is unsat or the solver gives up. A counterexample finder
    only: callers must check what it returns (exactly) before reporting it."""
    context, solver = _fresh_solver(timeout_seconds)
    try:
        for query in _split_queries(smtlib):
            solver.reset()
            solver.from_string(query)
            if _check_interruptibly(solver) != z3.sat:
                continue
            model = solver.model()
            values: dict[str, Fraction] = {}
            for name in names:
                value = model.eval(z3.Real(name, context), model_completion=True)
                if not isinstance(value, z3.RatNumRef):
                    return None
                values[name] = Fraction(value.numerator_as_long(), value.denominator_as_long())
            return values
    except z3.Z3Exception:
        return None
    return None


def check_many(
    obligations: Iterable[Obligation],
    timeout_seconds: float = 60.0,
    workers: int = 1,
    solver: str = "z3",
) -> list[SmtResult]:
    """`check` every obligation, in `workers` processes (each with its own fresh contexts)."""
    with SolverPool(workers, timeout_seconds, solver) as pool:
        return pool.check(obligations)


class SolverPool:
    """Worker processes that `check` obligations, kept for several batches.

    Obligations may come from a generator: the workers start on the first ones while the rest
    are still being written, so writing and solving overlap. Every obligation still gets a
    fresh solver context of its own (see `check`).
    """

    def __init__(self, workers: int = 1, timeout_seconds: float = 60.0, solver: str = "z3"):
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.solver = solver
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> SolverPool:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def check(self, obligations: Iterable[Obligation]) -> list[SmtResult]:
        few = isinstance(obligations, Sequence) and len(obligations) < 8
        if self.workers <= 1 or few:
            return [check(o, self.timeout_seconds, self.solver) for o in obligations]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        pending = ((o, self.timeout_seconds, self.solver) for o in obligations)
        return list(self._pool.map(_check_with_timeout, pending, chunksize=2))


def _check_with_timeout(task: tuple[Obligation, float, str]) -> SmtResult:
    obligation, timeout_seconds, solver = task
    return check(obligation, timeout_seconds, solver)


def _check_with_cvc5(obligation: Obligation, timeout_seconds: float) -> SmtResult:
    """The same contract as `check`, answered by cvc5's SMT-LIB2 front end (fresh per query)."""
    try:
        import cvc5
    except ImportError:
        return SmtResult(
            SmtVerdict.UNKNOWN, 0.0, f"cvc5 is not installed: {CVC5_INSTALL_HINT}"
        )
    started = time.perf_counter()
    answers: list[str] = []
    for query in _split_queries(obligation.smtlib):
        manager = cvc5.TermManager()
        solver = cvc5.Solver(manager)
        solver.setOption("tlimit-per", str(max(1, int(timeout_seconds * 1000))))
        symbols = cvc5.SymbolManager(manager)
        parser = cvc5.InputParser(solver, symbols)
        parser.setStringInput(
            cvc5.InputLanguage.SMT_LIB_2_6, query + "\n(check-sat)\n", obligation.id
        )
        try:
            while not (command := parser.nextCommand()).isNull():
                output = command.invoke(solver, symbols).strip()
                if output:
                    answers.append(output)
        except RuntimeError as error:
            return SmtResult(
                SmtVerdict.UNKNOWN, time.perf_counter() - started, f"cvc5 error: {error}"
            )
    return _verdict(answers, time.perf_counter() - started)


def _verdict(answers: list[str], seconds: float) -> SmtResult:
    if not answers:
        return SmtResult(SmtVerdict.UNKNOWN, seconds, "script has no (check-sat)")
    if "sat" in answers:
        return SmtResult(SmtVerdict.REFUTED, seconds, f"answers: {answers}")
    if all(answer == "unsat" for answer in answers):
        return SmtResult(SmtVerdict.PROVED, seconds)
    return SmtResult(SmtVerdict.UNKNOWN, seconds, f"answers: {answers}")
