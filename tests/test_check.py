"""Tests for the certificate checker: a real certificate passes, every tampered copy fails.

One pipeline run per module (a tiny ONNX net with stably active, stably inactive and unstable
neurons on [0, 1]^3, one of them needing a case split); every test tampers with a copy of its
certificate written next to the original (the checker resolves files relative to it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import pytest

from verify_compress.certificate import case_split_from_json
from verify_compress.check import CheckReport, check_certificate
from verify_compress.config import Config
from verify_compress.domain import Domain
from verify_compress.errors import CertificateError
from verify_compress.ir import AffineLayer, Network
from verify_compress.kernel.bounds import ExactNetwork
from verify_compress.onnx_export import save_onnx
from verify_compress.pipeline import run
from verify_compress.smt import Obligation, SmtVerdict, check
from verify_compress.status import Phase
from verify_compress.subdomains import Subdomains

from conftest import random_network

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


def _split_entry(document: Document) -> tuple[int, Document]:
    """A recorded case split with more than one case, and its index."""
    return next(
        (k, split)
        for k, split in enumerate(document["proofs"]["case_splits"])
        if len(split["cases"]) > 1
    )


def _with_evidence_of(document: Document, neuron: list[int], splits: list[int]) -> None:
    for entry in document["neurons"]:
        if [entry["layer"], entry["index"]] == neuron:
            entry["evidence"]["case_splits"] = splits


# ---------------------------------------------------------------------------------------------
# The real certificate


def test_the_pipeline_certificate_of_a_tiny_net_is_valid(certified: tuple[Path, Document]) -> None:
    path, document = certified
    statuses = {entry["status"] for entry in document["neurons"]}
    assert statuses == {"stably_active", "stably_inactive", "unstable"}
    assert _split_entry(document), "no case split exercised"
    report = check_certificate(path)
    assert report.valid, report.first_failure
    assert report.counts["stable_neurons"] == sum(
        1 for e in document["neurons"] if e["status"].startswith("stably")
    )
    assert report.counts["case_splits"] == len(document["proofs"]["case_splits"])


def test_every_shipped_smt_file_matches_its_recorded_sha256_and_z3_proves_it(
    certified: tuple[Path, Document],
) -> None:
    path, document = certified
    records = document["compression"]["equivalence"]["obligations"]
    assert records
    for record in records:
        file = path.parent / "smt" / record["file"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == record["sha256"]
        obligation = Obligation(record["id"], file.read_text())
        assert check(obligation, 30.0).verdict is SmtVerdict.PROVED


# ---------------------------------------------------------------------------------------------
# Case splits: cases, assumptions, multipliers, boxes, evidence


def test_a_case_split_with_a_case_dropped_is_rejected(certified: tuple[Path, Document]) -> None:
    index, _ = _split_entry(certified[1])

    def drop(document: Document) -> None:
        document["proofs"]["case_splits"][index]["cases"].pop()

    _assert_rejected(_tampered(certified, "case-dropped", drop), f"case split {index}")


def test_a_single_case_under_an_assumption_is_rejected(certified: tuple[Path, Document]) -> None:
    index, _ = _split_entry(certified[1])

    def keep_one(document: Document) -> None:
        cases = document["proofs"]["case_splits"][index]["cases"]
        del cases[1:]

    _assert_rejected(_tampered(certified, "one-case", keep_one), f"case split {index}")


def test_an_assumption_on_a_neuron_of_the_same_layer_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    index, split = _split_entry(certified[1])

    def same_layer(document: Document) -> None:
        for case in document["proofs"]["case_splits"][index]["cases"]:
            for assumption in case["assume"]:
                assumption[0] = split["neuron"][0]

    _assert_rejected(_tampered(certified, "same-layer", same_layer), f"case split {index}")


def test_a_case_split_on_a_proof_box_that_does_not_exist_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    index, _ = _split_entry(certified[1])

    def elsewhere(document: Document) -> None:
        document["proofs"]["case_splits"][index]["box"] = 7

    _assert_rejected(_tampered(certified, "no-box", elsewhere), f"case split {index}")


@pytest.mark.parametrize("factor", [-1.0, 1e6])
def test_multipliers_nudged_past_validity_are_rejected(
    certified: tuple[Path, Document], factor: float
) -> None:
    _, document = certified
    index, split = _split_entry(document)
    layer = split["neuron"][0]
    # Every case gets explicit multipliers: CROWN's would be recomputed by the kernel.
    width = len(document["proofs"]["case_splits"][index]["cases"][0]["assume"])
    assert width >= 1

    def nudged(document: Document) -> None:
        for case in document["proofs"]["case_splits"][index]["cases"]:
            sizes = [9, 5][:layer]
            case["multipliers"] = [[factor] * size for size in sizes]

    _assert_rejected(_tampered(certified, f"nudged-{factor}", nudged), f"case split {index}")


def test_multipliers_of_the_wrong_shape_or_not_finite_are_rejected(
    certified: tuple[Path, Document],
) -> None:
    index, _ = _split_entry(certified[1])

    def short(document: Document) -> None:
        for case in document["proofs"]["case_splits"][index]["cases"]:
            case["multipliers"] = [[0.0, 0.0]]

    _assert_rejected(_tampered(certified, "short", short), f"case split {index}")

    def not_finite(document: Document) -> None:
        for case in document["proofs"]["case_splits"][index]["cases"]:
            case["multipliers"] = [[float("nan")] * 9]

    _assert_rejected(_tampered(certified, "nan", not_finite), f"case split {index}")


def test_a_stable_neuron_whose_case_split_is_removed_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    index, split = _split_entry(certified[1])

    def remove(document: Document) -> None:
        del document["proofs"]["case_splits"][index]
        for entry in document["neurons"]:
            listed = entry["evidence"].get("case_splits")
            if listed is not None:
                entry["evidence"]["case_splits"] = [k - (k > index) for k in listed if k != index]

    _assert_rejected(
        _tampered(certified, "split-removed", remove),
        f"neuron ({split['neuron'][0]},{split['neuron'][1]})",
        "not proved on every sub-box",
    )


def test_evidence_naming_other_case_splits_than_the_proofs_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    _, split = _split_entry(certified[1])

    def misnamed(document: Document) -> None:
        _with_evidence_of(document, split["neuron"], [])

    _assert_rejected(_tampered(certified, "misnamed", misnamed), "evidence lists case splits")


# ---------------------------------------------------------------------------------------------
# The shipped SMT-LIB2 files


def test_a_deleted_or_edited_smt_file_or_folder_is_rejected(
    certified: tuple[Path, Document], tmp_path: Path
) -> None:
    import shutil

    path, _ = certified
    for name, damage in (
        ("deleted", lambda smt: next(smt.iterdir()).unlink()),
        ("edited", lambda smt: next(smt.iterdir()).write_text("(assert false)\n(check-sat)\n")),
        ("folder", lambda smt: shutil.rmtree(smt)),
    ):
        copy_dir = tmp_path / name
        shutil.copytree(path.parent, copy_dir)
        document = json.loads((copy_dir / "certificate.json").read_text())
        document["network"]["path"] = str((path.parent / document["network"]["path"]).resolve())
        (copy_dir / "certificate.json").write_text(json.dumps(document))
        damage(copy_dir / "smt")
        _assert_rejected(check_certificate(copy_dir / "certificate.json", workers=1), "smt/")


def test_a_removed_equivalence_obligation_entry_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def remove(document: Document) -> None:
        document["compression"]["equivalence"]["obligations"].pop()

    _assert_rejected(_tampered(certified, "obligation-removed", remove), "equivalence")


# ---------------------------------------------------------------------------------------------
# Stability obligations (the SMT tier)


def _copy_certificate(path: Path, target: Path) -> Path:
    """A copy of the certificate's folder whose certificate names the original network."""
    import shutil

    shutil.copytree(path.parent, target)
    document = json.loads((target / "certificate.json").read_text())
    document["network"]["path"] = str((path.parent / document["network"]["path"]).resolve())
    (target / "certificate.json").write_text(json.dumps(document))
    return target / "certificate.json"


def test_z3_confirms_every_stable_claim_of_the_tiny_net_in_the_run_and_in_check(
    certified: tuple[Path, Document],
) -> None:
    path, document = certified
    stable = [e for e in document["neurons"] if e["status"].startswith("stably")]
    assert {e["evidence"]["smt"] for e in stable} == {"confirmed"}
    assert document["summary"]["totals"]["smt_confirmed"] == len(stable)
    listed = document["proofs"]["smt_obligations"]
    assert any(o["case_split"] is not None for o in listed), "no case split obligation"
    assert {o["result"] for o in listed} == {"proved"}
    report = check_certificate(path, workers=1, stability_smt=True)
    assert report.valid, report.first_failure
    assert report.counts["stable_neurons_confirmed_by_z3"] == len(stable)
    assert report.counts["stability_obligations_proved"] == len(listed)


def test_a_case_split_obligation_for_the_false_phase_is_refuted_by_z3(
    certified: tuple[Path, Document],
) -> None:
    from verify_compress.kernel.obligations import stability_plan
    from verify_compress.kernel.stability import proof_box_bounds

    _, document = certified
    index, _ = _split_entry(document)
    split = case_split_from_json(document["proofs"]["case_splits"][index], "split")
    false = dataclasses.replace(
        split, phase=Phase.ACTIVE if split.phase is Phase.INACTIVE else Phase.INACTIVE
    )
    exact = ExactNetwork(_network())
    subdomains = Subdomains.whole(Domain.box(np.zeros(3), np.ones(3)))
    bounds = proof_box_bounds(exact, subdomains)
    plan = stability_plan(exact, subdomains, bounds, [false], {false.neuron: false.phase})
    (obligation,) = [o for o in plan.obligations if o.split is not None]
    assert check(Obligation(obligation.id, obligation.smtlib), 30.0).verdict is (SmtVerdict.REFUTED)


def test_an_edited_missing_or_extra_stability_obligation_file_is_rejected(
    certified: tuple[Path, Document], tmp_path: Path
) -> None:
    path, document = certified
    first = document["proofs"]["smt_obligations"][0]["file"]
    for name, damage in (
        ("deleted", lambda smt: (smt / first).unlink()),
        ("edited", lambda smt: (smt / first).write_text("(assert false)\n(check-sat)\n")),
        ("extra", lambda smt: (smt / "stability-b7-L0.smt2").write_text("(check-sat)\n")),
    ):
        copied = _copy_certificate(path, tmp_path / name)
        damage(copied.parent / "smt")
        _assert_rejected(check_certificate(copied, workers=1), "smt/stability-")


def test_a_listed_stability_obligation_removed_or_its_result_or_evidence_edited_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def remove_first(document: Document) -> None:
        document["proofs"]["smt_obligations"].pop(0)

    _assert_rejected(_tampered(certified, "stability-removed", remove_first), "smt_obligations")

    def remove_last(document: Document) -> None:
        document["proofs"]["smt_obligations"].pop()

    # A prefix of the plan may be listed, but then its file must not be shipped.
    _assert_rejected(_tampered(certified, "stability-unlisted", remove_last), "smt/stability-")

    def unproved(document: Document) -> None:
        document["proofs"]["smt_obligations"][0]["result"] = "unknown"

    # Every claim rests on the first layer: its recorded evidence now overstates the results.
    _assert_rejected(_tampered(certified, "stability-unknown", unproved), "evidence smt")

    def covers_other_box(document: Document) -> None:
        document["proofs"]["smt_obligations"][0]["box"] = 3

    _assert_rejected(_tampered(certified, "stability-box", covers_other_box), "coverage")


def test_a_certificate_whose_claims_z3_did_not_confirm_reads_honestly_and_stays_valid(
    certified: tuple[Path, Document],
) -> None:
    """Results "not-run" (no time was left) with the evidence and the summary count saying so:
    the kernel tier still accepts every claim, and the SMT count is 0."""

    def not_run(document: Document) -> None:
        for obligation in document["proofs"]["smt_obligations"]:
            obligation["result"] = "not-run"
        for entry in document["neurons"]:
            if "smt" in entry["evidence"]:
                entry["evidence"]["smt"] = "not-run"
        document["summary"]["totals"]["smt_confirmed"] = 0

    report = _tampered(certified, "stability-not-run", not_run)
    assert report.valid, report.first_failure

    def overstated(document: Document) -> None:
        not_run(document)
        document["summary"]["totals"]["smt_confirmed"] = 1

    _assert_rejected(_tampered(certified, "stability-count", overstated), "summary")


# ---------------------------------------------------------------------------------------------
# The compressed network


def _rewrite_compressed(
    certified: tuple[Path, Document], name: str, edit: Callable[[onnx.ModelProto], None]
) -> CheckReport:
    path, document = certified
    model = onnx.load(path.parent / document["compressed"]["path"])
    edit(model)
    target = path.parent / f"compressed-{name}.onnx"
    onnx.save(model, target)

    def point_at(copied: Document) -> None:
        copied["compressed"]["path"] = target.name
        copied["compressed"]["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()

    return _tampered(certified, f"compressed-{name}", point_at)


def test_a_relu_appended_after_the_output_layer_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def append_relu(model: onnx.ModelProto) -> None:
        graph = model.graph
        output = graph.output[0].name
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name == output:
                    node.output[k] = "before_relu"
        graph.node.append(onnx.helper.make_node("Relu", ["before_relu"], [output]))

    _assert_rejected(_rewrite_compressed(certified, "relu", append_relu), "compressed", "ReLU")


def test_a_relu_removed_from_a_hidden_layer_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def remove_first_relu(model: onnx.ModelProto) -> None:
        graph = model.graph
        relu = next(node for node in graph.node if node.op_type == "Relu")
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == relu.output[0]:
                    node.input[k] = relu.input[0]
        graph.node.remove(relu)

    # The importer merges the two affine layers left without a ReLU between them.
    _assert_rejected(
        _rewrite_compressed(certified, "no-relu", remove_first_relu), "compressed", "layer"
    )


def test_a_witness_moved_outside_the_box_is_rejected(certified: tuple[Path, Document]) -> None:
    def change(document: Document) -> None:
        document["witnesses"][0]["point"][0] = "1.5"

    _assert_rejected(_tampered(certified, "outside", change), "witness 0", "outside box 0")


def test_a_witness_naming_a_box_that_does_not_exist_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    def change(document: Document) -> None:
        document["witnesses"][0]["box"] = 7

    _assert_rejected(_tampered(certified, "no-box", change), "witness 0", "box 7 does not exist")

    def negative(document: Document) -> None:
        document["witnesses"][0]["box"] = -1

    _assert_rejected(_tampered(certified, "negative-box", negative), "$.witnesses[0].box")


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

    _assert_rejected(_tampered(certified, "summary", change), "summary", "per_layer")


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


# ---------------------------------------------------------------------------------------------
# Sub-boxes


def _first_cut(document: Document) -> Document:
    tree: Document = document["proofs"]["trees"][0]
    assert isinstance(tree, dict), "the domain box was not split"
    return tree


def test_a_certificate_with_sub_boxes_is_valid_and_its_stable_neurons_hold_on_each(
    split_inputs: tuple[Path, Document],
) -> None:
    path, document = split_inputs
    report = check_certificate(path, workers=1)
    assert report.valid, report.first_failure
    assert report.counts["sub_boxes"] >= 2
    assert document["proofs"]["sub_boxes"] == report.counts["sub_boxes"]
    assert report.counts["stable_neurons"] > 0


def test_a_wrong_sub_box_count_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def recount(document: Document) -> None:
        document["proofs"]["sub_boxes"] += 1

    _assert_rejected(_tampered(split_inputs, "recount", recount), "sub-boxes recorded")


def test_a_cut_outside_its_interval_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def outside(document: Document) -> None:
        _first_cut(document)["at"] = "1.5"

    _assert_rejected(_tampered(split_inputs, "cut-outside", outside), "subdomains", "1.5")


def test_a_renumbered_or_doubled_sub_box_is_rejected(split_inputs: tuple[Path, Document]) -> None:
    def renumber(document: Document) -> None:
        cut = _first_cut(document)
        document["proofs"]["trees"][0] = {**cut, "above": 1000}

    _assert_rejected(_tampered(split_inputs, "renumbered", renumber), "numbered 0..m-1")

    def twice(document: Document) -> None:
        cut = _first_cut(document)
        cut["above"] = cut["below"]

    _assert_rejected(_tampered(split_inputs, "twice", twice), "subdomains")


def test_a_sub_box_dropped_from_the_tree_leaves_claims_unproved(
    split_inputs: tuple[Path, Document],
) -> None:
    def drop(document: Document) -> None:
        document["proofs"]["trees"][0] = _first_cut(document)["box"]
        document["proofs"]["sub_boxes"] = 1
        document["proofs"]["case_splits"] = []
        for entry in document["neurons"]:
            if "case_splits" in entry["evidence"]:
                entry["evidence"]["case_splits"] = []

    _assert_rejected(_tampered(split_inputs, "dropped", drop), "not proved on every sub-box")


def test_a_deep_network_proved_on_nested_sub_boxes_passes_the_checker(tmp_path: Path) -> None:
    network = random_network(np.random.default_rng(0), [2, 6, 6, 6, 6, 6, 2])
    save_onnx(network, tmp_path / "deep.onnx", "float32")
    config = Config(time_limit=20, samples=50, gradient_steps=0, max_split_depth=0)
    domain = Domain.box(-np.ones(2), np.ones(2))
    result = run(tmp_path / "deep.onnx", domain, tmp_path / "out", config)
    document = json.loads((result.out_dir / "certificate.json").read_text())
    subdomains = Subdomains.from_json(domain, document["proofs"]["trees"])
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


# ---------------------------------------------------------------------------------------------
# Fields the checker derives again: an edit of any of them is caught


@pytest.mark.parametrize(
    ("field", "edit", "fragment"),
    [
        ("rounding", lambda d: d["compression"].update(rounding_bound="1/3"), "rounding_bound"),
        ("percent", lambda d: d["compression"].update(percent_connections_removed=99.0), "percent"),
        ("totals", lambda d: d["summary"]["totals"].update(unknown=7), "summary"),
        ("proved", lambda d: d["summary"].update(equivalence_proved=False), "summary"),
        ("equivalence", lambda d: d["compression"]["equivalence"].update(proved=False), "proved"),
        ("folded", lambda d: d["network"].update(folded_ops=["BatchNormalization"]), "folded_ops"),
        (
            "verdict",
            lambda d: d["compression"]["equivalence"]["obligations"][0].update(verdict="unknown"),
            "verdict",
        ),
    ],
)
def test_an_edited_derived_field_is_rejected_naming_it(
    certified: tuple[Path, Document],
    field: str,
    edit: Callable[[Document], None],
    fragment: str,
) -> None:
    _assert_rejected(_tampered(certified, f"derived-{field}", edit), fragment)


def test_a_moved_certificate_folder_finds_its_network_beside_it_or_given(
    certified: tuple[Path, Document], tmp_path: Path
) -> None:
    import shutil

    path, document = certified
    moved = tmp_path / "moved"
    shutil.copytree(path.parent, moved)
    network = (path.parent / document["network"]["path"]).resolve()
    report = check_certificate(moved / "certificate.json", workers=1)
    _assert_rejected(report, "network: not found", "--network")
    assert check_certificate(moved / "certificate.json", workers=1, network=network).valid
    shutil.copy(network, moved / network.name)
    assert check_certificate(moved / "certificate.json", workers=1).valid


def test_a_network_given_that_is_not_the_recorded_one_is_rejected(
    certified: tuple[Path, Document], tmp_path: Path
) -> None:
    path, _ = certified
    other = tmp_path / "other.onnx"
    save_onnx(random_network(np.random.default_rng(1), [3, 9, 5, 2]), other, "float32")
    report = check_certificate(path, workers=1, network=other)
    _assert_rejected(report, "sha256 differs")


def test_a_compressed_file_holding_a_float64_rounded_batch_normalization_is_rejected(
    certified: tuple[Path, Document],
) -> None:
    # Its exact factor is 1/sqrt(1 + 2^-52), which float64 rounds to 1: read in float64 it
    # would equal the recomputed compression, read exactly it does not.
    def insert_batch_normalization(model: onnx.ModelProto) -> None:
        graph = model.graph
        source = graph.input[0].name
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == source:
                    node.input[k] = "normalized"
        width = 3
        dtype = onnx.helper.tensor_dtype_to_np_dtype(graph.input[0].type.tensor_type.elem_type)
        names = []
        for name, values in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
            graph.initializer.append(
                onnx.numpy_helper.from_array(np.full(width, values, dtype=dtype), f"bn_{name}")
            )
            names.append(f"bn_{name}")
        node = onnx.helper.make_node(
            "BatchNormalization", [source, *names], ["normalized"], epsilon=2.0**-52
        )
        graph.node.insert(0, node)

    report = _rewrite_compressed(certified, "bn", insert_batch_normalization)
    _assert_rejected(report, "compressed", "rounded in float64")


# ---------------------------------------------------------------------------------------------
# The format: validated against its JSON Schema first


def test_a_missing_or_extra_field_is_rejected_naming_its_json_path(
    certified: tuple[Path, Document],
) -> None:
    def missing(document: Document) -> None:
        del document["proofs"]["sub_boxes"]

    _assert_rejected(_tampered(certified, "missing", missing), "$.proofs", "sub_boxes")

    def extra(document: Document) -> None:
        document["neurons"][0]["evidence"]["lemmas"] = ["b0.L0.n0.upper"]

    _assert_rejected(_tampered(certified, "extra", extra), "$.neurons[0].evidence", "lemmas")


def test_the_schema_shipped_in_docs_is_the_one_check_validates_against() -> None:
    root = Path(__file__).resolve().parents[1]
    shipped = (root / "docs" / "certificate.schema.json").read_text()
    assert shipped == (root / "verifier" / "certificate.schema.json").read_text()


def test_a_run_that_had_no_time_to_write_any_stability_obligation_is_valid_and_says_so(
    certified: tuple[Path, Document], tmp_path: Path
) -> None:
    """No obligation listed or shipped (the run writes them only while it can run them): every
    stable neuron reads `not-run`, none is counted confirmed, and the kernel tier accepts."""
    path, _ = certified
    copied = _copy_certificate(path, tmp_path / "none-written")
    document = json.loads(copied.read_text())
    document["proofs"]["smt_obligations"] = []
    for entry in document["neurons"]:
        if "smt" in entry["evidence"]:
            entry["evidence"]["smt"] = "not-run"
    document["summary"]["totals"]["smt_confirmed"] = 0
    copied.write_text(json.dumps(document))
    for file in (copied.parent / "smt").glob("stability-*.smt2"):
        file.unlink()
    report = check_certificate(copied, workers=1, stability_smt=True)
    assert report.valid, report.first_failure
    assert report.counts["stability_obligations"] == 0
    assert report.counts["stability_obligations_not_shipped"] > 0
    assert report.counts["stable_neurons_confirmed_by_z3"] == 0
