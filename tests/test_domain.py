"""Input domains: VNN-LIB parsing, bounds files, CLI boxes, exact JSON, sampling invariants."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify_compress.domain import (
    Box,
    Domain,
    box_from_cli,
    load_bounds_file,
    parse_bound_values,
    parse_decimal,
    parse_vnnlib,
    round_to_float,
)
from verify_compress.errors import DomainError, VnnlibError

DECLARE_THREE = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n"


def write(tmp_path: Path, text: str, name: str = "prop.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def vnnlib_error(tmp_path: Path, text: str, input_size: int | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(VnnlibError) as caught:
        parse_vnnlib(path, input_size)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


# --- VNN-LIB: structure ----------------------------------------------------------------------


def test_a_vnnlib_disjunction_yields_two_boxes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "; two boxes sharing a top-level bound on X_2\n"
        + DECLARE_THREE
        + "(declare-const Y_0 Real)\n"
        "(assert (>= X_2 -1))\n(assert (<= 1 X_2))\n"  # (<= c X) is a lower bound
        "(assert (<= X_2 2.5))\n"
        "(assert (or\n"
        "  (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n"
        "  (and (>= X_0 2) (<= X_0 3) (>= 5 X_1) (>= X_1 4) (<= Y_0 0))\n"
        "))\n"
        "(assert (or (and (<= Y_0 0)) (and (>= Y_0 1))))\n",
    )
    domain = parse_vnnlib(path)
    assert domain.source == "vnnlib:prop.vnnlib"
    assert len(domain.boxes) == 2
    first, second = domain.boxes
    np.testing.assert_array_equal(first.lower, [0, 0, 1])
    np.testing.assert_array_equal(first.upper, [1, 1, 2.5])
    np.testing.assert_array_equal(second.lower, [2, 4, 1])
    np.testing.assert_array_equal(second.upper, [3, 5, 2.5])


def test_the_tightest_of_several_bounds_on_one_input_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "(declare-const X_0 Real)\n"
        "(assert (and (>= X_0 -3) (>= X_0 -2) (<= X_0 7) (< X_0 6)))\n",
    )
    box = parse_vnnlib(path).boxes[0]
    assert (box.lower[0], box.upper[0]) == (-2.0, 6.0)


def test_an_equality_fixes_an_input_and_negated_constants_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
        "(assert (= X_0 0.25))\n(assert (>= X_1 (- 2)))\n(assert (<= X_1 -1.5e-1))\n",
    )
    box = parse_vnnlib(path, input_size=2).boxes[0]
    np.testing.assert_array_equal(box.lower, [0.25, -2.0])
    np.testing.assert_array_equal(box.upper, [0.25, -0.15])


def test_an_or_with_a_disjunct_free_of_inputs_does_not_constrain_inputs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
        "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
        "(assert (or (and (>= X_0 5) (<= X_0 6)) (and (<= Y_0 0))))\n",
    )
    domain = parse_vnnlib(path)
    assert len(domain.boxes) == 1
    assert (domain.boxes[0].lower[0], domain.boxes[0].upper[0]) == (0.0, 1.0)


def test_two_disjunctions_over_inputs_multiply_into_four_boxes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
        "(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n"
        "(assert (or (and (>= X_1 0) (<= X_1 1)) (and (>= X_1 2) (<= X_1 3))))\n",
    )
    domain = parse_vnnlib(path)
    corners = sorted((b.lower[0], b.lower[1]) for b in domain.boxes)
    assert corners == [(0, 0), (0, 2), (2, 0), (2, 2)]


# --- VNN-LIB: exact outward rounding -------------------------------------------------------


def test_decimal_bounds_are_rounded_outward_exactly(tmp_path: Path) -> None:
    texts = ["0.1", "-0.1", "0.029999999329447746", "1e-320", "-3.141592", "0.7004349250000001"]
    lines = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(texts)))
    for i, text in enumerate(texts):
        lines += f"(assert (>= X_{i} {text}))\n(assert (<= X_{i} {text}))\n"
    box = parse_vnnlib(write(tmp_path, lines)).boxes[0]
    for i, text in enumerate(texts):
        exact = Fraction(text)
        assert Fraction(float(box.lower[i])) <= exact <= Fraction(float(box.upper[i]))
        # Outward by at most one step: the box is as tight as float64 allows.
        assert np.nextafter(box.lower[i], np.inf) >= box.upper[i] or exact == box.lower[i]


@settings(deadline=None, max_examples=200)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value="-1e300", max_value="1e300")
)
def test_rounding_down_and_up_brackets_any_decimal(value: object) -> None:
    exact = parse_decimal(str(value))
    down, up = round_to_float(exact, "down"), round_to_float(exact, "up")
    assert Fraction(down) <= exact <= Fraction(up)
    assert down == up or np.nextafter(down, np.inf) == up


# --- VNN-LIB: every error names file, line and input ---------------------------------------


def test_inverted_bounds_name_file_line_and_input(tmp_path: Path) -> None:
    message = vnnlib_error(
        tmp_path,
        DECLARE_THREE + "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n"
        "(assert (<= X_1 1))\n(assert (>= X_2 0.5))\n(assert (<= X_2 0.2))\n",
    )
    assert message.endswith("prop.vnnlib:9: input X_2: lower 0.5 > upper 0.2")


def test_an_input_without_an_upper_bound_names_its_declaration(tmp_path: Path) -> None:
    message = vnnlib_error(
        tmp_path, DECLARE_THREE + "(assert (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)))\n"
        "(assert (>= X_2 0))\n",
    )
    assert message.endswith(":3: input X_2 has no upper bound")


def test_a_box_of_a_disjunction_without_a_lower_bound_is_named(tmp_path: Path) -> None:
    message = vnnlib_error(
        tmp_path,
        "(declare-const X_0 Real)\n"
        "(assert (or (and (>= X_0 0) (<= X_0 1)) (and (<= X_0 3))))\n",
    )
    assert message.endswith(":1: input X_0 has no lower bound (box 2 of 2)")


def test_an_input_index_beyond_the_network_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(
        tmp_path, DECLARE_THREE + "(declare-const X_3 Real)\n", input_size=3
    )
    assert message.endswith(":4: input X_3: index >= network input size 3")


def test_fewer_declared_inputs_than_the_network_has_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(tmp_path, DECLARE_THREE, input_size=5)
    assert message.endswith(":3: declares 3 inputs X_0..X_2 but the network has 5 inputs")


def test_an_undeclared_input_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(tmp_path, "(declare-const X_0 Real)\n\n(assert (<= X_1 1))\n")
    assert message.endswith(":3: input X_1 is not declared")


def test_a_gap_in_declared_inputs_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(tmp_path, "(declare-const X_0 Real)\n(declare-const X_2 Real)\n")
    assert message.endswith(":2: input X_2 is declared but X_1 is not")


def test_a_nan_constant_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(tmp_path, "(declare-const X_0 Real)\n(assert (<= X_0 NaN))\n")
    assert message.endswith(":2: input X_0: constant 'NaN' is NaN")


def test_a_constant_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(tmp_path, "(declare-const X_0 Real)\n(assert (<= X_0 1.2.3))\n")
    assert message.endswith(":2: input X_0: '1.2.3' is not a decimal number")


def test_a_bound_outside_float64_is_refused(tmp_path: Path) -> None:
    message = vnnlib_error(
        tmp_path, "(declare-const X_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1e400))\n"
    )
    assert message.endswith(":3: input X_0: upper 1e400: constant is outside the float64 range")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(declare-const X_0 Real)\n(assert (<= X_0 1)\n", ":2: unbalanced parentheses"),
        ("(declare-const X_0 Real))\n", ":1: unbalanced parentheses: unexpected ')'"),
        ("(declare-const X_0 Real)\nX_0\n", ":2: expected a command"),
        ("(declare-const X_0 Real)\n(assert (<= X_0 X_0 1))\n", ":2: '<=' needs two arguments"),
        ("(declare-const X_0 Real)\n(define-fun f () Real 1)\n", ":2: unsupported command"),
        ("(declare-const X_0 Int)\n", ":1: input X_0 must be declared Real"),
        ("(declare-const X_0 Real)\n(assert (not (<= X_0 1)))\n", ":2: unsupported constraint"),
        (
            "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 Y_0))\n",
            ":3: input X_0: bound 'Y_0' is not a constant",
        ),
        (
            "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(assert (<= X_0 X_1))\n",
            ":3: only bounds (op X_i constant) are supported",
        ),
        ("(declare-const Y_0 Real)\n", "declares no inputs"),
        (
            "(declare-const X_0 Real)\n(assert (<= X_0 1e99999))\n",
            ":2: input X_0: constant '1e99999' has an exponent beyond 9999",
        ),
    ],
)
def test_malformed_vnnlib_is_refused_with_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in vnnlib_error(tmp_path, text)


def test_a_missing_vnnlib_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(VnnlibError, match=r"absent\.vnnlib: cannot read"):
        parse_vnnlib(tmp_path / "absent.vnnlib")


# --- VNN-LIB: the public benchmarks --------------------------------------------------------


def test_acas_property_6_is_two_boxes_of_five_inputs(benchmarks: Path) -> None:
    domain = parse_vnnlib(benchmarks / "acasxu" / "prop_6.vnnlib", input_size=5)
    assert [box.size for box in domain.boxes] == [5, 5]
    assert domain.boxes[0].upper[1] > 0 > domain.boxes[1].upper[1]


def test_acas_property_1_is_one_box(benchmarks: Path) -> None:
    domain = parse_vnnlib(benchmarks / "acasxu" / "prop_1.vnnlib", input_size=5)
    assert len(domain.boxes) == 1
    assert Fraction(float(domain.boxes[0].lower[0])) <= Fraction("0.6")


def test_mnist_property_has_784_inputs_within_eps_of_the_image(benchmarks: Path) -> None:
    domain = parse_vnnlib(benchmarks / "mnistfc" / "prop_0_0.03.vnnlib", input_size=784)
    (box,) = domain.boxes
    assert box.size == 784
    # eps = 0.03 around pixels stored as float32 decimals: widths reach 0.06 plus float32 error.
    assert np.all(box.upper - box.lower <= 0.0601)
    assert np.all(box.lower >= 0) and np.all(box.upper <= 1)


# --- CLI boxes -----------------------------------------------------------------------------


def test_a_scalar_cli_bound_is_broadcast_to_every_input() -> None:
    domain = box_from_cli([0.0], [1.0, 2.0, 3.0], input_size=3)
    np.testing.assert_array_equal(domain.boxes[0].lower, [0, 0, 0])
    np.testing.assert_array_equal(domain.boxes[0].upper, [1, 2, 3])


def test_a_cli_bound_of_the_wrong_length_names_the_option_and_lengths() -> None:
    with pytest.raises(DomainError, match=r"--upper has 2 values but the network has 3 inputs"):
        box_from_cli([0.0], [1.0, 2.0], input_size=3)


def test_an_inverted_cli_box_names_the_input() -> None:
    with pytest.raises(DomainError, match=r"input 1: lower bound 2.0 > upper bound 1.0"):
        box_from_cli([0.0, 2.0], [1.0], input_size=2)


def test_cli_bound_text_is_parsed_exactly_and_rounded_outward() -> None:
    (low,) = parse_bound_values("--lower", ["0.1"], "down")
    (high,) = parse_bound_values("--upper", ["0.3"], "up")
    assert Fraction(low) <= Fraction("0.1") and math.nextafter(low, 1.0) > Fraction("0.1")
    assert Fraction(high) >= Fraction("0.3") and math.nextafter(high, 0.0) < Fraction("0.3")
    assert parse_bound_values("--lower", ["0,0.5", " -1 ", "2"], "down") == [0.0, 0.5, -1.0, 2.0]


def test_a_cli_bound_that_is_not_a_finite_decimal_is_refused_naming_the_option() -> None:
    with pytest.raises(DomainError, match="--upper: 'x' is not a number"):
        parse_bound_values("--upper", ["1,x"], "up")
    with pytest.raises(DomainError, match="--lower: nan: constant 'nan' is NaN"):
        parse_bound_values("--lower", ["nan"], "down")
    with pytest.raises(DomainError, match="--upper: 1e400: constant is outside the float64"):
        parse_bound_values("--upper", ["1e400"], "up")
    with pytest.raises(DomainError, match="--lower: no values given"):
        parse_bound_values("--lower", [], "down")


def test_a_nan_cli_bound_is_refused() -> None:
    with pytest.raises(DomainError, match="lower bound of input 0 is nan"):
        box_from_cli([float("nan")], [1.0], input_size=2)


# --- Bounds files --------------------------------------------------------------------------


def test_npy_bounds_files_are_read_in_both_layouts(tmp_path: Path) -> None:
    rows = np.array([[0.0, -1.0, 2.0], [1.0, 1.0, 3.0]])
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "columns.npy", rows.T.astype(np.float32))
    for name in ("rows.npy", "columns.npy"):
        domain = load_bounds_file(tmp_path / name, input_size=3)
        assert domain.source == f"bounds:{name}"
        np.testing.assert_array_equal(domain.boxes[0].lower, rows[0])
        np.testing.assert_array_equal(domain.boxes[0].upper, rows[1])


def test_json_bounds_are_rounded_outward(tmp_path: Path) -> None:
    path = tmp_path / "bounds.json"
    path.write_text('{"lower": [0.1, "-0.1"], "upper": [0.3, 1]}')
    box = load_bounds_file(path, input_size=2).boxes[0]
    for value, text in ((box.lower[0], "0.1"), (box.lower[1], "-0.1")):
        assert Fraction(float(value)) <= Fraction(text)
    assert Fraction(float(box.upper[0])) >= Fraction("0.3")


def test_a_json_bounds_file_may_hold_several_boxes(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    boxes = [{"lower": [0], "upper": [1]}, {"lower": [2], "upper": [3]}]
    path.write_text(json.dumps({"boxes": boxes}))
    assert len(load_bounds_file(path).boxes) == 2


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("b.json", '{"lower": [0, 1], "upper": [1, 0]}', "input 1: lower bound 1.0 > upper"),
        ("b.json", '{"lower": [0, NaN], "upper": [1, 1]}', "constant NaN is not a finite"),
        ("b.json", '{"lower": [0], "upper": [1, 2]}', "lower has 1 values but upper has 2"),
        ("b.json", '{"low": [0]}', "expected {\"lower\""),
        ("b.json", "{not json", "cannot read as JSON"),
        ("b.json", '{"lower": [0, 0, 0], "upper": [1, 1, 1]}', "has 3 inputs but the network"),
        ("b.npy", np.zeros((3, 3)), "shape (3, 3) is neither (2, n) nor (n, 2)"),
        ("b.npy", np.array([[0.0, np.nan], [1.0, 1.0]]), "lower bound of input 1 is nan"),
        ("b.npy", b"not an npy file", "cannot read as .npy"),
        ("b.txt", "0 1", "must end in .npy or .json"),
    ],
)
def test_bad_bounds_files_are_refused_naming_the_file(
    tmp_path: Path, name: str, content: object, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))
    with pytest.raises(DomainError) as caught:
        load_bounds_file(path, input_size=2)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_a_missing_bounds_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match=r"absent\.npy: no such bounds file"):
        load_bounds_file(tmp_path / "absent.npy")


# --- Exact JSON ----------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def boxes(draw: st.DrawFn, size: int | None = None) -> Box:
    n = size if size is not None else draw(st.integers(1, 6))
    a = np.array(draw(st.lists(finite_floats, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(finite_floats, min_size=n, max_size=n)))
    return Box(np.minimum(a, b), np.maximum(a, b))


@st.composite
def domains(draw: st.DrawFn) -> Domain:
    n = draw(st.integers(1, 6))
    return Domain(tuple(draw(st.lists(boxes(n), min_size=1, max_size=3))), "test")


@settings(deadline=None, max_examples=100)
@given(domains())
def test_json_round_trip_is_exact(domain: Domain) -> None:
    text = json.dumps(domain.to_json())
    again = Domain.from_json(json.loads(text))
    assert again.source == domain.source
    for before, after in zip(domain.boxes, again.boxes, strict=True):
        # Equal as reals (-0.0 reads back as 0.0, the same bound).
        np.testing.assert_array_equal(before.lower, after.lower)
        np.testing.assert_array_equal(before.upper, after.upper)


def test_json_bounds_are_exact_decimal_strings() -> None:
    data = Domain.box([0.1], [0.5]).to_json()
    exact_tenth = "0.1000000000000000055511151231257827021181583404541015625"
    assert data["boxes"][0]["lower"] == [exact_tenth]
    assert data["boxes"][0]["upper"] == ["0.5"]


def test_json_that_is_not_exactly_a_float_is_refused() -> None:
    with pytest.raises(DomainError, match=r"box 0 lower\[0\]: '0.1' is not exactly a float64"):
        Domain.from_json({"boxes": [{"lower": ["0.1"], "upper": ["1"]}]})


def test_json_numbers_instead_of_strings_are_refused() -> None:
    with pytest.raises(DomainError, match="must be a list of decimal strings"):
        Domain.from_json({"boxes": [{"lower": [0.5], "upper": ["1"]}]})


# --- Box invariants ------------------------------------------------------------------------


@settings(deadline=None, max_examples=100)
@given(domains(), st.integers(0, 2**32 - 1))
def test_sampled_points_lie_in_the_domain(domain: Domain, seed: int) -> None:
    points = domain.sample(7, np.random.default_rng(seed))
    assert points.shape == (7, domain.size)
    assert all(domain.contains(point) for point in points)


def exact_dot(coefficients: np.ndarray, point: np.ndarray) -> Fraction:
    pairs = zip(coefficients.tolist(), point.tolist(), strict=True)
    return sum((Fraction(c) * Fraction(x) for c, x in pairs), Fraction(0))


@settings(deadline=None, max_examples=100)
@given(boxes(), st.integers(0, 2**32 - 1))
def test_the_maximizer_is_a_vertex_no_sample_beats(box: Box, seed: int) -> None:
    rng = np.random.default_rng(seed)
    coefficients = rng.integers(-3, 4, size=box.size)
    best = box.maximizer(coefficients)
    worst = box.minimizer(coefficients)
    assert box.contains(best) and box.contains(worst)
    value, low = exact_dot(coefficients, best), exact_dot(coefficients, worst)
    for point in box.sample(5, rng):
        exact = exact_dot(coefficients, point)
        assert low <= exact <= value


def test_the_maximizer_handles_one_row_per_vertex_and_exact_coefficients() -> None:
    box = Box(np.array([-1.0, -2.0]), np.array([1.0, 2.0]))
    rows = box.maximizer(np.array([[1.0, -1.0], [-1.0, 0.0]]))
    np.testing.assert_array_equal(rows, [[1.0, -2.0], [-1.0, -2.0]])
    tiny = np.array([Fraction(1, 10**400), Fraction(-1, 10**400)], dtype=object)
    np.testing.assert_array_equal(box.maximizer(tiny), [1.0, -2.0])
    with pytest.raises(DomainError, match="do not match a box of 2 inputs"):
        box.maximizer(np.ones(3))


def test_a_point_outside_every_box_is_not_contained() -> None:
    domain = Domain((Box(np.zeros(2), np.ones(2)), Box(np.full(2, 2.0), np.full(2, 3.0))))
    assert domain.contains([0.5, 0.5]) and domain.contains([2.5, 3.0])
    assert not domain.contains([1.5, 1.5])
    assert not domain.contains([0.5])
