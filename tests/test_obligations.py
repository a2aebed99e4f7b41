"""Lemma obligations checked in worker processes are the ones the main process would write."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tests.conftest import random_network
from verifier.certify import BoxProof, prove_box
from verifier.domain import Box
from verifier.ir import Network
from verifier.obligations import LemmaChecks, lemma_obligations, queue_order
from verifier.status import Neuron, Phase


@pytest.fixture(scope="module")
def proved() -> tuple[Network, Box, BoxProof]:
    network = random_network(np.random.default_rng(4), [3, 6, 6, 2])
    box = Box(-np.ones(3), np.ones(3))
    claims = {Neuron(2, 0): Phase.ACTIVE, Neuron(2, 1): Phase.INACTIVE}
    proof = prove_box(network, box, 0, claims, time.monotonic() + 60.0)
    assert len(proof.lemmas) > 10
    return network, box, proof


def test_workers_write_the_same_obligations_and_z3_proves_them(
    proved: tuple[Network, Box, BoxProof],
) -> None:
    network, box, proof = proved
    with LemmaChecks(network, 2) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, proof.lemmas)
        checked = checks.results(math.inf)
    assert set(checked) == set(proof.lemmas)
    for identifier, (check, seconds) in checked.items():
        written = lemma_obligations(
            network, box, proof.lemmas, proof.contexts, proof.lemmas[identifier]
        )
        assert [o.smtlib for o in check.obligations] == [o.smtlib for o in written]
        assert check.proved and seconds > 0


def test_a_lemma_submitted_twice_is_checked_once(proved: tuple[Network, Box, BoxProof]) -> None:
    network, box, proof = proved
    some = sorted(proof.lemmas)[:3]
    with LemmaChecks(network, 1) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, some)
        checks.submit(proof.lemmas, proof.contexts, {0: box}, some)
        assert checks.started == set(some)
        assert set(checks.results(math.inf)) == set(some)
        assert set(checks.seconds()) == set(some)


def test_withdrawn_or_late_checks_are_left_out(proved: tuple[Network, Box, BoxProof]) -> None:
    network, box, proof = proved
    with LemmaChecks(network, 1) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, proof.lemmas)
        withdrawn = checks.withdraw()
        # The executor hands a worker at most two chunks ahead; the later ones are withdrawn.
        assert withdrawn and checks.started == set(proof.lemmas) - withdrawn
        assert set(checks.results(math.inf)) == checks.started
    with LemmaChecks(network, 1) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, proof.lemmas)
        assert checks.results(time.monotonic() - 1.0) == {}
    # Past the checks' own deadline the workers start no lemma at all.
    with LemmaChecks(network, 1, time.monotonic() - 1.0) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, proof.lemmas)
        assert checks.results(math.inf) == {} and checks.seconds() == {}


def test_leaving_does_not_wait_for_a_check_still_running(
    proved: tuple[Network, Box, BoxProof],
) -> None:
    network, box, proof = proved
    started = time.monotonic()
    with LemmaChecks(network, 1) as checks:
        checks.submit(proof.lemmas, proof.contexts, {0: box}, sorted(proof.lemmas)[:1])
        checks.results(math.inf)
        # A stand-in for a wide layer's obligation that takes long past the deadline.
        checks._executor.submit(time.sleep, 60.0)
        time.sleep(0.5)
    assert time.monotonic() - started < 30.0


def test_lemmas_are_queued_shallow_layers_first_and_in_each_layer_the_prior_ones_first(
    proved: tuple[Network, Box, BoxProof],
) -> None:
    _, _, proof = proved
    lemmas = list(proof.lemmas.values())
    prior = {lemma.id for lemma in lemmas if lemma.neuron.index % 2 == 1}
    ordered = queue_order(reversed(lemmas), prior)
    assert sorted(ordered, key=lambda lemma: lemma.id) == sorted(lemmas, key=lambda lemma: lemma.id)
    keys = [(lemma.neuron.layer, lemma.id not in prior) for lemma in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) >= 4
