"""Tests for verify_compress.compress: exact rewrites, exact rank, counts, rounding bound.

`stable_network` builds small networks whose neurons are made stable on a box on purpose
(large biases, duplicated and linearly dependent active rows, whole stable layers);
`interval_statuses` derives sound statuses for them by exact interval arithmetic (a neuron is
stable only if its exact interval proves it; everything else is UNKNOWN). Both are reused by
tests/test_equivalence.py.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.compress import (
    _fraction_free_solve,
    _rational_elimination,
    compress,
    compression_record,
    deviation_bound,
    rounding_bound,
    row_basis,
)
from verify_compress.domain import Domain
from verify_compress.errors import NetworkError
from verify_compress.exact import RationalArray
from verify_compress.ir import AffineLayer, Network
from verify_compress.onnx_export import rounded_layers
from verify_compress.status import Neuron, Status

ROW_KINDS = (
    "unstable",
    "unstable",
    "unstable",
    "active",
    "inactive",
    "copy",
    "copy",
    "combination",
    "zero",
)


def interval_statuses(network: Network, domain: Domain) -> dict[Neuron, Status]:
    """Sound statuses from exact interval bounds on every box (UNKNOWN when undecided)."""
    decided: dict[Neuron, set[Status]] = {n: set() for n in network.hidden_neurons()}
    for box in domain.boxes:
        lower = [Fraction(float(v)) for v in box.lower]
        upper = [Fraction(float(v)) for v in box.upper]
        for index, layer in enumerate(network.layers):
            weights = [[Fraction(float(w)) for w in row] for row in layer.weights]
            bias = [Fraction(float(b)) for b in layer.bias]
            low = [
                b
                + sum(
                    w * (lo if w > 0 else hi) for w, lo, hi in zip(row, lower, upper, strict=True)
                )
                for row, b in zip(weights, bias, strict=True)
            ]
            high = [
                b
                + sum(
                    w * (hi if w > 0 else lo) for w, lo, hi in zip(row, lower, upper, strict=True)
                )
                for row, b in zip(weights, bias, strict=True)
            ]
            if layer.relu:
                for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
                    if lo >= 0:
                        decided[Neuron(index, i)].add(Status.STABLY_ACTIVE)
                    elif hi <= 0:
                        decided[Neuron(index, i)].add(Status.STABLY_INACTIVE)
                    else:
                        decided[Neuron(index, i)].add(Status.UNKNOWN)
                low = [max(v, Fraction(0)) for v in low]
                high = [max(v, Fraction(0)) for v in high]
            lower, upper = low, high
    return {n: s.pop() if len(s) == 1 else Status.UNKNOWN for n, s in decided.items()}


def _dyadic(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Weights k/4, k in [-4, 4]: exactly representable, so combinations stay exact."""
    return (rng.integers(-4, 5, size=shape) / 4.0).astype(np.float32)


def stable_network(
    rng: np.random.Generator,
    sizes: list[int],
    box: tuple[np.ndarray, np.ndarray],
    layer_modes: list[str],
    final_relu: bool = False,
) -> Network:
    """A network built to have stable neurons on `box`: each hidden layer is "mixed" (rows of
    random kinds from ROW_KINDS), "all_active" or "all_inactive". Biases come from float
    interval estimates: far above or below the row's range for stable kinds, near the middle
    of it for unstable ones (the exact statuses are derived afterwards, not assumed)."""
    low, high = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
    layers = []
    for position, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = position == len(sizes) - 2
        mode = "output" if last else layer_modes[position]
        weights = _dyadic(rng, (n_out, n_in))
        bias = np.zeros(n_out, dtype=np.float32)
        for i in range(n_out):
            kind = {
                "all_active": "active",
                "all_inactive": "inactive",
                "output": "unstable",
            }.get(mode) or ROW_KINDS[int(rng.integers(len(ROW_KINDS)))]
            if kind in ("copy", "combination") and i >= 1:
                j, k = rng.integers(0, i, size=2)
                a, b = rng.choice([-2.0, -1.0, 0.5, 1.0, 2.0], size=2)
                weights[i] = a * weights[j] + (b * weights[k] if kind == "combination" else 0)
                kind = "active"
            elif kind == "zero":
                weights[i] = 0.0
            row = weights[i].astype(np.float64)
            least = np.clip(row, 0, None) @ low + np.clip(row, None, 0) @ high
            most = np.clip(row, 0, None) @ high + np.clip(row, None, 0) @ low
            if kind == "active":
                bias[i] = np.ceil(-least) + 1
            elif kind == "inactive":
                bias[i] = -np.ceil(most) - 1
            else:
                bias[i] = np.round(-4 * (least + most) / 2) / 4
        layers.append(AffineLayer(weights, bias, relu=final_relu or not last))
        w = weights.astype(np.float64)
        low, high = (
            np.clip(w, 0, None) @ low + np.clip(w, None, 0) @ high + bias,
            np.clip(w, 0, None) @ high + np.clip(w, None, 0) @ low + bias,
        )
        low, high = np.maximum(low, 0), np.maximum(high, 0)
    return Network(tuple(layers))


def random_box(rng: np.random.Generator, size: int, nonnegative: bool) -> Domain:
    lower = rng.integers(0 if nonnegative else -8, 5, size=size) / 8.0
    upper = lower + rng.integers(0, 9, size=size) / 8.0
    return Domain.box(lower, upper)


def domain_point(domain: Domain, fractions: list[float]) -> np.ndarray:
    box = domain.boxes[0]
    point = box.lower + np.asarray(fractions) * (box.upper - box.lower)
    return np.clip(point, box.lower, box.upper)


@st.composite
def stable_cases(draw: st.DrawFn) -> tuple[Network, Domain, dict[Neuron, Status]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4))] + [draw(st.integers(1, 7)) for _ in range(depth)]
    sizes.append(draw(st.integers(1, 3)))
    modes = [
        draw(st.sampled_from(["mixed"] * 4 + ["all_active", "all_inactive"])) for _ in range(depth)
    ]
    domain = random_box(rng, sizes[0], nonnegative=draw(st.booleans()))
    box = (domain.boxes[0].lower, domain.boxes[0].upper)
    network = stable_network(rng, sizes, box, modes, final_relu=draw(st.booleans()))
    return network, domain, interval_statuses(network, domain)


def exact_outputs(network: Network, point: np.ndarray) -> list[Fraction]:
    return network.evaluate_exact(point).output.to_fractions()


# ---------------------------------------------------------------------------------------------
# Hypothesis: compression is exact on the box


@settings(deadline=None, max_examples=220)
@given(case=stable_cases(), data=st.data())
def test_compressed_networks_agree_exactly_with_the_original_on_the_box(case, data) -> None:
    network, domain, statuses = case
    compression = compress(network, statuses)
    fractions = st.lists(
        st.floats(0.0, 1.0), min_size=network.input_size, max_size=network.input_size
    )
    points = [domain_point(domain, data.draw(fractions)) for _ in range(5)]
    points += [domain.boxes[0].lower, domain.boxes[0].upper]
    for point in points:
        assert exact_outputs(network, point) == exact_outputs(compression.network, point)
    assert compression.network.output_size == network.output_size
    assert compression.counts.neurons_after <= compression.counts.neurons_before


@settings(deadline=None, max_examples=60)
@given(case=stable_cases())
def test_unstable_and_unknown_neurons_are_all_kept(case) -> None:
    network, _, statuses = case
    compression = compress(network, statuses)
    kept = {n for rows in compression.neuron_map for n in rows}
    for neuron in network.hidden_neurons():
        if not statuses[neuron].is_stable:
            assert neuron in kept
    assert {n for n in compression.removed} <= {
        n for n, s in statuses.items() if s is Status.STABLY_INACTIVE
    }


# ---------------------------------------------------------------------------------------------
# Exact rank


def test_dependent_active_rows_are_reduced_to_their_exact_rank() -> None:
    basis = np.array([[1, 2, 0, -1], [0, 1, 3, 2], [2, -1, 1, 0]], dtype=np.float32)
    mixing = np.array([[1, 1, 0], [2, 0, -1], [0, 3, 1], [1, -1, 1], [0, 0, 0]], dtype=np.float32)
    rows = np.concatenate([basis, mixing @ basis])
    weights = np.concatenate([rows, np.zeros((1, 4), dtype=np.float32)])
    bias = np.full(9, 100.0, dtype=np.float32)
    bias[-1] = 0.0  # an unstable neuron: its layer is not merged
    network = Network(
        (
            AffineLayer(weights, bias, relu=True),
            AffineLayer(np.ones((2, 9), dtype=np.float32), np.zeros(2, dtype=np.float32), False),
        )
    )
    statuses = {Neuron(0, i): Status.STABLY_ACTIVE for i in range(8)}
    statuses[Neuron(0, 8)] = Status.UNKNOWN
    compression = compress(network, statuses)
    assert compression.network.layers[0].outputs == 3 + 1
    assert [n.index for n in compression.neuron_map[0]] == [0, 1, 2, 8]
    assert len(compression.folds) == 5
    fold = next(f for f in compression.folds if f.dependent == Neuron(0, 4))
    assert dict(zip(fold.basis, fold.coefficients, strict=True)) == {
        Neuron(0, 0): 2,
        Neuron(0, 2): -1,
    }
    assert fold.constant == 100 - (2 * 100 - 100)
    point = np.array([0.5, -1.0, 2.0, 0.25])
    assert exact_outputs(network, point) == exact_outputs(compression.network, point)


def test_nearly_dependent_but_exactly_independent_rows_are_not_reduced() -> None:
    base = np.array([[1, 2, 0, 3, -1], [0, 1, 4, -2, 2], [3, 0, 1, 1, 0]], dtype=np.float64)
    total = base[0] + base[1]
    one_ulp_off = total.copy()
    one_ulp_off[0] = np.nextafter(total[0], np.inf)  # ~2e-16 relative
    relative_1e12 = total * np.array([1 + 1e-12, 1, 1, 1, 1])
    for nudged in (one_ulp_off, relative_1e12):
        rows = np.concatenate([base, nudged[None, :]])
        assert row_basis(rows).rank == 4
        assert row_basis(np.concatenate([base, total[None, :]])).rank == 3
    # floating point calls the one-ulp case dependent; the exact rank does not
    assert np.linalg.matrix_rank(np.concatenate([base, one_ulp_off[None, :]])) == 3
    weights = np.concatenate([base, one_ulp_off[None, :], np.ones((1, 5))])
    bias = np.array([100.0, 100.0, 100.0, 100.0, 0.0])
    network = Network(
        (AffineLayer(weights, bias, relu=True), AffineLayer(np.ones((1, 5)), np.zeros(1), False))
    )
    statuses = {Neuron(0, i): Status.STABLY_ACTIVE for i in range(4)}
    compression = compress(network, statuses)
    assert compression.folds == ()
    assert compression.network.layers[0].outputs == 5


def test_row_basis_of_more_rows_than_columns_is_at_most_the_column_count() -> None:
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(7, 3)).astype(np.float32)
    result = row_basis(rows)
    assert result.rank == 3
    assert result.basis == (0, 1, 2)
    exact = [[Fraction(float(v)) for v in row] for row in rows]
    for d, dependent in enumerate(result.dependents):
        rebuilt = [
            sum(
                (result.coefficients[d, k] * exact[b][c] for k, b in enumerate(result.basis)),
                Fraction(0),
            )
            for c in range(3)
        ]
        assert rebuilt == exact[dependent]


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1))
def test_row_basis_agrees_with_plain_fraction_elimination(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rank, columns, count = int(rng.integers(0, 5)), int(rng.integers(1, 7)), int(rng.integers(1, 9))
    rank = min(rank, columns)
    rows = rng.integers(-3, 4, size=(count, rank)) @ rng.integers(-5, 6, size=(rank, columns))
    rows = rows.astype(np.float64) / 8.0
    fast = row_basis(rows)
    slow = _rational_elimination(RationalArray.from_array(rows).numerators)
    assert (fast.basis, fast.dependents) == (slow.basis, slow.dependents)
    assert (fast.coefficients == slow.coefficients).all()


def test_fraction_free_solve_solves_a_nonsingular_system_exactly() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.integers(-9, 10, size=(6, 6)).astype(object)
    matrix[:, 0] = 0
    matrix[0, 0] = 1  # leading minors vanish: row swaps are needed
    rhs = rng.integers(-9, 10, size=(6, 2)).astype(object)
    solved = _fraction_free_solve(matrix, rhs)
    assert solved is not None
    numerators, determinant = solved
    assert (np.dot(matrix, numerators) == determinant * rhs).all()


# ---------------------------------------------------------------------------------------------
# Merges, removals, counts


def test_a_fully_stable_layer_is_merged_and_the_layer_count_drops() -> None:
    first = AffineLayer(
        np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32),
        np.array([10, -10, 5], dtype=np.float32),
        relu=True,
    )
    second = AffineLayer(
        np.array([[1, 2, 3], [1, 0, -1]], dtype=np.float32),
        np.array([0, -5], dtype=np.float32),
        True,
    )
    third = AffineLayer(np.array([[1, 1]], dtype=np.float32), np.zeros(1, dtype=np.float32), False)
    network = Network((first, second, third))
    domain = Domain.box([-1, -1], [1, 1])
    statuses = interval_statuses(network, domain)
    assert [statuses[Neuron(0, i)] for i in range(3)] == [
        Status.STABLY_ACTIVE,
        Status.STABLY_INACTIVE,
        Status.STABLY_ACTIVE,
    ]
    compression = compress(network, statuses)
    assert compression.counts.layers_after < compression.counts.layers_before
    assert 0 in compression.merged_layers
    merged = compression.network.layers[0]
    # W' = W2[:, active] @ W1[active]; b' = W2[:, active] @ b1[active] + b2
    assert merged.weights.tolist() == [[4, 3], [0, -1]]
    assert merged.bias.tolist() == [25, 0]
    assert statuses[Neuron(1, 1)] is Status.UNKNOWN  # so layer 1 stays
    for point in ([-1, -1], [1, 0.5], [0.25, -0.75]):
        assert exact_outputs(network, np.array(point)) == exact_outputs(
            compression.network, np.array(point)
        )


def test_a_chain_of_stable_layers_is_merged_into_the_output_layer() -> None:
    rng = np.random.default_rng(6)
    domain = Domain.box([0, 0, 0], [1, 1, 1])
    network = stable_network(
        rng,
        [3, 4, 4, 2],
        (domain.boxes[0].lower, domain.boxes[0].upper),
        ["all_active", "all_active"],
    )
    statuses = interval_statuses(network, domain)
    assert all(s is Status.STABLY_ACTIVE for s in statuses.values())
    compression = compress(network, statuses)
    assert compression.counts.layers_after == 1
    assert compression.merged_layers == (0, 1)
    assert not compression.network.layers[0].relu


def test_connections_match_a_hand_counted_example() -> None:
    # Layer 0: 3 neurons, 2 inputs, weights [[1,0],[2,3],[0,-1]] -> 4 nonzero.
    # Layer 1: 1 output, weights [[5,0,7]] -> 2 nonzero. Total 6.
    # Neuron (0,1) stably inactive: layer 0 loses row [2,3] (2 connections), layer 1 loses
    # column 1 (a zero weight: 0 connections). After: 2 + 2 = 4; 2 of 6 removed = 33.33%.
    network = Network(
        (
            AffineLayer(
                np.array([[1, 0], [2, 3], [0, -1]], dtype=np.float32),
                np.zeros(3, dtype=np.float32),
                relu=True,
            ),
            AffineLayer(
                np.array([[5, 0, 7]], dtype=np.float32), np.zeros(1, dtype=np.float32), False
            ),
        )
    )
    statuses = {
        Neuron(0, 0): Status.UNSTABLE,
        Neuron(0, 1): Status.STABLY_INACTIVE,
        Neuron(0, 2): Status.UNKNOWN,
    }
    compression = compress(network, statuses)
    counts = compression.counts
    assert (counts.connections_before, counts.connections_after) == (6, 4)
    assert (counts.neurons_before, counts.neurons_after) == (3, 2)
    assert (counts.layers_before, counts.layers_after) == (2, 2)
    assert [(c.connections_before, c.connections_after) for c in counts.per_layer] == [
        (4, 2),
        (2, 2),
    ]
    assert counts.percent_connections_removed == pytest.approx(100 * 2 / 6)
    assert compression.removed == (Neuron(0, 1),)
    record = compression_record(compression, Fraction(0))
    assert record["connections_after"] == 4
    assert record["rounding_bound"] == "0"
    assert record["per_layer"][0]["neurons_after"] == 2


def test_removal_only_keeps_the_original_float_dtype_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    network = Network(
        (
            AffineLayer(
                rng.normal(size=(4, 3)).astype(np.float32), np.zeros(4, dtype=np.float32), True
            ),
            AffineLayer(
                rng.normal(size=(2, 4)).astype(np.float32), np.zeros(2, dtype=np.float32), False
            ),
        )
    )
    compression = compress(network, {Neuron(0, 1): Status.STABLY_INACTIVE})
    layers = compression.network.layers
    assert layers[0].weights.dtype == np.float32 and layers[1].weights.dtype == np.float32
    assert np.array_equal(layers[0].weights, network.layers[0].weights[[0, 2, 3]])
    assert np.array_equal(layers[1].weights, network.layers[1].weights[:, [0, 2, 3]])


def test_output_neurons_are_never_removed_even_when_stable() -> None:
    network = Network(
        (
            AffineLayer(np.eye(2, dtype=np.float32), np.zeros(2, dtype=np.float32), True),
            AffineLayer(np.eye(2, dtype=np.float32), np.array([-9, 9], dtype=np.float32), True),
        )
    )
    statuses = {Neuron(1, 0): Status.STABLY_INACTIVE, Neuron(1, 1): Status.STABLY_ACTIVE}
    compression = compress(network, statuses)
    assert compression.network.output_size == 2
    assert compression.removed == ()


def test_a_status_for_a_non_hidden_neuron_is_rejected() -> None:
    network = Network((AffineLayer(np.eye(2), np.zeros(2), False),))
    with pytest.raises(NetworkError, match=r"\(0,1\)"):
        compress(network, {Neuron(0, 1): Status.STABLY_ACTIVE})


# ---------------------------------------------------------------------------------------------
# Rounding bound


def test_removal_only_compressions_round_nothing() -> None:
    rng = np.random.default_rng(8)
    domain = random_box(rng, 3, nonnegative=False)
    box = (domain.boxes[0].lower, domain.boxes[0].upper)
    network = stable_network(rng, [3, 6, 2], box, ["mixed"])
    statuses = {
        n: (Status.UNKNOWN if s is Status.STABLY_ACTIVE else s)
        for n, s in interval_statuses(network, domain).items()
    }
    compression = compress(network, statuses)
    assert not compression.folds and not compression.merged_layers
    assert rounding_bound(compression, domain, "float32") == 0
    assert rounding_bound(compression, domain, "float64") == 0


def _fractions(values: np.ndarray) -> np.ndarray:
    result = np.empty(values.shape, dtype=object)
    result.reshape(-1)[:] = [Fraction(float(v)) for v in values.reshape(-1)]
    return result


def _folded_example() -> tuple[Network, Domain, dict[Neuron, Status]]:
    """Layer 0 has two active basis rows, an active row 1/3 b0 + 2/7 b1 (exactly, as
    Fractions) and an unstable row: folding puts non-dyadic coefficients into layer 1."""
    rng = np.random.default_rng(9)
    domain = Domain.box([-1.0, 0.0, -0.5], [1.0, 1.0, 0.5])
    basis = _fractions(rng.normal(size=(2, 3)).astype(np.float32))
    dependent = Fraction(1, 3) * basis[0] + Fraction(2, 7) * basis[1]
    unstable = _fractions(rng.normal(size=3).astype(np.float32))
    first = AffineLayer(
        np.stack([basis[0], basis[1], dependent, unstable]),
        _fractions(np.array([50.0, 60.0, 70.0, 0.0])),
        relu=True,
    )
    second = AffineLayer(rng.normal(size=(2, 4)), rng.normal(size=2), relu=False)
    network = Network((first, second))
    return network, domain, interval_statuses(network, domain)


def test_the_rounding_bound_covers_the_exported_weights_at_random_points() -> None:
    network, domain, statuses = _folded_example()
    compression = compress(network, statuses)
    assert compression.folds, "the example must fold a neuron"
    bound = rounding_bound(compression, domain, "float32")
    assert 0 < bound < Fraction(1, 1000)
    stored = rounded_layers(compression.network, "float32")
    rounded = Network(
        tuple(
            AffineLayer(w, b, layer.relu)
            for (w, b), layer in zip(stored, compression.network.layers, strict=True)
        )
    )
    rng = np.random.default_rng(10)
    worst = Fraction(0)
    for point in domain.sample(50, rng):
        exact = exact_outputs(compression.network, point)
        approximate = exact_outputs(rounded, point)
        worst = max(worst, *(abs(p - q) for p, q in zip(exact, approximate, strict=True)))
    assert 0 < worst <= bound


def test_deviation_bound_is_zero_when_the_stored_weights_are_the_exact_ones() -> None:
    network, domain, _ = _folded_example()
    same = [(layer.weights, layer.bias) for layer in network.layers]
    assert deviation_bound(network, same, domain) == 0
