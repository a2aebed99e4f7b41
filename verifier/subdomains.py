"""Input splitting: the domain's boxes bisected into sub-boxes that proofs are made on.

Stage: domain and bounds -> witnesses -> stability search -> **sub-boxes** -> certification ...

On a box with few inputs (ACAS Xu has 5), relaxations get much tighter on smaller boxes. So
certification may prove a claim on each half of a box instead of on the whole box: a neuron
that is stable on every sub-box is stable on their union, and the sub-boxes of one domain box
cover it exactly when they are the leaves of a bisection tree.

A `SplitTree` per domain box is either an int (a sub-box, i.e. a leaf) or a `Bisection` of
one input at a float64 value `at` strictly between the bounds: the halves
`lower <= x_d <= at` and `at <= x_d <= upper` cover the box (closed halves, so nothing is lost
at the cut). Every node of a tree, leaf or bisection, is a *proof box* with a number of its own
(all nodes of all trees are numbered 0..m-1, each once): bounds proved on a proof box hold on
every proof box inside it, so a sub-box's bounds are intersected with its enclosing box's.
`Subdomains.from_trees` rebuilds every proof box from
the domain and the trees and rejects malformed trees, which is how the checker re-derives the
boxes instead of trusting them. The cover needs no solver: every cut lies strictly inside its
interval and both closed halves are kept, so the leaves cover the box by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .domain import Box, Domain
from .errors import CertificateError
from .ir import Network
from .status import Neuron

FloatArray = npt.NDArray[np.float64]

SPLITTABLE_INPUT_SIZE = 16
"""Input splitting is tried only on domains of at most this many inputs: bisecting one of
hundreds of pixels barely changes any bound."""


@dataclasses.dataclass(frozen=True)
class Bisection:
    box: int
    """The proof box number of the box being cut."""
    dimension: int
    at: float
    below: SplitTree
    above: SplitTree


SplitTree: TypeAlias = "int | Bisection"


@dataclasses.dataclass(frozen=True)
class Subdomains:
    """The proof boxes (every node of the split trees) and the sub-boxes (the leaves)."""

    domain: Domain
    trees: tuple[SplitTree, ...]
    """One tree per domain box."""
    boxes: tuple[Box, ...]
    """Proof box k is the tree node numbered k."""
    parents: tuple[int, ...]
    """parents[k]: the domain box that proof box k lies in."""
    enclosing: tuple[int | None, ...]
    """enclosing[k]: the proof box that was bisected into k (None for a domain box itself)."""
    leaves: tuple[int, ...]
    """The sub-boxes: the proof boxes that were not bisected, in increasing order."""

    @staticmethod
    def whole(domain: Domain) -> Subdomains:
        """No splitting: proof box k is domain box k."""
        return Subdomains.from_trees(domain, tuple(range(len(domain.boxes))))

    @staticmethod
    def from_trees(domain: Domain, trees: Sequence[SplitTree]) -> Subdomains:
        """Rebuild the proof boxes; raises CertificateError unless the trees are a valid
        cover: one tree per domain box, every cut strictly inside its interval, the nodes
        numbered 0..m-1 each exactly once."""
        if len(trees) != len(domain.boxes):
            raise CertificateError(
                f"subdomains: {len(trees)} split trees for {len(domain.boxes)} domain boxes"
            )
        nodes: dict[int, tuple[Box, int, int | None]] = {}
        leaves: list[int] = []

        def number(k: int, box: Box, parent: int, enclosing: int | None) -> None:
            if k in nodes:
                raise CertificateError(f"subdomains: proof box {k} appears twice")
            nodes[k] = (box, parent, enclosing)

        def walk(
            tree: SplitTree, lower: FloatArray, upper: FloatArray, parent: int, up: int | None
        ) -> None:
            if isinstance(tree, int):
                number(tree, Box(lower, upper), parent, up)
                leaves.append(tree)
                return
            number(tree.box, Box(lower, upper), parent, up)
            d, at = tree.dimension, tree.at
            if not 0 <= d < domain.size:
                raise CertificateError(f"subdomains: split on input {d}, which does not exist")
            if not lower[d] < at < upper[d]:
                raise CertificateError(
                    f"subdomains: cut x_{d} = {at!r} is not strictly inside [{lower[d]!r}, "
                    f"{upper[d]!r}]"
                )
            below_upper = upper.copy()
            below_upper[d] = at
            above_lower = lower.copy()
            above_lower[d] = at
            walk(tree.below, lower, below_upper, parent, tree.box)
            walk(tree.above, above_lower, upper, parent, tree.box)

        for parent, (tree, box) in enumerate(zip(trees, domain.boxes, strict=True)):
            walk(tree, box.lower.copy(), box.upper.copy(), parent, None)
        if sorted(nodes) != list(range(len(nodes))):
            raise CertificateError("subdomains: proof boxes are not numbered 0..m-1")
        ordered = [nodes[k] for k in range(len(nodes))]
        return Subdomains(
            domain,
            tuple(trees),
            tuple(b for b, _, _ in ordered),
            tuple(p for _, p, _ in ordered),
            tuple(e for _, _, e in ordered),
            tuple(sorted(leaves)),
        )

    def leaves_of(self, parent: int) -> list[int]:
        """The sub-boxes of domain box `parent`."""
        return [k for k in self.leaves if self.parents[k] == parent]

    def ancestry(self, k: int) -> list[int]:
        """Proof box k and every proof box enclosing it, innermost first: a lemma proved on
        any of them holds on box k."""
        return ancestry(k, self.enclosing)

    def to_json(self) -> list[Any]:
        return [_tree_to_json(tree) for tree in self.trees]

    @staticmethod
    def from_json(domain: Domain, data: Any) -> Subdomains:
        if not isinstance(data, list):
            raise CertificateError("subdomains: expected a list of split trees")
        return Subdomains.from_trees(domain, [_tree_from_json(t) for t in data])


def ancestry(k: int, enclosing: Sequence[int | None] | Mapping[int, int | None]) -> list[int]:
    """Box k and the boxes enclosing it, innermost first, given each box's enclosing box."""
    chain = [k]
    while (up := enclosing[chain[-1]]) is not None:
        chain.append(up)
    return chain


def _tree_to_json(tree: SplitTree) -> Any:
    if isinstance(tree, int):
        return tree
    return {
        "box": tree.box,
        "input": tree.dimension,
        "at": str(Decimal(tree.at)),
        "below": _tree_to_json(tree.below),
        "above": _tree_to_json(tree.above),
    }


def _tree_from_json(data: Any) -> SplitTree:
    if isinstance(data, bool):
        raise CertificateError("subdomains: a leaf must be a proof box number")
    if isinstance(data, int):
        return data
    if not isinstance(data, Mapping):
        raise CertificateError("subdomains: a split must be an object or a proof box number")
    try:
        at_text = str(data["at"])
        at = float(at_text)
        if Fraction(at) != Fraction(Decimal(at_text)):
            raise CertificateError(f"subdomains: cut {at_text} is not exactly a float64")
        return Bisection(
            int(data["box"]),
            int(data["input"]),
            at,
            _tree_from_json(data["below"]),
            _tree_from_json(data["above"]),
        )
    except (KeyError, ValueError, ArithmeticError) as error:
        raise CertificateError(f"subdomains: malformed split ({error!r})") from None


def bisect(box: Box, dimension: int) -> tuple[float, Box, Box] | None:
    """Cut `box` at the float64 midpoint of input `dimension`; None when no float lies
    strictly between the bounds."""
    lower, upper = float(box.lower[dimension]), float(box.upper[dimension])
    at = lower / 2 + upper / 2
    if not lower < at < upper:
        return None
    below_upper = box.upper.copy()
    below_upper[dimension] = at
    above_lower = box.lower.copy()
    above_lower[dimension] = at
    return at, Box(box.lower, below_upper), Box(above_lower, box.upper)


def split_dimension(
    network: Network,
    box: Box,
    neurons: Sequence[Neuron],
    rng: np.random.Generator,
    points: int = 8,
) -> int:
    """The input whose width times influence on `neurons` is largest (the "smear" heuristic).

    Influence is |d g / d x_j| summed over the neurons, at the centre and a few random points
    (a ReLU network is piecewise linear: the gradient is the product of the weights along the
    active paths). Any choice is sound; this one only decides how fast splitting helps.
    """
    width = np.asarray(box.upper - box.lower, dtype=np.float64)
    samples = np.vstack([box.center()[None, :], box.sample(points - 1, rng)])
    influence = np.zeros(box.size)
    wanted: dict[int, list[int]] = {}
    for neuron in neurons:
        wanted.setdefault(neuron.layer, []).append(neuron.index)
    for point in samples:
        jacobian = np.eye(box.size)
        values = point
        for k, layer in enumerate(network.layers):
            if k > max(wanted, default=-1):
                break
            weights = layer.float_weights
            g = weights @ values + layer.float_bias
            jacobian = weights @ jacobian
            if k in wanted:
                influence += np.abs(jacobian[wanted[k]]).sum(axis=0)
            if layer.relu:
                active = g > 0
                jacobian = jacobian * active[:, None]
                values = np.where(active, g, 0.0)
            else:
                values = g
    score = width * (influence + 1e-12)
    splittable = [d for d in range(box.size) if bisect(box, d) is not None]
    if not splittable:
        raise ValueError("no input of the box can be bisected (every width is one float)")
    return max(splittable, key=lambda d: (score[d], width[d], -d))
