"""Network size summaries: per-layer counts, totals, exact-rational layers."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np

from verify_compress.ir import AffineLayer, Network
from verify_compress.summary import network_summary

from conftest import random_network


def test_totals_add_up_the_layers_of_a_random_network() -> None:
    network = random_network(np.random.default_rng(1), [5, 7, 6, 3])
    summary = network_summary(network)
    assert [layer["outputs"] for layer in summary["layers"]] == [7, 6, 3]
    assert [layer["relu"] for layer in summary["layers"]] == [True, True, False]
    assert summary["totals"] == {
        "layers": 3,
        "relu_neurons": 13,
        "parameters": 5 * 7 + 7 + 7 * 6 + 6 + 6 * 3 + 3,
        "connections": 5 * 7 + 7 * 6 + 6 * 3,
    }
    assert summary["input_shape"] == [5] and summary["output_size"] == 3
    json.dumps(summary)  # plain JSON data


def test_exact_zero_weights_of_a_rational_layer_are_not_connections() -> None:
    weights = np.array([[Fraction(0), Fraction(1, 3)], [Fraction(-2), Fraction(0)]], dtype=object)
    bias = np.array([Fraction(0), Fraction(1)], dtype=object)
    network = Network((AffineLayer(weights, bias, relu=True),), folded_ops=("Sub",))
    summary = network_summary(network)
    assert summary["layers"][0]["connections"] == 2
    assert summary["layers"][0]["parameters"] == 6
    assert summary["folded_ops"] == ["Sub"]
