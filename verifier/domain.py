"""Input domains: a finite union of axis-aligned boxes over the flattened network input.

Stage: ONNX -> IR -> **domain** and bounds -> ...

A neuron is stable on a domain only if it is stable (with the same phase) on every box. Bounds
are stored as float64 arrays; the exact domain is those floats read as exact rationals.

Three sources build a domain, each a function here:
- `box_from_cli`: `--lower/--upper` values, one scalar (broadcast) or one per input (their
  text read by `parse_bound_values`);
- `parse_vnnlib`: the input constraints of a VNN-LIB file (a union of boxes);
- `load_bounds_file`: a `.npy` or `.json` file of lower and upper bounds.

Soundness of the conversion to floats: decimal text (VNN-LIB constants, JSON numbers, the
`--lower/--upper` values) is parsed exactly and rounded OUTWARD to float64 (lower bounds down,
upper bounds up), so the float box contains the box the text describes. A result proved on
the float box therefore holds on the described box. `Domain.to_json`/`Domain.from_json` store
the float bounds as exact decimal strings and read them back bit for bit (a string that is not
exactly a float64 is rejected, never rounded, because a certificate must name exactly the
domain that was verified).
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import DomainError, VnnlibError

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, eq=False)
class Box:
    """lower <= x <= upper, elementwise, over the flattened input."""

    lower: FloatArray
    upper: FloatArray

    def __post_init__(self) -> None:
        lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        if lower.shape != upper.shape:
            raise DomainError(
                f"lower has {lower.size} values but upper has {upper.size}"
            )
        for name, values in (("lower", lower), ("upper", upper)):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise DomainError(f"{name} bound of input {int(bad[0])} is {values[bad[0]]}")
        inverted = np.flatnonzero(lower > upper)
        if inverted.size:
            i = int(inverted[0])
            raise DomainError(f"input {i}: lower bound {lower[i]} > upper bound {upper[i]}")
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def size(self) -> int:
        return int(self.lower.size)

    def contains(self, point: npt.ArrayLike) -> bool:
        x = np.asarray(point, dtype=np.float64).reshape(-1)
        return bool(
            x.shape == self.lower.shape and np.all(x >= self.lower) and np.all(x <= self.upper)
        )

    def sample(self, count: int, rng: np.random.Generator) -> FloatArray:
        """`count` uniform points of the box, shape (count, size); every point is inside.

        The convex combination `lower * (1 - u) + upper * u` cannot overflow even when
        `upper - lower` would; the final clip removes rounding overshoot at the faces.
        """
        u = rng.random(size=(count, self.size))
        points = self.lower * (1.0 - u) + self.upper * u
        return np.clip(points, self.lower, self.upper)

    def center(self) -> FloatArray:
        return (self.lower + self.upper) / 2.0

    def maximizer(self, coefficients: npt.ArrayLike) -> FloatArray:
        """The vertex maximizing `coefficients @ x` over the box: upper where c > 0, else lower.

        `coefficients` has shape (size,) or (rows, size) (one vertex per row). Signs are
        taken from the values as given (exact for Fraction object arrays), so the vertex is
        an exact maximizer: the maximum of a linear function over a box is attained there.
        """
        positive = self._positive(coefficients)
        return np.where(positive, self.upper, self.lower)

    def minimizer(self, coefficients: npt.ArrayLike) -> FloatArray:
        """The vertex minimizing `coefficients @ x` over the box: lower where c > 0, else upper.

        Where c < 0 the upper bound is taken; where c == 0 either bound would do (lower).
        """
        coefficients_array = np.asarray(coefficients)
        negative = self._positive(-coefficients_array)
        return np.where(negative, self.upper, self.lower)

    def _positive(self, coefficients: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        array = np.asarray(coefficients)
        if array.ndim not in (1, 2) or array.shape[-1] != self.size:
            raise DomainError(
                f"coefficients of shape {array.shape} do not match a box of {self.size} inputs"
            )
        return np.asarray(array > 0, dtype=bool)


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """A non-empty union of boxes of the same dimension."""

    boxes: tuple[Box, ...]
    source: str = "box"

    def __post_init__(self) -> None:
        if not self.boxes:
            raise DomainError("a domain needs at least one box")
        sizes = {box.size for box in self.boxes}
        if len(sizes) != 1:
            raise DomainError(f"boxes of a domain differ in dimension: {sorted(sizes)}")

    @property
    def size(self) -> int:
        return self.boxes[0].size

    def contains(self, point: npt.ArrayLike) -> bool:
        return any(box.contains(point) for box in self.boxes)

    def sample(self, count: int, rng: np.random.Generator) -> FloatArray:
        """`count` points, spread over the boxes in proportion to nothing but their order."""
        per_box = np.array_split(np.arange(count), len(self.boxes))
        return np.concatenate(
            [box.sample(len(part), rng) for box, part in zip(self.boxes, per_box, strict=True)]
        )

    def check_dimension(self, input_size: int) -> None:
        if self.size != input_size:
            raise DomainError(
                f"domain has {self.size} inputs but the network expects {input_size}"
            )

    @staticmethod
    def box(lower: npt.ArrayLike, upper: npt.ArrayLike, source: str = "box") -> Domain:
        return Domain((Box(np.asarray(lower), np.asarray(upper)),), source)

    def to_json(self) -> dict[str, Any]:
        """`{"boxes": [{"lower": [...], "upper": [...]}, ...], "source": ...}`.

        Each bound is the exact decimal text of its float64 value (every float64 is a finite
        decimal), so `from_json` recovers the domain bit for bit.
        """
        return {
            "boxes": [
                {"lower": _exact_decimals(box.lower), "upper": _exact_decimals(box.upper)}
                for box in self.boxes
            ],
            "source": self.source,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Domain:
        """Inverse of `to_json`. Bounds must be decimal strings whose exact value is a float64.

        A string whose value is not exactly a float64 raises `DomainError` rather than being
        rounded: the domain a certificate names must be exactly the one that was verified.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("boxes"), list):
            raise DomainError("domain JSON needs a list 'boxes'")
        source = data.get("source", "json")
        if not isinstance(source, str):
            raise DomainError("domain JSON: 'source' must be a string")
        boxes = []
        for k, entry in enumerate(data["boxes"]):
            if not isinstance(entry, Mapping):
                raise DomainError(f"domain JSON: box {k} must be an object with lower and upper")
            bounds = {
                side: _exact_floats_from_strings(entry.get(side), f"domain JSON: box {k} {side}")
                for side in ("lower", "upper")
            }
            try:
                boxes.append(Box(bounds["lower"], bounds["upper"]))
            except DomainError as error:
                raise DomainError(f"domain JSON: box {k}: {error}") from None
        return Domain(tuple(boxes), source)


def _exact_decimals(values: FloatArray) -> list[str]:
    return [str(decimal.Decimal(float(v))) for v in values]


def _exact_floats_from_strings(values: Any, where: str) -> FloatArray:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DomainError(f"{where} must be a list of decimal strings")
    floats = []
    for i, text in enumerate(values):
        try:
            exact = parse_decimal(text)
            as_float = round_to_float(exact, "nearest")
        except ValueError as error:
            raise DomainError(f"{where}[{i}]: {error}") from None
        if Fraction(as_float) != exact:
            raise DomainError(f"{where}[{i}]: {text!r} is not exactly a float64 value")
        floats.append(as_float)
    return np.array(floats, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Exact decimal constants and outward rounding

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?(\d+))?")
# Decimal exponents of 5+ digits are refused before Fraction expands 10**exponent: every
# float64 bound is written with an exponent of at most 4 digits (|e| <= 1074).
_MAX_EXPONENT_DIGITS = 4
_NON_FINITE = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)


def parse_decimal(text: str) -> Fraction:
    """The exact value of decimal text ("0.5", "-1e-3", "3"); `ValueError` names the text."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        if text.lower() in _NON_FINITE:
            kind = "NaN" if "nan" in text.lower() else "not finite"
            raise ValueError(f"constant {text!r} is {kind}")
        raise ValueError(f"{text!r} is not a decimal number")
    exponent = match.group(1)
    if exponent is not None and len(exponent.lstrip("0")) > _MAX_EXPONENT_DIGITS:
        raise ValueError(f"constant {text!r} has an exponent beyond 9999 in magnitude")
    return Fraction(text)


def round_to_float(value: Fraction, direction: Literal["down", "up", "nearest"]) -> float:
    """A float64 f with f <= value ("down"), f >= value ("up") or nearest to value.

    `float(Fraction)` divides two ints with correct rounding; one `nextafter` step then moves
    it to the required side when it landed on the wrong one. Raises `ValueError` when the
    result would not be finite.
    """
    try:
        nearest = float(value)
    except OverflowError:
        raise ValueError("constant is outside the float64 range") from None
    result = nearest
    if direction == "down" and Fraction(nearest) > value:
        result = math.nextafter(nearest, -math.inf)
    elif direction == "up" and Fraction(nearest) < value:
        result = math.nextafter(nearest, math.inf)
    if not math.isfinite(result):
        raise ValueError("constant is outside the float64 range")
    return result


def _round_outward(
    lower: Sequence[Fraction], upper: Sequence[Fraction]
) -> tuple[FloatArray, FloatArray]:
    """Float bounds containing the exact ones; `ValueError` names the input that overflows."""
    lows, highs = [], []
    for i, (low, high) in enumerate(zip(lower, upper, strict=True)):
        try:
            lows.append(round_to_float(low, "down"))
            highs.append(round_to_float(high, "up"))
        except ValueError as error:
            raise ValueError(f"input {i}: {error}") from None
    return np.array(lows, dtype=np.float64), np.array(highs, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Boxes from the command line


def parse_bound_values(
    option: str, texts: Sequence[str], direction: Literal["down", "up"]
) -> list[float]:
    """The numbers of a repeatable, comma-separated bound option (`--lower 0,0.5 --lower 1`).

    Each decimal is parsed exactly and rounded OUTWARD to float64 like the file readers do:
    `direction` is "down" for lower bounds and "up" for upper bounds, so `--upper 0.3` gives
    the float just above 0.3 and the box contains the one the user typed. Errors name the
    option and the value.
    """
    values = []
    for text in texts:
        for part in (piece.strip() for piece in text.split(",")):
            try:
                values.append(round_to_float(parse_decimal(part), direction))
            except ValueError as error:
                if _DECIMAL.fullmatch(part) is None and part.lower() not in _NON_FINITE:
                    raise DomainError(f"{option}: {part!r} is not a number") from None
                raise DomainError(f"{option}: {part}: {error}") from None
    if not values:
        raise DomainError(f"{option}: no values given")
    return values


def box_from_cli(lower: Sequence[float], upper: Sequence[float], input_size: int) -> Domain:
    """The box `--lower/--upper`: each one value (broadcast to every input) or one per input.

    The values are floats already (`parse_bound_values` rounded the command line's decimals
    outward), so no rounding happens here; wrong lengths and lower > upper raise `DomainError`
    naming the option or input.
    """
    lows = _broadcast("--lower", lower, input_size)
    highs = _broadcast("--upper", upper, input_size)
    return Domain.box(lows, highs, source="box")


def _broadcast(option: str, values: Sequence[float], input_size: int) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 1:
        return np.full(input_size, array[0], dtype=np.float64)
    if array.size != input_size:
        raise DomainError(
            f"{option} has {array.size} values but the network has {input_size} inputs "
            f"(give 1 value or {input_size})"
        )
    return array


# ---------------------------------------------------------------------------------------------
# Bounds files


def load_bounds_file(path: str | Path, input_size: int | None = None) -> Domain:
    """A domain from a bounds file.

    - `.npy`: a numeric array of shape (2, n) (row 0 lower, row 1 upper) or (n, 2) (column 0
      lower, column 1 upper); shape (2, 2) is read as (2, n).
    - `.json`: `{"lower": [...], "upper": [...]}` or `{"boxes": [{"lower": [...],
      "upper": [...]}, ...]}` (the format `Domain.to_json` writes). Values are JSON numbers or
      decimal strings, parsed exactly and rounded outward to float64.

    Every error raises `DomainError` naming the file.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".npy", ".json"):
        raise DomainError(f"{file}: a bounds file must end in .npy or .json")
    if not file.is_file():
        raise DomainError(f"{file}: no such bounds file")
    try:
        pairs = _npy_bounds(file) if suffix == ".npy" else _json_bounds(file)
    except DomainError as error:
        raise DomainError(f"{file}: {error}") from None
    boxes = []
    for k, (lower, upper) in enumerate(pairs):
        where = f"{file}: box {k}" if len(pairs) > 1 else f"{file}"
        if input_size is not None and lower.size != input_size:
            raise DomainError(
                f"{where}: has {lower.size} inputs but the network has {input_size}"
            )
        try:
            boxes.append(Box(lower, upper))
        except DomainError as error:
            raise DomainError(f"{where}: {error}") from None
    return Domain(tuple(boxes), source=f"bounds:{file.name}")


def _npy_bounds(file: Path) -> list[tuple[FloatArray, FloatArray]]:
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DomainError(f"cannot read as .npy: {error}") from None
    if array.dtype.kind not in "fiu":
        raise DomainError(f"array dtype {array.dtype} is not numeric")
    if array.ndim == 2 and array.shape[0] == 2:
        lower, upper = array[0], array[1]
    elif array.ndim == 2 and array.shape[1] == 2:
        lower, upper = array[:, 0], array[:, 1]
    else:
        raise DomainError(f"array shape {array.shape} is neither (2, n) nor (n, 2)")
    if array.dtype.kind == "f":
        # float16/32/64 values are exact in float64: no rounding.
        return [(lower.astype(np.float64), upper.astype(np.float64))]
    try:
        return [
            _round_outward([Fraction(int(v)) for v in lower], [Fraction(int(v)) for v in upper])
        ]
    except ValueError as error:
        raise DomainError(str(error)) from None


def _json_bounds(file: Path) -> list[tuple[FloatArray, FloatArray]]:
    try:
        data = json.loads(
            file.read_text(encoding="utf-8"),
            parse_float=Fraction,
            parse_int=Fraction,
            parse_constant=_reject_json_constant,
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DomainError(f"cannot read as JSON: {error}") from None
    if isinstance(data, dict) and "boxes" in data:
        entries = data["boxes"]
        if not isinstance(entries, list) or not entries:
            raise DomainError("'boxes' must be a non-empty list")
    elif isinstance(data, dict) and "lower" in data and "upper" in data:
        entries = [data]
    else:
        raise DomainError("expected {\"lower\": [...], \"upper\": [...]} or {\"boxes\": [...]}")
    pairs = []
    for k, entry in enumerate(entries):
        where = f"box {k}" if len(entries) > 1 else "bounds"
        if not isinstance(entry, dict):
            raise DomainError(f"{where} must be an object with 'lower' and 'upper'")
        lower = _json_values(entry.get("lower"), f"{where} lower")
        upper = _json_values(entry.get("upper"), f"{where} upper")
        if len(lower) != len(upper):
            raise DomainError(f"{where}: lower has {len(lower)} values but upper has {len(upper)}")
        try:
            pairs.append(_round_outward(lower, upper))
        except ValueError as error:
            raise DomainError(f"{where}: {error}") from None
    return pairs


def _reject_json_constant(name: str) -> Fraction:
    raise DomainError(f"constant {name} is not a finite number")


def _json_values(values: Any, where: str) -> list[Fraction]:
    if not isinstance(values, list) or not values:
        raise DomainError(f"{where} must be a non-empty list of numbers")
    exact = []
    for i, value in enumerate(values):
        if isinstance(value, Fraction):
            exact.append(value)
        elif isinstance(value, str):
            try:
                exact.append(parse_decimal(value))
            except ValueError as error:
                raise DomainError(f"{where}[{i}]: {error}") from None
        else:
            raise DomainError(f"{where}[{i}] is not a number")
    return exact


# ---------------------------------------------------------------------------------------------
# VNN-LIB
#
# Only input constraints define the domain. An assertion is read as a formula over atoms; an
# atom mentioning no input X_i (an output constraint) is read as `true`. Dropping those atoms
# can only enlarge the set of inputs described, so the domain contains every input that the
# file's constraints allow (the projection onto X of the constraint set): stability proved on
# it holds on the file's inputs. An `or` whose disjunct has no input atom is therefore `true`
# over the inputs, and a disjunct mixing X and Y atoms contributes its X atoms as one box.
# Strict comparisons (<, >) are read as <=, >= (the closure: again a superset).
# Supported input atoms: (op X_i c) and (op c X_i) with op in <=, >=, <, >, = and c a decimal
# constant or (- c). Anything else mentioning an input (X_i relating to another variable,
# arithmetic over inputs, not, =>) is refused with a VnnlibError rather than approximated.

_MAX_BOXES = 10_000
_INPUT_NAME = re.compile(r"X_(\d+)")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_IGNORED_COMMANDS = frozenset(
    {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit", "declare-fun"}
)
_UPPER_OPS = frozenset({"<=", "<"})
_LOWER_OPS = frozenset({">=", ">"})
_COMPARISONS = _UPPER_OPS | _LOWER_OPS | {"="}


@dataclasses.dataclass(frozen=True)
class _Symbol:
    text: str
    line: int


@dataclasses.dataclass(frozen=True)
class _Parens:
    items: tuple[_Sexp, ...]
    line: int


_Sexp = _Symbol | _Parens


@dataclasses.dataclass(frozen=True)
class _Bound:
    """One atom's bound on input `index`: x_index >= value (lower) or <= value (upper)."""

    index: int
    side: Literal["lower", "upper"]
    value: Fraction
    text: str
    line: int


# A formula over the inputs in disjunctive normal form: a list of conjunctions of bounds.
_Dnf = list[tuple[_Bound, ...]]


class _Vnnlib:
    """Parsing state of one file: its name for messages and the declared inputs."""

    def __init__(self, file: Path, input_size: int | None) -> None:
        self.file = file
        self.input_size = input_size
        self.declared: dict[int, int] = {}

    def error(self, line: int | None, message: str) -> VnnlibError:
        where = f"{self.file}:{line}" if line is not None else f"{self.file}"
        return VnnlibError(f"{where}: {message}")


def parse_vnnlib(path: str | Path, input_size: int | None = None) -> Domain:
    """The input domain of a VNN-LIB file: the union of the boxes its X constraints describe.

    `input_size` (the network's) is checked against the declared inputs when given. Every
    bound is parsed exactly and rounded outward (see the module docstring); several bounds on
    one input are intersected (the tightest wins, compared exactly). Errors raise
    `VnnlibError` with one line "FILE:LINE: message" naming the input where there is one.
    """
    file = Path(path)
    state = _Vnnlib(file, input_size)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VnnlibError(f"{file}: cannot read: {error}") from None
    commands = _parse_sexps(text, state)
    _collect_declarations(commands, state)
    size = _input_count(state)
    assertions = []
    for command in commands:
        if _head(command) == "assert":
            if len(command.items) != 2:
                raise state.error(command.line, "expected (assert FORMULA)")
            assertions.append(_dnf(command.items[1], state))
    terms = _conjoin(assertions, state, line=None)
    if not terms:
        raise state.error(None, "the input constraints are unsatisfiable (an empty 'or')")
    boxes = tuple(_term_box(term, k, len(terms), size, state) for k, term in enumerate(terms))
    return Domain(boxes, source=f"vnnlib:{file.name}")


def _parse_sexps(text: str, state: _Vnnlib) -> list[_Parens]:
    stack: list[list[_Sexp]] = [[]]
    opened: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        code = line.split(";", 1)[0]
        for token in _TOKEN.findall(code):
            if token == "(":
                stack.append([])
                opened.append(line_number)
            elif token == ")":
                if not opened:
                    raise state.error(line_number, "unbalanced parentheses: unexpected ')'")
                items = stack.pop()
                stack[-1].append(_Parens(tuple(items), opened.pop()))
            else:
                stack[-1].append(_Symbol(token, line_number))
    if opened:
        raise state.error(opened[-1], "unbalanced parentheses: '(' is never closed")
    commands = []
    for item in stack[0]:
        if not isinstance(item, _Parens) or not item.items:
            raise state.error(item.line, "expected a command such as (assert ...)")
        commands.append(item)
    return commands


def _head(node: _Parens) -> str | None:
    first = node.items[0] if node.items else None
    return first.text if isinstance(first, _Symbol) else None


def _collect_declarations(commands: list[_Parens], state: _Vnnlib) -> None:
    for command in commands:
        head = _head(command)
        if head == "declare-const":
            name = command.items[1] if len(command.items) == 3 else None
            if not isinstance(name, _Symbol):
                raise state.error(command.line, "expected (declare-const NAME Real)")
            match = _INPUT_NAME.fullmatch(name.text)
            if match is None:
                continue
            index = int(match.group(1))
            sort = command.items[2]
            if not (isinstance(sort, _Symbol) and sort.text == "Real"):
                raise state.error(command.line, f"input {name.text} must be declared Real")
            if index in state.declared:
                raise state.error(command.line, f"input {name.text} is declared twice")
            _check_index(index, command.line, state)
            state.declared[index] = command.line
        elif head not in _IGNORED_COMMANDS and head != "assert":
            raise state.error(command.line, f"unsupported command '{head}'")


def _check_index(index: int, line: int, state: _Vnnlib) -> None:
    if state.input_size is not None and index >= state.input_size:
        raise state.error(
            line,
            f"input X_{index}: index >= network input size {state.input_size}",
        )


def _input_count(state: _Vnnlib) -> int:
    if not state.declared:
        raise state.error(None, "declares no inputs (declare-const X_i Real)")
    count = max(state.declared) + 1
    missing = sorted(set(range(count)) - set(state.declared))
    if missing:
        raise state.error(
            state.declared[count - 1],
            f"input X_{count - 1} is declared but X_{missing[0]} is not",
        )
    if state.input_size is not None and count != state.input_size:
        raise state.error(
            state.declared[count - 1],
            f"declares {count} inputs X_0..X_{count - 1} but the network has "
            f"{state.input_size} inputs",
        )
    return count


def _mentions_input(node: _Sexp) -> bool:
    if isinstance(node, _Symbol):
        return _INPUT_NAME.fullmatch(node.text) is not None
    return any(_mentions_input(item) for item in node.items)


def _dnf(node: _Sexp, state: _Vnnlib) -> _Dnf:
    """The formula's input constraints as a DNF; a formula without inputs is `true` ([()])."""
    if not _mentions_input(node):
        return [()]
    if isinstance(node, _Symbol):
        raise state.error(node.line, f"input {node.text} used as a formula")
    head = _head(node)
    if head == "and":
        return _conjoin([_dnf(child, state) for child in node.items[1:]], state, node.line)
    if head == "or":
        disjuncts = [_dnf(child, state) for child in node.items[1:]]
        if any(d == [()] for d in disjuncts):
            return [()]
        return [term for d in disjuncts for term in d]
    if head in _COMPARISONS:
        return [_bound_atom(node, state)]
    raise state.error(
        node.line,
        f"unsupported constraint '{head}' on inputs (supported: and, or, <=, >=, <, >, =)",
    )


def _conjoin(dnfs: list[_Dnf], state: _Vnnlib, line: int | None) -> _Dnf:
    """The DNF of a conjunction: single-term conjuncts join every term (linear time)."""
    common = tuple(bound for d in dnfs if len(d) == 1 for bound in d[0])
    terms: _Dnf = [common]
    for d in dnfs:
        if len(d) == 1:
            continue
        if len(terms) * len(d) > _MAX_BOXES:
            raise state.error(line, f"the input constraints expand to more than {_MAX_BOXES} boxes")
        terms = [term + extra for term in terms for extra in d]
    return terms


def _bound_atom(node: _Parens, state: _Vnnlib) -> tuple[_Bound, ...]:
    op = _head(node)
    if len(node.items) != 3:
        raise state.error(node.line, f"'{op}' needs two arguments")
    left, right = node.items[1], node.items[2]
    left_index, right_index = _input_index(left), _input_index(right)
    if left_index is not None and right_index is None:
        index, constant, flipped = left_index, right, False
    elif right_index is not None and left_index is None:
        index, constant, flipped = right_index, left, True
    else:
        raise state.error(node.line, "only bounds (op X_i constant) are supported on inputs")
    _check_index(index, node.line, state)
    if index not in state.declared:
        raise state.error(node.line, f"input X_{index} is not declared")
    value, text = _constant(constant, index, state)
    if op == "=":
        sides: tuple[Literal["lower", "upper"], ...] = ("lower", "upper")
    elif (op in _UPPER_OPS) != flipped:
        sides = ("upper",)
    else:
        sides = ("lower",)
    return tuple(_Bound(index, side, value, text, node.line) for side in sides)


def _input_index(node: _Sexp) -> int | None:
    if isinstance(node, _Symbol):
        match = _INPUT_NAME.fullmatch(node.text)
        if match is not None:
            return int(match.group(1))
    return None


def _constant(node: _Sexp, index: int, state: _Vnnlib) -> tuple[Fraction, str]:
    negate = False
    if isinstance(node, _Parens) and len(node.items) == 2 and _head(node) == "-":
        negate, node = True, node.items[1]
    if _mentions_input(node) or not isinstance(node, _Symbol):
        raise state.error(
            node.line, f"input X_{index}: only bounds (op X_i constant) are supported on inputs"
        )
    try:
        value = parse_decimal(node.text)
    except ValueError as error:
        if node.text[:1].isalpha() and node.text.lower() not in _NON_FINITE:
            raise state.error(
                node.line,
                f"input X_{index}: bound '{node.text}' is not a constant "
                "(only bounds (op X_i constant) are supported on inputs)",
            ) from None
        raise state.error(node.line, f"input X_{index}: {error}") from None
    return (-value, f"-{node.text}") if negate else (value, node.text)


def _term_box(term: tuple[_Bound, ...], k: int, count: int, size: int, state: _Vnnlib) -> Box:
    """Intersect one conjunction's bounds exactly, check them, round outward to a float box."""
    lowest: dict[int, _Bound] = {}
    highest: dict[int, _Bound] = {}
    for bound in term:
        if bound.side == "lower":
            kept = lowest.get(bound.index)
            if kept is None or bound.value > kept.value:
                lowest[bound.index] = bound
        else:
            kept = highest.get(bound.index)
            if kept is None or bound.value < kept.value:
                highest[bound.index] = bound
    which = f" (box {k + 1} of {count})" if count > 1 else ""
    for index in range(size):
        for side, chosen in (("lower", lowest), ("upper", highest)):
            if index not in chosen:
                raise state.error(
                    state.declared[index], f"input X_{index} has no {side} bound{which}"
                )
        low, high = lowest[index], highest[index]
        if low.value > high.value:
            raise state.error(
                max(low.line, high.line),
                f"input X_{index}: lower {low.text} > upper {high.text}{which}",
            )
    lower = [_round_bound(lowest[index], "down", which, state) for index in range(size)]
    upper = [_round_bound(highest[index], "up", which, state) for index in range(size)]
    return Box(np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64))


def _round_bound(
    bound: _Bound, direction: Literal["down", "up"], which: str, state: _Vnnlib
) -> float:
    try:
        return round_to_float(bound.value, direction)
    except ValueError as error:
        raise state.error(
            bound.line, f"input X_{bound.index}: {bound.side} {bound.text}: {error}{which}"
        ) from None
