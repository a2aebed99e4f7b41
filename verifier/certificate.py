"""The certificate document: a versioned, self-describing JSON record of a run.

Stage: ... -> compression -> equivalence -> **certificate** and report.

Exact numbers are strings: rationals as "p" or "p/q", input coordinates as the exact decimal
expansion of their float64 value. The checker (`verifier.check`) trusts only the domain and the
ONNX file named here (by hash); everything else is re-derived or re-checked.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import numpy.typing as npt

from . import __version__
from .compress import Compression, count_totals
from .errors import CertificateError
from .ir import Network
from .kernel.stability import Case, CaseSplit
from .status import Neuron, Phase, Status

FORMAT = "verify-compress-certificate"
FORMAT_VERSION = 5
SEMANTICS = (
    "exact real arithmetic over the stored ONNX weights read as the exact rationals their "
    "float values are, preprocessing ops folded exactly (except those listed in "
    "network.folded_ops as float64-rounded); domain bounds are the exact values of the "
    "listed decimals"
)

JsonDict = dict[str, Any]


SCHEMA_FILE = Path(__file__).with_name("certificate.schema.json")
"""The JSON Schema of the format (shipped with the package; `docs/certificate.schema.json` is
a copy for readers, kept equal by a test)."""


def validate_document(document: Any, source: str) -> None:
    """Raise CertificateError naming the JSON path of the first place where `document`
    departs from the format's schema (a missing, extra or mistyped field)."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise CertificateError(f"{source}: {error.json_path}: {error.message}")


def semantics_note(rounded_folds: Sequence[str]) -> str | None:
    """In words, what a float64-rounded fold means for every claim (None when all is exact)."""
    if not rounded_folds:
        return None
    return (
        f"{', '.join(rounded_folds)}: folded in float64, not exactly; every claim holds for "
        "that rounded network, not for the exact semantics of the ONNX file"
    )


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


def case_split_to_json(split: CaseSplit) -> JsonDict:
    return {
        "box": split.box,
        "neuron": [split.neuron.layer, split.neuron.index],
        "phase": split.phase.value,
        "cases": [
            {
                "assume": [[n.layer, n.index, p.value] for n, p in case.assumptions],
                "multipliers": None
                if case.multipliers is None
                else [[float(v) for v in m] for m in case.multipliers],
            }
            for case in split.cases
        ],
    }


def case_split_from_json(data: Any, item: str) -> CaseSplit:
    try:
        cases = tuple(
            Case(
                tuple(
                    (Neuron(int(layer), int(index)), Phase(phase))
                    for layer, index, phase in case["assume"]
                ),
                None
                if case["multipliers"] is None
                else tuple(np.array(m, dtype=np.float64) for m in case["multipliers"]),
            )
            for case in data["cases"]
        )
        return CaseSplit(
            int(data["box"]),
            Neuron(int(data["neuron"][0]), int(data["neuron"][1])),
            Phase(data["phase"]),
            cases,
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise CertificateError(f"{item}: malformed case split ({error!r})") from None


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


def summary_block(
    network: Network,
    statuses: Mapping[Neuron, Status],
    compression: Compression,
    equivalence_proved: bool,
    smt_confirmed: int,
) -> JsonDict:
    """The certificate's `summary`: counts per layer and in total, all derived from the
    network, the statuses and the compression, and how many stable neurons the SMT tier
    confirmed (derived from the recorded obligation results); the checker derives it again and
    compares."""
    counts = compression.counts
    per_layer = per_layer_summary(
        network, statuses, {c.layer: c.connections_after for c in counts.per_layer}
    )
    by_status = {s.value: sum(1 for v in statuses.values() if v is s) for s in Status}
    return {
        "per_layer": per_layer,
        "totals": {**count_totals(counts), **by_status, "smt_confirmed": smt_confirmed},
        "equivalence_proved": equivalence_proved,
    }


def tool_versions() -> JsonDict:
    from importlib.metadata import version

    from .smt import solver_versions

    return {
        "verify-compress": __version__,
        "python": platform.python_version(),
        "onnx": version("onnx"),
        "ortools": version("ortools"),
        **solver_versions(),
    }
