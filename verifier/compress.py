"""Exact compression of a ReLU network from certified neuron statuses.

Stage: ONNX -> IR -> domain and bounds -> witnesses -> stability search -> certification ->
**compression** -> equivalence -> certificate and report.

Input: a network and the status of each hidden neuron on the domain D. Only the two certified
statuses are acted upon; UNSTABLE and UNKNOWN neurons (and neurons without a status) are kept
exactly as they are. Three exact rewrites, each an identity on D given the certified statuses:

1. A stably inactive neuron outputs 0 on D: its row of (W_l, b_l) and its column of W_{l+1}
   are removed.
2. Stably active neurons output their pre-activation on D (h = g), so they are linear. Among
   the active rows of W_l a basis is chosen EXACTLY over the rationals (`row_basis`); every
   other active row is w_d = sum_k c_k w_{b_k}, hence on D
       h_d = g_d = sum_k c_k h_{b_k} + (b_d - sum_k c_k b_{b_k}),
   and the next layer absorbs it: column b_k of W_{l+1} gains c_k times column d, b_{l+1}
   gains column d times the constant, and row d and column d are dropped (a `Fold`).
3. A layer whose neurons are all stable is affine on D as a whole (h_l = D g_l with D selecting
   the active neurons): it is merged into the next layer, W' = W_{l+1} D W_l and
   b' = W_{l+1} D b_l + b_{l+1}. The merged layer keeps the ReLU flag and the neurons (and so
   the statuses) of the next layer, whose pre-activations are unchanged on D. Merging repeats
   while the layer qualifies. A merge can add connections (an n x m product replaces n x k and
   k x m factors); it always removes a layer.

Layers are processed from input to output; the output layer is never removed, folded or
merged away, and its neurons are never touched (even with a final ReLU).

Representation of the result: a layer that was only cut down (rows and columns removed) keeps
the original float arrays bit for bit, in their original dtype; a layer with any recomputed
value (the target of a fold or a merge) holds exact `Fraction` object arrays. So a
removal-only compression is exactly representable in the original dtype, and exporting it
rounds nothing.

Exporting exact rationals as float32/float64 rounds them; `rounding_bound` gives a sound bound
on the largest output deviation this causes over D, from exact interval arithmetic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .domain import Box, Domain
from .errors import NetworkError
from .exact import RationalArray, fraction_to_str
from .ir import AffineLayer, Network
from .onnx_export import rounded_layers
from .status import Neuron, Status

ObjArray = npt.NDArray[np.object_]

# Primes below 2**31: products of two residues fit in int64, so modular elimination runs on
# numpy integers. They only propose a basis; exact arithmetic decides (see `row_basis`).
_PRIMES = (2_147_483_647, 2_147_483_629, 2_147_483_587)


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class Fold:
    """A dropped stably active neuron: on D, h_dependent = sum_k c_k h_{basis_k} + constant.

    Its weight row is exactly sum_k c_k times the basis rows (zero coefficients omitted);
    `constant` = b_dependent - sum_k c_k b_{basis_k}. Neurons are original addresses.
    """

    dependent: Neuron
    basis: tuple[Neuron, ...]
    coefficients: tuple[Fraction, ...]
    constant: Fraction


@dataclasses.dataclass(frozen=True)
class LayerCount:
    """Counts for one ORIGINAL affine layer. A merged layer has nothing left after
    compression: its computation lives on in the layer it was merged into, whose
    `connections_after` counts the merged weights. Neurons here are the layer's rows
    (hidden neurons, or outputs for the output layer)."""

    layer: int
    neurons_before: int
    neurons_after: int
    connections_before: int
    connections_after: int
    merged: bool


@dataclasses.dataclass(frozen=True)
class Counts:
    """Totals: `neurons_*` count hidden neurons (rows of ReLU layers), `layers_*` affine
    layers, `connections_*` nonzero weights."""

    neurons_before: int
    neurons_after: int
    layers_before: int
    layers_after: int
    connections_before: int
    connections_after: int
    per_layer: tuple[LayerCount, ...]

    @property
    def percent_connections_removed(self) -> float:
        if self.connections_before == 0:
            return 0.0
        removed = self.connections_before - self.connections_after
        return 100.0 * removed / self.connections_before


@dataclasses.dataclass(frozen=True)
class Compression:
    """An exact compression of `original` and what was done to obtain it.

    `neuron_map[j][i]` is the original neuron (or output) that row i of compressed layer j
    is; `layer_map[j]` the original layer those rows come from (the last layer of the block of
    original layers that compressed layer j computes: `layer_map[j-1] + 1 .. layer_map[j]`).
    """

    original: Network
    network: Network
    neuron_map: tuple[tuple[Neuron, ...], ...]
    layer_map: tuple[int, ...]
    removed: tuple[Neuron, ...]
    folds: tuple[Fold, ...]
    merged_layers: tuple[int, ...]
    counts: Counts

    def block(self, compressed_layer: int) -> range:
        """The original layers whose composition compressed layer `compressed_layer` is."""
        start = self.layer_map[compressed_layer - 1] + 1 if compressed_layer > 0 else 0
        return range(start, self.layer_map[compressed_layer] + 1)


# ---------------------------------------------------------------------------------------------
# Exact row basis


@dataclasses.dataclass(frozen=True)
class RowBasis:
    """A basis of a set of rows, chosen greedily in row order, with exact dependencies:
    row `dependents[d]` = sum_k coefficients[d, k] * row `basis[k]` (Fractions)."""

    basis: tuple[int, ...]
    dependents: tuple[int, ...]
    coefficients: ObjArray

    @property
    def rank(self) -> int:
        return len(self.basis)


def row_basis(rows: npt.ArrayLike) -> RowBasis:
    """Exact rank, basis and dependency coefficients of the rows of a rational matrix.

    The rows (floats read as exact rationals, or Fractions) are scaled by one common
    denominator to integers, which changes no linear dependency. Elimination modulo a prime
    proposes a set of basis rows R and columns S: R is independent over Q (a rational
    dependency, made primitive over Z, would survive modulo p) and B = rows[R] has a
    nonsingular minor on S. Each other row is then solved exactly on S (fraction-free
    Gauss-Jordan over the integers) and the solution is verified exactly on ALL columns: if it
    holds, the row is in the span of R, exactly; if it fails for some row, that row is
    independent of R and the proposal was short of the true rank (the prime divided a minor),
    so the next prime is tried, and finally plain Fraction elimination. The result is exact in
    every case; the primes only make it fast.
    """
    matrix = np.asarray(rows)
    if matrix.ndim != 2:
        raise NetworkError(f"row_basis expects a 2-D matrix, got shape {matrix.shape}")
    integers = RationalArray.from_array(matrix).numerators if matrix.size else _zeros(matrix.shape)
    for prime in _PRIMES:
        basis_rows, basis_columns = _modular_echelon(integers, prime)
        result = _verified_dependencies(integers, basis_rows, basis_columns)
        if result is not None:
            return result
    return _rational_elimination(integers)


def _zeros(shape: tuple[int, ...]) -> ObjArray:
    values = np.empty(shape, dtype=object)
    values.fill(0)
    return values


def _modular_echelon(integers: ObjArray, prime: int) -> tuple[list[int], list[int]]:
    """Greedy basis rows and their pivot columns of an integer matrix modulo `prime`."""
    residues = np.asarray(integers % prime, dtype=np.int64)
    basis_rows: list[int] = []
    pivot_columns: list[int] = []
    reducers: list[npt.NDArray[np.int64]] = []
    for row_index in range(residues.shape[0]):
        vector = residues[row_index].copy()
        for column, reducer in zip(pivot_columns, reducers, strict=True):
            factor = vector[column]
            if factor:
                vector = (vector - factor * reducer) % prime
        nonzero = np.flatnonzero(vector)
        if nonzero.size:
            column = int(nonzero[0])
            inverse = pow(int(vector[column]), -1, prime)
            reducers.append((vector * inverse) % prime)
            basis_rows.append(row_index)
            pivot_columns.append(column)
    return basis_rows, pivot_columns


def _verified_dependencies(
    integers: ObjArray, basis_rows: list[int], basis_columns: list[int]
) -> RowBasis | None:
    """Exact coefficients of every non-basis row, or None if some row is not in the span."""
    dependents = [i for i in range(integers.shape[0]) if i not in set(basis_rows)]
    coefficients = np.empty((len(dependents), len(basis_rows)), dtype=object)
    if not dependents:
        return RowBasis(tuple(basis_rows), (), coefficients)
    targets = integers[dependents]
    if not basis_rows:
        if all(value == 0 for value in targets.reshape(-1)):
            return RowBasis((), tuple(dependents), coefficients)
        return None
    basis = integers[basis_rows]
    solved = _fraction_free_solve(basis[:, basis_columns].T, targets[:, basis_columns].T)
    if solved is None:
        return None
    numerators, determinant = solved
    # Exact check on every column: rows[d] * det == sum_k numerators[k, d] * rows[basis_k].
    residual = np.dot(numerators.T, basis) - targets * determinant
    if any(value != 0 for value in residual.reshape(-1)):
        return None
    for d in range(len(dependents)):
        for k in range(len(basis_rows)):
            coefficients[d, k] = Fraction(int(numerators[k, d]), int(determinant))
    return RowBasis(tuple(basis_rows), tuple(dependents), coefficients)


def _fraction_free_solve(matrix: ObjArray, rhs: ObjArray) -> tuple[ObjArray, int] | None:
    """Solve matrix @ X = rhs over the integers by fraction-free (Bareiss) Gauss-Jordan.

    Returns (N, d) with X = N / d, or None if the matrix is singular or a division that
    Bareiss' identity makes exact is not (neither happens for a nonsingular integer matrix;
    the caller verifies the solution anyway).
    """
    size = matrix.shape[0]
    augmented = np.concatenate([matrix, rhs], axis=1).astype(object)
    previous: Any = 1
    for k in range(size):
        pivots = [i for i in range(k, size) if augmented[i, k] != 0]
        if not pivots:
            return None
        if pivots[0] != k:
            augmented[[k, pivots[0]]] = augmented[[pivots[0], k]]
        pivot = augmented[k, k]
        products = pivot * augmented - np.multiply.outer(augmented[:, k], augmented[k])
        updated = products // previous
        if any(value != 0 for value in (products - updated * previous).reshape(-1)):
            return None
        updated[k] = augmented[k]
        augmented = updated
        previous = pivot
    return augmented[:, size:], int(previous)


def _rational_elimination(integers: ObjArray) -> RowBasis:
    """Plain exact Gaussian elimination over Fractions (slow; the fallback of `row_basis`).

    Invariant: every stored reducer r = sum_k combination[k] * rows[basis_k].
    """
    reducers: list[tuple[int, list[Fraction], list[Fraction]]] = []
    basis_rows: list[int] = []
    dependents: list[int] = []
    found: list[list[Fraction]] = []
    for row_index in range(integers.shape[0]):
        vector = [Fraction(int(v)) for v in integers[row_index]]
        used = [Fraction(0)] * len(basis_rows)
        for column, reducer, combination in reducers:
            factor = vector[column]
            if factor:
                vector = [v - factor * r for v, r in zip(vector, reducer, strict=True)]
                for k, c in enumerate(combination):
                    used[k] += factor * c
        pivot = next((j for j, v in enumerate(vector) if v != 0), None)
        if pivot is None:
            dependents.append(row_index)
            found.append(used)
            continue
        scale = vector[pivot]
        combination = [-u / scale for u in used] + [1 / scale]
        reducers = [(col, red, [*comb, Fraction(0)]) for col, red, comb in reducers]
        reducers.append((pivot, [v / scale for v in vector], combination))
        basis_rows.append(row_index)
    coefficients = np.empty((len(dependents), len(basis_rows)), dtype=object)
    for d, used in enumerate(found):
        for k in range(len(basis_rows)):
            coefficients[d, k] = used[k] if k < len(used) else Fraction(0)
    return RowBasis(tuple(basis_rows), tuple(dependents), coefficients)


# ---------------------------------------------------------------------------------------------
# The rewrites


@dataclasses.dataclass(frozen=True)
class _Stage:
    """One affine layer during compression; `rows[i]` is the original neuron of row i."""

    weights: npt.NDArray[Any]
    bias: npt.NDArray[Any]
    relu: bool
    rows: tuple[Neuron, ...]
    source: int


def _fractions(values: RationalArray) -> ObjArray:
    """A rational array as an object array of reduced Fractions."""
    result = np.empty(values.numerators.shape, dtype=object)
    flat = result.reshape(-1)
    for k, numerator in enumerate(values.numerators.reshape(-1)):
        flat[k] = Fraction(int(numerator), values.denominator)
    return result


def _columns(values: RationalArray, columns: list[int]) -> RationalArray:
    return RationalArray(values.numerators[:, columns], values.denominator)


def _as_fractions(values: npt.NDArray[Any]) -> ObjArray:
    return _fractions(RationalArray.from_array(values)) if values.size else values.astype(object)


def _status(statuses: Mapping[Neuron, Status], neuron: Neuron) -> Status:
    return statuses.get(neuron, Status.UNKNOWN)


def _indices(stage: _Stage, statuses: Mapping[Neuron, Status], status: Status) -> list[int]:
    return [i for i, neuron in enumerate(stage.rows) if _status(statuses, neuron) is status]


def _fully_stable(stage: _Stage, statuses: Mapping[Neuron, Status]) -> bool:
    return stage.relu and all(_status(statuses, n).is_stable for n in stage.rows)


def _remove_inactive(
    stage: _Stage, following: _Stage, statuses: Mapping[Neuron, Status]
) -> tuple[_Stage, _Stage, list[Neuron]]:
    inactive = set(_indices(stage, statuses, Status.STABLY_INACTIVE))
    if not inactive:
        return stage, following, []
    keep = [i for i in range(len(stage.rows)) if i not in inactive]
    trimmed = dataclasses.replace(
        stage,
        weights=stage.weights[keep],
        bias=stage.bias[keep],
        rows=tuple(stage.rows[i] for i in keep),
    )
    narrowed = dataclasses.replace(following, weights=following.weights[:, keep])
    return trimmed, narrowed, [stage.rows[i] for i in sorted(inactive)]


def _fold_active(
    stage: _Stage, following: _Stage, statuses: Mapping[Neuron, Status]
) -> tuple[_Stage, _Stage, list[Fold]]:
    active = _indices(stage, statuses, Status.STABLY_ACTIVE)
    if len(active) < 2:
        return stage, following, []
    basis = row_basis(stage.weights[active])
    if not basis.dependents:
        return stage, following, []
    basis_rows = [active[k] for k in basis.basis]
    dependent_rows = [active[d] for d in basis.dependents]
    bias = _as_fractions(stage.bias)
    constants = np.empty(len(dependent_rows), dtype=object)
    folds = []
    for d, row in enumerate(dependent_rows):
        used = [(k, c) for k, c in enumerate(basis.coefficients[d]) if c != 0]
        constants[d] = bias[row] - sum((c * bias[basis_rows[k]] for k, c in used), Fraction(0))
        folds.append(
            Fold(
                dependent=stage.rows[row],
                basis=tuple(stage.rows[basis_rows[k]] for k, _ in used),
                coefficients=tuple(c for _, c in used),
                constant=constants[d],
            )
        )
    following_weights = RationalArray.from_array(following.weights)
    absorbed = _columns(following_weights, dependent_rows)
    new_basis_columns = _columns(following_weights, basis_rows).add(
        absorbed.matmul(RationalArray.from_array(basis.coefficients))
    )
    new_bias = RationalArray.from_array(following.bias).add(
        absorbed.matmul(RationalArray.from_array(constants))
    )
    weights = _fractions(following_weights)
    weights[:, basis_rows] = _fractions(new_basis_columns)
    keep = [i for i in range(len(stage.rows)) if i not in set(dependent_rows)]
    trimmed = dataclasses.replace(
        stage,
        weights=stage.weights[keep],
        bias=stage.bias[keep],
        rows=tuple(stage.rows[i] for i in keep),
    )
    rewritten = dataclasses.replace(following, weights=weights[:, keep], bias=_fractions(new_bias))
    return trimmed, rewritten, folds


def _merge(stage: _Stage, following: _Stage, statuses: Mapping[Neuron, Status]) -> _Stage:
    """The affine layer computing `following`'s pre-activations from `stage`'s inputs on D."""
    active = _indices(stage, statuses, Status.STABLY_ACTIVE)
    rows_out, columns_in = following.weights.shape[0], stage.weights.shape[1]
    if active:
        inner_weights = RationalArray.from_array(stage.weights[active])
        inner_bias = RationalArray.from_array(stage.bias[active])
        outer = RationalArray.from_array(following.weights[:, active])
        weights = _fractions(outer.matmul(inner_weights))
        bias = _fractions(outer.matmul(inner_bias).add(RationalArray.from_array(following.bias)))
    else:
        weights = np.full((rows_out, columns_in), Fraction(0), dtype=object)
        bias = _as_fractions(following.bias)
    return _Stage(weights, bias, following.relu, following.rows, following.source)


def _check_statuses(network: Network, statuses: Mapping[Neuron, Status]) -> None:
    hidden = set(network.hidden_neurons())
    for neuron in statuses:
        if Neuron(*neuron) not in hidden:
            raise NetworkError(
                f"status given for neuron {Neuron(*neuron)}, which is not a hidden neuron"
            )


def compress(network: Network, statuses: Mapping[Neuron, Status]) -> Compression:
    """The exact compression of `network` given certified statuses on a domain.

    Sound when every STABLY_* status holds on the domain: then the compressed network computes
    exactly the same function there (`verifier.equivalence` proves it). Missing statuses are
    UNKNOWN.
    """
    _check_statuses(network, statuses)
    statuses = {Neuron(*n): s for n, s in statuses.items()}
    stages = [
        _Stage(
            layer.weights,
            layer.bias,
            layer.relu,
            tuple(Neuron(index, i) for i in range(layer.outputs)),
            index,
        )
        for index, layer in enumerate(network.layers)
    ]
    removed: list[Neuron] = []
    folds: list[Fold] = []
    merged: list[int] = []
    position = 0
    while position < len(stages):
        while position + 1 < len(stages) and _fully_stable(stages[position], statuses):
            merged.append(stages[position].source)
            stages[position : position + 2] = [
                _merge(stages[position], stages[position + 1], statuses)
            ]
        if position + 1 < len(stages) and stages[position].relu:
            stage, following = stages[position], stages[position + 1]
            stage, following, gone = _remove_inactive(stage, following, statuses)
            stage, following, folded = _fold_active(stage, following, statuses)
            stages[position], stages[position + 1] = stage, following
            removed.extend(gone)
            folds.extend(folded)
        position += 1
    compressed = network.with_layers(
        [AffineLayer(s.weights, s.bias, s.relu) for s in stages], name=f"{network.name}-compressed"
    )
    layer_map = tuple(s.source for s in stages)
    return Compression(
        original=network,
        network=compressed,
        neuron_map=tuple(s.rows for s in stages),
        layer_map=layer_map,
        removed=tuple(removed),
        folds=tuple(folds),
        merged_layers=tuple(merged),
        counts=count(network, compressed, layer_map),
    )


# ---------------------------------------------------------------------------------------------
# Counts


def _hidden_count(network: Network) -> int:
    return sum(layer.outputs for layer in network.layers if layer.relu)


def count(original: Network, compressed: Network, layer_map: Sequence[int]) -> Counts:
    """Neurons, layers and connections before and after, per original layer and in total."""
    compressed_of = {source: compressed.layers[j] for j, source in enumerate(layer_map)}
    per_layer = []
    for index, layer in enumerate(original.layers):
        after = compressed_of.get(index)
        per_layer.append(
            LayerCount(
                layer=index,
                neurons_before=layer.outputs,
                neurons_after=after.outputs if after is not None else 0,
                connections_before=layer.connections,
                connections_after=after.connections if after is not None else 0,
                merged=after is None,
            )
        )
    return Counts(
        neurons_before=_hidden_count(original),
        neurons_after=_hidden_count(compressed),
        layers_before=len(original.layers),
        layers_after=len(compressed.layers),
        connections_before=sum(c.connections_before for c in per_layer),
        connections_after=sum(c.connections_after for c in per_layer),
        per_layer=tuple(per_layer),
    )


# ---------------------------------------------------------------------------------------------
# Rounding on export


def _negated(values: RationalArray) -> RationalArray:
    return RationalArray(np.asarray(-values.numerators, dtype=object), values.denominator)


def _absolute(values: RationalArray) -> RationalArray:
    return RationalArray(np.asarray(np.abs(values.numerators), dtype=object), values.denominator)


def _clipped(values: RationalArray, keep_positive: bool) -> RationalArray:
    flat = [n if (n > 0) == keep_positive and n != 0 else 0 for n in values.numerators.reshape(-1)]
    numerators = np.empty(len(flat), dtype=object)
    numerators[:] = flat
    return RationalArray(numerators.reshape(values.numerators.shape), values.denominator)


def _is_zero(values: RationalArray) -> bool:
    return all(n == 0 for n in values.numerators.reshape(-1))


def _larger(first: RationalArray, second: RationalArray) -> RationalArray:
    """Elementwise maximum."""
    difference = first.add(_negated(second))
    return second.add(_clipped(difference, keep_positive=True))


def deviation_bound(
    network: Network,
    rounded: Sequence[tuple[npt.NDArray[Any], npt.NDArray[Any]]],
    domain: Domain,
) -> Fraction:
    """A sound bound on max over x in D and outputs k of |f~(x)_k - f(x)_k|, where f is
    `network` evaluated exactly and f~ the same layers with the `rounded` weights and biases,
    also evaluated exactly (arithmetic rounding at inference time is not covered).

    Per box, exact interval arithmetic bounds |h_{l-1}| <= m_{l-1} on the exact network; with
    e_{l-1} >= |h~_{l-1} - h_{l-1}| (e_0 = 0, the input is shared),
        |g~_l - g_l| = |W~ (h~ - h) + (W~ - W) h + (b~ - b)| <= |W~| e + |W~ - W| m + |b~ - b|,
    and the ReLU is 1-Lipschitz, so the same bound holds after it. If no value changed the
    bound is exactly 0.
    """
    domain.check_dimension(network.input_size)
    exact = [(layer.exact_weights, layer.exact_bias) for layer in network.layers]
    stored = [(RationalArray.from_array(w), RationalArray.from_array(b)) for w, b in rounded]
    deltas = [
        (_absolute(ws.add(_negated(we))), _absolute(bs.add(_negated(be))))
        for (we, be), (ws, bs) in zip(exact, stored, strict=True)
    ]
    if all(_is_zero(dw) and _is_zero(db) for dw, db in deltas):
        return Fraction(0)
    return max(_box_deviation(network, exact, stored, deltas, box) for box in domain.boxes)


def _box_deviation(
    network: Network,
    exact: Sequence[tuple[RationalArray, RationalArray]],
    stored: Sequence[tuple[RationalArray, RationalArray]],
    deltas: Sequence[tuple[RationalArray, RationalArray]],
    box: Box,
) -> Fraction:
    lower = RationalArray.from_array(box.lower)
    upper = RationalArray.from_array(box.upper)
    error = RationalArray.from_array(np.zeros(box.size))
    for layer, (weights, bias), (rounded_weights, _), (delta_weights, delta_bias) in zip(
        network.layers, exact, stored, deltas, strict=True
    ):
        magnitude = _larger(_absolute(lower), _absolute(upper))
        error = (
            _absolute(rounded_weights)
            .matmul(error)
            .add(delta_weights.matmul(magnitude))
            .add(delta_bias)
        )
        positive = _clipped(weights, keep_positive=True)
        negative = _clipped(weights, keep_positive=False)
        lower, upper = (
            positive.matmul(lower).add(negative.matmul(upper)).add(bias),
            positive.matmul(upper).add(negative.matmul(lower)).add(bias),
        )
        if layer.relu:
            lower, upper = lower.relu(), upper.relu()
    return max(error.to_fractions(), default=Fraction(0))


def rounding_bound(compression: Compression, domain: Domain, dtype: str = "float32") -> Fraction:
    """Sound bound on the output deviation caused by storing the compressed network in
    `dtype`, exactly as `verifier.onnx_export` stores it (see `deviation_bound`)."""
    network = compression.network
    return deviation_bound(network, rounded_layers(network, dtype), domain)


# ---------------------------------------------------------------------------------------------
# Certificate block


def _neuron_record(neuron: Neuron) -> list[int]:
    return [neuron.layer, neuron.index]


def count_totals(counts: Counts) -> dict[str, Any]:
    """Neurons, layers and connections before and after, as the certificate records them."""
    return {
        "neurons_before": counts.neurons_before,
        "neurons_after": counts.neurons_after,
        "layers_before": counts.layers_before,
        "layers_after": counts.layers_after,
        "connections_before": counts.connections_before,
        "connections_after": counts.connections_after,
        "percent_connections_removed": round(counts.percent_connections_removed, 4),
    }


def compression_record(compression: Compression, rounding: Fraction) -> dict[str, Any]:
    """The certificate's `compression` block (the certificate writer adds `equivalence`)."""
    counts = compression.counts
    return {
        **count_totals(counts),
        "per_layer": [dataclasses.asdict(c) for c in counts.per_layer],
        "rounding_bound": fraction_to_str(rounding),
        "removed": [_neuron_record(n) for n in compression.removed],
        "folds": [
            {
                "dependent": _neuron_record(fold.dependent),
                "basis": [_neuron_record(n) for n in fold.basis],
                "coefficients": [fraction_to_str(c) for c in fold.coefficients],
                "constant": fraction_to_str(fold.constant),
            }
            for fold in compression.folds
        ],
        "merged_layers": list(compression.merged_layers),
        "layer_map": list(compression.layer_map),
        "neuron_map": [[n.index for n in rows] for rows in compression.neuron_map],
    }
