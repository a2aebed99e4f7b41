"""Running proof obligations with Z3 (the only module that imports z3), or with cvc5.

Stage: ... -> certification / equivalence -> **smt** -> certificate.

Every obligation is a self-contained SMT-LIB2 script (QF_LRA or QF_LIRA) whose `(check-sat)`
answers must all be `unsat` for the obligation to hold. Two shapes: independent queries
separated by `(reset)` (the equivalence obligations), or a prefix followed by
`(push 1) ... (check-sat) (pop 1)` blocks (the stability obligations: the network's rows
written once, one block per goal), each query being the prefix with one block. Scripts are
written by the stages that find proofs (the kernel's stability obligations, equivalence) and
re-derived by the checker; this module only runs them, each in a fresh Z3 context so that no
state leaks between queries.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from fractions import Fraction

import z3

from .errors import MissingToolError, VerifyCompressError


class SmtVerdict(enum.Enum):
    PROVED = "proved"
    """Every (check-sat) in the script answered unsat."""
    REFUTED = "refuted"
    """Some (check-sat) answered sat: the obligation is false."""
    UNKNOWN = "unknown"
    """The solver gave up or timed out; never treated as proved."""
    NOT_RUN = "not-run"
    """No solver ran it (no time was left); never treated as proved."""


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


def check(
    obligation: Obligation,
    timeout_seconds: float = 60.0,
    solver: str = "z3",
    deadline: float | None = None,
) -> SmtResult:
    """Run one obligation in a fresh solver context; PROVED only if every check-sat is unsat.

    `solver` is "z3" (default) or "cvc5" (the optional extra `verify-compress[cvc5]`), so that
    two independent solvers can agree on the same SMT-LIB2 text. `deadline` (a
    `time.monotonic()` value) cuts `timeout_seconds` short; an obligation not started by then
    is NOT_RUN.
    """
    if deadline is not None:
        timeout_seconds = min(timeout_seconds, deadline - time.monotonic())
        if timeout_seconds <= 0:
            return SmtResult(SmtVerdict.NOT_RUN, 0.0, "the deadline came first")
    if solver == "cvc5":
        return _check_with_cvc5(obligation, timeout_seconds)
    if solver != "z3":
        raise ValueError(f"unknown solver {solver!r}; supported: {', '.join(SOLVERS)}")
    if _PUSH in obligation.smtlib:
        return _check_incremental(obligation, timeout_seconds)
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


_PUSH = "(push 1)"
_POP = "(pop 1)"


def _check_incremental(obligation: Obligation, timeout_seconds: float) -> SmtResult:
    """A script of the form PREFIX ((push 1) BLOCK (check-sat) (pop 1))*: every check-sat asks
    whether PREFIX and its BLOCK's assertions are satisfiable together.

    Z3 parses the script once: each block's assertions become the consequent of an implication
    from a fresh Boolean, so the blocks' terms (and the prefix's define-funs they use) are read
    with the prefix. Each query then runs in a fresh solver of the same context on the prefix's
    assertions and that block's (interval propagation first, see `_fresh_solver`), which is
    exactly the query the script's check-sat poses.
    """
    started = time.perf_counter()
    end = started + timeout_seconds
    prefix, blocks = _incremental_blocks(obligation.smtlib)
    if not blocks:
        return SmtResult(SmtVerdict.UNKNOWN, 0.0, "script has no (check-sat)")
    guards = "".join(
        f"(declare-const __block_{k} Bool)\n(assert (=> __block_{k} (and true {' '.join(b)})))\n"
        for k, b in enumerate(blocks)
    )
    context = z3.Context()
    answers: list[str] = []
    try:
        parsed = z3.parse_smt2_string(prefix + guards, ctx=context)
        count = len(parsed) - len(blocks)
        premises = [parsed[i] for i in range(count)]
        for k in range(len(blocks)):
            left = end - time.perf_counter()
            if left <= 0:
                answers.append("unknown")
                break
            solver = _tactic_solver(context, left)
            solver.add(premises)
            solver.add(parsed[count + k].arg(1))
            answer = str(_check_interruptibly(solver))
            answers.append(answer)
            if answer != "unsat":
                break
    except z3.Z3Exception as error:
        return SmtResult(SmtVerdict.UNKNOWN, time.perf_counter() - started, f"z3 error: {error}")
    seconds = time.perf_counter() - started
    if len(answers) < len(blocks) and answers[-1] == "unsat":
        answers.append("unknown")
    return _verdict(answers, seconds)


def _incremental_blocks(script: str) -> tuple[str, list[list[str]]]:
    """The prefix before the first (push 1), and each push/pop block's assertion terms."""
    prefix, _, rest = script.partition(_PUSH)
    blocks = []
    for part in rest.split(_PUSH):
        body = part.split(_POP)[0]
        if "(check-sat)" in body:
            blocks.append(_assertions(body))
    return prefix, blocks


def _assertions(text: str) -> list[str]:
    """The terms of the top-level (assert TERM) commands of `text` (comments skipped)."""
    text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    terms = []
    position = 0
    while (start := text.find("(assert ", position)) >= 0:
        depth = 0
        end = start
        for end in range(start, len(text)):
            if text[end] == "(":
                depth += 1
            elif text[end] == ")":
                depth -= 1
                if depth == 0:
                    break
        terms.append(text[start + len("(assert ") : end])
        position = end + 1
    return terms


def _fresh_solver(timeout_seconds: float) -> tuple[z3.Context, z3.Solver]:
    """A solver in a context of its own, so no state leaks between obligations."""
    context = z3.Context()
    return context, _tactic_solver(context, timeout_seconds)


def _tactic_solver(context: z3.Context, timeout_seconds: float) -> z3.Solver:
    """Interval propagation first: a long linear row over boxed variables (a first-layer
    neuron over 784 inputs) is decided by it in milliseconds, where plain simplex pivots on big
    rationals for a quarter of a second (measured on MNIST 256x2)."""
    solver = z3.Then(
        z3.Tactic("simplify", ctx=context),
        z3.Tactic("propagate-ineqs", ctx=context),
        z3.Tactic("smt", ctx=context),
        ctx=context,
    ).solver()
    solver.set("timeout", max(1, int(timeout_seconds * 1000)))
    return solver


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
    deadline: float | None = None,
) -> list[SmtResult]:
    """`check` every obligation, in `workers` processes (each with its own fresh contexts);
    those not started by `deadline` (a `time.monotonic()` value) are NOT_RUN."""
    with SolverPool(workers, timeout_seconds, solver) as pool:
        return pool.check(obligations, deadline)


class SolverPool:
    """Worker processes that `check` obligations, kept for several batches.

    Every obligation gets a fresh solver context of its own (see `check`).
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

    def check(
        self,
        obligations: Iterable[Obligation],
        deadline: float | None = None,
        timeouts: Iterable[float] | None = None,
    ) -> list[SmtResult]:
        """Results in the order of `obligations`; with a `deadline` (`time.monotonic()`, the
        same clock in every process) no query runs past it; `timeouts`: one per obligation
        (default: the pool's)."""
        tasks = [
            (o, t, self.solver, deadline)
            for o, t in zip(
                obligations,
                itertools.repeat(self.timeout_seconds) if timeouts is None else timeouts,
                strict=timeouts is not None,
            )
        ]
        if self.workers <= 1 or len(tasks) < 8:
            return [_check_with_timeout(task) for task in tasks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return list(self._pool.map(_check_with_timeout, tasks, chunksize=1))

    def check_lazily(
        self, tasks: Iterable[tuple[Obligation, float]], deadline: float | None = None
    ) -> list[SmtResult]:
        """`check` each (obligation, timeout) in order, taking the next from `tasks` only when
        a worker is free (so a generator can write texts as the workers need them and stop
        when time runs out); results in the order taken."""
        if self.workers <= 1:
            return [check(o, timeout, self.solver, deadline) for o, timeout in tasks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        futures: list[Future[SmtResult]] = []
        for obligation, timeout in tasks:
            running = [f for f in futures if not f.done()]
            if len(running) >= self.workers:
                wait(running, timeout=_left(deadline), return_when=FIRST_COMPLETED)
                if _left(deadline) == 0.0 and all(not f.done() for f in running):
                    break
            futures.append(
                self._pool.submit(_check_with_timeout, (obligation, timeout, self.solver, deadline))
            )
        # Z3's timeout does not cover parsing or every tactic: a worker still busy past the
        # deadline (and DEADLINE_GRACE) is stopped, and its obligation stays unconfirmed.
        wait(futures, timeout=_left(deadline))
        if not all(f.done() for f in futures):
            self._terminate()
        return [
            f.result()
            if f.done() and not f.cancelled() and f.exception() is None
            else SmtResult(SmtVerdict.UNKNOWN, 0.0, "stopped at the time limit")
            for f in futures
        ]

    def _terminate(self) -> None:
        """Stop the worker processes now (a solver call cannot be interrupted otherwise)."""
        if self._pool is None:
            return
        for process in list(self._pool._processes.values()):
            process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None


DEADLINE_GRACE = 1.0
"""Seconds a solver worker may run past the deadline before `check_lazily` stops it."""


def _left(deadline: float | None) -> float | None:
    """Seconds to wait for workers: until the deadline plus the grace (None: no deadline)."""
    if deadline is None:
        return None
    return max(0.0, deadline + DEADLINE_GRACE - time.monotonic())


def _check_with_timeout(task: tuple[Obligation, float, str, float | None]) -> SmtResult:
    obligation, timeout_seconds, solver, deadline = task
    return check(obligation, timeout_seconds, solver, deadline)


def _check_with_cvc5(obligation: Obligation, timeout_seconds: float) -> SmtResult:
    """The same contract as `check`, answered by cvc5's SMT-LIB2 front end (fresh per query)."""
    try:
        import cvc5
    except ImportError:
        return SmtResult(SmtVerdict.UNKNOWN, 0.0, f"cvc5 is not installed: {CVC5_INSTALL_HINT}")
    started = time.perf_counter()
    answers: list[str] = []
    incremental = _PUSH in obligation.smtlib
    # A push/pop script runs as it is (its check-sats in order); others query by query.
    queries = (
        [obligation.smtlib]
        if incremental
        else [q + "\n(check-sat)\n" for q in _split_queries(obligation.smtlib)]
    )
    for query in queries:
        manager = cvc5.TermManager()
        solver = cvc5.Solver(manager)
        solver.setOption("tlimit-per", str(max(1, int(timeout_seconds * 1000))))
        if incremental:
            solver.setOption("incremental", "true")
        symbols = cvc5.SymbolManager(manager)
        parser = cvc5.InputParser(solver, symbols)
        parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, query, obligation.id)
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
