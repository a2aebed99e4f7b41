"""Tests for the certificate checker: a real certificate passes, every tampered copy fails.

One pipeline run per module (a tiny ONNX net with stably active, stably inactive and unstable
neurons on [0, 1]^3, one of them needing a case split); every test tampers with a copy of its
certificate written next to the original (the checker resolves files relative to it).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import random_network
from verifier.check import CheckReport, check_certificate
from verifier.config import Config
from verifier.domain import Domain
from verifier.errors import CertificateError
from verifier.ir import AffineLayer, Network
from verifier.onnx_export import save_onnx
from verifier.pipeline import run
from verifier.smt import Obligation, SmtVerdict, check
from verifier.subdomains import Subdomains

Document = dict[str, Any]


def _network() -> Network:
    """3 -> 9 -> 5 -> 2 on [0, 1]^3.

    Layer 0: biases make neurons 0, 4 and 8 stably active and 3 stably inactive; 1, 2, 5, 6, 7
    are unstable. Neurons 6-8 are relu(x0 - 0.5), relu(0.5 - x0), relu(x0 + 1.5), so layer-1
    neuron 4 = -relu(x0 - 0.5) + relu(0.5 - x0) + relu(x0 + 1.5) - 2.125 = -0.125: stably
    inactive, but only a case split proves it (the triangle relaxation gives 0.125).
    """
    w0 = np.array(
        [
            [1, 1, 1],
            [1, -1, 0.5],
            [-1, 0.5, 1],
            [0.5, 0.5, -1],
            [1, 2, -1],
            [-1, -1, -1],
            [1, 0, 0],
            [-1, 0, 0],
            [1, 0, 0],
        ],
        dtype=np.float32,
    )
    b0 = np.array([0.5, -0.2, 0.1, -2.0, 3.0, 0.2, -0.5, 0.5, 1.5], dtype=np.float32)
    w1 = np.array(
        [
            [0.5, -1.0, 0.25, 0.75, 1.0, -0.5, 0, 0, 0],
            [-0.5, 1.0, -1.0, 0.5, -1.0, 0.25, 0, 0, 0],
            [1.0, 0.5, -0.5, -1.0, 0.5, 1.0, 0, 0, 0],
            [-1.0, 0.25, 0.5, 1.0, 0.25, -0.75, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, -1, 1, 1],
        ],
        dtype=np.float32,
    )
    b1 = np.array([0.5, -4.0, 0.1, 0.2, -2.125], dtype=np.float32)
    w2 = np.array([[1, -1, 0.5, 0.25, 1], [0.5, 0.5, -1, 1, -1]], dtype=np.float32)
    return Network(
        (
            AffineLayer(w0, b0, relu=True),
            AffineLayer(w1, b1, relu=True),
            AffineLayer(w2, np.zeros(2, dtype=np.float32), relu=False),
        )
    )


def _pipeline_certificate(root: Path, config: Config) -> tuple[Path, Document]:
    """(certificate path, certificate document) of one pipeline run of `_network()`."""
    save_onnx(_network(), root / "net.onnx", "float32")
    result = run(root / "net.onnx", Domain.box(np.zeros(3), np.ones(3)), root / "out", config)
    path = result.out_dir / "certificate.json"
    return path, json.loads(path.read_text())


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Document]:
    """The network certified on the whole box (phase case splits, no sub-boxes)."""
    return _pipeline_certificate(
        tmp_path_factory.mktemp("check"), Config(time_limit=20, samples=200, max_subboxes=1)
    )


@pytest.fixture(scope="module")
def split_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Document]:
    """The same network certified with input splitting (proofs on bisected sub-boxes)."""
    return _pipeline_certificate(
        tmp_path_factory.mktemp("check-split"),
        Config(time_limit=20, samples=200, max_split_depth=0),
    )


def _tampered(
    certified: tuple[Path, Document], name: str, change: Callable[[Document], None]
) -> CheckReport:
    path, document = certified
    copied = copy.deepcopy(document)
    change(copied)
    target = path.parent / f"tampered-{name}.json"
    target.write_text(json.dumps(copied))
    return check_certificate(target, workers=1)


def _assert_rejected(report: CheckReport, *fragments: str) -> None:
    assert not report.valid
    assert report.first_failure is not None
    for fragment in fragments:
        assert fragment in report.first_failure, report.first_failure


def _entry(document: Document, status: str) -> Document:
    return next(entry for entry in document["neurons"] if entry["status"] == status)


def _single_leaf_lemma(document: Document) -> str:
    """A layer-1 lemma with one leaf that has def multipliers."""
    return next(
        str(identifier)
        for identifier, lemma in sorted(document["lemmas"].items())
        if lemma["neuron"][0] == 1
        and len(lemma["leaves"]) == 1
        and any(key.startswith("def:") for key in lemma["leaves"][0]["multipliers"])
    )


def _split_lemma(document: Document) -> str:
    return next(
        str(identifier)
        for identifier, lemma in document["lemmas"].items()
        if len(lemma["leaves"]) > 1
    )


# ---------------------------------------------------------------------------------------------
# The real certificate


def test_the_pipeline_certificate_of_a_tiny_net_is_valid(certified: tuple[Path, Document]) -> None:
    path, document = certified
    statuses = {entry["status"] for entry in document["neurons"]}
    assert statuses == {"stably_active", "stably_inactive", "unstable"}
    assert any(len(lemma["leaves"]) > 1 for lemma in document["lemmas"].values()), (
        "no case split exercised"
    )
    report = check_certificate(path)
    assert report.valid, report.first_failure
    assert report.counts["stable_neurons"] == sum(
        1 for e in document["neurons"] if e["status"].startswith("stably")
    )
    assert report.counts["lemmas"] == len(document["lemmas"])


def test_every_recorded_smt_file_exists_matches_its_sha256_and_z3_proves_it(
    certified: tuple[Path, Document],
) -> None:
    path, document = certified
    records = [record for lemma in document["lemmas"].values() for record in lemma["obligations"]]
    assert records
    for record in records:
        file = path.parent / record["file"]
        assert file.is_file() and file.parent.name == "smt", record["file"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == record["sha256"]
        assert record["result"] == "proved"
    split = document["lemmas"][_split_lemma(document)]["obligations"]
    for record in split:
        obligation = Obligation(record["file"], (path.parent / record["file"]).read_text())
        assert check(obligation, 30.0).verdict is SmtVerdict.PROVED


# ---------------------------------------------------------------------------------------------
# Lemmas: multipliers, values, bounds, contexts, obligations, case splits


def test_a_changed_lemma_multiplier_is_rejected_naming_the_lemma(
    certified: tuple[Path, Document],
) -> None:
    identifier = _single_leaf_lemma(certified[1])

    def change(document: Document) -> None:
        multipliers = document["lemmas"][identifier]["leaves"][0]["multipliers"]
        key = next(k for k in sorted(multipliers) if k.startswith("def:"))
        multipliers[key] = str(Fraction(multipliers[key]) + 5)

    _assert_rejected(
        _tampered(certified, "multiplier", change), f"lemma {identifier}", "residual bound"
    )


def test_a_negative_multiplier_on_an_inequality_row_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    identifier = _single_leaf_lemma(certified[1])

    def change(document: Document) -> None:
        multipliers = document["lemmas"][identifier]["leaves"][0]["multipliers"]
        key = next((k for k in sorted(multipliers) if k.startswith(("above:", "triangle:"))), None)
        assert key is not None, "the lemma uses no inequality row"
        multipliers[key] = "-1/8"

    _assert_rejected(
        _tampered(certified, "negative", change), f"lemma {identifier}", "negative multiplier"
    )


def test_a_multiplier_on_a_row_that_does_not_exist_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    identifier = _single_leaf_lemma(certified[1])

    def change(document: Document) -> None:
        document["lemmas"][identifier]["leaves"][0]["multipliers"]["triangle:0:0"] = (
            "1"  # (0,0) is stable
        )

    _assert_rejected(
        _tampered(certified, "unknown-row", change), f"lemma {identifier}", "unknown row"
    )


def test_a_strengthened_lemma_value_is_rejected(certified: tuple[Path, Document]) -> None:
    document = certified[1]
    entry = _entry(document, "stably_inactive")
    identifier = entry["evidence"]["lemmas"][0]

    def change(changed: Document) -> None:
        lemma = changed["lemmas"][identifier]
        lemma["value"] = str(Fraction(lemma["value"]) - 1)

    _assert_rejected(
        _tampered(certified, "value", change), f"lemma {identifier}", "does not give value"
    )


def test_a_lowered_leaf_bound_is_rejected(certified: tuple[Path, Document]) -> None:
    identifier = _single_leaf_lemma(certified[1])

    def change(document: Document) -> None:
        leaf = document["lemmas"][identifier]["leaves"][0]
        leaf["bound"] = str(Fraction(leaf["bound"]) - Fraction(1, 1000))

    _assert_rejected(_tampered(certified, "bound", change), f"lemma {identifier}", "residual bound")


def test_a_lemma_pointed_at_another_context_is_rejected(certified: tuple[Path, Document]) -> None:
    identifier = _single_leaf_lemma(certified[1])
    assert certified[1]["lemmas"][identifier]["uses"] == ["b0.ctx1"]

    def change(document: Document) -> None:
        document["lemmas"][identifier]["uses"] = ["b0.ctx0"]

    _assert_rejected(_tampered(certified, "uses", change), f"lemma {identifier}", "context b0.ctx0")


def test_a_context_missing_one_of_its_lemmas_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        document["contexts"]["b0.ctx1"] = document["contexts"]["b0.ctx1"][1:]

    _assert_rejected(_tampered(certified, "context", change), "lemma b0.L1.", "context b0.ctx1")


def test_a_missing_context_lemma_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        del document["lemmas"]["b0.L0.n1.upper"]

    _assert_rejected(
        _tampered(certified, "missing-lemma", change), "uses missing lemma b0.L0.n1.upper"
    )


def test_a_changed_recorded_obligation_hash_is_rejected(certified: tuple[Path, Document]) -> None:
    identifier = _single_leaf_lemma(certified[1])

    def change(document: Document) -> None:
        document["lemmas"][identifier]["obligations"][0]["sha256"] = "0" * 64

    _assert_rejected(
        _tampered(certified, "obligation", change),
        f"lemma {identifier}",
        "differs from the re-derived",
    )


def test_a_case_split_with_a_branch_dropped_is_rejected(certified: tuple[Path, Document]) -> None:
    identifier = _split_lemma(certified[1])

    def change(document: Document) -> None:
        lemma = document["lemmas"][identifier]
        lemma["leaves"] = lemma["leaves"][1:]
        lemma["obligations"] = lemma["obligations"][1:]

    _assert_rejected(_tampered(certified, "split", change), f"lemma {identifier}", "does not cover")


def test_a_single_leaf_proved_under_an_assumption_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    """One branch of a split, alone, proves the bound only under its assumption."""
    identifier = _split_lemma(certified[1])

    def change(document: Document) -> None:
        lemma = document["lemmas"][identifier]
        assert lemma["leaves"][0]["assumptions"]
        lemma["leaves"] = lemma["leaves"][:1]
        lemma["obligations"] = lemma["obligations"][:1]

    _assert_rejected(
        _tampered(certified, "one-branch", change), f"lemma {identifier}", "does not cover"
    )


# ---------------------------------------------------------------------------------------------
# Witnesses and statuses


def test_a_witness_moved_outside_the_box_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        document["witnesses"][0]["point"][0] = "1.5"

    _assert_rejected(_tampered(certified, "outside", change), "witness 0", "outside box 0")


def test_a_witness_naming_a_box_that_does_not_exist_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def change(document: Document) -> None:
        document["witnesses"][0]["box"] = -1

    _assert_rejected(_tampered(certified, "no-box", change), "witness 0", "box -1 does not exist")


def test_a_witness_moved_to_a_point_of_the_opposite_phase_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    document = certified[1]
    entry = _entry(document, "unstable")
    active, inactive = entry["evidence"]["active"], entry["evidence"]["inactive"]

    def change(changed: Document) -> None:
        changed["witnesses"][active]["point"] = list(changed["witnesses"][inactive]["point"])

    _assert_rejected(_tampered(certified, "flipped", change), "neuron (", f"witness {active}")


def test_witnesses_moved_to_the_opposite_corner_are_rejected(
    certified: tuple[Path, Document],
) -> None:
    def change(document: Document) -> None:
        for witness in document["witnesses"]:
            point = [Fraction(v) for v in witness["point"]]
            witness["point"] = ["0" if v >= Fraction(1, 2) else "1" for v in point]

    _assert_rejected(_tampered(certified, "corner", change), "neuron (", "witness")


def test_a_status_changed_from_unstable_to_stably_inactive_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    entry = _entry(certified[1], "unstable")
    neuron = f"neuron ({entry['layer']},{entry['index']})"

    def change(document: Document) -> None:
        target = next(
            e
            for e in document["neurons"]
            if (e["layer"], e["index"]) == (entry["layer"], entry["index"])
        )
        target["status"] = "stably_inactive"

    _assert_rejected(_tampered(certified, "unstable-status", change), neuron, "stably_inactive")


def test_a_status_changed_from_stably_active_to_stably_inactive_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    entry = _entry(certified[1], "stably_active")
    neuron = f"neuron ({entry['layer']},{entry['index']})"

    def change(document: Document) -> None:
        target = next(
            e
            for e in document["neurons"]
            if (e["layer"], e["index"]) == (entry["layer"], entry["index"])
        )
        target["status"] = "stably_inactive"

    _assert_rejected(_tampered(certified, "active-status", change), neuron, "stably_inactive")


def test_a_status_changed_from_stably_active_to_unstable_needs_witnesses(
    certified: tuple[Path, Document],
) -> None:
    entry = _entry(certified[1], "stably_active")

    def change(document: Document) -> None:
        target = next(
            e
            for e in document["neurons"]
            if (e["layer"], e["index"]) == (entry["layer"], entry["index"])
        )
        target["status"] = "unstable"

    _assert_rejected(
        _tampered(certified, "to-unstable", change),
        f"neuron ({entry['layer']},{entry['index']})",
        "witness",
    )


def test_a_neuron_listed_twice_is_rejected(certified: tuple[Path, Document]) -> None:
    """A second, contradicting entry for a neuron must not pass unnoticed."""
    stable = _entry(certified[1], "stably_active")

    def change(document: Document) -> None:
        duplicate = {
            **copy.deepcopy(stable),
            "status": "unstable",
            "evidence": {"active": 0, "inactive": 1},
        }
        document["neurons"].insert(0, duplicate)

    _assert_rejected(_tampered(certified, "duplicate", change), "neuron")


def test_a_summary_count_that_does_not_match_the_neurons_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def change(document: Document) -> None:
        document["summary"]["per_layer"][0]["unstable"] += 1

    _assert_rejected(_tampered(certified, "summary", change), "summary.per_layer layer 0")


# ---------------------------------------------------------------------------------------------
# Files


def test_a_changed_network_sha256_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        document["network"]["sha256"] = "f" * 64

    _assert_rejected(_tampered(certified, "network", change), "network", "sha256")


def test_a_changed_compressed_sha256_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        document["compressed"]["sha256"] = "f" * 64

    _assert_rejected(_tampered(certified, "compressed", change), "compressed", "sha256")


# ---------------------------------------------------------------------------------------------
# Sub-boxes: proofs on a bisected domain box


def _first_cut(document: Document) -> Document:
    tree: Document = document["subdomains"]["trees"][0]
    assert isinstance(tree, dict), "the domain box was not split"
    return tree


def test_a_certificate_with_sub_boxes_is_valid_and_its_stable_neurons_rest_on_each(
    split_inputs: tuple[Path, Document],
) -> None:
    path, document = split_inputs
    report = check_certificate(path, workers=1)
    assert report.valid, report.first_failure
    subboxes = report.counts["sub_boxes"]
    assert subboxes >= 2
    subdomains = Subdomains.from_json(
        Domain.from_json(document["domain"]), document["subdomains"]["trees"]
    )
    stable = [e for e in document["neurons"] if e["status"].startswith("stably")]
    assert stable
    for entry in stable:
        boxes = {document["lemmas"][i]["box"] for i in entry["evidence"]["lemmas"]}
        for leaf in subdomains.leaves:
            assert boxes & set(subdomains.ancestry(leaf)), f"{entry} on sub-box {leaf}"
    # Some claim needed the halves: its lemmas are on the sub-boxes, not on the domain box.
    assert any(len(e["evidence"]["lemmas"]) == subboxes for e in stable)
    assert [c["result"] for c in document["subdomains"]["cover"]] == ["proved"]
    assert document["subdomains"]["subboxes"] == subboxes


def test_a_wrong_sub_box_count_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def recount(document: Document) -> None:
        document["subdomains"]["subboxes"] += 1

    _assert_rejected(_tampered(split_inputs, "recount", recount), "sub-boxes recorded")


def test_a_moved_cut_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def move(document: Document) -> None:
        cut = _first_cut(document)
        cut["at"] = str(float(cut["at"]) * 0.75)

    # Lemma bounds may happen to hold on the moved halves too; the recorded cover obligation
    # names the original halves, and that mismatch is always caught.
    _assert_rejected(_tampered(split_inputs, "moved-cut", move), "cover")


def test_a_cut_outside_its_interval_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def outside(document: Document) -> None:
        _first_cut(document)["at"] = "1.5"

    _assert_rejected(_tampered(split_inputs, "cut-outside", outside), "subdomains", "1.5")


def test_a_sub_box_dropped_from_the_tree_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def drop(document: Document) -> None:
        cut = _first_cut(document)
        document["subdomains"]["trees"][0] = cut["box"]
        document["subdomains"]["subboxes"] = 1
        document["subdomains"]["cover"] = []

    # A consistent tree without the cut: the lemmas made on the halves name proof boxes that
    # no longer exist.
    _assert_rejected(_tampered(split_inputs, "dropped-half", drop), "lemma b", "does not exist")

    def renumber(document: Document) -> None:
        cut = _first_cut(document)
        document["subdomains"]["trees"][0] = {**cut, "above": cut["below"] + 5}

    _assert_rejected(_tampered(split_inputs, "renumbered", renumber), "numbered 0..m-1")


def test_a_sub_box_listed_twice_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def twice(document: Document) -> None:
        cut = _first_cut(document)
        cut["above"] = cut["below"]

    _assert_rejected(_tampered(split_inputs, "twice", twice), "subdomains")


def test_a_split_box_without_its_cover_obligation_is_rejected(
    split_inputs: tuple[Path, Document],
) -> None:
    def uncovered(document: Document) -> None:
        document["subdomains"]["cover"] = []

    _assert_rejected(_tampered(split_inputs, "no-cover", uncovered), "cover record")


def test_a_stable_neuron_missing_its_lemma_on_one_sub_box_is_rejected(
    split_inputs: tuple[Path, Document],
) -> None:
    _, document = split_inputs
    subboxes = document["subdomains"]["subboxes"]
    entry = next(
        e
        for e in document["neurons"]
        if e["status"].startswith("stably") and len(e["evidence"]["lemmas"]) == subboxes
    )
    last = entry["evidence"]["lemmas"][-1]
    box = document["lemmas"][last]["box"]

    def remove(document: Document) -> None:
        del document["lemmas"][last]

    _assert_rejected(
        _tampered(split_inputs, "missing-subbox-lemma", remove),
        f"neuron ({entry['layer']},{entry['index']})",
        f"sub-box {box}",
    )


def _sub_box_context(document: Document) -> tuple[str, int, int, int]:
    """(context id, its sub-box, the sibling sub-box, the box both were cut from) of the
    'above' half of the first cut."""
    cut = _first_cut(document)
    above, below = cut["above"], cut["below"]
    assert isinstance(above, int) and isinstance(below, int)
    return f"b{above}.ctx1", above, below, int(cut["box"])


def _on_box(identifier: str, box: int) -> str:
    """The id of the same statement (neuron and sense) on another proof box."""
    return f"b{box}." + identifier.split(".", 1)[1]


def test_a_context_lemma_from_a_box_that_does_not_enclose_the_lemma_is_rejected(
    split_inputs: tuple[Path, Document],
) -> None:
    # Proved on the sibling half, so it need not hold on this one.
    _, document = split_inputs
    context, _, sibling, root = _sub_box_context(document)
    borrowed = next(
        i
        for i in document["contexts"][context]
        if i.startswith(f"b{root}.") and _on_box(i, sibling) in document["lemmas"]
    )

    def borrow(document: Document) -> None:
        ids = document["contexts"][context]
        ids[ids.index(borrowed)] = _on_box(borrowed, sibling)

    _assert_rejected(
        _tampered(split_inputs, "sibling-context", borrow), f"box {sibling}", "does not enclose"
    )


def test_a_context_with_two_bounds_of_the_same_sense_for_a_neuron_is_rejected(
    split_inputs: tuple[Path, Document],
) -> None:
    # Say an enclosing box's weaker lower bound and the sub-box's own: which one is meant?
    _, document = split_inputs
    context, box, _, root = _sub_box_context(document)
    own = next(i for i in document["contexts"][context] if i.startswith(f"b{box}."))
    enclosing = _on_box(own, root)
    assert enclosing in document["lemmas"]

    def double(document: Document) -> None:
        document["contexts"][context].append(enclosing)

    _assert_rejected(_tampered(split_inputs, "double-bound", double), "context has two")


def test_a_deep_network_proved_on_nested_sub_boxes_passes_the_checker(tmp_path: Path) -> None:
    # Five hidden layers and a split tree several levels deep: a sub-box's context names
    # lemmas of enclosing boxes whose own contexts name lemmas the sub-box re-proved, so the
    # run must have Z3 check (and write) the lemmas its stable neurons rest on transitively.
    network = random_network(np.random.default_rng(0), [2, 6, 6, 6, 6, 6, 2])
    save_onnx(network, tmp_path / "deep.onnx", "float32")
    config = Config(time_limit=20, samples=50, gradient_steps=0, max_split_depth=0)
    domain = Domain.box(-np.ones(2), np.ones(2))
    result = run(tmp_path / "deep.onnx", domain, tmp_path / "out", config)
    document = json.loads((result.out_dir / "certificate.json").read_text())
    subdomains = Subdomains.from_json(domain, document["subdomains"]["trees"])
    deepest = max(len(subdomains.ancestry(k)) for k in subdomains.leaves)
    assert deepest >= 3, "the tree should be at least two cuts deep"
    report = check_certificate(result.out_dir / "certificate.json", workers=1)
    assert report.valid, report.first_failure
    assert report.counts["stable_neurons"] > 0


def test_a_file_that_is_not_a_certificate_is_a_certificate_error(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="no such certificate"):
        check_certificate(tmp_path / "absent.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CertificateError, match="format"):
        check_certificate(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CertificateError, match="not a JSON certificate"):
        check_certificate(tmp_path / "broken.json")
