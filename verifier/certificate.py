"""The certificate document: a versioned, self-describing JSON record of a run.

Stage: ... -> compression -> equivalence -> **certificate** and report.

Exact numbers are strings: rationals as "p" or "p/q", input coordinates as the exact decimal
expansion of their float64 value. The checker (`verifier.check`) trusts only the domain and the
ONNX file named here (by hash); everything else is re-derived or re-checked.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import verifier
from verifier.certify import BoundLemma, Leaf
from verifier.errors import CertificateError
from verifier.exact import fraction_to_str
from verifier.ir import Network
from verifier.status import Neuron, Phase, Status

FORMAT = "verify-compress-certificate"
FORMAT_VERSION = 3
SEMANTICS = (
    "exact real arithmetic over the stored ONNX weights read as the exact rationals their "
    "float values are, preprocessing ops folded exactly (except those listed in "
    "network.folded_ops as float64-rounded); domain bounds are the exact values of the "
    "listed decimals"
)

JsonDict = dict[str, Any]


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def point_to_json(point: npt.NDArray[np.float64]) -> list[str]:
    """Exact decimal text of each float64 coordinate."""
    return [str(Decimal(float(v))) for v in point]


def point_from_json(values: Sequence[str], item: str) -> list[Fraction]:
    try:
        return [Fraction(Decimal(v)) for v in values]
    except (ArithmeticError, ValueError, TypeError) as error:
        raise CertificateError(f"{item}: coordinates are not exact decimals ({error})") from error


def rational_from_json(text: str, item: str) -> Fraction:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError, TypeError) as error:
        raise CertificateError(f"{item}: {text!r} is not an exact rational") from error


def leaf_to_json(leaf: Leaf) -> JsonDict:
    return {
        "assumptions": [[n.layer, n.index, p.value] for n, p in leaf.assumptions],
        "multipliers": {key: fraction_to_str(v) for key, v in sorted(leaf.multipliers.items())},
        "bound": fraction_to_str(leaf.bound),
    }


def leaf_from_json(data: Mapping[str, Any], item: str) -> Leaf:
    try:
        assumptions = tuple(
            (Neuron(int(layer), int(index)), Phase(phase))
            for layer, index, phase in data["assumptions"]
        )
        multipliers = {
            str(key): rational_from_json(value, f"{item} multiplier {key}")
            for key, value in data["multipliers"].items()
        }
        bound = rational_from_json(data["bound"], f"{item} bound")
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, CertificateError):
            raise
        raise CertificateError(f"{item}: malformed leaf ({error})") from error
    return Leaf(assumptions, multipliers, bound)


def lemma_to_json(lemma: BoundLemma, obligations: Sequence[JsonDict]) -> JsonDict:
    return {
        "kind": "bound",
        "statement": (
            f"g{lemma.neuron} {'<=' if lemma.sense == 'upper' else '>='} {float(lemma.value)!r} on box {lemma.box}"  # noqa: E501
        ),
        "box": lemma.box,
        "neuron": [lemma.neuron.layer, lemma.neuron.index],
        "sense": lemma.sense,
        "value": fraction_to_str(lemma.value),
        "uses": [lemma.context],
        "leaves": [leaf_to_json(leaf) for leaf in lemma.leaves],
        "obligations": list(obligations),
    }


def lemma_from_json(identifier: str, data: Mapping[str, Any]) -> BoundLemma:
    item = f"lemma {identifier}"
    try:
        sign = {"upper": 1, "lower": -1}[data["sense"]]
        neuron = Neuron(int(data["neuron"][0]), int(data["neuron"][1]))
        uses = list(data["uses"])
        if len(uses) != 1:
            raise CertificateError(f"{item}: must use exactly one context")
        leaves = tuple(
            leaf_from_json(leaf, f"{item} leaf {k}") for k, leaf in enumerate(data["leaves"])
        )
        return BoundLemma(
            identifier,
            int(data["box"]),
            neuron,
            sign,
            rational_from_json(data["value"], f"{item} value"),
            leaves,
            str(uses[0]),
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        if isinstance(error, CertificateError):
            raise
        raise CertificateError(f"{item}: malformed ({error!r})") from error


def per_layer_summary(
    network: Network,
    statuses: Mapping[Neuron, Status],
    connections_after: Mapping[int, int] | None = None,
) -> list[JsonDict]:
    rows = []
    for layer_index, layer in enumerate(network.layers):
        if not layer.relu:
            continue
        counts = {status.value: 0 for status in Status}
        for i in range(layer.outputs):
            counts[statuses[Neuron(layer_index, i)].value] += 1
        row: JsonDict = {"layer": layer_index, "neurons": layer.outputs, **counts}
        row["connections_before"] = layer.connections
        if connections_after is not None:
            row["connections_after"] = connections_after.get(layer_index, 0)
        rows.append(row)
    return rows


def tool_versions() -> JsonDict:
    from importlib.metadata import version

    from verifier.smt import solver_versions

    return {
        "verify-compress": verifier.__version__,
        "python": platform.python_version(),
        "onnx": version("onnx"),
        "ortools": version("ortools"),
        **solver_versions(),
    }
