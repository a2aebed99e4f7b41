"""Tests for verifier/equivalence.py: the compositional proof, its failure with an exactly checked
counterexample, the direct global query, and the empirical checks."""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compress import interval_statuses, random_box, stable_cases, stable_network

from verify_compress.compress import Compression, compress
from verify_compress.domain import Box, Domain
from verify_compress.equivalence import (
    direct_equivalence_query,
    empirical_check,
    equivalence_record,
    identity_obligations,
    prove_equivalence,
    runtime_check,
)
from verify_compress.exact import as_fraction
from verify_compress.ir import AffineLayer, Network
from verify_compress.onnx_export import save_onnx
from verify_compress.smt import SmtVerdict, check
from verify_compress.status import Neuron, Status


def lemma_ids(statuses: dict[Neuron, Status]) -> dict[Neuron, str]:
    return {n: f"lemma-{n.layer}-{n.index}" for n, s in statuses.items() if s.is_stable}


def _fractions(values: np.ndarray) -> np.ndarray:
    result = np.empty(values.shape, dtype=object)
    result.reshape(-1)[:] = [as_fraction(v) for v in values.reshape(-1)]
    return result


def corrupted(compression: Compression, layer: int, row: int, column: int) -> Compression:
    """The compression with one weight of one compressed layer increased by 1/3."""
    layers = list(compression.network.layers)
    target = layers[layer]
    weights = _fractions(np.asarray(target.weights))
    weights[row, column] += Fraction(1, 3)
    layers[layer] = AffineLayer(weights, _fractions(np.asarray(target.bias)), target.relu)
    return dataclasses.replace(compression, network=compression.network.with_layers(layers))


def exact_outputs(network: Network, point: np.ndarray) -> list[Fraction]:
    return network.evaluate_exact(point).output.to_fractions()


def example(seed: int, sizes: list[int], modes: list[str], final_relu: bool = False):
    rng = np.random.default_rng(seed)
    domain = random_box(rng, sizes[0], nonnegative=False)
    box = (domain.boxes[0].lower, domain.boxes[0].upper)
    network = stable_network(rng, sizes, box, modes, final_relu)
    statuses = interval_statuses(network, domain)
    return network, domain, statuses, compress(network, statuses)


# ---------------------------------------------------------------------------------------------
# The proof succeeds on compressed networks


@settings(deadline=None, max_examples=30)
@given(case=stable_cases())
def test_the_equivalence_proof_succeeds_on_compressed_networks(case) -> None:
    network, domain, statuses = case
    compression = compress(network, statuses)
    result = prove_equivalence(network, compression, statuses, lemma_ids(statuses), domain)
    assert result.proved, result.message
    assert len(result.obligations) == len(compression.network.layers)
    assert all(r.verdict is SmtVerdict.PROVED for r in result.results)
    assert result.cross_check_result is not None
    assert result.cross_check_result.verdict is SmtVerdict.PROVED
    assert result.counterexample is None


def test_the_proof_uses_exactly_the_lemmas_of_compressed_neurons() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    assert compression.removed and compression.folds
    result = prove_equivalence(network, compression, statuses, lemma_ids(statuses), domain)
    assert result.proved, result.message
    expected = set(compression.removed)
    for fold in compression.folds:
        expected |= {fold.dependent, *fold.basis}
    for layer in compression.merged_layers:
        expected |= {n for n in statuses if n.layer == layer}
    assert set(result.uses) == {f"lemma-{n.layer}-{n.index}" for n in expected}


def test_a_stable_neuron_without_a_lemma_id_fails_the_proof() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    ids = lemma_ids(statuses)
    missing = compression.removed[0]
    del ids[missing]
    result = prove_equivalence(network, compression, statuses, ids, domain)
    assert not result.proved
    assert str(missing) in result.message


def test_several_lemma_ids_per_neuron_are_all_recorded() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    ids = {n: (f"box0-{n}", f"box1-{n}") for n, s in statuses.items() if s.is_stable}
    result = prove_equivalence(network, compression, statuses, ids, domain)
    removed = compression.removed[0]
    assert {f"box0-{removed}", f"box1-{removed}"} <= set(result.uses)


def test_a_union_of_boxes_is_proved_and_cross_checked() -> None:
    rng = np.random.default_rng(12)
    first = Box(np.array([0.0, 0.0]), np.array([0.5, 1.0]))
    second = Box(np.array([0.25, -0.5]), np.array([1.0, 0.0]))
    domain = Domain((first, second))
    network = stable_network(
        rng, [2, 6, 5, 2], (np.array([0.0, -0.5]), np.array([1.0, 1.0])), ["mixed", "mixed"]
    )
    statuses = interval_statuses(network, domain)
    compression = compress(network, statuses)
    assert compression.counts.neurons_after < compression.counts.neurons_before
    result = prove_equivalence(network, compression, statuses, lemma_ids(statuses), domain)
    assert result.proved, result.message
    assert result.cross_check is not None and "(or " in result.cross_check.smtlib


def test_identity_obligations_are_plain_smtlib_expected_unsat() -> None:
    network, _, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    obligations = identity_obligations(network, compression, statuses)
    assert [o.id for o in obligations] == [
        f"equivalence-layer-{j}" for j in range(len(compression.network.layers))
    ]
    for obligation in obligations:
        assert obligation.smtlib.count("(check-sat)") == 1
        assert "(set-logic QF_LRA)" in obligation.smtlib
        assert "(assert (not " in obligation.smtlib
        assert check(obligation, 10.0).verdict is SmtVerdict.PROVED


# ---------------------------------------------------------------------------------------------
# The proof fails on a corrupted compression, with an exactly checked counterexample


def _assert_counterexample(network, compression, statuses, domain) -> None:
    result = prove_equivalence(network, compression, statuses, lemma_ids(statuses), domain)
    assert not result.proved
    assert any(r.verdict is SmtVerdict.REFUTED for r in result.results)
    assert result.counterexample is not None, result.message
    assert domain.contains(result.counterexample)
    point = result.counterexample
    assert exact_outputs(network, point) != exact_outputs(compression.network, point)
    assert "counterexample" in result.message


def _effective_column(network: Network, layer: int, domain: Domain) -> int:
    """A column of `layer` whose input is not constantly zero on the domain."""
    values = domain.sample(200, np.random.default_rng(0))
    for position, current in enumerate(network.layers[:layer]):
        values = values @ current.float_weights.T + current.float_bias
        if current.relu:
            values = np.maximum(values, 0)
        del position
    return int(np.argmax(np.abs(values).max(axis=0)))


def test_corrupting_a_weight_of_the_output_layer_fails_with_a_counterexample() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    last = len(compression.network.layers) - 1
    column = _effective_column(compression.network, last, domain)
    _assert_counterexample(network, corrupted(compression, last, 0, column), statuses, domain)


def test_corrupting_a_weight_of_the_first_layer_fails_with_a_counterexample() -> None:
    network, domain, statuses, compression = example(13, [3, 7, 6, 2], ["mixed", "mixed"])
    _assert_counterexample(network, corrupted(compression, 0, 0, 0), statuses, domain)


def test_corrupting_a_folded_layer_fails_with_a_counterexample() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    target = compression.layer_map.index(compression.folds[0].dependent.layer) + 1
    column = _effective_column(compression.network, target, domain)
    _assert_counterexample(network, corrupted(compression, target, 0, column), statuses, domain)


@settings(deadline=None, max_examples=15)
@given(case=stable_cases(), row=st.integers(0, 10), column=st.integers(0, 10))
def test_any_corruption_is_never_proved(case, row: int, column: int) -> None:
    network, domain, statuses = case
    compression = compress(network, statuses)
    last = compression.network.layers[-1]
    bad = corrupted(
        compression, len(compression.network.layers) - 1, row % last.outputs, column % last.inputs
    )
    result = prove_equivalence(network, bad, statuses, lemma_ids(statuses), domain)
    assert not result.proved
    if result.counterexample is not None:
        point = result.counterexample
        assert domain.contains(point)
        assert exact_outputs(network, point) != exact_outputs(bad.network, point)


# ---------------------------------------------------------------------------------------------
# The direct query


@settings(deadline=None, max_examples=20)
@given(case=stable_cases())
def test_the_direct_query_is_unsat_on_small_compressed_networks(case) -> None:
    network, domain, statuses = case
    compression = compress(network, statuses)
    query = direct_equivalence_query(network, compression.network, domain)
    assert check(query, 30.0).verdict is SmtVerdict.PROVED


def test_the_direct_query_is_sat_on_a_corrupted_network() -> None:
    network, domain, _, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    last = len(compression.network.layers) - 1
    column = _effective_column(compression.network, last, domain)
    bad = corrupted(compression, last, 0, column)
    query = direct_equivalence_query(network, bad.network, domain)
    assert check(query, 30.0).verdict is SmtVerdict.REFUTED


# ---------------------------------------------------------------------------------------------
# Empirical checks and the record


def test_empirical_check_finds_exact_agreement_at_witnesses_corners_and_random_points() -> None:
    network, domain, _, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    witnesses = np.vstack([domain.boxes[0].center(), domain.boxes[0].upper + 1.0])
    figures = empirical_check(
        network, compression.network, domain, witnesses, np.random.default_rng(1), 8, 20
    )
    assert figures["agree"] and figures["max_abs_difference"] == "0"
    assert (figures["witnesses"], figures["witnesses_outside_domain"]) == (1, 1)
    assert figures["corners"] == 8 and figures["random"] == 20 and figures["points"] == 29


def test_empirical_check_past_its_deadline_evaluates_only_the_minimum_and_counts_the_rest() -> None:
    network, domain, _, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    figures = empirical_check(
        network,
        compression.network,
        domain,
        None,
        np.random.default_rng(1),
        8,
        20,
        deadline=time.monotonic() - 1.0,
        at_least=5,
    )
    assert figures["points"] == 5 and figures["skipped_at_time_limit"] == 23
    assert figures["corners"] + figures["random"] == 5 and figures["agree"]


def test_empirical_check_reports_a_disagreement() -> None:
    network, domain, _, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    last = len(compression.network.layers) - 1
    column = _effective_column(compression.network, last, domain)
    bad = corrupted(compression, last, 0, column)
    figures = empirical_check(network, bad.network, domain, None, np.random.default_rng(1))
    assert not figures["agree"]
    assert Fraction(figures["max_abs_difference"]) > 0
    assert domain.contains(figures["first_disagreement"])


def test_runtime_check_runs_both_onnx_files(tmp_path) -> None:
    network, domain, _, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    save_onnx(network, tmp_path / "original.onnx", "float32")
    save_onnx(compression.network, tmp_path / "compressed.onnx", "float32")
    figures = runtime_check(
        tmp_path / "original.onnx",
        tmp_path / "compressed.onnx",
        domain,
        10_000,
        np.random.default_rng(2),
    )
    assert figures["points"] == 10_000
    assert figures["max_abs_difference"] < 1e-3


def test_the_equivalence_record_lists_obligations_verdicts_and_lemmas() -> None:
    network, domain, statuses, compression = example(11, [3, 7, 6, 2], ["mixed", "mixed"])
    result = prove_equivalence(network, compression, statuses, lemma_ids(statuses), domain)
    record = equivalence_record(result)
    assert record["proved"] is True
    assert [o["id"] for o in record["obligations"]] == [o.id for o in result.obligations]
    assert {o["verdict"] for o in record["obligations"]} == {"proved"}
    assert record["uses"] == result.uses
    assert record["cross_check"]["verdict"] == "proved"
