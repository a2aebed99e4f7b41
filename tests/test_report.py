"""The HTML report: self-contained, well formed, escaped, showing every count it promises, in a
form a person reads (no Python reprs, no float noise, files by name and hash)."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.domain import parse_bound_values
from verify_compress.report import (
    DOMAIN_DETAIL_ROWS,
    bound_text,
    render_report,
    rounding_bound_text,
)

VOID_ELEMENTS = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "area", "wbr"})


def layer(
    index: int,
    neurons: int,
    active: int,
    inactive: int,
    unstable: int,
    unknown: int,
    before: int,
    after: int,
) -> dict[str, int]:
    return {
        "layer": index,
        "neurons": neurons,
        "stably_active": active,
        "stably_inactive": inactive,
        "unstable": unstable,
        "unknown": unknown,
        "connections_before": before,
        "connections_after": after,
    }


def hand_made_certificate(inputs: int = 4) -> dict[str, Any]:
    per_layer = [layer(0, 8, 2, 3, 2, 1, 32, 9), layer(1, 6, 1, 1, 4, 0, 48, 20)]
    return {
        "format": "verify-compress-certificate",
        "format_version": 1,
        "tool_version": "0.1.0",
        "solvers": {"z3": "4.13.0"},
        "network": {"path": "models/tiny <net>.onnx", "sha256": "ab" * 32},
        "compressed": {"path": "compressed.onnx", "sha256": "cd" * 32},
        "domain": {
            "boxes": [
                {"lower": ["0"] * inputs, "upper": ["1"] * inputs},
                {"lower": ["-0.5"] * inputs, "upper": ["0.25"] * inputs},
            ],
            "source": "vnnlib:prop_<1>.vnnlib",
        },
        "neurons": [
            {"layer": 0, "index": 7, "status": "unknown", "evidence": {}},
            {"layer": 0, "index": 1, "status": "unstable", "evidence": {"witnesses": [0, 1]}},
        ],
        "summary": {
            "per_layer": per_layer,
            "totals": {
                "neurons_before": 14,
                "neurons_after": 9,
                "layers_before": 3,
                "layers_after": 3,
                "connections_before": 96,
                "connections_after": 45,
                "percent_connections_removed": 53.125,
                "stably_active": 3,
                "stably_inactive": 4,
                "unstable": 6,
                "unknown": 1,
            },
        },
        "timings": {"witnesses": 0.5, "search": 1.25, "certification": 3.0},
        "compression": {
            "rounding_bound": "1/1048576",
            "equivalence": {"proved": True, "obligations": 3},
        },
        "proofs": {"trees": [0, 1], "sub_boxes": 2, "case_splits": [{}, {}]},
        "witnesses": [[0.0] * inputs, [1.0] * inputs],
    }


class StrictStructure(HTMLParser):
    """Records tags and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def parse(text: str) -> StrictStructure:
    parser = StrictStructure()
    parser.feed(text)
    parser.close()
    return parser


def visible_text(text: str) -> str:
    return re.sub(r"<[^>]+>", " ", text)


def test_the_report_is_well_formed_html_with_every_element_closed() -> None:
    page = render_report(hand_made_certificate())
    structure = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert structure.problems == []
    assert structure.stack == []
    assert [tag for tag, _ in structure.tags].count("svg") == 1


def test_the_report_fetches_nothing_and_runs_no_script() -> None:
    page = render_report(hand_made_certificate())
    structure = parse(page)
    assert "http://" not in page and "https://" not in page
    assert all(tag not in ("script", "link", "img", "iframe") for tag, _ in structure.tags)
    assert all("src" not in attrs and "href" not in attrs for _, attrs in structure.tags)


def test_the_report_names_each_status_with_its_total_count() -> None:
    text = visible_text(render_report(hand_made_certificate()))
    for label, count in (
        ("stably active", 3),
        ("stably inactive", 4),
        ("unstable", 6),
        ("unknown", 1),
    ):
        assert f"{label}: {count}" in text


def test_the_chart_draws_one_bar_segment_per_nonzero_status_of_each_layer() -> None:
    page = render_report(hand_made_certificate())
    rects = [attrs for tag, attrs in parse(page).tags if tag == "rect"]
    # layer 0 has four nonzero statuses, layer 1 three
    assert len(rects) == 7
    assert "layer 0: 2 stably active" in page
    assert "layer 1: 4 unstable" in page
    widths = [float(attrs["width"] or 0) for attrs in rects]
    # layer 0 (8 neurons) is the widest bar: its segments fill the whole bar length
    assert abs(sum(widths[:4]) - 560) < 0.01
    assert abs(sum(widths[4:]) - 560 * 6 / 8) < 0.01


def test_the_counts_table_shows_every_layer_and_the_before_after_totals() -> None:
    text = " ".join(visible_text(render_report(hand_made_certificate())).split())
    assert "0 8 2 3 2 1 32 9" in text
    assert "1 6 1 1 4 0 48 20" in text
    assert "output (no ReLU) - - - - - 16 16" in text
    assert "total 14 3 4 6 1 96 45" in text
    assert "connections (nonzero weights) 96 45" in text
    assert "53.12%" in text


def test_the_report_shows_hashes_timings_equivalence_and_evidence_counts() -> None:
    text = " ".join(visible_text(render_report(hand_made_certificate())).split())
    assert "ab" * 32 in text and "cd" * 32 in text
    assert "search 1.25" in text and "total 4.75" in text
    assert "Equivalence proved" in text
    assert "at most 9.54e-7" in text and "1/1048576" in text
    assert "case splits (proofs) 2" in text
    assert "witness inputs 2" in text
    assert "equivalence obligations 3" in text
    assert "1 unknown neurons (kept)" in text


def test_the_report_says_how_to_recheck_the_certificate_beside_the_compressed_network() -> None:
    assert "verify-compress check certificate.json" in render_report(hand_made_certificate())
    elsewhere = hand_made_certificate()
    elsewhere["compressed"]["path"] = "proofs/tiny/compressed.onnx"
    assert "verify-compress check proofs/tiny/certificate.json" in render_report(elsewhere)


def test_a_recorded_total_time_is_the_footer_not_a_stage() -> None:
    certificate = hand_made_certificate()
    certificate["timings"]["total"] = 5.5
    text = " ".join(visible_text(render_report(certificate)).split())
    assert "total 5.50" in text and "total 10.25" not in text


def test_an_unproved_equivalence_is_shown_as_a_warning() -> None:
    certificate = hand_made_certificate()
    certificate["compression"]["equivalence"]["proved"] = False
    assert "Equivalence NOT proved" in render_report(certificate)


def test_strings_from_the_certificate_are_escaped() -> None:
    page = render_report(hand_made_certificate())
    assert "tiny &lt;net&gt;.onnx" in page and "<net>" not in page
    assert "prop_&lt;1&gt;.vnnlib" in page
    hostile = hand_made_certificate()
    hostile["timings"] = {"<script>alert(1)</script>": 1.0}
    assert "<script>" not in render_report(hostile)


def test_the_domain_summary_counts_boxes_and_groups_equal_inputs() -> None:
    page = render_report(hand_made_certificate(inputs=784))
    text = " ".join(visible_text(page).split())
    assert "2 boxes over 784 inputs" in text
    assert "0 0-783 0 1" in text
    assert "1 0-783 -0.5 0.25" in text
    assert "<details>" in page


def test_proofs_on_bisected_sub_boxes_are_said_with_their_count() -> None:
    certificate = hand_made_certificate()
    certificate["proofs"] = {"trees": [], "sub_boxes": 7, "case_splits": []}
    text = " ".join(visible_text(render_report(certificate)).split())
    assert "Proofs were made on 7 sub-boxes" in text
    whole = hand_made_certificate()
    whole["proofs"] = {"trees": [0, 1], "sub_boxes": 2, "case_splits": []}
    assert "sub-boxes" not in visible_text(render_report(whole))


def test_a_long_domain_table_is_cut_short_with_a_note() -> None:
    certificate = hand_made_certificate()
    inputs = DOMAIN_DETAIL_ROWS + 10
    lower = [str(i) for i in range(inputs)]  # all different: one row per input
    certificate["domain"]["boxes"] = [{"lower": lower, "upper": lower}]
    page = render_report(certificate)
    assert f"Only the first {DOMAIN_DETAIL_ROWS} rows are shown" in page
    assert parse(page).problems == []


def test_a_partial_certificate_still_renders() -> None:
    certificate = copy.deepcopy(hand_made_certificate())
    for key in ("summary", "timings", "compression", "domain", "proofs", "solvers"):
        del certificate[key]
    page = render_report(certificate)
    assert parse(page).problems == []
    assert "No equivalence result recorded" in page
    assert render_report({}).startswith("<!DOCTYPE html>")


def test_the_rounding_bound_is_shown_rounded_up_so_it_stays_a_bound() -> None:
    assert rounding_bound_text("0") == "0 (the exported weights are exact)"
    assert rounding_bound_text("1/3") == "at most 0.334 (exactly 1/3)"
    assert rounding_bound_text("2/3") == "at most 0.667 (exactly 2/3)"
    huge = f"{10**60 + 1}/{10**62}"
    assert rounding_bound_text(huge) == (
        "at most 0.0101 (the exact rational is in the certificate)"
    )


# ---------------------------------------------------------------------------------------------
# What a user reads: no Python reprs, no float noise, no long relative paths, the comparisons


def obligation(layer: int, verdict: str = "proved") -> dict[str, Any]:
    return {
        "id": f"equivalence-layer-{layer}",
        "file": f"equivalence-layer-{layer}.smt2",
        "sha256": f"{layer}" * 64,
        "verdict": verdict,
        "seconds": 0.0211,
    }


def test_equivalence_obligations_are_a_count_and_a_table_not_a_python_list() -> None:
    certificate = hand_made_certificate()
    certificate["compression"]["equivalence"] = {
        "proved": True,
        "uses": ["stable.L0.n0", "stable.L0.n1"],
        "obligations": [obligation(0), obligation(1), obligation(2, "unknown")],
    }
    page = render_report(certificate)
    text = " ".join(visible_text(page).split())
    assert "{'" not in page and "[{" not in page and "&#x27;" not in page
    assert "equivalence obligations 3 (2 proved, 1 unknown)" in text
    assert "smt/equivalence-layer-1.smt2 proved 0.021 " + "1" * 64 in text
    assert "stability lemmas used 2" in text
    assert parse(page).problems == []


def test_the_network_is_shown_by_file_name_and_sha256_not_by_its_relative_path() -> None:
    certificate = hand_made_certificate()
    certificate["network"]["path"] = "../../../../work/shared/acasxu/ACASXU_run2a_1_1.onnx"
    page = render_report(certificate)
    text = " ".join(visible_text(page).split())
    assert "../" not in page
    assert "original network ACASXU_run2a_1_1.onnx " + "ab" * 32 in text
    assert "compressed network compressed.onnx " + "cd" * 32 in text


def test_the_exact_and_onnxruntime_comparisons_are_shown() -> None:
    certificate = hand_made_certificate()
    certificate["compression"]["empirical"] = {
        "points": 114,
        "witnesses": 18,
        "corners": 32,
        "random": 64,
        "witnesses_outside_domain": 0,
        "skipped_at_time_limit": 7,
        "max_abs_difference": "0",
        "agree": True,
        "first_disagreement": None,
        "onnxruntime": {"points": 10000, "max_abs_difference": 3.6621093750e-06},
    }
    text = " ".join(visible_text(render_report(certificate)).split())
    assert (
        "exact evaluation (rational arithmetic) 114 (18 witnesses, 32 corners, 64 random "
        "points); 7 more skipped at the time limit 0 yes"
    ) in text
    assert "onnxruntime on both ONNX files (float arithmetic) 10000 random points 3.66e-06" in text
    skipped = hand_made_certificate()
    not_installed = {"skipped": "onnxruntime is not installed"}
    skipped["compression"]["empirical"] = {"onnxruntime": not_installed}
    assert "not run: onnxruntime is not installed" in visible_text(render_report(skipped))


def test_a_nonzero_exact_difference_is_shown_with_a_rounded_up_decimal() -> None:
    certificate = hand_made_certificate()
    certificate["compression"]["empirical"] = {
        "points": 3,
        "max_abs_difference": "1/3",
        "agree": False,
        "first_disagreement": [0.5, 0.25],
    }
    text = " ".join(visible_text(render_report(certificate)).split())
    assert "1/3 (at most 0.334) no; first difference at [0.5, 0.25]" in text


def test_a_bound_typed_as_a_decimal_shows_as_typed_not_as_float_noise() -> None:
    # X_0 <= -0.298552812 (ACAS Xu property 3): rounded up to the float -0.29855281199999995
    upper = parse_bound_values("--upper", ["-0.298552812"], "up")[0]
    lower = parse_bound_values("--lower", ["-0.303531156", "0.45"], "down")
    assert repr(upper) == "-0.29855281199999995"
    assert bound_text(upper, "up") == "-0.298552812"
    assert [bound_text(v, "down") for v in lower] == ["-0.303531156", "0.45"]
    certificate = hand_made_certificate(inputs=2)
    certificate["domain"]["boxes"] = [
        {"lower": [str(v) for v in lower], "upper": [repr(upper), "1"]}
    ]
    text = " ".join(visible_text(render_report(certificate)).split())
    assert "0 0 -0.303531156 -0.298552812" in text and "0 1 0.45 1" in text
    assert "99999" not in text


def test_float_bounds_keep_their_shortest_repr() -> None:
    assert bound_text(0.1, "down") == "0.1"  # a float 0.1 (say from a .npy file) stays 0.1
    assert bound_text(1.0, "up") == "1" and bound_text(-0.0, "down") == "0"
    assert bound_text(1e-7, "down") == "1e-07" and bound_text(1e22, "up") == "1e+22"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["down", "up"]))
def test_a_shown_bound_names_exactly_its_float(value: float, direction: str) -> None:
    """The text reads back to the same float: to nearest, or by the tool's outward rounding of
    that kind of bound; and it is never longer than `repr`."""
    text = bound_text(value, direction)
    option = "--lower" if direction == "down" else "--upper"
    assert float(text) == value or parse_bound_values(option, [text], direction)[0] == value
    assert len(text) <= len(repr(value))


def test_the_bundled_report_has_no_python_reprs_or_relative_paths() -> None:
    bundled = Path(__file__).resolve().parents[1] / "proofs" / "digits_l1" / "certificate.json"
    if not bundled.is_file():
        pytest.skip(f"{bundled} is not bundled")
    page = render_report(json.loads(bundled.read_text()))
    text = " ".join(visible_text(page).split())
    assert "{'" not in page and "&#x27;" not in page and "../" not in page
    assert "original network digits_l1.onnx" in text
    assert "exact evaluation (rational arithmetic)" in text
    assert "onnxruntime on both ONNX files" in text
