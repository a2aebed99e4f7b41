"""The jobs of a batch: read from a jobs file (CSV, TOML or VNN-COMP `instances.csv`).

Stage: **jobs file** -> jobs -> backend -> one main job each (`verifier.batch.execute`) ->
index. Reading a jobs file opens no network: a missing or broken network file is the job's
failure (recorded in the index), not the batch's. What is wrong with the file itself (an
unknown column, two domains in one row, a bad number, a duplicate job name) raises
`JobsFileError` naming the file and the row.

Formats (paths relative to the jobs file's folder; see `load_jobs`):

- CSV with a header row naming its columns, among `COLUMNS`: `network` (required), at most one
  domain (`vnnlib`, `bounds`, or `lower` and `upper`: one value for every input or one per
  input, separated by commas, semicolons or spaces), and optionally `name`, `time_limit`,
  `seed`. An empty cell is an absent value; without a domain the job runs on [0, 1]^n.
- TOML: an array of tables `[[job]]` with the same keys (`lower`/`upper` a number, a string
  or a list).
- VNN-COMP `instances.csv`: no header, three columns `onnx, vnnlib, timeout` (the timeout in
  seconds is the job's time limit).

A job's name is its output folder `OUT/<name>/`. Given names must be unique and safe as a
folder name; other jobs are named `<network stem>_<vnnlib or bounds stem>` (the network stem
alone for a box), with `-2`, `-3`, ... appended to repeats.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..domain import Domain, box_from_cli, load_bounds_file, parse_bound_values, parse_vnnlib
from ..errors import DomainError, VerifyCompressError

COLUMNS = ("name", "network", "vnnlib", "bounds", "lower", "upper", "time_limit", "seed")
"""The columns (CSV) or keys (TOML) a job row may have."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
"""A job name: one folder name, no path separators, not hidden."""
DEFAULT_LOWER = 0.0
DEFAULT_UPPER = 1.0


class JobsFileError(VerifyCompressError):
    """A jobs file cannot be read as jobs; the message names the file and the row."""


class DomainKind(enum.Enum):
    DEFAULT = "default"
    VNNLIB = "vnnlib"
    BOUNDS = "bounds"
    BOX = "box"


@dataclasses.dataclass(frozen=True)
class DomainSource:
    """Where a job's domain comes from; `load` reads it for a network's input size."""

    kind: DomainKind
    path: Path | None = None
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    def load(self, input_size: int) -> Domain:
        if self.kind is DomainKind.VNNLIB:
            assert self.path is not None
            return parse_vnnlib(self.path, input_size)
        if self.kind is DomainKind.BOUNDS:
            assert self.path is not None
            return load_bounds_file(self.path, input_size)
        if self.kind is DomainKind.BOX:
            return box_from_cli(self.lower, self.upper, input_size)
        return box_from_cli([DEFAULT_LOWER], [DEFAULT_UPPER], input_size)

    def describe(self) -> str:
        """E.g. "vnnlib prop_1.vnnlib", "box [0, 1]", "[0, 1]^n (default)"."""
        if self.path is not None:
            return f"{self.kind.value} {self.path.name}"
        if self.kind is DomainKind.BOX:
            return f"box [{_values(self.lower)}, {_values(self.upper)}]"
        return f"[{DEFAULT_LOWER:g}, {DEFAULT_UPPER:g}]^n (default)"


def _values(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:3])
    return shown if len(values) <= 3 else f"({shown}, ... {len(values)} values)"


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One job of a batch: the main job on `network` and `domain`, written to `OUT/<name>/`."""

    name: str
    network: Path
    domain: DomainSource
    time_limit: float
    seed: int
    origin: str
    """Where the job was given, for messages: "batch/jobs.csv row 3"."""


def load_jobs(path: Path, time_limit: float, seed: int) -> list[JobSpec]:
    """The jobs of the jobs file `path` (`.toml`, else CSV: a header row, or no header in the
    `instances.csv` layout). `time_limit` and `seed` are the defaults of rows without them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobsFileError(f"{path}: no such jobs file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise JobsFileError(f"{path}: cannot be read ({error})") from None
    rows = _toml_rows(path, text) if path.suffix.lower() == ".toml" else _csv_rows(path, text)
    if not rows:
        raise JobsFileError(f"{path}: holds no jobs")
    specs = [_spec(path, origin, row, time_limit, seed) for origin, row in rows]
    return _named(specs)


Row = Mapping[str, Any]


def _toml_rows(path: Path, text: str) -> list[tuple[str, Row]]:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        raise JobsFileError(f"{path}: reading TOML needs Python 3.11 or later") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise JobsFileError(f"{path}: not valid TOML ({error})") from None
    extra = sorted(set(document) - {"job"})
    if extra:
        raise JobsFileError(f"{path}: unknown top-level key {extra[0]!r}; jobs are tables [[job]]")
    jobs = document.get("job", [])
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise JobsFileError(f"{path}: 'job' must be an array of tables [[job]]")
    return [(f"{path} job {k + 1}", job) for k, job in enumerate(jobs)]


def _csv_rows(path: Path, text: str) -> list[tuple[str, Row]]:
    lines = [
        (number, cells)
        for number, cells in enumerate(csv.reader(text.splitlines()), start=1)
        if any(cell.strip() for cell in cells) and not cells[0].lstrip().startswith("#")
    ]
    if not lines:
        return []
    first = [cell.strip() for cell in lines[0][1]]
    if "network" in (cell.lower() for cell in first):
        return _headed_rows(path, first, lines[1:])
    if len(first) == 3 and first[0].lower().endswith((".onnx", ".onnx.gz")):
        return _instances_rows(path, lines)
    raise JobsFileError(
        f"{path}: row {lines[0][0]}: expected a header naming the columns (network, vnnlib, "
        "bounds, lower, upper, name, time_limit, seed) or an instances.csv row "
        "(onnx, vnnlib, timeout)"
    )


def _headed_rows(
    path: Path, header: list[str], lines: list[tuple[int, list[str]]]
) -> list[tuple[str, Row]]:
    columns = [cell.lower() for cell in header]
    for column in columns:
        if column not in COLUMNS:
            raise JobsFileError(
                f"{path}: row 1: unknown column {column!r}; columns: {', '.join(COLUMNS)}"
            )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise JobsFileError(f"{path}: row 1: column {repeated[0]!r} appears twice")
    rows: list[tuple[str, Row]] = []
    for number, cells in lines:
        if len(cells) > len(columns):
            raise JobsFileError(
                f"{path}: row {number}: {len(cells)} cells, the header names {len(columns)}"
            )
        row = {c: v.strip() for c, v in zip(columns, cells, strict=False) if v.strip()}
        rows.append((f"{path} row {number}", row))
    return rows


def _instances_rows(path: Path, lines: list[tuple[int, list[str]]]) -> list[tuple[str, Row]]:
    rows: list[tuple[str, Row]] = []
    for number, cells in lines:
        values = [cell.strip() for cell in cells]
        if len(values) != 3 or not all(values):
            raise JobsFileError(
                f"{path}: row {number}: an instances.csv row has three cells (onnx, vnnlib, "
                f"timeout), got {len(values)}"
            )
        onnx_file, vnnlib, timeout = values
        rows.append(
            (
                f"{path} row {number}",
                {"network": onnx_file, "vnnlib": vnnlib, "time_limit": timeout},
            )
        )
    return rows


def _spec(path: Path, origin: str, row: Row, time_limit: float, seed: int) -> JobSpec:
    where = origin
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise JobsFileError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(COLUMNS)}")
    network = row.get("network")
    if not isinstance(network, str) or not network:
        raise JobsFileError(f"{where}: no network given")
    base = path.parent
    return JobSpec(
        name=_given_name(where, row.get("name")),
        network=base / network,
        domain=_domain(where, base, row),
        time_limit=_time_limit(where, row.get("time_limit", time_limit)),
        seed=_seed(where, row.get("seed", seed)),
        origin=where,
    )


def _given_name(where: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise JobsFileError(
            f"{where}: name {value!r} is not a folder name (letters, digits, '_', '-', '.', "
            "'+', '=', not starting with '.' or '-')"
        )
    return value


def _domain(where: str, base: Path, row: Row) -> DomainSource:
    given = [key for key in ("vnnlib", "bounds") if key in row]
    box = [key for key in ("lower", "upper") if key in row]
    if box:
        given.append("lower/upper")
    if len(given) > 1:
        raise JobsFileError(f"{where}: give only one domain, got {' and '.join(given)}")
    for key, kind in (("vnnlib", DomainKind.VNNLIB), ("bounds", DomainKind.BOUNDS)):
        if key in row:
            value = row[key]
            if not isinstance(value, str) or not value:
                raise JobsFileError(f"{where}: {key} must be a file path, got {value!r}")
            return DomainSource(kind, path=base / value)
    if not box:
        return DomainSource(DomainKind.DEFAULT)
    if len(box) == 1:
        missing = "upper" if box == ["lower"] else "lower"
        raise JobsFileError(f"{where}: {missing} is missing: give both lower and upper")
    try:
        lower = parse_bound_values("lower", _bound_texts(where, "lower", row["lower"]), "down")
        upper = parse_bound_values("upper", _bound_texts(where, "upper", row["upper"]), "up")
    except DomainError as error:
        raise JobsFileError(f"{where}: {error}") from None
    if len(lower) == len(upper) and any(lo > hi for lo, hi in zip(lower, upper, strict=True)):
        raise JobsFileError(f"{where}: a lower bound exceeds its upper bound")
    return DomainSource(DomainKind.BOX, lower=tuple(lower), upper=tuple(upper))


def _bound_texts(where: str, key: str, value: object) -> list[str]:
    """A bound cell or TOML value as the texts `parse_bound_values` reads."""
    if isinstance(value, bool):
        raise JobsFileError(f"{where}: {key} must be numbers, got {value!r}")
    if isinstance(value, (int, float)):
        return [repr(value)]
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,;\s]+", value) if p]
        if parts:
            return parts
    if isinstance(value, list) and value:
        texts = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise JobsFileError(f"{where}: {key} must be numbers, got {item!r}")
            texts.append(item if isinstance(item, str) else repr(item))
        return texts
    raise JobsFileError(f"{where}: {key} must be a number or a list of numbers, got {value!r}")


def _time_limit(where: str, value: object) -> float:
    seconds = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise JobsFileError(
            f"{where}: time limit must be a positive number of seconds, got {value!r}"
        )
    return seconds


def _seed(where: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise JobsFileError(f"{where}: seed must be an integer, got {value!r}")


def default_name(spec: JobSpec) -> str:
    """`<network stem>_<vnnlib or bounds stem>`, or the network stem for a box domain; any
    character not allowed in a job name becomes '_'."""
    stem = _stem(spec.network)
    if spec.domain.path is not None:
        stem = f"{stem}_{_stem(spec.domain.path)}"
    cleaned = re.sub(r"[^A-Za-z0-9_.+=-]", "_", stem).lstrip(".-")
    return cleaned or "job"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".onnx", ".vnnlib", ".npy", ".json"):
        name = name.removesuffix(suffix)
    return name


def _named(specs: list[JobSpec]) -> list[JobSpec]:
    """Given names checked unique (case-insensitively: folders); the others derived."""
    taken: dict[str, str] = {}
    for spec in specs:
        if spec.name:
            key = spec.name.lower()
            if key in taken:
                raise JobsFileError(
                    f"{spec.origin}: job name {spec.name!r} is already used by {taken[key]}"
                )
            taken[key] = spec.origin
    named = []
    for spec in specs:
        if spec.name:
            named.append(spec)
            continue
        base = default_name(spec)
        name, count = base, 1
        while name.lower() in taken:
            count += 1
            name = f"{base}-{count}"
        taken[name.lower()] = spec.origin
        named.append(dataclasses.replace(spec, name=name))
    return named
