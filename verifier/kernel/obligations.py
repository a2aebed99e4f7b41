"""SMT-LIB2 obligations that let an SMT solver re-prove every stability claim independently.

Part of the TRUSTED kernel: the run writes these texts and ships them in `smt/`; `check`
re-derives every text from the certificate (the domain, the split trees, the case splits and
the kernel's bounds) and compares SHA-256 hashes, then runs them (`check --smt z3|cvc5`).
It imports no producer code and no solver: it only writes text.

Stage: ... -> proofs (kernel bounds, case splits) -> **stability obligations** -> Z3 (workers,
`verifier.smt`) -> certificate.

What a text says. Let proof box k carry the kernel's stored bounds [l_k,j,i, u_k,j,i] of every
hidden neuron (`LayerBounds`). Obligation `stability-b{k}-L{j}` (a layer of a box) asserts

  P(k, j):  x in box k; for every layer j' < j: g_j' = W_j' h_(j'-1) + b_j' (h_(-1) = x),
            l <= g_j',i <= u for every neuron, and its ReLU encoded by phase on box k:
            h = 0 where u <= 0, h = g where l >= 0, else the triangle h >= 0, h >= g,
            (u - l) h <= u (g - l);
  the rows g_j = W_j h_(j-1) + b_j, and, one per (check-sat) in its own push/pop block, the
  negation of each goal: g_j,i < l or g_j,i > u for every neuron of layer j (a "full"
  obligation: the layer's bounds are premises of deeper obligations of box k), or only
  g_j,i > 0 (< 0) for the neurons the bounds show inactive (active) (the deepest layer a
  claim needs on box k: its phases are all that is used).

All blocks `unsat` proves G(k, j): for every x in box k, IF the bounds of layers < j hold at x
THEN the goals of layer j hold at x. (At a point where the bounds of layers < j hold, the real
network's values satisfy P(k, j): each ReLU phase is right where a bound fixes it, and the
triangle contains the graph of relu on [l, u].) By induction on j, the unsat answers of
`stability-b{k}-L0` .. `-Lj` prove the goals of layer j on box k for every x in box k, hence
every stability claim the bounds show there. Bounds enter the texts rounded outward
(`BOUND_BITS`; a premise weaker than a proved bound is still proved, a goal is the rounded
bound that the next layer's premise states, and rounding never crosses 0, so the phases the
bounds show are the phases the texts state). A case split's obligation `stability-split{s}`
(split s on box k of neuron n of layer j) asserts P(k, j), the row of n, and per case one
block (push; its phase assumptions g >= 0 with h = g, or g <= 0 with h = 0, both true of relu
under the assumption; the negated claim g_n > 0 or g_n < 0; check-sat; pop); all `unsat` with
the cases covering every phase combination (the kernel checks the cover, `covers_all_phases`)
prove n's phase on box k given the bounds of layers < j, which the full obligations
`stability-b{k}-L0` .. `-L(j-1)` prove. So each obligation depends only on full obligations of
earlier layers of the same box (never of another box, never on itself): the dependency
structure is well-founded, and every premise a text asserts is a goal of one of them
(`depends`).

A claim is confirmed when, for a cover of the domain by boxes on which the kernel shows it
(`stability_plan`: top-down in each split tree, the first box whose bounds show it or that
carries a case split for it, else its two halves), every obligation it rests on, with their
dependencies, is `unsat`. Since the sub-boxes of every tree cover its domain box, the claim
then holds on the domain, whatever the kernel says.

Why a solver can prove what the kernel proved. Every stored bound of box k is implied by the
linear program P(k, j) (triangle relaxation, box k's intermediate bounds): a bound computed on
box k is a Lagrangian dual bound of exactly this program (weak duality), an interval bound is
implied by l <= g <= u and the ReLU encoding, and a bound inherited from the enclosing box
holds on the enclosing box's program, whose feasible set contains box k's (a smaller box,
tighter intermediate bounds, a triangle inside the enclosing one). The same holds for case
splits with the assumption added. So `sat` on an obligation whose bounds the kernel accepted
means a bug in the kernel, the writer or the solver, never a weak encoding. (`unknown` is
another matter: an exact simplex over dense rows of 24-bit float32 weights is slow, see
docs/BENCHMARKS.md.)

Numbers are exact: each row is integer coefficients times one rational scale per layer (the
kernel's `ExactNetwork`), bounds and box coordinates the exact dyadic values of their floats.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction

import numpy as np

from ..domain import Box
from ..kernel.bounds import ExactNetwork, LayerBounds
from ..kernel.stability import CaseSplit
from ..status import Neuron, Phase
from ..subdomains import Subdomains


@dataclasses.dataclass(frozen=True)
class StabilityObligation:
    """One SMT-LIB2 text; it holds iff every (check-sat) in it answers unsat."""

    id: str
    smtlib: str
    box: int
    """The proof box it is about."""
    layer: int
    """The layer whose bounds (or whose split neuron's phase) it proves."""
    split: int | None
    """The case split it proves (its index in the certificate), or None: a layer's bounds."""
    depends: tuple[str, ...]
    """The obligations proving the premises it asserts (earlier layers of the same box)."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.smtlib.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.id}.smt2"


def layer_id(box: int, layer: int) -> str:
    return f"stability-b{box}-L{layer}"


def split_id(split: int) -> str:
    return f"stability-split{split}"


@dataclasses.dataclass(frozen=True)
class StabilityPlan:
    """The obligations that confirm every claim, shallow layers first (written on demand: a
    large plan's texts are hundreds of megabytes), and per claim the ids of every obligation
    it rests on (dependencies included)."""

    ids: tuple[str, ...]
    rests_on: Mapping[Neuron, tuple[str, ...]]
    writers: tuple[Callable[[], StabilityObligation], ...] = dataclasses.field(
        repr=False, compare=False
    )
    """writers[i]() is the obligation ids[i]."""

    def write(self, position: int) -> StabilityObligation:
        return self.writers[position]()

    def written(self, count: int | None = None) -> Iterator[StabilityObligation]:
        """The first `count` obligations (all by default), one text at a time."""
        for position in range(len(self.ids) if count is None else count):
            yield self.write(position)

    @property
    def obligations(self) -> tuple[StabilityObligation, ...]:
        return tuple(self.written())

    def confirmed(self, proved: Iterable[str]) -> set[Neuron]:
        """The claims every obligation of which is among the `proved` ids."""
        done = set(proved)
        return {n for n, ids in self.rests_on.items() if all(i in done for i in ids)}


def stability_plan(
    net: ExactNetwork,
    subdomains: Subdomains,
    bounds: Sequence[LayerBounds],
    splits: Sequence[CaseSplit],
    claims: Mapping[Neuron, Phase],
) -> StabilityPlan:
    """The obligations confirming every claim in `claims` (each proved by the kernel from
    these bounds and case splits; a claim it cannot cover is a ValueError)."""
    children: dict[int, list[int]] = {}
    for k, up in enumerate(subdomains.enclosing):
        if up is not None:
            children.setdefault(up, []).append(k)
    split_of = {(s.box, s.neuron, s.phase): index for index, s in enumerate(splits)}
    roots = [k for k, up in enumerate(subdomains.enclosing) if up is None]
    deepest: dict[int, int] = {}  # box -> deepest layer whose obligation is needed
    premises: dict[int, int] = {}  # box -> deepest layer whose full facts are premises
    needed_splits: set[int] = set()
    rests_on: dict[Neuron, tuple[str, ...]] = {}
    for neuron, phase in sorted(claims.items()):
        ids: list[str] = []
        stack = list(reversed(roots))
        while stack:
            k = stack.pop()
            if bounds[k].shows(neuron, phase):
                top = neuron.layer
            elif (k, neuron, phase) in split_of:
                s = split_of[(k, neuron, phase)]
                needed_splits.add(s)
                ids.append(split_id(s))
                top = neuron.layer - 1
            elif k in children:
                stack.extend(reversed(children[k]))
                continue
            else:
                raise ValueError(f"claim {neuron} {phase.value} is not shown on proof box {k}")
            ids += [layer_id(k, j) for j in range(top + 1)]
            deepest[k] = max(deepest.get(k, -1), top)
            premises[k] = max(premises.get(k, -1), neuron.layer - 1)
        rests_on[neuron] = tuple(dict.fromkeys(ids))
    writer = _Writer(net)
    order: list[tuple[tuple[int, int, int], str, Callable[[], StabilityObligation]]] = []
    for k, top in deepest.items():
        for j in range(top + 1):
            full = j <= premises[k]
            order.append(
                (
                    (j, 0, k),
                    layer_id(k, j),
                    functools.partial(
                        writer.layer_obligation, subdomains.boxes[k], bounds[k], k, j, full
                    ),
                )
            )
    for s in needed_splits:
        split = splits[s]
        box = subdomains.boxes[split.box]
        order.append(
            (
                (split.neuron.layer, 1, s),
                split_id(s),
                functools.partial(writer.split_obligation, box, bounds[split.box], split, s),
            )
        )
    order.sort(key=lambda item: item[0])
    return StabilityPlan(
        tuple(i for _, i, _ in order), rests_on, tuple(make for _, _, make in order)
    )


Fact = tuple[str, Fraction]
"""`g relation value`, relation "<=" or ">="."""
_NEGATED = {"<=": ">", ">=": "<"}


def _bounds(lower: float, upper: float) -> tuple[Fact, Fact]:
    """A neuron's kernel bounds on the box, rounded outward, as facts."""
    return ((">=", outward(lower, "down")), ("<=", outward(upper, "up")))


def _phase(lower: float, upper: float) -> Phase | None:
    """The phase the bounds fix (None: unstable on the box)."""
    if upper <= 0.0:
        return Phase.INACTIVE
    if lower >= 0.0:
        return Phase.ACTIVE
    return None


def number(value: Fraction) -> str:
    """An exact rational as an SMT-LIB2 Real term: 3.0, (/ 1.0 3.0), (- (/ 1.0 3.0))."""
    magnitude = abs(value.numerator)
    text = (
        f"{magnitude}.0" if value.denominator == 1 else f"(/ {magnitude}.0 {value.denominator}.0)"
    )
    return f"(- {text})" if value.numerator < 0 else text


def _float(value: float) -> str:
    return number(Fraction(float(value)))


BOUND_BITS = 53
"""Neuron bounds enter the texts rounded outward to this many significant bits (the sign kept:
rounding moves away from the interval's inside, never across 0 from the side it is on)."""


def outward(value: float, direction: str, bits: int | None = None) -> Fraction:
    """`value` rounded `down` or `up` to `bits` significant bits (a weaker bound, same sign)."""
    bits = BOUND_BITS if bits is None else bits
    exact = Fraction(float(value))
    if exact == 0:
        return exact
    _, exponent = math.frexp(float(value))
    grid = Fraction(2) ** (exponent - bits)
    steps = exact / grid
    rounded = math.floor(steps) if direction == "down" else math.ceil(steps)
    return rounded * grid


class _Writer:
    """Writes the texts of one network (its rows as integer numerators over a layer scale)."""

    def __init__(self, net: ExactNetwork) -> None:
        self.net = net

    def _prelude(self, box: Box, title: str) -> list[str]:
        lines = [f"; verify-compress stability: {title}", "; holds iff every check-sat is unsat"]
        lines.append("(set-logic QF_LRA)")
        for i, (lo, hi) in enumerate(zip(box.lower, box.upper, strict=True)):
            lines.append(f"(declare-const x_{i} Real)")
            lines.append(f"(assert (<= {_float(lo)} x_{i}))")
            lines.append(f"(assert (<= x_{i} {_float(hi)}))")
        return lines

    def _row(self, layer: int, i: int, inputs: Sequence[str | None]) -> str:
        """The SMT term of g_layer,i over the names of the previous layer's outputs (None: an
        output that is 0 on the box, left out): integer coefficients times the row's own
        scale (the layer's scale times the gcd of the row's numerators), plus the bias."""
        exact = self.net.layers[layer]
        row = exact.rows[i]
        kept = [
            (int(row[j]), name)
            for j in np.flatnonzero(row != 0)
            if (name := inputs[int(j)]) is not None
        ]
        common = math.gcd(*(w for w, _ in kept)) if kept else 1
        scale = exact.scale * common
        terms = [
            f"(* {w // common}.0 {name})" if w > 0 else f"(* (- {-w // common}.0) {name})"
            for w, name in kept
        ]
        offset = exact.bias.value(i) / scale
        if offset != 0:
            terms.append(number(offset))
        body = "0.0" if not terms else terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
        return f"(* {number(scale)} {body})" if scale != 1 else body

    def _premises(
        self, box: Box, bounds: LayerBounds, layer: int, title: str
    ) -> tuple[list[str], list[str | None]]:
        """P(box, layer) without the goal: the box, every earlier layer with its bounds and its
        ReLUs by phase. Returns the lines and the names of layer-1's outputs."""
        lines = self._prelude(box, title)
        names: list[str | None] = [f"x_{i}" for i in range(box.size)]
        for j in range(layer):
            lower, upper = bounds.lower[j], bounds.upper[j]
            current: list[str | None] = []
            lines.append(f"; layer {j}: rows, proved bounds, ReLUs by phase on this box")
            for i in range(lower.size):
                g = f"g_{j}_{i}"
                lines.append(f"(define-fun {g} () Real {self._row(j, i, names)})")
                facts = _bounds(float(lower[i]), float(upper[i]))
                lines += [f"(assert ({relation} {g} {number(v)}))" for relation, v in facts]
                phase = _phase(float(lower[i]), float(upper[i]))
                if phase is Phase.INACTIVE:
                    current.append(None)  # relu(g) = 0: left out of the next rows
                elif phase is Phase.ACTIVE:
                    current.append(g)
                else:
                    (_, low), (_, high) = facts
                    h = f"h_{j}_{i}"
                    lines.append(f"(declare-const {h} Real)")
                    lines.append(f"(assert (>= {h} 0.0))")
                    lines.append(f"(assert (>= {h} {g}))")
                    lines.append(
                        f"(assert (<= (* {number(high - low)} {h}) "
                        f"(* {number(high)} (- {g} {number(low)}))))"
                    )
                    current.append(h)
            names = current
        return lines, names

    def layer_obligation(
        self, box: Box, bounds: LayerBounds, k: int, layer: int, full: bool
    ) -> StabilityObligation:
        """The facts of layer `layer` on box k (only the stable neurons' phases unless `full`)
        given those of the earlier layers."""
        which = "facts" if full else "stable phases"
        title = (
            f"the {which} of layer {layer} on proof box {k}, given the facts of layers < {layer}"
        )
        lines, names = self._premises(box, bounds, layer, title)
        lower, upper = bounds.lower[layer], bounds.upper[layer]
        lines.append(f"; layer {layer}: rows")
        violations = []
        for i in range(lower.size):
            if full:
                facts: tuple[Fact, ...] = _bounds(float(lower[i]), float(upper[i]))
            else:
                # Every phase the bounds show (both when they pin g to 0).
                facts = tuple(
                    (relation, Fraction(0))
                    for relation, shown in (("<=", upper[i] <= 0.0), (">=", lower[i] >= 0.0))
                    if shown
                )
                if not facts:
                    continue
            g = f"g_{layer}_{i}"
            lines.append(f"(define-fun {g} () Real {self._row(layer, i, names)})")
            violations += [f"({_NEGATED[relation]} {g} {number(v)})" for relation, v in facts]
        lines.append("; negated goals, one per check-sat: a neuron of this layer leaves a bound")
        for violation in violations:
            lines += ["(push 1)", f"(assert {violation})", "(check-sat)", "(pop 1)"]
        lines.append("")
        return StabilityObligation(
            layer_id(k, layer),
            "\n".join(lines),
            k,
            layer,
            None,
            tuple(layer_id(k, j) for j in range(layer)),
        )

    def split_obligation(
        self, box: Box, bounds: LayerBounds, split: CaseSplit, s: int
    ) -> StabilityObligation:
        neuron, layer = split.neuron, split.neuron.layer
        title = (
            f"case split {s}: neuron {neuron.layer}.{neuron.index} {split.phase.value} on "
            f"proof box {split.box}, case by case, given the bounds of layers < {layer}"
        )
        lines, names = self._premises(box, bounds, layer, title)
        g = f"g_{layer}_{neuron.index}"
        lines.append(f"(define-fun {g} () Real {self._row(layer, neuron.index, names)})")
        negated = f"(> {g} 0.0)" if split.phase is Phase.INACTIVE else f"(< {g} 0.0)"
        for c, case in enumerate(split.cases):
            lines += ["(push 1)", f"; case {c}"]
            for assumed, phase in case.assumptions:
                # relu(g) = g under g >= 0, and 0 under g <= 0: true of the network.
                ga = f"g_{assumed.layer}_{assumed.index}"
                name = self._output_name(bounds, assumed)
                if phase is Phase.ACTIVE:
                    lines.append(f"(assert (>= {ga} 0.0))")
                    if name is not None and name != ga:
                        lines.append(f"(assert (= {name} {ga}))")
                else:
                    lines.append(f"(assert (<= {ga} 0.0))")
                    if name is not None and name != ga:
                        lines.append(f"(assert (= {name} 0.0))")
            lines += [f"(assert {negated})", "(check-sat)", "(pop 1)"]
        lines.append("")
        return StabilityObligation(
            split_id(s),
            "\n".join(lines),
            split.box,
            layer,
            s,
            tuple(layer_id(split.box, j) for j in range(layer)),
        )

    @staticmethod
    def _output_name(bounds: LayerBounds, neuron: Neuron) -> str | None:
        """The name the premises give relu(g) of `neuron` (None: 0 on the box)."""
        lo = float(bounds.lower[neuron.layer][neuron.index])
        hi = float(bounds.upper[neuron.layer][neuron.index])
        if hi <= 0.0:
            return None
        if lo >= 0.0:
            return f"g_{neuron.layer}_{neuron.index}"
        return f"h_{neuron.layer}_{neuron.index}"


PROVED = "proved"
"""The recorded result of an obligation every check-sat of which a solver answered unsat (the
other results: "refuted", "unknown", "not-run"; only this one confirms anything)."""


class SmtEvidence(enum.Enum):
    """What the SMT tier says of one stable neuron."""

    CONFIRMED = "confirmed"
    """Every obligation its claim rests on was proved (unsat) by the solver."""
    UNKNOWN = "unknown"
    """Some obligation it rests on was run and not proved (the solver gave up or, a bug,
    answered sat); the claim rests on the kernel alone."""
    NOT_RUN = "not-run"
    """Some obligation it rests on was not run (no time was left), none failed."""


def claim_evidence(rests_on: Iterable[str], results: Mapping[str, str]) -> SmtEvidence:
    """The evidence of a claim from its obligations' recorded results (missing: not run)."""
    found = [results.get(i, "not-run") for i in rests_on]
    if all(r == PROVED for r in found):
        return SmtEvidence.CONFIRMED
    if all(r in (PROVED, "not-run") for r in found):
        return SmtEvidence.NOT_RUN
    return SmtEvidence.UNKNOWN
