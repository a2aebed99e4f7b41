"""Certification: exact, independently checkable proofs of pre-activation bounds and stability.

Stage: ... -> stability search -> **certification** -> compression -> ...

Every proved fact is a *bound lemma* `sign * g <= value` about one neuron on one box (sign +1:
an upper bound, -1: a lower bound). A neuron is stably inactive on a box when its upper-bound
lemma has value <= 0 and stably active when its lower-bound lemma has value >= 0.

Soundness argument (Farkas). The relaxation (`verifier.relaxation`) lists rows s_r(z) that
hold for the real network on the box, given the lemmas of earlier layers: s_r >= 0 for
inequality rows, s_r == 0 for equality rows; and finite bounds lo <= z <= hi for every
variable. For ANY multipliers y with y_r >= 0 on inequality rows, the residual

    r(z) = sign * g(z) + sum_r y_r * s_r(z)

satisfies sign * g(z) <= r(z) at every real point, hence sign * g <= max_{lo<=z<=hi} r(z),
which is computed exactly (r is affine). The multipliers come from GLOP's dual values (floats,
untrusted); the bound is computed from them in exact rational arithmetic, so any error in the
floats only makes the bound weaker, never wrong. Each leaf is also written as an SMT-LIB2
obligation (identity, residual bound, multiplier signs) that Z3 checks independently.

Case splits: when one relaxation is not enough, branch on an earlier unstable neuron's phase
(g >= 0 with a == g, or g <= 0 with a == 0); a lemma is then a set of leaves whose assumptions
cover every phase combination, each leaf a Farkas certificate under its assumptions.

Boxes inside boxes: a lemma proved on a box holds on every box inside it, so the facts a
relaxation on a sub-box uses may be lemmas of a box enclosing it (`prove_box(enclosing=...)`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from verifier.domain import Box
from verifier.exact import RationalArray
from verifier.ir import Network
from verifier.lp import LinearProgram, LpStatus, SparseRow
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import Obligation, smt_number, smt_ratio
from verifier.status import Neuron, Phase

UPPER, LOWER = 1, -1
SENSE_NAMES = {UPPER: "upper", LOWER: "lower"}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One Farkas certificate: multipliers per row key, under phase assumptions."""

    assumptions: tuple[tuple[Neuron, Phase], ...]
    multipliers: Mapping[str, Fraction]
    bound: Fraction
    """max of the residual over the variable bounds: the leaf proves sign * g <= bound."""


@dataclasses.dataclass(frozen=True)
class BoundLemma:
    """sign * g_neuron <= sign * value on box `box`, i.e. g <= value (upper) or g >= value."""

    id: str
    box: int
    neuron: Neuron
    sign: int
    value: Fraction
    leaves: tuple[Leaf, ...]
    context: str
    """Id of the set of earlier-layer lemmas whose facts the relaxation uses."""

    @property
    def sense(self) -> str:
        return SENSE_NAMES[self.sign]


def proving_sign(phase: Phase) -> int:
    """The sense of the bound that shows `phase`: an upper bound <= 0 shows inactive, a lower
    bound >= 0 active."""
    return UPPER if phase is Phase.INACTIVE else LOWER


def lemma_id(box: int, neuron: Neuron, sign: int) -> str:
    return f"b{box}.L{neuron.layer}.n{neuron.index}.{SENSE_NAMES[sign]}"


def context_id(box: int, layer: int) -> str:
    return f"b{box}.ctx{layer}"


# ---------------------------------------------------------------------------------------------
# Exact residuals: the heart of the checker, shared by the prover (to compute the bound) and by
# `verifier.check` (to re-derive it from the network and the multipliers alone).


class _ExactSum:
    """An exact affine function accumulated as integer numerators grouped by denominator.

    Adding a rational a/b to a coefficient is one integer addition into the group of b; the
    groups are brought to their least common denominator once, at the end. This is the same
    exact arithmetic as with `Fraction`, without a gcd per operation.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.groups: dict[int, list[int]] = {}
        self.constants: dict[int, int] = {}

    def add(self, index: int, numerator: int, denominator: int) -> None:
        group = self.groups.get(denominator)
        if group is None:
            group = self.groups[denominator] = [0] * self.size
        group[index] += numerator

    def add_constant(self, numerator: int, denominator: int) -> None:
        self.constants[denominator] = self.constants.get(denominator, 0) + numerator

    def scaled(self) -> tuple[list[int], int, Fraction]:
        """(numerators, common denominator, constant) of the accumulated function."""
        denominator = math.lcm(*self.groups) if self.groups else 1
        numerators = [0] * self.size
        for group_denominator, group in self.groups.items():
            factor = denominator // group_denominator
            for index, value in enumerate(group):
                if value:
                    numerators[index] += value * factor
        constant = sum((Fraction(n, d) for d, n in self.constants.items()), Fraction(0))
        return numerators, denominator, constant


def _accumulate_residual(
    relaxation: Relaxation, target: Neuron, sign: int, multipliers: Mapping[str, Fraction]
) -> _ExactSum:
    network = relaxation.network
    layout = relaxation.variables
    total = _ExactSum(layout.count)
    layer = network.layers[target.layer]

    def previous_indices(k: int) -> list[int]:
        if k == 0:
            return list(range(layout.input_size))
        return [layout.a(k - 1, j) for j in range(network.layers[k].inputs)]

    weights = layer.exact_weights
    for index, weight in zip(
        previous_indices(target.layer), weights.numerators[target.index], strict=True
    ):
        total.add(index, sign * int(weight), weights.denominator)
    bias = layer.exact_bias
    total.add_constant(sign * int(bias.numerators[target.index]), bias.denominator)

    small = relaxation.small_rows()
    definition_multipliers: dict[int, dict[int, Fraction]] = {}
    for key, value in multipliers.items():
        kind, k_text, i_text = key.split(":")
        k, i = int(k_text), int(i_text)
        if kind == "def":
            if not (0 <= k < relaxation.layer and 0 <= i < network.layers[k].outputs):
                raise ValueError(f"multiplier on unknown row {key}")
            definition_multipliers.setdefault(k, {})[i] = value
            continue
        if key not in small:
            raise ValueError(f"multiplier on unknown row {key}")
        row, row_constant, equality = small[key]
        if not equality and value < 0:
            raise ValueError(f"negative multiplier {value} on inequality row {key}")
        for index, coefficient in row.items():
            total.add(
                index,
                value.numerator * coefficient.numerator,
                value.denominator * coefficient.denominator,
            )
        total.add_constant(
            value.numerator * row_constant.numerator, value.denominator * row_constant.denominator
        )

    for k, by_row in definition_multipliers.items():
        definition = network.layers[k]
        mu = [by_row.get(i, Fraction(0)) for i in range(definition.outputs)]
        for i, value in by_row.items():
            total.add(layout.g(k, i), value.numerator, value.denominator)
        mu_exact = RationalArray.from_fractions(mu)
        pushed = np.dot(mu_exact.numerators, definition.exact_weights.numerators)
        pushed_denominator = mu_exact.denominator * definition.exact_weights.denominator
        for index, value in zip(previous_indices(k), pushed.tolist(), strict=True):
            total.add(index, -int(value), pushed_denominator)
        bias_dot = int(np.dot(mu_exact.numerators, definition.exact_bias.numerators))
        total.add_constant(-bias_dot, mu_exact.denominator * definition.exact_bias.denominator)
    return total


def scaled_residual(
    relaxation: Relaxation, target: Neuron, sign: int, multipliers: Mapping[str, Fraction]
) -> tuple[list[int], int, Fraction]:
    """r = sign * g_target + sum_r y_r * s_r, exactly, as (integer numerator per variable,
    their common denominator, constant).

    Raises ValueError for a multiplier on an unknown row or a negative multiplier on an
    inequality row (a certificate that cannot be valid).
    """
    return _accumulate_residual(relaxation, target, sign, multipliers).scaled()


def residual(
    relaxation: Relaxation, target: Neuron, sign: int, multipliers: Mapping[str, Fraction]
) -> tuple[list[Fraction], Fraction]:
    """The residual of `scaled_residual` as (coefficient per variable, constant)."""
    numerators, denominator, constant = scaled_residual(relaxation, target, sign, multipliers)
    return [Fraction(n, denominator) for n in numerators], constant


def maximum_over_bounds(
    coefficients: Sequence[Fraction],
    constant: Fraction,
    lower: Sequence[Fraction],
    upper: Sequence[Fraction],
) -> Fraction:
    """Exact max of an affine function over a box of variable bounds."""
    return constant + _maximum_of_linear_part(coefficients, lower, upper)


def _maximum_of_linear_part(
    coefficients: Sequence[Fraction | int],
    lower: Sequence[Fraction | int],
    upper: Sequence[Fraction | int],
) -> Fraction:
    """max of sum c_j z_j over lower <= z <= upper (exact for ints and Fractions alike).

    The sum starts as the int 0 so that all-integer input stays in fast integer arithmetic.
    """
    total: Fraction | int = 0
    for c, low, high in zip(coefficients, lower, upper, strict=True):
        if c > 0:
            total += c * high
        elif c < 0:
            total += c * low
    return Fraction(total)


def leaf_bound(
    relaxation: Relaxation,
    target: Neuron,
    sign: int,
    multipliers: Mapping[str, Fraction],
    scaled: tuple[list[int], int, Fraction] | None = None,
) -> Fraction:
    """Exact max of the residual over the variable bounds (integer arithmetic throughout).

    `scaled` is the residual as `scaled_residual` gives it, when the caller has it already.
    """
    numerators, denominator, constant = (
        scaled if scaled is not None else scaled_residual(relaxation, target, sign, multipliers)
    )
    lower, upper, bounds_denominator = relaxation.scaled_variable_bounds()
    scaled_maximum = _maximum_of_linear_part(numerators, lower, upper)
    return constant + scaled_maximum / (denominator * bounds_denominator)


def round_outward(value: Fraction, sign: int) -> Fraction:
    """A float64-representable rational v with sign*value <= sign*v (keeps lemma values short)."""
    approximate = float(value)
    if sign == UPPER and Fraction(approximate) < value:
        approximate = math.nextafter(approximate, math.inf)
    if sign == LOWER and Fraction(approximate) > value:
        approximate = math.nextafter(approximate, -math.inf)
    return Fraction(approximate)


def covers_all_phases(assumption_sets: Iterable[Mapping[Neuron, Phase]]) -> bool:
    """True iff every assignment of phases satisfies the assumptions of at least one leaf."""
    leaves = [dict(a) for a in assumption_sets]

    def covered(fixed: dict[Neuron, Phase]) -> bool:
        open_neurons: list[Neuron] = []
        for leaf in leaves:
            if all(fixed.get(n, p) == p for n, p in leaf.items()):
                missing = [n for n in leaf if n not in fixed]
                if not missing:
                    return True
                open_neurons.extend(missing)
        if not open_neurons:
            return False
        neuron = min(open_neurons)
        return all(covered({**fixed, neuron: phase}) for phase in Phase)

    return covered({})


# ---------------------------------------------------------------------------------------------
# SMT-LIB2 obligations: what Z3 checks, independently of the Python arithmetic above.


def _smt_sum(terms: list[str]) -> str:
    if not terms:
        return "0.0"
    return terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"


def _smt_reduced(numerator: int, denominator: int) -> str:
    """numerator/denominator as an SMT-LIB2 term, in lowest terms (like `Fraction`, faster)."""
    divisor = math.gcd(numerator, denominator)
    return smt_ratio(numerator // divisor, denominator // divisor)


def _smt_affine(coefficients: Mapping[str, Fraction], constant: Fraction) -> str:
    terms = [f"(* {smt_number(c)} {name})" for name, c in coefficients.items() if c != 0]
    if constant != 0:
        terms.append(smt_number(constant))
    return _smt_sum(terms)


class DefinitionRows:
    """SMT text of the network's `def` rows, built once per network and shared by obligations."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._terms: dict[tuple[int, int], dict[str, Fraction]] = {}
        self._texts: dict[tuple[int, int], str] = {}
        self._biases = [layer.exact_bias.to_fractions() for layer in network.layers]

    def _inputs_of(self, k: int) -> list[str]:
        if k == 0:
            return [f"x_{j}" for j in range(self.network.input_size)]
        return [f"a_{k - 1}_{j}" for j in range(self.network.layers[k].inputs)]

    def terms(self, k: int, i: int) -> dict[str, Fraction]:
        """W_k[i] . a_{k-1} as {variable name: exact weight}, zero weights omitted."""
        if (k, i) not in self._terms:
            weights = self.network.layers[k].exact_weights.row(i).to_fractions()
            self._terms[k, i] = {
                n: w for n, w in zip(self._inputs_of(k), weights, strict=True) if w != 0
            }
        return self._terms[k, i]

    def bias(self, k: int, i: int) -> Fraction:
        return self._biases[k][i]

    def written(self) -> DefinitionRows:
        """Self, with the text of every row built (before worker processes inherit it)."""
        for k, layer in enumerate(self.network.layers):
            for i in range(layer.outputs):
                self.row_text(k, i)
        return self

    def row_text(self, k: int, i: int) -> str:
        """s = g_k_i - W_k[i] . a_{k-1} - b_k[i] (== 0 on the real network)."""
        if (k, i) not in self._texts:
            row_terms = {n: -w for n, w in self.terms(k, i).items()}
            row_terms[f"g_{k}_{i}"] = Fraction(1)
            self._texts[k, i] = _smt_affine(row_terms, -self.bias(k, i))
        return self._texts[k, i]


def leaf_obligation(
    relaxation: Relaxation,
    target: Neuron,
    sign: int,
    leaf: Leaf,
    obligation_id: str,
    rows: DefinitionRows | None = None,
    scaled: tuple[list[int], int, Fraction] | None = None,
) -> Obligation:
    """SMT-LIB2 script whose check-sats are all unsat iff the leaf certificate is valid
    (`scaled`: the leaf's `scaled_residual`, when the caller has it already).

    Query 1, the Farkas identity: r(z) == sign*g(z) + sum y_r s_r(z) for all z (written with
    every row spelled out from the network's weights).
    Query 2, the residual bound: no z within the variable bounds has r(z) > bound.
    Query 3, the multiplier signs: every inequality multiplier is >= 0.
    """
    network = relaxation.network
    layout = relaxation.variables
    name = layout.name
    numerators, denominator, constant = (
        scaled
        if scaled is not None
        else scaled_residual(relaxation, target, sign, leaf.multipliers)
    )
    lower, upper = relaxation.variable_bounds()
    rows = rows if rows is not None and rows.network is network else DefinitionRows(network)

    target_terms = {n: sign * w for n, w in rows.terms(target.layer, target.index).items()}
    target_constant = sign * rows.bias(target.layer, target.index)
    small = relaxation.small_rows()
    combination = [_smt_affine(target_terms, target_constant)]
    inequality_multipliers = []
    for key, value in sorted(leaf.multipliers.items()):
        if value == 0:
            continue
        kind, k_text, i_text = key.split(":")
        k, i = int(k_text), int(i_text)
        if kind == "def":
            row_text = rows.row_text(k, i)
        else:
            row, row_constant, equality = small[key]
            row_text = _smt_affine({name(index): c for index, c in row.items()}, row_constant)
            if not equality:
                inequality_multipliers.append(value)
        combination.append(f"(* {smt_number(value)} {row_text})")
    residual_terms = {name(index): n for index, n in enumerate(numerators) if n}
    residual_parts = [
        f"(* {_smt_reduced(n, denominator)} {variable})" for variable, n in residual_terms.items()
    ]
    if constant != 0:
        residual_parts.append(smt_number(constant))
    residual_text = _smt_sum(residual_parts)

    mentioned = set(residual_terms) | set(target_terms)
    for key in leaf.multipliers:
        kind, k_text, i_text = key.split(":")
        k, i = int(k_text), int(i_text)
        if kind == "def":
            mentioned |= set(rows.terms(k, i)) | {f"g_{k}_{i}"}
        else:
            mentioned |= {name(index) for index in small[key][0]}
    declarations = "\n".join(f"(declare-const {n} Real)" for n in sorted(mentioned))
    header = (
        f"; verify-compress obligation {obligation_id}\n"
        f"; claim: {SENSE_NAMES[sign]} bound of neuron {target}"
        f" under assumptions {[(str(n), p.value) for n, p in leaf.assumptions]}\n"
        "(set-logic QF_LRA)\n"
    )
    identity = (
        f"; query 1: Farkas identity\n{header}{declarations}\n"
        f"(assert (not (= {residual_text} (+ {' '.join(combination)} 0.0))))\n(check-sat)\n"
    )
    bound_lines = [
        f"(assert (and (<= {smt_number(lower[index])} {n}) (<= {n} {smt_number(upper[index])})))"
        for index in range(len(numerators))
        if (n := name(index)) in residual_terms
    ]
    residual_bound = (
        f"; query 2: residual bound over the variable bounds\n{header}"
        + "\n".join(f"(declare-const {n} Real)" for n in sorted(residual_terms))
        + "\n"
        + "\n".join(bound_lines)
        + f"\n(assert (> {residual_text} {smt_number(leaf.bound)}))\n(check-sat)\n"
    )
    signs = ""
    if inequality_multipliers:
        conjunction = " ".join(f"(>= {smt_number(v)} 0.0)" for v in inequality_multipliers)
        signs = (
            f"(reset)\n; query 3: inequality multipliers are nonnegative\n{header}"
            f"(assert (not (and {conjunction} true)))\n(check-sat)\n"
        )
    return Obligation(obligation_id, f"{identity}(reset)\n{residual_bound}{signs}")


# ---------------------------------------------------------------------------------------------
# The prover: layer by layer, LP duals made exact, case splits where one relaxation is not enough.


@dataclasses.dataclass
class BoxProof:
    """Everything proved on one box, and the bounds known there."""

    facts: dict[Neuron, NeuronFact]
    """The bounds known on the box per neuron: its own lemmas' or an enclosing box's."""
    lemmas: dict[str, BoundLemma]
    """The lemmas proved on this box."""
    contexts: dict[str, list[str]]
    """context id -> ids of the lemmas it consists of (a lower and an upper bound lemma of
    every earlier-layer neuron, each proved on this box or on a box enclosing it)."""
    fact_lemmas: dict[Neuron, tuple[str, str]] = dataclasses.field(default_factory=dict)
    """Per neuron of `facts`: the ids of the lemmas its lower and upper bound come from."""


REPROVE_GAIN = 0.02
"""On a box inside another, a bound is re-proved only for neurons not stable on the enclosing
box, and the new lemma is kept only if it narrows the enclosing box's bounds by at least this
fraction of their width or decides the neuron's sign: every kept lemma costs a Z3 check."""


def _narrows(sign: int, known: NeuronFact) -> Callable[[float], bool]:
    """Whether an LP optimum (of sign * g) would give a bound worth keeping over `known`:
    the exact bound is about the same, so one that fails this is not computed at all."""
    return lambda optimum: _worth_keeping(sign, Fraction(sign * optimum), known)


def _worth_keeping(sign: int, value: Fraction, known: NeuronFact) -> bool:
    width = known.upper - known.lower
    if sign == UPPER:
        return value <= 0 < known.upper or value <= known.upper - width * Fraction(REPROVE_GAIN)
    return value >= 0 > known.lower or value >= known.lower + width * Fraction(REPROVE_GAIN)


WitnessHook = Callable[[np.ndarray, int], None]


MULTIPLIER_BITS = 24


def short_rational(value: float, bits: int = MULTIPLIER_BITS) -> Fraction:
    """`value` rounded to `bits` significant bits, as an exact dyadic rational.

    Any multipliers give a valid bound (it is recomputed exactly from them), so rounding only
    costs a relative 2**-bits of tightness; in exchange every product in an obligation has
    short numbers, which is most of what Z3 spends its time on.
    """
    mantissa, exponent = math.frexp(value)
    return Fraction(round(mantissa * 2**bits)) * Fraction(2) ** (exponent - bits)


def _multipliers_from_duals(
    keys: Sequence[str],
    duals: np.ndarray,
    assumptions: Mapping[Neuron, Phase],
    bits: int = MULTIPLIER_BITS,
) -> dict[str, Fraction]:
    """Exact multipliers from GLOP's duals (y = -dual), inequality multipliers clipped at 0.

    In a branch that assumes neuron (k, i) active, the LP row `above:k:i` is an equality
    (a - g == 0): a negative multiplier on it belongs to the equality row `identity:k:i`.
    """
    multipliers: dict[str, Fraction] = {}
    for key, dual in zip(keys, duals.tolist(), strict=True):
        value = -float(dual)
        if key.startswith("above") and value < 0:
            _, k_text, i_text = key.split(":")
            if assumptions.get(Neuron(int(k_text), int(i_text))) is Phase.ACTIVE:
                key = f"identity:{k_text}:{i_text}"
        if key.startswith(("above", "triangle")):
            value = max(value, 0.0)
        if value != 0.0:
            multipliers[key] = short_rational(value, bits)
    return multipliers


@dataclasses.dataclass
class _LeafAttempt:
    leaf: Leaf | None
    bound: Fraction | None
    primal: np.ndarray | None
    multipliers: dict[str, Fraction]


def _solve_leaf(
    relaxation: Relaxation,
    program: tuple[list[str], LinearProgram],
    target: Neuron,
    sign: int,
    time_limit: float,
    wanted: Callable[[float], bool] | None = None,
) -> _LeafAttempt:
    """The LP's certificate for sign * g <= bound, made exact; none if the LP fails or if
    `wanted` rejects its float optimum (the exact arithmetic is most of the cost)."""
    keys, lp = program
    objective, constant = relaxation.target_objective(target, sign)
    solution = lp.maximize(objective, time_limit)
    if solution.status is LpStatus.INFEASIBLE and relaxation.assumptions:
        return _empty_branch_leaf(relaxation, target, sign, time_limit)
    if solution.status is not LpStatus.OPTIMAL:
        return _LeafAttempt(None, None, None, {})
    if wanted is not None and not wanted(solution.value + constant):
        return _LeafAttempt(None, None, solution.primal, {})
    multipliers = _multipliers_from_duals(keys, solution.row_duals, relaxation.assumptions)
    bound = leaf_bound(relaxation, target, sign, multipliers)
    if bound > 0 >= solution.value + constant:
        # The LP shows the sign, but short multipliers cost it the margin: use them all.
        precise = _multipliers_from_duals(keys, solution.row_duals, relaxation.assumptions, 53)
        precise_bound = leaf_bound(relaxation, target, sign, precise)
        if precise_bound < bound:
            multipliers, bound = precise, precise_bound
    leaf = Leaf(tuple(sorted(relaxation.assumptions.items())), multipliers, bound)
    return _LeafAttempt(leaf, bound, solution.primal, multipliers)


def _empty_branch_leaf(
    relaxation: Relaxation, target: Neuron, sign: int, time_limit: float
) -> _LeafAttempt:
    """A leaf for a case-split branch whose relaxation has no point at all.

    Phase 1: maximize -sigma subject to every row relaxed by sigma >= 0. Its duals y' give a
    combination with sum y'_r s_r < 0 over the variable bounds, a contradiction with s_r >= 0.
    Scaled by c, y' dominates the target: max(sign*g + c * sum y'_r s_r) <= 0 for c large
    enough, which is an ordinary leaf certificate (the exact bound decides; nothing is trusted).
    """
    keys, rows = relaxation.lp_rows()
    lower, upper = relaxation.variable_bounds()
    sigma = len(lower)
    relaxed: list[SparseRow] = []
    origins: list[tuple[str, int]] = []
    for key, row in zip(keys, rows, strict=True):
        indices = np.append(row.indices, sigma)
        relaxed.append(SparseRow(indices, np.append(row.coefficients, 1.0), row.rhs, False))
        origins.append((key, 1))
        if row.equality:
            relaxed.append(SparseRow(indices, np.append(-row.coefficients, 1.0), -row.rhs, False))
            origins.append((key, -1))
    phase_one = LinearProgram(
        np.array([float(v) for v in lower] + [0.0]),
        np.array([float(v) for v in upper] + [1e9]),
        relaxed,
    )
    objective = np.zeros(sigma + 1)
    objective[sigma] = -1.0
    solution = phase_one.maximize(objective, time_limit)
    if solution.status is not LpStatus.OPTIMAL or solution.value >= 0:
        return _LeafAttempt(None, None, None, {})
    combined: dict[str, float] = {}
    for (key, direction), dual in zip(origins, solution.row_duals.tolist(), strict=True):
        combined[key] = combined.get(key, 0.0) + direction * max(-float(dual), 0.0)
    base = {key: short_rational(value) for key, value in combined.items() if value != 0.0}
    assumptions = tuple(sorted(relaxation.assumptions.items()))
    for exponent in range(0, 64, 4):
        scale = Fraction(2**exponent)
        multipliers = {key: value * scale for key, value in base.items()}
        bound = leaf_bound(relaxation, target, sign, multipliers)
        if bound <= 0:
            return _LeafAttempt(Leaf(assumptions, multipliers, bound), bound, None, multipliers)
    return _LeafAttempt(None, None, None, {})


def _first_layer_leaf(relaxation: Relaxation, target: Neuron, sign: int) -> Leaf:
    """Layer 0: no multipliers needed, the residual is sign * g itself (exact interval)."""
    return Leaf((), {}, leaf_bound(relaxation, target, sign, {}))


def _triangle_gaps(
    relaxation: Relaxation, multipliers: Mapping[str, Fraction]
) -> list[tuple[Fraction, Neuron]]:
    """(y * U * -L, neuron) per triangle row in use, largest first: the most that row can add
    to the bound (its slack U(g - L) - (U - L)a is at most -UL, at g = 0 = a)."""
    gaps: list[tuple[Fraction, Neuron]] = []
    for key, value in multipliers.items():
        kind, k_text, i_text = key.split(":")
        if kind != "triangle":
            continue
        neuron = Neuron(int(k_text), int(i_text))
        fact = relaxation.facts[neuron]
        gaps.append((value * fact.upper * -fact.lower, neuron))
    return sorted(gaps, reverse=True)


def _split_candidates(relaxation: Relaxation, multipliers: Mapping[str, Fraction]) -> list[Neuron]:
    """Unstable earlier neurons, most promising split first (largest triangle gap in use)."""
    return [neuron for _, neuron in _triangle_gaps(relaxation, multipliers)]


def _splits_may_help(relaxation: Relaxation, attempt: _LeafAttempt, max_depth: int) -> bool:
    """Whether case splits of depth `max_depth` might close the gap between the bound and 0:
    only if the bound is at most what the `max_depth` largest triangle gaps add to it.

    A heuristic (any choice is sound): on ACAS Xu 1_1, every claim that case splits proved on
    the prop_1 or prop_3 box had a bound at most 0.6 times this; of the 120 they did not prove
    on the prop_1 box, 110 had more than 1.2 times, and took 21 of the 22 s spent on them.
    """
    if attempt.bound is None:
        return False
    gaps = _triangle_gaps(relaxation, attempt.multipliers)
    return attempt.bound <= sum(gap for gap, _ in gaps[:max_depth])


class _BranchProgram:
    """The unsplit LP, re-bounded in place for each case-split branch (no rebuild).

    A branch differs from the unsplit relaxation only in variable bounds and, for a neuron
    assumed active, in its `above` row becoming an equality (see `Relaxation.small_rows`).
    """

    def __init__(self, relaxation: Relaxation, program: tuple[list[str], LinearProgram]) -> None:
        self.relaxation = relaxation
        self.keys, self.lp = program
        self.rows = {key: position for position, key in enumerate(self.keys)}
        self.touched: set[Neuron] = set()
        """Neurons whose bounds an earlier branch changed (reset to the unsplit values)."""

    def apply(self, branch: Relaxation) -> tuple[list[str], LinearProgram]:
        layout = branch.variables
        lower, upper = branch.variable_bounds()
        for neuron in self.touched | set(branch.assumptions):
            g, a = layout.g(*neuron), layout.a(*neuron)
            for index in (g, a):
                self.lp.set_variable_bounds(index, float(lower[index]), float(upper[index]))
            above = self.rows[f"above:{neuron.layer}:{neuron.index}"]
            equality = branch.assumptions.get(neuron) is Phase.ACTIVE
            self.lp.set_row_bounds(above, 0.0, 0.0 if equality else self.lp.infinity)
            self.touched.add(neuron)
        return self.keys, self.lp


def _prove_with_splits(
    relaxation: Relaxation,
    program: tuple[list[str], LinearProgram],
    target: Neuron,
    sign: int,
    first: _LeafAttempt,
    max_depth: int,
    deadline: float,
) -> list[Leaf] | None:
    """Leaves proving sign*g <= 0 under all phase combinations of split neurons, or None."""
    branches = _BranchProgram(relaxation, program)

    def attempt(
        assumptions: dict[Neuron, Phase], depth: int, known: _LeafAttempt | None
    ) -> list[Leaf] | None:
        if time.monotonic() > deadline:
            return None
        branch = dataclasses.replace(relaxation, assumptions=assumptions)
        result = known or _solve_leaf(
            branch, branches.apply(branch), target, sign, max(0.1, deadline - time.monotonic())
        )
        if result.leaf is not None and result.bound is not None and result.bound <= 0:
            return [result.leaf]
        if result.leaf is None or depth >= max_depth:
            return None
        candidates = [
            n for n in _split_candidates(branch, result.multipliers) if n not in assumptions
        ]
        if not candidates:
            return None
        neuron = candidates[0]
        leaves: list[Leaf] = []
        for phase in Phase:
            sub = attempt({**assumptions, neuron: phase}, depth + 1, None)
            if sub is None:
                return None
            leaves.extend(sub)
        return leaves

    try:
        return attempt(dict(relaxation.assumptions), 0, first)
    finally:
        branches.apply(relaxation)


def prove_box(
    network: Network,
    box: Box,
    box_index: int,
    claims: Mapping[Neuron, Phase],
    deadline: float,
    max_split_depth: int = 6,
    offer_witness: WitnessHook | None = None,
    progress: Callable[[int, int], None] | None = None,
    enclosing: BoxProof | None = None,
) -> BoxProof:
    """Prove bounds layer by layer on one box, and try to prove every claim.

    `claims` maps claimed-stable neurons to their claimed phase on this box. Bound lemmas are
    proved for every neuron of every layer before the deepest claim (they are the facts later
    relaxations need); in the deepest layer only the claims are attempted. A claim that one
    relaxation does not prove is split on; the LP optimum of a failed attempt is offered as a
    witness (it may refute the claim). After the deadline, remaining claims are simply left
    unproved (their neurons then have no stability lemma: unknown).

    `enclosing` is the proof of a box that contains this one: its bounds hold here too, so
    neurons stable there keep its lemmas, and a re-proved bound replaces its lemma only where
    it is worth a Z3 check (`REPROVE_GAIN`) and was found before the deadline.
    """
    facts: dict[Neuron, NeuronFact] = {}
    fact_lemmas: dict[Neuron, tuple[str, str]] = {}
    lemmas: dict[str, BoundLemma] = {}
    contexts: dict[str, list[str]] = {}
    if not claims:
        return BoxProof(facts, lemmas, contexts, fact_lemmas)
    deepest = max(neuron.layer for neuron in claims)
    total = sum(network.layers[k].outputs for k in range(deepest)) + sum(
        1 for n in claims if n.layer == deepest
    )
    done = 0
    claims_left = len(claims) + 1
    previous_context: list[str] = []
    for k in range(deepest + 1):
        context = context_id(box_index, k)
        contexts[context] = list(previous_context)
        relaxation = Relaxation(network, box, k, dict(facts), {})
        program = relaxation.linear_program() if k > 0 else None
        layer_lemmas: list[str] = []
        # Claims first: if the deadline falls inside this layer, the bounds already proved
        # decide claims rather than only serve as facts for a layer that will not be reached.
        targets = (
            sorted(range(network.layers[k].outputs), key=lambda i: (Neuron(k, i) not in claims, i))
            if k < deepest
            else sorted(n.index for n in claims if n.layer == deepest)
        )
        for index in targets:
            neuron = Neuron(k, index)
            claimed = claims.get(neuron)
            if claimed is not None:
                claims_left -= 1
            known = enclosing.facts.get(neuron) if enclosing is not None else None
            known_ids = enclosing.fact_lemmas.get(neuron) if enclosing is not None else None
            done += 1
            if (
                k < deepest
                and known is not None
                and known_ids is not None
                and known.phase is not None
            ):
                facts[neuron] = known
                fact_lemmas[neuron] = known_ids
                layer_lemmas.extend(known_ids)
                continue
            senses = [UPPER, LOWER] if k < deepest or claimed is None else [proving_sign(claimed)]
            chosen: dict[int, tuple[Fraction, str]] = {}
            for sign in senses:
                if time.monotonic() > deadline:
                    break
                proving = claimed is not None and sign == proving_sign(claimed)
                if program is None:
                    leaf = _first_layer_leaf(relaxation, neuron, sign)
                    attempt = _LeafAttempt(leaf, leaf.bound, None, {})
                else:
                    attempt = _solve_leaf(
                        relaxation,
                        program,
                        neuron,
                        sign,
                        max(0.1, deadline - time.monotonic()),
                        None if known is None or proving else _narrows(sign, known),
                    )
                if attempt.leaf is None or attempt.bound is None:
                    continue
                leaves = [attempt.leaf]
                if proving and attempt.bound > 0:
                    if attempt.primal is not None and offer_witness is not None:
                        offer_witness(attempt.primal[: network.input_size], box_index)
                    if program is not None and _splits_may_help(
                        relaxation, attempt, max_split_depth
                    ):
                        # A fair share of the time left per claim still to come, so that one
                        # stubborn claim's case splits cannot starve the others.
                        share = (deadline - time.monotonic()) / max(1, claims_left)
                        split = _prove_with_splits(
                            relaxation,
                            program,
                            neuron,
                            sign,
                            attempt,
                            max_split_depth,
                            min(deadline, time.monotonic() + max(share, 0.5)),
                        )
                        if split is not None:
                            leaves = split
                bound = max(leaf.bound for leaf in leaves)
                value = round_outward(sign * bound, sign)
                if known is not None and not _worth_keeping(sign, value, known):
                    continue
                lemma = BoundLemma(
                    lemma_id(box_index, neuron, sign),
                    box_index,
                    neuron,
                    sign,
                    value,
                    tuple(leaves),
                    context,
                )
                lemmas[lemma.id] = lemma
                chosen[sign] = (value, lemma.id)
            if k == deepest:
                layer_lemmas.extend(identifier for _, identifier in chosen.values())
            else:
                if known is not None and known_ids is not None:
                    chosen.setdefault(LOWER, (known.lower, known_ids[0]))
                    chosen.setdefault(UPPER, (known.upper, known_ids[1]))
                if UPPER in chosen and LOWER in chosen:
                    facts[neuron] = NeuronFact(chosen[LOWER][0], chosen[UPPER][0])
                    fact_lemmas[neuron] = (chosen[LOWER][1], chosen[UPPER][1])
                    layer_lemmas.extend(fact_lemmas[neuron])
            if progress is not None:
                progress(done, total)
        if k < deepest:
            missing = [i for i in range(network.layers[k].outputs) if Neuron(k, i) not in facts]
            if missing:
                # Without bounds on every neuron of this layer, deeper relaxations cannot be
                # built (time limit): deeper claims stay unproved.
                break
        previous_context = previous_context + layer_lemmas
    return BoxProof(facts, lemmas, contexts, fact_lemmas)


class SplitRetry:
    """Claims of one layer of a proved box, retried with case splits the gate skipped.

    `_splits_may_help` keeps hopeless case splits from eating a proof's budget, but on
    mnist-net_256x2's eps = 0.05 box of image 1 it also skipped 71 of the 122 claims that
    case splits of depth 6 prove (in 82 s in all). When time is left after a box's proof, its
    failed claims of its deepest layer (no later layer's relaxation used their lemmas, so a
    new lemma can replace the old) are retried most promising first. The relaxation is the
    one `prove_box` used there: the box's bounds on every earlier layer.
    """

    def __init__(self, network: Network, box: Box, box_index: int, proof: BoxProof, layer: int):
        self.box_index = box_index
        self.layer = layer
        facts = {n: f for n, f in proof.facts.items() if n.layer < layer}
        self.relaxation = Relaxation(network, box, layer, facts, {})
        self.program = self.relaxation.linear_program()
        self._first: dict[tuple[Neuron, int], _LeafAttempt] = {}

    def promise(self, neuron: Neuron, sign: int, max_depth: int) -> Fraction | None:
        """The claim's bound over what its `max_depth` largest triangle gaps can add (below 1:
        the gate would have tried it), or None if the LP fails or the bound already shows it."""
        attempt = _solve_leaf(self.relaxation, self.program, neuron, sign, 30.0)
        if attempt.bound is None or attempt.bound <= 0:
            return None
        self._first[(neuron, sign)] = attempt
        gaps = sum(
            gap for gap, _ in _triangle_gaps(self.relaxation, attempt.multipliers)[:max_depth]
        )
        return attempt.bound / gaps if gaps > 0 else None

    def prove(
        self, neuron: Neuron, sign: int, max_depth: int, deadline: float
    ) -> BoundLemma | None:
        """A lemma showing sign * g <= 0 on the box by case splits, or None (also past the
        deadline). Call `promise` first."""
        first = self._first.get((neuron, sign))
        if first is None:
            return None
        leaves = _prove_with_splits(
            self.relaxation, self.program, neuron, sign, first, max_depth, deadline
        )
        if leaves is None:
            return None
        value = round_outward(sign * max(leaf.bound for leaf in leaves), sign)
        if sign * value > 0:
            return None
        return BoundLemma(
            lemma_id(self.box_index, neuron, sign),
            self.box_index,
            neuron,
            sign,
            value,
            tuple(leaves),
            context_id(self.box_index, self.layer),
        )


_helper_network: Network | None = None
"""Set once in the `ProofHelper` process by `_start_helper` (never in the main process)."""


def _start_helper(network: Network) -> None:
    global _helper_network
    _helper_network = network


def _prove_in_helper(
    box: Box,
    box_index: int,
    claims: Mapping[Neuron, Phase],
    deadline: float,
    max_split_depth: int,
    enclosing: BoxProof | None,
) -> tuple[BoxProof, list[npt.NDArray[np.float64]], float]:
    """`prove_box` in the helper process: the proof, the LP optima it offered as witnesses
    (the main process offers them to its table) and its wall seconds."""
    if _helper_network is None:
        raise RuntimeError("_prove_in_helper runs only in a ProofHelper process")
    offered: list[npt.NDArray[np.float64]] = []
    started = time.monotonic()
    proof = prove_box(
        _helper_network,
        box,
        box_index,
        claims,
        max(started, deadline),
        max_split_depth,
        lambda point, _: offered.append(np.array(point, dtype=np.float64)),
        None,
        enclosing,
    )
    return proof, offered, time.monotonic() - started


class ProofHelper:
    """A process that proves proof boxes beside the main one (`prove_box`, same arguments).

    On a splittable domain the LP proofs are the run's critical path while the Z3 checks
    started during them leave the second core partly idle: the main process proves one half of
    each bisection and the helper the other. Use as a context manager.
    """

    def __init__(self, network: Network) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=1, initializer=_start_helper, initargs=(network,)
        )

    def __enter__(self) -> ProofHelper:
        return self

    def __exit__(self, *_: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(
        self,
        box: Box,
        box_index: int,
        claims: Mapping[Neuron, Phase],
        deadline: float,
        max_split_depth: int,
        enclosing: BoxProof | None,
    ) -> Future[tuple[BoxProof, list[npt.NDArray[np.float64]], float]]:
        return self._executor.submit(
            _prove_in_helper, box, box_index, dict(claims), deadline, max_split_depth, enclosing
        )
