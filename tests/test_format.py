"""Tests for the certificate format's one owner (`verify_compress.kernel.format`).

The records parse every bundled certificate and a fresh pipeline certificate and write them
back unchanged; a missing, unknown, mistyped or out-of-range field is refused naming its JSON
path, by `from_json` and by the generated schema alike; the shipped schema files are the
generated schema; and (Hypothesis) every record built from the type hints round-trips and
validates against the schema.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify_compress.certificate import case_split_from_json, parse_certificate
from verify_compress.config import Config
from verify_compress.domain import Domain
from verify_compress.errors import CertificateError
from verify_compress.ir import AffineLayer, Network
from verify_compress.kernel import format as fmt
from verify_compress.kernel.format import Certificate, Record, certificate_schema
from verify_compress.onnx_export import save_onnx
from verify_compress.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted((ROOT / "proofs").glob("*/certificate.json"))
Document = dict[str, Any]


def _schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(certificate_schema())
    return [error.json_path for error in validator.iter_errors(document)]


def _bundled(name: str = "digits_l1") -> Document:
    document: Document = json.loads((ROOT / "proofs" / name / "certificate.json").read_text())
    return document


# ---------------------------------------------------------------------------------------------
# Round trips of real certificates


@pytest.mark.parametrize("path", BUNDLED, ids=[p.parent.name for p in BUNDLED])
def test_every_bundled_certificate_round_trips_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    certificate = Certificate.from_json(json.loads(text))
    assert json.dumps(certificate.to_json(), indent=1) == text
    assert _schema_errors(certificate.to_json()) == []


def _tiny_network() -> Network:
    """2 -> 4 -> 2 on [0, 1]^2: neuron 0 stably active, 1 stably inactive, 2 and 3 unstable."""
    w0 = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    b0 = np.array([1.0, -3.0, 0.0, 0.0], dtype=np.float32)
    w1 = np.array([[1, 1, 1, 1], [1, -1, 1, -1]], dtype=np.float32)
    return Network(
        (
            AffineLayer(w0, b0, relu=True),
            AffineLayer(w1, np.zeros(2, dtype=np.float32), relu=False),
        )
    )


@pytest.fixture(scope="module")
def pipeline_document(tmp_path_factory: pytest.TempPathFactory) -> Document:
    root = tmp_path_factory.mktemp("format")
    save_onnx(_tiny_network(), root / "net.onnx", "float32")
    result = run(
        root / "net.onnx",
        Domain.box(np.zeros(2), np.ones(2)),
        root / "out",
        Config(time_limit=20, samples=50, max_subboxes=1, smt_tier=False),
    )
    document: Document = json.loads((result.out_dir / "certificate.json").read_text())
    assert result.certificate == document
    return document


def test_a_pipeline_certificate_round_trips_and_is_typed(pipeline_document: Document) -> None:
    certificate = Certificate.from_json(pipeline_document)
    assert certificate.to_json() == pipeline_document
    assert _schema_errors(pipeline_document) == []
    statuses = {entry.status.value for entry in certificate.neurons}
    assert statuses == {"stably_active", "stably_inactive", "unstable"}
    unstable = next(e for e in certificate.neurons if e.status.value == "unstable")
    assert unstable.evidence.active is not None and unstable.evidence.inactive is not None
    assert all(type(w.box) is int and type(w.point) is tuple for w in certificate.witnesses)


# ---------------------------------------------------------------------------------------------
# What from_json refuses, naming the JSON path (and the schema refuses the same)


def _delete(*keys: str | int) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        target: Any = document
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


def _set(value: Any, *keys: str | int) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        target: Any = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


REJECTED = [
    ("missing", _delete("proofs", "sub_boxes"), "$.proofs: missing field 'sub_boxes'"),
    (
        "extra",
        _set(["b0.L0.n0.upper"], "neurons", 0, "evidence", "lemmas"),
        "$.neurons[0].evidence: unexpected field 'lemmas'",
    ),
    (
        "string-for-integer",
        _set("0", "witnesses", 0, "box"),
        "$.witnesses[0].box: expected an integer, got a string",
    ),
    (
        "bool-for-integer",
        _set(True, "witnesses", 0, "id"),
        "$.witnesses[0].id: expected an integer, got a boolean",
    ),
    (
        "negative",
        _set(-1, "witnesses", 0, "box"),
        "$.witnesses[0].box: -1 is less than the minimum of 0",
    ),
    (
        "number-for-string",
        _set(0.5, "witnesses", 0, "point", 3),
        "$.witnesses[0].point[3]: expected a string, got a number",
    ),
    (
        "unknown-status",
        _set("stable", "neurons", 2, "status"),
        "$.neurons[2].status: 'stable' is not one of",
    ),
    (
        "null-for-optional",
        _set(None, "neurons", 0, "evidence", "smt"),
        "$.neurons[0].evidence.smt: None is not one of",
    ),
    (
        "hash-pattern",
        _set("ABC", "network", "sha256"),
        "$.network.sha256: 'ABC' is not SHA-256, lowercase hex",
    ),
    (
        "rational-pattern",
        _set("0.5", "compression", "rounding_bound"),
        "$.compression.rounding_bound: '0.5' is not an exact rational",
    ),
    (
        "verdict",
        _set("maybe", "compression", "equivalence", "obligations", 0, "verdict"),
        "$.compression.equivalence.obligations[0].verdict: 'maybe' is not one of",
    ),
    (
        "neuron-address-length",
        _set([0, 1, 2], "compression", "removed", 0),
        "$.compression.removed[0]: expected 2 items, got 3",
    ),
    (
        "no-boxes",
        _set([], "domain", "boxes"),
        "$.domain.boxes: needs at least 1 item(s), has 0",
    ),
    (
        "wrong-version",
        _set(4, "format_version"),
        "$.format_version: 4 is not one of 5",
    ),
    (
        "timing-not-a-number",
        _set("fast", "timings", "total"),
        "$.timings.total: expected a number, got a string",
    ),
    (
        "solver-version-key-with-a-dash",
        _set(1, "solvers", "verify-compress"),
        "$.solvers['verify-compress']: expected a string, got an integer",
    ),
    (
        "extra-top-level",
        _set({}, "signature"),
        "$: unexpected field 'signature'",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), REJECTED, ids=[r[0] for r in REJECTED])
def test_from_json_refuses_a_departure_naming_its_json_path(
    name: str, change: Callable[[Document], None], message: str
) -> None:
    document = _bundled()
    change(document)
    with pytest.raises(CertificateError) as raised:
        Certificate.from_json(document)
    assert str(raised.value).startswith(message), str(raised.value)
    path = message.split(":")[0]
    assert path in _schema_errors(document), (path, _schema_errors(document))


def test_a_departure_deep_in_a_split_tree_is_named_by_its_path() -> None:
    document = _bundled()
    document["proofs"]["trees"] = [{"box": 0, "input": 0, "at": 0.5, "below": 1, "above": 2}]
    with pytest.raises(CertificateError, match=r"^\$\.proofs\.trees\[0\]\.at: expected a string"):
        Certificate.from_json(document)
    assert "$.proofs.trees[0]" in _schema_errors(document)


def test_a_trailing_newline_after_a_hash_is_refused_though_python_regex_dollar_allows_it() -> None:
    document = _bundled()
    document["network"]["sha256"] += "\n"
    with pytest.raises(CertificateError, match=r"^\$\.network\.sha256: "):
        Certificate.from_json(document)


def _records_with_paths(value: Any, path: str) -> Iterator[tuple[str, Record]]:
    """Every record inside `value` (a record, a tuple or a dict of them) with its JSON path."""
    if isinstance(value, Record):
        yield path, value
        for field in dataclasses.fields(typing.cast("Any", value)):
            yield from _records_with_paths(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, tuple):
        for k, item in enumerate(value):
            yield from _records_with_paths(item, f"{path}[{k}]")


def _at(document: Any, path: str) -> Any:
    """The value at a JSON path of the forms `$.a.b[3].c`."""
    target = document
    for part in path[2:].replace("[", ".[").split(".") if path != "$" else []:
        if not part:
            continue
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    return target


def test_every_record_type_refuses_a_missing_and_an_unknown_field_naming_its_path() -> None:
    """For the first instance of each record type in two bundled certificates (one with case
    splits): deleting any field that must be present, or adding one, is refused with that
    object's path; the schema refuses it at the same path."""
    seen: set[type] = set()
    for name in ("digits_l1", "mnist_l1_2x100"):
        original = _bundled(name)
        for path, record in _records_with_paths(Certificate.from_json(original), "$"):
            if type(record) in seen:
                continue
            seen.add(type(record))
            for field in dataclasses.fields(typing.cast("Any", record)):
                if field.metadata.get("optional"):
                    continue
                document = copy.deepcopy(original)
                del _at(document, path)[field.name]
                with pytest.raises(CertificateError) as raised:
                    Certificate.from_json(document)
                assert str(raised.value) == f"{path}: missing field {field.name!r}"
                assert path in _schema_errors(document)
            document = copy.deepcopy(original)
            _at(document, path)["unheard_of"] = 0
            with pytest.raises(CertificateError) as raised:
                Certificate.from_json(document)
            assert str(raised.value) == f"{path}: unexpected field 'unheard_of'"
            assert path in _schema_errors(document)
    assert {fmt.CaseSplitRecord, fmt.CaseRecord, fmt.Evidence} <= seen
    assert len(seen) >= 20, sorted(t.__name__ for t in seen)


def test_parse_certificate_refuses_a_format_departure_with_its_path() -> None:
    document = _bundled()
    del document["summary"]["totals"]["smt_confirmed"]
    with pytest.raises(CertificateError, match=r"\$\.summary\.totals.*smt_confirmed"):
        parse_certificate(document, "certificate")


def test_a_malformed_case_split_is_a_certificate_error_naming_the_item() -> None:
    split = _bundled("mnist_l1_2x100")["proofs"]["case_splits"][0]
    case_split_from_json(split, "split")
    broken = {**split, "phase": "up"}
    with pytest.raises(CertificateError, match=r"^split: malformed case split \(\$\.phase: "):
        case_split_from_json(broken, "split")


# ---------------------------------------------------------------------------------------------
# The schema: generated, shipped, strict


def test_the_shipped_schema_files_are_the_generated_schema() -> None:
    """Editing a record without `python -m verify_compress.kernel.format --write` fails here."""
    generated = fmt.schema_text()
    assert (ROOT / "verifier" / "certificate.schema.json").read_text() == generated
    assert (ROOT / "docs" / "certificate.schema.json").read_text() == generated


def test_every_record_is_closed_and_requires_its_non_optional_fields() -> None:
    schema = certificate_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    records = {name: body for name, body in schema["$defs"].items() if name[0].isupper()}
    records["Certificate"] = schema
    for name, body in records.items():
        cls = getattr(fmt, name)
        fields = dataclasses.fields(cls)
        assert body["additionalProperties"] is False, name
        assert list(body["properties"]) == [f.name for f in fields], name
        assert body["required"] == [f.name for f in fields if not f.metadata.get("optional")]


def test_the_named_constraints_keep_the_hand_written_schemas_patterns() -> None:
    defs = certificate_schema()["$defs"]
    assert defs["sha256"]["pattern"] == "^[0-9a-f]{64}$"
    assert defs["rational"]["pattern"] == "^-?[0-9]+(/[0-9]+)?$"
    assert defs["neuron"]["minItems"] == defs["neuron"]["maxItems"] == 2


def test_the_maintainer_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert fmt.main([]) == 0
    assert capsys.readouterr().out == fmt.schema_text()
    assert fmt.main(["--bogus"]) == 2


# ---------------------------------------------------------------------------------------------
# Hypothesis: records built from the type hints


def _strategy(hint: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a format type, as the records hold them (tuples, enums, records)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        constraint = fmt._constraint(extras)
        if constraint.pattern is not None:
            return st.from_regex(constraint.pattern, fullmatch=True)
        if constraint.minimum is not None:
            return st.integers(min_value=constraint.minimum, max_value=10**6)
        if constraint.min_items is not None:
            item = typing.get_args(base)[0]
            return st.lists(
                _strategy(item, depth + 1), min_size=constraint.min_items, max_size=3
            ).map(tuple)
        return _strategy(base, depth)
    if hint is str:
        return st.text(max_size=8)
    if hint is int:
        return st.integers(-(10**9), 10**9)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint is bool:
        return st.booleans()
    if hint is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and issubclass(hint, Record):
        fields = fmt._fields(hint)
        return st.builds(
            hint,
            **{
                f.name: (
                    st.none() | _strategy(f.hint, depth + 1)
                    if f.optional
                    else _strategy(f.hint, depth + 1)
                )
                for f in fields
            },
        )
    if origin in (Union, typing.get_origin(int | None)):
        members = typing.get_args(hint)
        if depth > 6:  # a tree ends in leaves
            members = tuple(m for m in members if not _holds_record(m)) or members
        return st.one_of([_strategy(m, depth + 1) for m in members])
    if origin is tuple:
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            size = 2 if depth < 4 else 0
            return st.lists(_strategy(arguments[0], depth + 1), max_size=size).map(tuple)
        return st.tuples(*[_strategy(a, depth + 1) for a in arguments])
    if origin is dict:
        return st.dictionaries(
            st.text(max_size=6), _strategy(typing.get_args(hint)[1], depth + 1), max_size=3
        )
    raise TypeError(hint)


def _holds_record(hint: Any) -> bool:
    return fmt._is_record(hint)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(certificate=_strategy(Certificate))
def test_any_certificate_round_trips_and_validates_against_the_schema(
    certificate: Certificate,
) -> None:
    document = certificate.to_json()
    assert Certificate.from_json(json.loads(json.dumps(document))) == certificate
    assert _schema_errors(document) == []


@settings(max_examples=60, deadline=None)
@given(tree=_strategy(fmt.ProofTree), data=st.data())
def test_any_proof_tree_round_trips_and_a_broken_node_is_named(
    tree: Any, data: st.DataObject
) -> None:
    document = fmt.proof_tree_to_json(tree)
    proofs = fmt.Proofs("m", (tree,), 1, (), ())
    assert fmt.Proofs.from_json(proofs.to_json()) == proofs
    if isinstance(document, dict):
        key = data.draw(st.sampled_from(["box", "input", "at", "below", "above"]))
        del document[key]
        with pytest.raises(CertificateError, match=rf"missing field '{key}'"):
            fmt.Proofs.from_json({**proofs.to_json(), "trees": [document]})
