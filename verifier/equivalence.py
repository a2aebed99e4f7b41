"""Proof that a compressed network computes exactly the original function on the domain.

Stage: ... -> certification -> compression -> **equivalence** -> certificate and report.

Reference semantics: exact real arithmetic over the stored weights read as exact rationals
(the compressed network's weights are exact rationals too; rounding on export is bounded
separately, see `verifier.compress.rounding_bound`).

The compositional argument. Compressed layer j computes the block of original layers
a+1 .. e (a = layer_map[j-1], or the input when j = 0; e = layer_map[j]); its rows are original
neurons of layer e. For each block one SMT-LIB2 obligation (QF_LRA, expected unsat) states, for
ALL real values of the original layer-a outputs h_a (free variables):

    assumptions: h_a[i] = 0 for every removed (stably inactive) neuron i of layer a, and
                 h_a[d] = sum_k c_k h_a[b_k] + const for every folded neuron d of layer a;
    original side: the original layers a+1 .. e with the phase substitution of the merged
                 layers a+1 .. e-1 (every neuron stable: active -> identity, inactive -> 0),
                 giving the pre-activations g_e of layer e;
    compressed side: compressed layer j applied to the kept neurons' h_a;
    claim: every row of compressed layer j equals g_e of its original neuron, and every fold
                 of layer e holds for pre-activations: g_e[d] = sum_k c_k g_e[b_k] + const.

Why this proves equality on D. Let x be in D and h the original network's values at x. By the
stability lemmas, removed neurons of layer a have h = relu(g) = 0 and folded neurons d and
their basis neurons b_k have h = g, so the fold claim proved for layer a in the previous block
gives the fold assumption, and the merged layers' neurons really are identity or zero. By
induction over blocks, the compressed network's kept values at layer a equal h_a[kept]; then
the claim gives equal pre-activations at layer e for every kept row, and both networks apply
the same ReLU (or none) to equal values. At the last block this is the output. The proof uses
exactly the lemmas of: removed neurons, folded neurons and their basis neurons, and every neuron
of a merged layer; kept neurons are free variables and need none (unstable and unknown neurons
are never compressed, so unknown lemmas do not matter).

Cross-check on small networks: `direct_equivalence_query` asks Z3 for any x in D where the two
networks (ReLUs as if-then-else) differ. Empirical checks: exact evaluation at witnesses, box
corners and random points (`empirical_check`), and onnxruntime on the two files
(`runtime_check`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .compress import Compression, Fold
from .domain import Box, Domain
from .errors import NetworkError
from .exact import fraction_to_str
from .ir import AffineLayer, Network
from .smt import Obligation, SmtResult, SmtVerdict, check, find_model, smt_number
from .status import Neuron, Status

FloatArray = npt.NDArray[np.float64]

DIRECT_QUERY_MAX_HIDDEN = 24
"""The direct global query runs as a cross-check only on networks this small. It makes Z3
re-establish every stability fact by case splits, which grows exponentially: measured on
two-hidden-layer nets, 0.05 s at 48 hidden neurons (16 unstable) and 1.5 s at 64 (22
unstable), while the bundled digits_l1 model (64 hidden, 43 unstable, stability needing LP
proofs) is still unknown after 600 s."""

CROSS_CHECK_TIMEOUT = 10.0
"""Seconds for the direct query; an unknown answer is recorded, never fatal."""


@dataclasses.dataclass(frozen=True)
class EquivalenceResult:
    """`proved` iff every block obligation is unsat and every lemma used has an id.

    `counterexample` is set only when it was checked exactly: an input in the domain where the
    exact outputs differ. `cross_check` is the direct global query (small networks only);
    its result does not enter `proved` unless it refutes (then something is wrong and
    `proved` is false).
    """

    proved: bool
    obligations: list[Obligation]
    results: list[SmtResult]
    uses: list[str]
    counterexample: FloatArray | None
    message: str
    cross_check: Obligation | None = None
    cross_check_result: SmtResult | None = None


# ---------------------------------------------------------------------------------------------
# SMT-LIB2 text


def _affine(terms: Sequence[tuple[Fraction, str]], constant: Fraction) -> str:
    parts = [name if c == 1 else f"(* {smt_number(c)} {name})" for c, name in terms if c != 0]
    if constant != 0 or not parts:
        parts.append(smt_number(constant))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def _row(layer: AffineLayer, index: int, names: Sequence[str | None]) -> str:
    """Pre-activation `index` of `layer` over inputs `names` (None: an input fixed to 0)."""
    weights, bias = layer.exact_weights, layer.exact_bias
    terms = [
        (Fraction(int(weights.numerators[index, k]), weights.denominator), name)
        for k, name in enumerate(names)
        if name is not None
    ]
    return _affine(terms, Fraction(int(bias.numerators[index]), bias.denominator))


def _define(name: str, expression: str) -> list[str]:
    return [f"(declare-const {name} Real)", f"(assert (= {name} {expression}))"]


def _conjunction(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"(and {' '.join(parts)})"


def _input_names(size: int) -> list[str]:
    return [f"x_{i}" for i in range(size)]


# ---------------------------------------------------------------------------------------------
# Block obligations


@dataclasses.dataclass(frozen=True)
class _Block:
    obligation: Obligation
    uses: tuple[Neuron, ...]
    problems: tuple[str, ...]
    free_names: tuple[str, ...]


def _fold_terms(fold: Fold, prefix: str) -> str:
    terms = [
        (c, f"{prefix}_{n.layer}_{n.index}")
        for c, n in zip(fold.coefficients, fold.basis, strict=True)
    ]
    return _affine(terms, fold.constant)


def _block_obligation(
    original: Network,
    compression: Compression,
    statuses: Mapping[Neuron, Status],
    j: int,
) -> _Block:
    block = compression.block(j)
    a, e = block.start - 1, block.stop - 1
    removed = {n for n in compression.removed if n.layer == a}
    folds_in = [f for f in compression.folds if f.dependent.layer == a]
    folds_out = [f for f in compression.folds if f.dependent.layer == e]
    uses: list[Neuron] = []
    problems: list[str] = []

    def require(neuron: Neuron, status: Status, why: str) -> None:
        uses.append(neuron)
        if statuses.get(neuron, Status.UNKNOWN) is not status:
            problems.append(f"neuron {neuron} is {why} but not certified {status.value}")

    lines = [
        f"; verify-compress equivalence: compressed layer {j} = original layers {a + 1}..{e}",
        "; holds iff unsat",
        "(set-logic QF_LRA)",
    ]
    if a < 0:
        inputs = _input_names(original.input_size)
        kept = list(inputs)
    else:
        inputs = [f"h_{a}_{i}" for i in range(original.layers[a].outputs)]
        kept = [f"h_{a}_{n.index}" for n in compression.neuron_map[j - 1]]
    lines += [f"(declare-const {name} Real)" for name in inputs]
    if removed:
        lines.append("; lemmas: removed neurons are stably inactive (output 0)")
    for neuron in sorted(removed):
        require(neuron, Status.STABLY_INACTIVE, "removed")
        lines.append(f"(assert (= h_{a}_{neuron.index} 0.0))")
    if folds_in:
        lines.append("; lemmas and fold identities: folded neurons are affine in their basis")
    for fold in folds_in:
        for neuron in (fold.dependent, *fold.basis):
            require(neuron, Status.STABLY_ACTIVE, "folded")
        lines.append(f"(assert (= h_{a}_{fold.dependent.index} {_fold_terms(fold, 'h')}))")

    lines.append("; original layers, phase-substituted in merged layers")
    previous: list[str | None] = list(inputs)
    for layer_index in range(a + 1, e):
        layer = original.layers[layer_index]
        current: list[str | None] = []
        for i in range(layer.outputs):
            neuron = Neuron(layer_index, i)
            status = statuses.get(neuron, Status.UNKNOWN)
            require(neuron, status if status.is_stable else Status.STABLY_ACTIVE, "merged")
            if status is Status.STABLY_ACTIVE:
                name = f"g_{layer_index}_{i}"
                lines += _define(name, _row(layer, i, previous))
                current.append(name)
            else:
                current.append(None)
        previous = current
    last = original.layers[e]
    rows = compression.neuron_map[j]
    needed = sorted(
        {n.index for n in rows} | {n.index for f in folds_out for n in (f.dependent, *f.basis)}
    )
    for i in needed:
        lines += _define(f"g_{e}_{i}", _row(last, i, previous))

    lines.append("; compressed layer")
    compressed_layer = compression.network.layers[j]
    for i in range(compressed_layer.outputs):
        lines += _define(f"k_{j}_{i}", _row(compressed_layer, i, kept))
    claims = [f"(= k_{j}_{i} g_{e}_{n.index})" for i, n in enumerate(rows)]
    claims += [f"(= g_{e}_{f.dependent.index} {_fold_terms(f, 'g')})" for f in folds_out]
    lines += [f"(assert (not {_conjunction(claims)}))", "(check-sat)", ""]
    return _Block(
        Obligation(f"equivalence-layer-{j}", "\n".join(lines)),
        tuple(dict.fromkeys(uses)),
        tuple(problems),
        tuple(inputs),
    )


def identity_obligations(
    original: Network, compression: Compression, statuses: Mapping[Neuron, Status]
) -> list[Obligation]:
    """One obligation per compressed layer (see the module docstring); all must be unsat."""
    return [
        _block_obligation(original, compression, statuses, j).obligation
        for j in range(len(compression.network.layers))
    ]


# ---------------------------------------------------------------------------------------------
# Exact evaluation helpers


def _exact_difference(original: Network, compressed: Network, point: npt.ArrayLike) -> Fraction:
    """max_k |f(x)_k - g(x)_k| in exact arithmetic."""
    first = original.evaluate_exact(point).output.to_fractions()
    second = compressed.evaluate_exact(point).output.to_fractions()
    return max((abs(p - q) for p, q in zip(first, second, strict=True)), default=Fraction(0))


def _exactly_in_domain(domain: Domain, point: Sequence[Fraction]) -> bool:
    return any(
        all(
            Fraction(float(lo)) <= v <= Fraction(float(hi))
            for v, lo, hi in zip(point, box.lower, box.upper, strict=True)
        )
        for box in domain.boxes
    )


def _to_domain_float(domain: Domain, point: Sequence[Fraction]) -> FloatArray | None:
    """The float64 point nearest a rational point, clipped into the box that holds it."""
    for box in domain.boxes:
        if _exactly_in_domain(Domain((box,)), point):
            values = np.array([float(v) for v in point], dtype=np.float64)
            return np.clip(values, box.lower, box.upper)
    return None


def _corners(box: Box, count: int, rng: np.random.Generator) -> FloatArray:
    """All corners of the box if there are at most `count`, else `count` random ones."""
    if count <= 0:
        return np.empty((0, box.size))
    if box.size < 30 and 2**box.size <= count:
        choices = np.array(list(itertools.product((0, 1), repeat=box.size)), dtype=bool)
    else:
        choices = rng.integers(0, 2, size=(count, box.size)).astype(bool)
    return np.where(choices, box.upper, box.lower).reshape(-1, box.size)


def _search_counterexample(
    original: Network,
    compressed: Network,
    domain: Domain,
    candidates: Sequence[FloatArray],
    rng: np.random.Generator,
    timeout: float,
    max_hidden: int,
) -> tuple[FloatArray, Fraction] | None:
    """An input of the domain where the exact outputs differ, checked exactly, or None.

    Order: the given candidates; then domain samples and corners ranked by their float64
    difference; then (small networks) a model of the direct query.
    """
    for point in candidates:
        if domain.contains(point):
            difference = _exact_difference(original, compressed, point)
            if difference != 0:
                return point, difference
    samples = np.concatenate(
        [domain.sample(2000, rng)]
        + [_corners(box, 64, rng) for box in domain.boxes]
        + [box.center()[None, :] for box in domain.boxes]
    )
    gaps = np.abs(original.forward(samples).output - compressed.forward(samples).output).max(axis=1)
    for index in np.argsort(-gaps)[:20]:
        difference = _exact_difference(original, compressed, samples[index])
        if difference != 0:
            return samples[index], difference
    if _hidden(original) <= max_hidden:
        query = direct_equivalence_query(original, compressed, domain)
        model = find_model(query.smtlib, _input_names(original.input_size), timeout)
        rounded = None if model is None else _to_domain_float(domain, list(model.values()))
        if rounded is not None:
            difference = _exact_difference(original, compressed, rounded)
            if difference != 0:
                return rounded, difference
    return None


def _hidden(network: Network) -> int:
    return len(network.hidden_neurons())


# ---------------------------------------------------------------------------------------------
# The proof


def _lemma_names(lemma_ids: Mapping[Neuron, str | Sequence[str]], neuron: Neuron) -> list[str]:
    ids = lemma_ids.get(neuron)
    if ids is None:
        return []
    return [ids] if isinstance(ids, str) else list(ids)


def prove_equivalence(
    original: Network,
    compression: Compression,
    statuses: Mapping[Neuron, Status],
    lemma_ids: Mapping[Neuron, str | Sequence[str]],
    domain: Domain,
    timeout: float = 60.0,
    rng: np.random.Generator | None = None,
    cross_check: bool = True,
    cross_check_max_hidden: int = DIRECT_QUERY_MAX_HIDDEN,
    cross_check_timeout: float = CROSS_CHECK_TIMEOUT,
) -> EquivalenceResult:
    """Prove compression.network == original on the domain (exact arithmetic).

    `statuses` must be the certified statuses the compression was built from, and `lemma_ids`
    name the stability lemma(s) of each stable neuron (one id, or one per box). On failure the
    result carries a counterexample input only if one was found and checked exactly.
    With `cross_check`, networks with at most `cross_check_max_hidden` hidden neurons also get
    the direct global query (`cross_check_timeout` seconds; unknown is recorded, not fatal).
    """
    domain.check_dimension(original.input_size)
    shapes = [layer.weights.shape for layer in original.layers]
    if shapes != [layer.weights.shape for layer in compression.original.layers]:
        raise NetworkError("the compression was made from a network of different shape")
    statuses = {Neuron(*n): s for n, s in statuses.items()}
    rng = rng if rng is not None else np.random.default_rng(0)
    compressed = compression.network
    blocks = [
        _block_obligation(original, compression, statuses, j) for j in range(len(compressed.layers))
    ]
    obligations = [b.obligation for b in blocks]
    results = [check(o, timeout) for o in obligations]
    used = list(dict.fromkeys(n for b in blocks for n in b.uses))
    uses = list(dict.fromkeys(i for n in used for i in _lemma_names(lemma_ids, n)))
    problems = [p for b in blocks for p in b.problems]
    problems += [
        f"neuron {n} is used as stable but has no lemma id"
        for n in used
        if not _lemma_names(lemma_ids, n)
    ]

    direct: Obligation | None = None
    direct_result: SmtResult | None = None
    if cross_check and _hidden(original) <= cross_check_max_hidden:
        direct = direct_equivalence_query(original, compressed, domain)
        direct_result = check(direct, cross_check_timeout)

    failed = [
        (block, result)
        for block, result in zip(blocks, results, strict=True)
        if result.verdict is not SmtVerdict.PROVED
    ]
    if (
        not failed
        and not problems
        and (direct_result is None or direct_result.verdict is not SmtVerdict.REFUTED)
    ):
        return EquivalenceResult(
            proved=True,
            obligations=obligations,
            results=results,
            uses=uses,
            counterexample=None,
            message=f"{len(obligations)} block identities proved (unsat) using {len(uses)} lemmas",
            cross_check=direct,
            cross_check_result=direct_result,
        )

    messages = [f"{b.obligation.id}: {r.verdict.value} {r.detail}".strip() for b, r in failed]
    messages += problems
    if direct_result is not None and direct_result.verdict is SmtVerdict.REFUTED:
        messages.append("direct query found the networks different")
    candidates: list[FloatArray] = []
    for block, result in failed:
        if result.verdict is SmtVerdict.REFUTED and block.free_names[0].startswith("x_"):
            model = find_model(block.obligation.smtlib, list(block.free_names), timeout)
            point = None if model is None else _to_domain_float(domain, list(model.values()))
            if point is not None:
                candidates.append(point)
    counterexample = None
    if any(r.verdict is SmtVerdict.REFUTED for _, r in failed) or direct_result is not None:
        found = _search_counterexample(
            original,
            compressed,
            domain,
            candidates,
            rng,
            cross_check_timeout,
            cross_check_max_hidden,
        )
        if found is None:
            messages.append("no input of the domain with different outputs was found")
        else:
            counterexample, difference = found
            messages.append(
                f"counterexample: exact outputs differ by {fraction_to_str(difference)}"
            )
    return EquivalenceResult(
        proved=False,
        obligations=obligations,
        results=results,
        uses=uses,
        counterexample=counterexample,
        message="; ".join(messages),
        cross_check=direct,
        cross_check_result=direct_result,
    )


def equivalence_record(result: EquivalenceResult) -> dict[str, Any]:
    """The certificate's `compression.equivalence` block."""
    record: dict[str, Any] = {
        "proved": result.proved,
        "method": "compositional: stability lemmas + per-layer exact identities (QF_LRA, unsat)",
        "uses": list(result.uses),
        "obligations": [
            {
                "id": o.id,
                "file": o.filename,
                "sha256": o.sha256,
                "verdict": r.verdict.value,
                "seconds": round(r.seconds, 4),
            }
            for o, r in zip(result.obligations, result.results, strict=True)
        ],
        "message": result.message,
    }
    if result.cross_check is not None and result.cross_check_result is not None:
        record["cross_check"] = {
            "id": result.cross_check.id,
            "file": result.cross_check.filename,
            "sha256": result.cross_check.sha256,
            "verdict": result.cross_check_result.verdict.value,
            "seconds": round(result.cross_check_result.seconds, 4),
        }
    if result.counterexample is not None:
        record["counterexample"] = [float(v) for v in result.counterexample]
    return record


# ---------------------------------------------------------------------------------------------
# The direct global query


def _encode_network(
    network: Network, prefix: str, inputs: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Every value as a macro (define-fun) over the inputs, not a constant: the solver then
    sees identical linear terms in both networks as identical atoms, which keeps its case
    splits on shared ReLUs from doubling (measured: 22 s -> 0.05 s at 48 hidden neurons)."""
    lines: list[str] = []
    values: list[str | None] = list(inputs)
    for index, layer in enumerate(network.layers):
        current: list[str | None] = []
        for i in range(layer.outputs):
            pre = f"{prefix}_g_{index}_{i}"
            lines.append(f"(define-fun {pre} () Real {_row(layer, i, values)})")
            if layer.relu:
                post = f"{prefix}_h_{index}_{i}"
                lines.append(f"(define-fun {post} () Real (ite (>= {pre} 0.0) {pre} 0.0))")
                current.append(post)
            else:
                current.append(pre)
        values = current
    return lines, [v for v in values if v is not None]


def _domain_constraint(domain: Domain, names: Sequence[str]) -> str:
    boxes = [
        _conjunction(
            [
                f"(<= {smt_number(Fraction(float(lo)))} {name} {smt_number(Fraction(float(hi)))})"
                for name, lo, hi in zip(names, box.lower, box.upper, strict=True)
            ]
        )
        for box in domain.boxes
    ]
    return boxes[0] if len(boxes) == 1 else f"(or {' '.join(boxes)})"


def direct_equivalence_query(
    original: Network, compressed_network: Network, domain: Domain
) -> Obligation:
    """The query "exists x in D with f(x) != g(x)", ReLUs as if-then-else, exact rationals; holds
    (the networks are equal on D) iff unsat. Meant for small networks (the solver case-splits
    on ReLUs); the caller decides when to run it."""
    domain.check_dimension(original.input_size)
    if compressed_network.input_size != original.input_size or (
        compressed_network.output_size != original.output_size
    ):
        raise NetworkError("compressed network has different input or output size")
    names = _input_names(original.input_size)
    lines = [
        "; verify-compress direct equivalence query: exists x in D with f(x) != g(x)",
        "; holds iff unsat",
        "(set-logic QF_LRA)",
    ]
    lines += [f"(declare-const {name} Real)" for name in names]
    lines.append(f"(assert {_domain_constraint(domain, names)})")
    first_lines, first_outputs = _encode_network(original, "f", names)
    second_lines, second_outputs = _encode_network(compressed_network, "c", names)
    lines += first_lines + second_lines
    claims = [f"(= {p} {q})" for p, q in zip(first_outputs, second_outputs, strict=True)]
    lines += [f"(assert (not {_conjunction(claims)}))", "(check-sat)", ""]
    return Obligation("equivalence-direct", "\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Empirical checks


def empirical_check(
    original: Network,
    compressed_network: Network,
    domain: Domain,
    points: npt.ArrayLike | None,
    rng: np.random.Generator,
    corners: int = 32,
    random_points: int = 64,
    deadline: float = math.inf,
    at_least: int = 8,
) -> dict[str, Any]:
    """Exact evaluation of both networks at `points` (e.g. witnesses; those outside the domain
    are skipped), up to `corners` corners per box and `random_points` random domain points.
    The maximum absolute output difference must be exactly 0.

    A cross-check beside the proof, so it keeps to `deadline` (time.monotonic()): the points
    are visited in a random order and those not reached by then are counted as skipped, but at
    least `at_least` are evaluated (an exact evaluation of a network with 400,000 weights takes
    50 ms, and a run can have hundreds of witnesses)."""
    domain.check_dimension(original.input_size)
    given = np.empty((0, domain.size)) if points is None else np.asarray(points, dtype=np.float64)
    given = given.reshape(-1, domain.size)
    inside = [p for p in given if domain.contains(p)]
    corner_points = [p for box in domain.boxes for p in _corners(box, corners, rng)]
    random_set = list(domain.sample(random_points, rng)) if random_points > 0 else []
    candidates = [("witnesses", p) for p in inside] + [("corners", p) for p in corner_points]
    candidates += [("random", p) for p in random_set]
    evaluated = {"witnesses": 0, "corners": 0, "random": 0}
    largest = Fraction(0)
    first_disagreement: list[float] | None = None
    for count, position in enumerate(rng.permutation(len(candidates)).tolist()):
        if count >= at_least and time.monotonic() > deadline:
            break
        kind, point = candidates[position]
        evaluated[kind] += 1
        difference = _exact_difference(original, compressed_network, point)
        if difference > largest:
            largest = difference
        if difference != 0 and first_disagreement is None:
            first_disagreement = [float(v) for v in point]
    return {
        "points": sum(evaluated.values()),
        **evaluated,
        "witnesses_outside_domain": len(given) - len(inside),
        "skipped_at_time_limit": len(candidates) - sum(evaluated.values()),
        "max_abs_difference": fraction_to_str(largest),
        "agree": largest == 0,
        "first_disagreement": first_disagreement,
    }


def runtime_check(
    original_onnx: str | Path,
    compressed_onnx: str | Path,
    domain: Domain,
    count: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """onnxruntime on both ONNX files at `count` random domain points (cast to each file's
    input dtype): the largest absolute output difference, in float. Floating-point
    arithmetic differs between the two graphs, so this difference is not bounded by the
    weight rounding bound alone; it is an empirical figure, not a proof."""
    import onnxruntime  # test/optional dependency, loaded only when this check runs

    points = domain.sample(count, rng)
    outputs = []
    for path in (original_onnx, compressed_onnx):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(_run_session(session, points))
    difference = np.abs(outputs[0].astype(np.float64) - outputs[1].astype(np.float64))
    return {"points": count, "max_abs_difference": float(difference.max(initial=0.0))}


def _run_session(session: Any, points: FloatArray) -> FloatArray:
    spec = session.get_inputs()[0]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    shape = list(spec.shape)
    batched = bool(shape) and not isinstance(shape[0], int)
    if batched:
        feed = points.astype(dtype).reshape([len(points), *[int(d) for d in shape[1:]]])
        result = session.run(None, {spec.name: feed})[0]
        return np.asarray(result, dtype=np.float64).reshape(len(points), -1)
    rows = [
        session.run(None, {spec.name: point.astype(dtype).reshape([int(d) for d in shape])})[0]
        for point in points
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(points), -1)
