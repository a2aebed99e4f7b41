"""The certificate document: a versioned, self-describing JSON record of a run.

Stage: ... -> compression -> equivalence -> **certificate** and report.

The format has one owner, `verifier.kernel.format`: a frozen dataclass per JSON object, with
`to_json`/`from_json`, and the JSON Schema generated from them. This module holds what the
pipeline and the checker share on top of it: building the records from a run's objects
(statuses, case splits, compression) and reading them back.

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
from .kernel.format import (
    FORMAT,
    FORMAT_VERSION,
    CaseRecord,
    CaseSplitRecord,
    Certificate,
    CompressionRecord,
    ProofTree,
    SplitNode,
    Summary,
    SummaryLayer,
    SummaryTotals,
)
from .kernel.stability import Case, CaseSplit
from .status import Neuron, Status
from .subdomains import SplitTree

__all__ = ["FORMAT", "FORMAT_VERSION", "SEMANTICS"]

SEMANTICS = (
    "exact real arithmetic over the stored ONNX weights read as the exact rationals their "
    "float values are, preprocessing ops folded exactly (except those listed in "
    "network.folded_ops as float64-rounded); domain bounds are the exact values of the "
    "listed decimals"
)

JsonDict = dict[str, Any]


SCHEMA_FILE = Path(__file__).with_name("certificate.schema.json")
"""The JSON Schema of the format, generated from `verifier.kernel.format` (shipped with the
package; `docs/certificate.schema.json` is a copy for readers; a test holds both equal to the
generated schema)."""


def validate_document(document: Any, source: str) -> None:
    """Raise CertificateError naming the JSON path of the first place where `document`
    departs from the format's schema (a missing, extra or mistyped field)."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise CertificateError(f"{source}: {error.json_path}: {error.message}")


def parse_certificate(document: Any, source: str) -> Certificate:
    """The certificate record of a JSON document: validated against the shipped schema
    first, then parsed by `Certificate.from_json` (which departs from nothing the schema
    says; either raises CertificateError naming `source` and the JSON path)."""
    validate_document(document, source)
    try:
        return Certificate.from_json(document, "$")
    except CertificateError as error:
        raise CertificateError(f"{source}: {error}") from None


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


def case_split_record(split: CaseSplit) -> CaseSplitRecord:
    """The record of a case split (its multipliers as floats: they are float64 arrays)."""
    return CaseSplitRecord(
        box=split.box,
        neuron=(split.neuron.layer, split.neuron.index),
        phase=split.phase,
        cases=tuple(
            CaseRecord(
                assume=tuple((n.layer, n.index, p) for n, p in case.assumptions),
                multipliers=None
                if case.multipliers is None
                else tuple(tuple(float(v) for v in m) for m in case.multipliers),
            )
            for case in split.cases
        ),
    )


def case_split_from_record(record: CaseSplitRecord) -> CaseSplit:
    """The kernel's case split of a record (inverse of `case_split_record`)."""
    return CaseSplit(
        record.box,
        Neuron(*record.neuron),
        record.phase,
        tuple(
            Case(
                tuple((Neuron(layer, index), phase) for layer, index, phase in case.assume),
                None
                if case.multipliers is None
                else tuple(np.array(m, dtype=np.float64) for m in case.multipliers),
            )
            for case in record.cases
        ),
    )


def case_split_from_json(data: Any, item: str) -> CaseSplit:
    """The kernel's case split of its JSON object; CertificateError naming `item` when the
    object is not a case split of the format."""
    try:
        return case_split_from_record(CaseSplitRecord.from_json(data, "$"))
    except CertificateError as error:
        raise CertificateError(f"{item}: malformed case split ({error})") from None


def proof_tree_record(tree: SplitTree) -> ProofTree:
    """The record of a bisection tree (its cuts as the exact decimals of their float64s)."""
    if isinstance(tree, int):
        return tree
    return SplitNode(
        box=tree.box,
        input=tree.dimension,
        at=str(Decimal(tree.at)),
        below=proof_tree_record(tree.below),
        above=proof_tree_record(tree.above),
    )


def per_layer_summary(
    network: Network,
    statuses: Mapping[Neuron, Status],
    connections_after: Mapping[int, int],
) -> list[SummaryLayer]:
    """Per ReLU layer: its neurons by status, its connections before and after."""
    rows = []
    for layer_index, layer in enumerate(network.layers):
        if not layer.relu:
            continue
        counts = {status.value: 0 for status in Status}
        for i in range(layer.outputs):
            counts[statuses[Neuron(layer_index, i)].value] += 1
        rows.append(
            SummaryLayer(
                layer=layer_index,
                neurons=layer.outputs,
                stably_active=counts[Status.STABLY_ACTIVE.value],
                stably_inactive=counts[Status.STABLY_INACTIVE.value],
                unstable=counts[Status.UNSTABLE.value],
                unknown=counts[Status.UNKNOWN.value],
                connections_before=layer.connections,
                connections_after=connections_after.get(layer_index, 0),
            )
        )
    return rows


def summary_block(
    network: Network,
    statuses: Mapping[Neuron, Status],
    compression: Compression,
    equivalence_proved: bool,
    smt_confirmed: int,
) -> Summary:
    """The certificate's `summary`: counts per layer and in total, all derived from the
    network, the statuses and the compression, and how many stable neurons the SMT tier
    confirmed (derived from the recorded obligation results); the checker derives it again and
    compares."""
    counts = compression.counts
    per_layer = per_layer_summary(
        network, statuses, {c.layer: c.connections_after for c in counts.per_layer}
    )
    by_status = {s: sum(1 for v in statuses.values() if v is s) for s in Status}
    return Summary(
        per_layer=tuple(per_layer),
        totals=SummaryTotals(
            **count_totals(counts),
            stably_active=by_status[Status.STABLY_ACTIVE],
            stably_inactive=by_status[Status.STABLY_INACTIVE],
            unstable=by_status[Status.UNSTABLE],
            unknown=by_status[Status.UNKNOWN],
            smt_confirmed=smt_confirmed,
        ),
        equivalence_proved=equivalence_proved,
    )


def compression_block(
    compression_record: JsonDict, equivalence: JsonDict, empirical: JsonDict
) -> CompressionRecord:
    """The certificate's `compression` record from the blocks the compression and the
    equivalence stages write (`compress.compression_record`, `equivalence.equivalence_record`,
    `equivalence.empirical_check`): parsed by the format, so a stage that drifts from it fails
    the run instead of writing a certificate `check` refuses."""
    return CompressionRecord.from_json(
        {**compression_record, "equivalence": equivalence, "empirical": empirical},
        "$.compression",
    )


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
