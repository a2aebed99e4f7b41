"""Lemma obligations: written from the network and a lemma, and checked by Z3 in workers.

Stage: certification (lemmas) -> **obligations** -> statuses; the checker re-derives the same
texts with the same functions.

A lemma's obligations are one SMT-LIB2 script per leaf certificate (`certify.leaf_obligation`)
plus, for a case split, one stating that the leaves cover every phase combination. They are
determined by the network, the lemma's box and the bounds its context proves, so a worker
process that has the network can write them itself: the main process sends only the lemma,
its box and those bounds (`LemmaChecks`), and goes on proving meanwhile.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from fractions import Fraction

from verifier.certify import UPPER, BoundLemma, DefinitionRows, leaf_obligation
from verifier.domain import Box
from verifier.ir import Network
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import Obligation, SmtResult, SmtVerdict, check
from verifier.status import Neuron, Phase

SMT_TIMEOUT = 60.0
"""Seconds Z3 may take on one obligation (they take milliseconds when the certificate is valid)."""
CHUNK = 16
"""Most obligations sent to a worker at once, of lemmas of one box and context (they share a
relaxation). Small, so that the deadline stops the workers soon."""


@dataclasses.dataclass
class LemmaCheck:
    obligations: list[Obligation]
    results: list[SmtResult]

    @property
    def proved(self) -> bool:
        return bool(self.results) and all(r.verdict is SmtVerdict.PROVED for r in self.results)


class RelaxationCache:
    """Relaxations by (box, layer, context, assumptions): the lemmas of one layer on one box share a
    context, so their obligations can share one relaxation and its exact variable bounds.
    Keeps the most recent few (callers visit lemmas grouped by box and layer)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._kept: dict[Hashable, Relaxation] = {}

    def get(self, key: Hashable) -> Relaxation | None:
        return self._kept.get(key)

    def put(self, key: Hashable, relaxation: Relaxation) -> None:
        self._kept[key] = relaxation
        if len(self._kept) > self.size:
            del self._kept[next(iter(self._kept))]


def facts_from_context(
    lemmas: Mapping[str, BoundLemma], context: list[str]
) -> dict[Neuron, NeuronFact]:
    """The proved bounds of every neuron that has both an upper and a lower lemma in `context`."""
    uppers: dict[Neuron, Fraction] = {}
    lowers: dict[Neuron, Fraction] = {}
    for identifier in context:
        lemma = lemmas[identifier]
        (uppers if lemma.sign == UPPER else lowers)[lemma.neuron] = lemma.value
    return {
        neuron: NeuronFact(lowers[neuron], uppers[neuron]) for neuron in uppers if neuron in lowers
    }


def lemma_obligations(
    network: Network,
    box: Box,
    lemmas: Mapping[str, BoundLemma],
    contexts: Mapping[str, list[str]],
    lemma: BoundLemma,
    rows: DefinitionRows | None = None,
    relaxations: RelaxationCache | None = None,
) -> list[Obligation]:
    """The SMT obligations of one lemma on its `box`: one per leaf, plus the case-split
    coverage. `lemmas` and `contexts` must include those of the boxes enclosing `box`."""
    return obligations_given_facts(
        network,
        box,
        lambda: facts_from_context(lemmas, contexts[lemma.context]),
        lemma,
        rows,
        relaxations,
    )


def obligations_given_facts(
    network: Network,
    box: Box,
    facts: Callable[[], dict[Neuron, NeuronFact]],
    lemma: BoundLemma,
    rows: DefinitionRows | None = None,
    relaxations: RelaxationCache | None = None,
) -> list[Obligation]:
    """`lemma_obligations` with the context's bounds given (`facts()`, asked for only when
    no cached relaxation of the lemma's box, layer and context has them)."""
    cache = relaxations if relaxations is not None else RelaxationCache()
    obligations = []
    for position, leaf in enumerate(lemma.leaves):
        key = (lemma.box, lemma.neuron.layer, lemma.context, leaf.assumptions)
        relaxation = cache.get(key)
        if relaxation is None:
            relaxation = Relaxation(
                network, box, lemma.neuron.layer, facts(), dict(leaf.assumptions)
            )
            cache.put(key, relaxation)
        obligations.append(
            leaf_obligation(
                relaxation, lemma.neuron, lemma.sign, leaf, f"{lemma.id}.leaf{position}", rows
            )
        )
    if len(lemma.leaves) > 1:
        obligations.append(coverage_obligation(lemma))
    return obligations


def coverage_obligation(lemma: BoundLemma) -> Obligation:
    """The case split's leaves cover every phase combination of the split neurons."""
    neurons = sorted({n for leaf in lemma.leaves for n, _ in leaf.assumptions})
    declarations = "\n".join(f"(declare-const g_{n.layer}_{n.index} Real)" for n in neurons)
    branches = []
    for leaf in lemma.leaves:
        atoms = [
            f"({'>=' if p is Phase.ACTIVE else '<='} g_{n.layer}_{n.index} 0.0)"
            for n, p in leaf.assumptions
        ]
        branches.append(f"(and {' '.join(atoms)} true)")
    text = (
        f"; verify-compress obligation {lemma.id}.cover: the case split covers all phases\n"
        f"(set-logic QF_LRA)\n{declarations}\n(assert (not (or {' '.join(branches)})))\n(check-sat)\n"  # noqa: E501
    )
    return Obligation(f"{lemma.id}.cover", text)


# ---------------------------------------------------------------------------------------------
# Checking lemmas in worker processes


class _Writer:
    """What a worker process keeps across tasks: the network and its rows' SMT text."""

    def __init__(self, rows: DefinitionRows) -> None:
        self.network = rows.network
        self.rows = rows
        self.relaxations = RelaxationCache()


_writer: _Writer | None = None
"""Set once in each worker process by `_start_worker` (never in the main process)."""


def _start_worker(rows: DefinitionRows, niceness: int) -> None:
    global _writer
    _writer = _Writer(rows)
    if niceness > 0:
        os.nice(niceness)


def _write_and_check(
    box: Box, facts: dict[Neuron, NeuronFact], chunk: list[BoundLemma], deadline: float
) -> list[tuple[LemmaCheck, float]]:
    """In a worker: each lemma's obligations, Z3's results on them, and the CPU seconds taken
    (not wall: a worker sharing its core measures what the lemma costs a core of its own), for
    the lemmas of `chunk` started before `deadline` (time.monotonic() is system-wide)."""
    if _writer is None:
        raise RuntimeError("_write_and_check runs only in a LemmaChecks worker process")
    checked = []
    for lemma in chunk:
        if time.monotonic() > deadline:
            break
        started = time.process_time()
        obligations = obligations_given_facts(
            _writer.network, box, lambda: facts, lemma, _writer.rows, _writer.relaxations
        )
        # Z3 stops at the deadline too: a lemma of a wide layer can take seconds per
        # obligation, and the caller waits for a started lemma to end.
        results = [
            check(o, min(SMT_TIMEOUT, max(0.1, deadline - time.monotonic()))) for o in obligations
        ]
        checked.append((LemmaCheck(obligations, results), time.process_time() - started))
    return checked


def obligation_count(lemma: BoundLemma) -> int:
    """One obligation per leaf, plus the coverage of a case split."""
    return len(lemma.leaves) + (1 if len(lemma.leaves) > 1 else 0)


def queue_order(lemmas: Iterable[BoundLemma], prior: Collection[str]) -> list[BoundLemma]:
    """Shallow layers first, in each layer the lemmas in `prior` first, then by box and
    context (lemmas of one box and context share a relaxation), neuron and id."""
    return sorted(
        lemmas,
        key=lambda lemma: (
            lemma.neuron.layer,
            lemma.id not in prior,
            lemma.box,
            lemma.context,
            lemma.neuron,
            lemma.id,
        ),
    )


class LemmaChecks:
    """Lemmas checked by Z3 in `workers` processes that write the obligations themselves.

    Lemmas are checked in the order they are submitted. Every obligation still runs in a
    fresh Z3 context of its own (`smt.check`). Use as a context manager: leaving it cancels
    the checks not started yet.
    """

    def __init__(
        self,
        network: Network,
        workers: int,
        deadline: float = math.inf,
        rows: DefinitionRows | None = None,
        niceness: int = 0,
    ) -> None:
        """`rows`: the network's rows, ideally `written()` already, so that the workers do
        not each build their text again. `niceness` > 0 lowers the workers' CPU priority
        (checks run beside proofs that are the critical path)."""
        self.deadline = deadline
        """No lemma is started after it."""
        shared = rows if rows is not None and rows.network is network else DefinitionRows(network)
        self._executor = ProcessPoolExecutor(
            max_workers=max(1, workers),
            initializer=_start_worker,
            initargs=(shared, niceness),
        )
        self._pending: dict[str, tuple[Future[list[tuple[LemmaCheck, float]]], int]] = {}
        self._layers: dict[str, int] = {}

    def __enter__(self) -> LemmaChecks:
        return self

    def __exit__(self, *_: object) -> None:
        # A check still running is past its deadline and nobody will read it: stop its
        # process rather than wait (writing and parsing a wide layer's obligation takes
        # seconds, and Z3's own timeout does not cover them).
        processes = list(self._executor._processes.values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()

    @property
    def started(self) -> set[str]:
        return set(self._pending)

    def submit(
        self,
        lemmas: Mapping[str, BoundLemma],
        contexts: Mapping[str, list[str]],
        boxes: Mapping[int, Box],
        identifiers: Iterable[str],
        prior: Collection[str] = frozenset(),
    ) -> None:
        """Queue the lemmas not queued yet, shallow layers first and in each layer those in
        `prior` first, in chunks of one box and context (`boxes[k]`: the box lemmas numbered
        k are about)."""
        fresh = queue_order([lemmas[i] for i in set(identifiers) if i not in self._pending], prior)
        position = 0
        while position < len(fresh):
            first = fresh[position]
            chunk = [first]
            size = obligation_count(first)
            while position + len(chunk) < len(fresh):
                following = fresh[position + len(chunk)]
                size += obligation_count(following)
                if size > CHUNK or following.context != first.context:
                    break
                chunk.append(following)
            facts = facts_from_context(lemmas, contexts[first.context])
            future = self._executor.submit(
                _write_and_check, boxes[first.box], facts, chunk, self.deadline
            )
            for offset, lemma in enumerate(chunk):
                self._pending[lemma.id] = (future, offset)
                self._layers[lemma.id] = lemma.neuron.layer
            position += len(chunk)

    def withdraw(self) -> set[str]:
        """Cancel the checks not started yet; returns the ids of their lemmas."""
        withdrawn = {i for i, (future, _) in self._pending.items() if future.cancel()}
        for identifier in withdrawn:
            del self._pending[identifier]
        return withdrawn

    def seconds(self) -> dict[str, tuple[int, int, float]]:
        """Per lemma checked so far: its neuron's layer, its number of obligations and the
        worker's CPU seconds to write and check them."""
        return {
            identifier: (
                self._layers[identifier],
                len(future.result()[position][0].obligations),
                future.result()[position][1],
            )
            for identifier, (future, position) in self._pending.items()
            if future.done()
            and not future.cancelled()
            and future.exception() is None
            and position < len(future.result())
        }

    def done(self) -> set[str]:
        """Ids of the lemmas whose checks have finished."""
        return {i for i, (future, _) in self._pending.items() if future.done()}

    def results(
        self, deadline: float, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, tuple[LemmaCheck, float]]:
        """Per lemma checked by `deadline`: its check and the worker's seconds on it. Those not
        finished by then are left out (never proved) and cancelled if not started."""
        checked: dict[str, tuple[LemmaCheck, float]] = {}
        futures: dict[Future[list[tuple[LemmaCheck, float]]], list[str]] = {}
        for identifier, (future, _) in self._pending.items():
            futures.setdefault(future, []).append(identifier)
        for count, (future, identifiers) in enumerate(futures.items(), start=1):
            wait = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
            try:
                outcome = future.result(wait)
            except (FutureTimeout, CancelledError):
                future.cancel()
                continue
            for identifier in identifiers:
                position = self._pending[identifier][1]
                if position < len(outcome):
                    checked[identifier] = outcome[position]
            if progress is not None:
                progress(count, len(futures))
        return checked
