"""Sub-boxes: bisection trees rebuild exact covers of the domain, and bad trees are rejected."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.domain import Box, Domain
from verify_compress.errors import CertificateError
from verify_compress.ir import AffineLayer, Network
from verify_compress.status import Neuron
from verify_compress.subdomains import (
    Bisection,
    SplitTree,
    Subdomains,
    bisect,
    split_dimension,
)

UNIT_SQUARE = Domain.box([0.0, 0.0], [1.0, 1.0])


def _random_tree(box: Box, rng: np.random.Generator, depth: int, nodes: list[int]) -> SplitTree:
    """A random bisection tree whose nodes are numbered in pre-order."""
    nodes.append(len(nodes))
    number = nodes[-1]
    if depth == 0 or rng.random() < 0.3:
        return number
    dimension = int(rng.integers(box.size))
    halves = bisect(box, dimension)
    assert halves is not None
    at, below, above = halves
    return Bisection(
        number,
        dimension,
        at,
        _random_tree(below, rng, depth - 1, nodes),
        _random_tree(above, rng, depth - 1, nodes),
    )


def _inside(inner: Box, outer: Box) -> bool:
    return bool(np.all(outer.lower <= inner.lower) and np.all(inner.upper <= outer.upper))


def _random_split(seed: int) -> tuple[np.random.Generator, Box, Subdomains]:
    """A random 3-input box and the proof boxes of a random bisection tree of it."""
    rng = np.random.default_rng(seed)
    box = Box(rng.uniform(-2, 0, 3), rng.uniform(0.5, 2, 3))
    tree = _random_tree(box, rng, 5, [])
    return rng, box, Subdomains.from_trees(Domain((box,)), [tree])


def _volume(box: Box) -> Fraction:
    volume = Fraction(1)
    for low, high in zip(box.lower, box.upper, strict=True):
        volume *= Fraction(float(high)) - Fraction(float(low))
    return volume


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32 - 1))
def test_the_sub_boxes_of_a_bisection_tree_tile_the_box_exactly(seed: int) -> None:
    rng, box, subdomains = _random_split(seed)
    sub_boxes = [subdomains.boxes[k] for k in subdomains.leaves]
    assert sum(_volume(b) for b in sub_boxes) == _volume(box)
    for point in box.sample(200, rng):
        assert any(b.contains(point) for b in sub_boxes)
    assert all(p == 0 for p in subdomains.parents)


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32 - 1))
def test_every_proof_box_lies_inside_the_boxes_of_its_ancestry(seed: int) -> None:
    # What makes a lemma of an enclosing box usable on a sub-box.
    _, box, subdomains = _random_split(seed)
    for k in range(len(subdomains.boxes)):
        chain = subdomains.ancestry(k)
        assert chain[0] == k and subdomains.enclosing[chain[-1]] is None
        assert all(_inside(subdomains.boxes[k], subdomains.boxes[a]) for a in chain)
    assert subdomains.ancestry(0) == [0]
    assert np.array_equal(subdomains.boxes[0].lower, box.lower)
    assert np.array_equal(subdomains.boxes[0].upper, box.upper)
    again = Subdomains.from_json(Domain((box,)), subdomains.to_json())
    assert again.trees == subdomains.trees


def test_without_splits_sub_box_k_is_domain_box_k() -> None:
    domain = Domain((UNIT_SQUARE.boxes[0], Box(np.array([2.0, 2.0]), np.array([3.0, 3.0]))))
    subdomains = Subdomains.whole(domain)
    assert subdomains.parents == (0, 1)
    assert all(
        np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
        for a, b in zip(subdomains.boxes, domain.boxes, strict=True)
    )
    assert subdomains.to_json() == [0, 1]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_every_point_of_the_domain_box_lies_in_some_sub_box(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes: list[int] = []
    tree = _random_tree(UNIT_SQUARE.boxes[0], rng, 4, nodes)
    subdomains = Subdomains.from_trees(UNIT_SQUARE, [tree])
    cuts = [b.lower for b in subdomains.boxes] + [b.upper for b in subdomains.boxes]
    points = np.vstack([rng.random((200, 2)), *cuts])
    for point in points:
        assert any(subdomains.boxes[k].contains(point) for k in subdomains.leaves)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (Bisection(2, 0, 1.5, 0, 1), "not strictly inside"),
        (Bisection(2, 0, 0.0, 0, 1), "not strictly inside"),
        (Bisection(2, 2, 0.5, 0, 1), "input 2"),
        (Bisection(2, 0, 0.5, 0, 0), "appears twice"),
        (Bisection(0, 0, 0.5, 0, 1), "appears twice"),
        (Bisection(3, 0, 0.5, 0, 1), "numbered"),
    ],
)
def test_a_malformed_tree_is_rejected_naming_the_problem(tree: SplitTree, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        Subdomains.from_trees(UNIT_SQUARE, [tree])


def test_one_tree_is_needed_per_domain_box() -> None:
    with pytest.raises(CertificateError, match="2 split trees for 1 domain boxes"):
        Subdomains.from_trees(UNIT_SQUARE, [0, 1])


def test_a_cut_that_is_not_exactly_a_float_is_rejected() -> None:
    data = [{"box": 2, "input": 0, "at": "0.1000000000000000000001", "below": 0, "above": 1}]
    with pytest.raises(CertificateError, match="not exactly a float64"):
        Subdomains.from_json(UNIT_SQUARE, data)


def test_no_bisection_exists_between_adjacent_floats() -> None:
    low = 1.0
    box = Box(np.array([low]), np.array([np.nextafter(low, 2.0)]))
    assert bisect(box, 0) is None
    assert bisect(Box(np.array([0.0]), np.array([1.0])), 0) is not None


def test_the_split_goes_along_the_input_the_neurons_depend_on() -> None:
    # g(0,0) = x_1 only: x_0 is twice as wide but irrelevant.
    network = Network(
        (
            AffineLayer(np.array([[0.0, 1.0]]), np.zeros(1), relu=True),
            AffineLayer(np.ones((1, 1)), np.zeros(1), relu=False),
        )
    )
    box = Box(np.array([0.0, 0.0]), np.array([2.0, 1.0]))
    assert split_dimension(network, box, [Neuron(0, 0)], np.random.default_rng(0)) == 1
