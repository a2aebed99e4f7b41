"""The HTML report: a human view of a certificate, written next to it as `report.html`.

Stage: ... -> equivalence -> certificate and **report**.

`render_report(certificate)` is a pure function of the certificate JSON document. It returns
one self-contained HTML file: inline CSS and inline SVG, no scripts, no external fetches, so
it opens offline and can be archived with the certificate. The report proves nothing; the
certificate and `verify-compress check` do. It shows: the ONNX files by name and SHA-256, the
domain (bounds as short decimals, `bound_text`), the per-layer stability chart, the counts
before and after compression, the time per stage, the equivalence result with its obligations,
the rounding bound, the exact-evaluation and onnxruntime comparisons, the amount of evidence,
and how to re-check; given the `deployment` figures (`verifier.deployment`, measured by the
batch mode), also what a deployment gains: file sizes, onnxruntime latency and throughput.

Every string taken from the certificate is escaped with `html.escape`; the renderer tolerates
missing optional fields (it shows "-"), so a report can be drawn for a partial document.
"""

from __future__ import annotations

import decimal
import html
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import PurePath
from typing import Any

STATUSES: tuple[tuple[str, str, str], ...] = (
    # (certificate key, label, colour)
    ("stably_active", "stably active", "#2e7d32"),
    ("stably_inactive", "stably inactive", "#78909c"),
    ("unstable", "unstable", "#f9a825"),
    ("unknown", "unknown", "#c62828"),
)
"""The four neuron statuses in chart order."""

TOTAL_TIMING = "total"
"""The timings key holding the wall-clock time of the whole run (not a stage)."""

DOMAIN_DETAIL_ROWS = 5000
"""Most rows of the collapsed per-input domain table (beyond this the table is cut short)."""

_CSS = """
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.5rem 1rem; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1a1a1a; background: #fafafa; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
.fields td { text-align: left; }
td code, td.hash { word-break: normal; white-space: nowrap; }
td.hash { font-size: 0.8em; }
thead th, tfoot td { background: #f0f0f0; }
code, .hash { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace;
              font-size: 0.9em; word-break: break-all; }
pre { background: #272822; color: #f8f8f2; padding: 0.75rem; overflow-x: auto; }
.muted { color: #666; }
.verdict-ok { color: #2e7d32; font-weight: bold; }
.verdict-bad { color: #c62828; font-weight: bold; }
details { margin: 0.5rem 0; }
summary { cursor: pointer; }
h3 { font-size: 1rem; margin-top: 1.2rem; }
svg text { font-family: system-ui, sans-serif; font-size: 12px; }
"""


def render_report(
    certificate: Mapping[str, Any], deployment: Mapping[str, Any] | None = None
) -> str:
    """The report for `certificate` (a certificate JSON document) as one HTML page, with a
    "Deployment" section when `deployment` (see `verifier.deployment`) is given."""
    network_name = _network_name(certificate)
    sections = [
        _header(certificate, network_name),
        _semantics_warning(_mapping(certificate.get("network"))),
        _files_section(certificate),
        _domain_section(
            _mapping(certificate.get("domain")), _mapping(certificate.get("proofs"))
        ),
        _stability_section(_summary(certificate)),
        _counts_section(_summary(certificate)),
        _timings_section(_mapping(certificate.get("timings"))),
        _equivalence_section(_mapping(certificate.get("compression"))),
        _deployment_section(deployment),
        _evidence_section(certificate),
        _recheck_section(certificate),
    ]
    title = f"verify-compress report: {network_name}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            *sections,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Field access (tolerant of missing parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _summary(certificate: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(certificate.get("summary"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: object) -> str:
    """A scalar for display; "-" for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _network_name(certificate: Mapping[str, Any]) -> str:
    path = _mapping(certificate.get("network")).get("path")
    return PurePath(path).name if isinstance(path, str) and path else "network"


# ---------------------------------------------------------------------------------------------
# Sections


def _header(certificate: Mapping[str, Any], network_name: str) -> str:
    solvers = _mapping(certificate.get("solvers"))
    solver_text = ", ".join(f"{name} {version}" for name, version in solvers.items()) or "-"
    verdict = _equivalence_verdict(_mapping(certificate.get("compression")))
    return "\n".join(
        [
            f"<h1>verify-compress report: {_e(network_name)}</h1>",
            f'<p class="muted">certificate format {_e(_text(certificate.get("format")))} '
            f"version {_e(_text(certificate.get('format_version')))}; "
            f"written by verify-compress {_e(_text(certificate.get('tool_version')))}; "
            f"solvers: {_e(solver_text)}</p>",
            f"<p>{verdict}</p>",
            "<p>This page summarises the certificate; it is not itself evidence. The "
            "certificate is checked by <code>verify-compress check</code> (see the end of "
            "this page).</p>",
        ]
    )


def _files_section(certificate: Mapping[str, Any]) -> str:
    """Each ONNX file by name and SHA-256 (the recorded path is relative to the certificate's
    folder, which says little on this page; the hash is what identifies the file)."""
    rows = []
    for role, key in (("original network", "network"), ("compressed network", "compressed")):
        entry = _mapping(certificate.get(key))
        path = entry.get("path")
        name = PurePath(path).name if isinstance(path, str) and path else "-"
        rows.append(
            f'<tr><td>{_e(role)}</td><td class="text"><code>{_e(name)}</code></td>'
            f'<td class="hash text">{_e(_text(entry.get("sha256")))}</td></tr>'
        )
    return "\n".join(
        [
            "<h2>Files</h2>",
            '<table><thead><tr><th>role</th><th class="text">file</th>'
            '<th class="text">SHA-256</th></tr></thead>',
            "<tbody>",
            *rows,
            "</tbody></table>",
            '<p class="muted">A file is identified by its SHA-256. <code>verify-compress '
            "check</code> looks for the original network at the path the certificate records "
            "(relative to its folder), then beside the certificate, or takes it from "
            "<code>--network</code>.</p>",
        ]
    )


def _domain_section(domain: Mapping[str, Any], subdomains: Mapping[str, Any]) -> str:
    boxes = [_mapping(box) for box in _sequence(domain.get("boxes"))]
    inputs = len(_sequence(boxes[0].get("lower"))) if boxes else 0
    parts = [
        "<h2>Input domain</h2>",
        f"<p>Source: <code>{_e(_text(domain.get('source')))}</code>; "
        f"{len(boxes)} box{'es' if len(boxes) != 1 else ''} over {inputs} inputs. "
        "A neuron counts as stable only if it is stable, in the same phase, on every box.</p>",
    ]
    if not boxes:
        return "\n".join(parts)
    parts.append(
        "<table><thead><tr><th>box</th><th>lower (min)</th><th>lower (max)</th>"
        "<th>upper (min)</th><th>upper (max)</th></tr></thead><tbody>"
    )
    for k, box in enumerate(boxes):
        lower, upper = _bounds(box.get("lower"), "down"), _bounds(box.get("upper"), "up")
        parts.append(f"<tr><td>{k}</td>{_range_cells(lower)}{_range_cells(upper)}</tr>")
    parts.append("</tbody></table>")
    parts.append(_domain_details(boxes))
    parts.append(_subbox_note(subdomains, len(boxes)))
    return "\n".join(parts)


def _subbox_note(subdomains: Mapping[str, Any], boxes: int) -> str:
    """How many sub-boxes the proofs were made on, when the domain boxes were bisected."""
    count = subdomains.get("sub_boxes")
    if not isinstance(count, int) or count <= boxes:
        return ""
    return (
        f"<p>Proofs were made on {count} sub-boxes, obtained by bisecting the domain boxes "
        "where a claim needed a smaller box; the certificate's <code>proofs.trees</code> "
        "holds the bisection trees (every cut strictly inside its interval, so the halves "
        "cover the box). Bounds proved on a box also hold on the boxes inside it.</p>"
    )


def _bounds(values: object, direction: str) -> list[tuple[float, str]]:
    """Each bound as (float, short text naming that float); NaN for unreadable ones.

    `direction` is how the tool rounds a decimal to this kind of bound: "down" (lower bounds)
    or "up" (upper bounds). See `bound_text`.
    """
    result = []
    for value in _sequence(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            result.append((math.nan, str(value)))
            continue
        result.append((number, bound_text(number, direction)))
    return result


def bound_text(value: float, direction: str) -> str:
    """The shortest decimal naming the float64 bound `value`: Python's `repr` (the shortest
    decimal that reads back to `value` to nearest), or, when shorter, the shortest decimal
    that the tool's outward rounding turns into `value` (`direction` "down" for a lower
    bound: a decimal in [value, next float up); "up" for an upper bound: in (next float down,
    value]). The second recovers a decimal as typed in a VNN-LIB file: `X_0 <= -0.298552812`
    is the float -0.29855281199999995 (the next float up), shown as -0.298552812. Either way
    the text names exactly one float, and a directed decimal lies inside the float box (a
    result on the float box holds on the box shown)."""
    nearest = repr(value)
    if not math.isfinite(value):
        return nearest
    directed = _directed_decimal(value, direction)
    if directed is not None and len(directed) < len(nearest):
        return directed
    return "0" if value == 0 else _trim(nearest)


def _trim(text: str) -> str:
    """`repr` of an integral float without its ".0" ("1.0" -> "1")."""
    return text[:-2] if text.endswith(".0") else text


def _directed_decimal(value: float, direction: str) -> str | None:
    """The decimal with fewest significant digits in [value, next float up) ("down") or
    (next float down, value] ("up"); None when there is none below 17 digits, or when the
    next float is infinite (a decimal beyond the float64 range is refused, not rounded)."""
    exact = decimal.Decimal(value)
    neighbour = math.nextafter(value, math.inf if direction == "down" else -math.inf)
    if not math.isfinite(neighbour):
        return None
    limit = decimal.Decimal(neighbour)
    rounding = decimal.ROUND_CEILING if direction == "down" else decimal.ROUND_FLOOR
    for digits in range(1, 17):
        candidate = decimal.Context(prec=digits, rounding=rounding).plus(exact)
        inside = candidate < limit if direction == "down" else candidate > limit
        if inside:
            return _decimal_text(candidate)
    return None


def _decimal_text(number: decimal.Decimal) -> str:
    """A decimal as plain digits ("-0.298552812", "25"), or in exponent form when very large
    or very small ("1.5e-07", as `repr` writes floats)."""
    number = number.normalize()
    if number == 0:
        return "0"
    if -5 <= number.adjusted() < 16:
        return format(number, "f")
    mantissa, exponent = format(number, "E").split("E")
    return f"{mantissa.lower()}e{int(exponent):+03d}"


def _range_cells(bounds: Sequence[tuple[float, str]]) -> str:
    readable = [b for b in bounds if not math.isnan(b[0])]
    if not readable:
        return "<td>-</td><td>-</td>"
    low = min(readable, key=lambda b: b[0])[1]
    high = max(readable, key=lambda b: b[0])[1]
    return f"<td>{_e(low)}</td><td>{_e(high)}</td>"


def _domain_details(boxes: Sequence[Mapping[str, Any]]) -> str:
    """A collapsed per-input table; consecutive inputs with equal bounds share one row."""
    rows: list[str] = []
    truncated = False
    for k, box in enumerate(boxes):
        lower, upper = _bounds(box.get("lower"), "down"), _bounds(box.get("upper"), "up")
        for first, last, low, high in _runs(lower, upper):
            if len(rows) >= DOMAIN_DETAIL_ROWS:
                truncated = True
                break
            inputs = str(first) if first == last else f"{first}-{last}"
            rows.append(
                f"<tr><td>{k}</td><td>{_e(inputs)}</td><td>{_e(low)}</td><td>{_e(high)}</td></tr>"
            )
    note = (
        f'<p class="muted">Only the first {DOMAIN_DETAIL_ROWS} rows are shown; the '
        "certificate holds every bound.</p>"
        if truncated
        else ""
    )
    return "\n".join(
        [
            "<details><summary>Bounds of every input</summary>",
            '<p class="muted">Each bound is a float64, shown as the shortest decimal that '
            "names it: read to the nearest float, or rounded the way the tool rounds a typed "
            "decimal (lower bounds down, upper bounds up), so a bound typed as a decimal shows "
            "as typed. The certificate stores the exact value of every float.</p>",
            "<table><thead><tr><th>box</th><th>inputs</th><th>lower</th><th>upper</th></tr>"
            "</thead><tbody>",
            *rows,
            "</tbody></table>",
            note,
            "</details>",
        ]
    )


def _runs(
    lower: Sequence[tuple[float, str]], upper: Sequence[tuple[float, str]]
) -> list[tuple[int, int, str, str]]:
    """Maximal runs of consecutive inputs with the same (lower, upper) text."""
    runs: list[tuple[int, int, str, str]] = []
    for i, ((_, low), (_, high)) in enumerate(zip(lower, upper, strict=False)):
        if runs and runs[-1][1] == i - 1 and runs[-1][2:] == (low, high):
            runs[-1] = (runs[-1][0], i, low, high)
        else:
            runs.append((i, i, low, high))
    return runs


def _per_layer(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [_mapping(layer) for layer in _sequence(summary.get("per_layer"))]


def _stability_section(summary: Mapping[str, Any]) -> str:
    layers = _per_layer(summary)
    totals = _mapping(summary.get("totals"))
    legend = "".join(
        f'<li><span style="color:{colour}">&#9632;</span> {_e(label)}: {_int(totals.get(key))}</li>'
        for key, label, colour in STATUSES
    )
    return "\n".join(
        [
            "<h2>Neuron stability per layer</h2>",
            _stability_chart(layers),
            f'<ul style="list-style:none;padding:0">{legend}</ul>',
            '<p class="muted">Stably inactive neurons are removed, stably active ones folded '
            "into the next layer; unstable neurons (each with a witness input checked exactly) "
            "and unknown neurons (no proof within the time limit) are kept as they are.</p>",
            f"<p>Z3 independently confirmed {_int(totals.get('smt_confirmed'))} stable neurons "
            "(the stability obligations in smt/).</p>",
        ]
    )


def _stability_chart(layers: Sequence[Mapping[str, Any]]) -> str:
    """Stacked horizontal bars, one per hidden layer, lengths proportional to neuron counts."""
    label_width, bar_width, row_height, gap = 110, 560, 24, 8
    width = label_width + bar_width + 60
    height = max(1, len(layers)) * (row_height + gap) + gap
    widest = max((_int(layer.get("neurons")) for layer in layers), default=0) or 1
    parts = [
        # No xmlns: inline SVG in HTML5 needs none, and the page names no URL at all.
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        'aria-label="stacked bars of neuron statuses per layer">'
    ]
    for row, layer in enumerate(layers):
        y = gap + row * (row_height + gap)
        neurons = _int(layer.get("neurons"))
        parts.append(
            f'<text x="0" y="{y + row_height * 0.7:.1f}">layer {_e(_text(layer.get("layer")))}'
            "</text>"
        )
        x = float(label_width)
        for key, label, colour in STATUSES:
            count = _int(layer.get(key))
            if count <= 0:
                continue
            length = bar_width * count / widest
            parts.append(
                f'<rect x="{x:.2f}" y="{y}" width="{length:.2f}" height="{row_height}" '
                f'fill="{colour}"><title>layer {_e(_text(layer.get("layer")))}: {count} '
                f"{_e(label)}</title></rect>"
            )
            if length >= 8 * len(str(count)) + 6:
                parts.append(
                    f'<text x="{x + length / 2:.2f}" y="{y + row_height * 0.7:.1f}" '
                    f'text-anchor="middle" fill="#fff">{count}</text>'
                )
            x += length
        parts.append(f'<text x="{x + 6:.2f}" y="{y + row_height * 0.7:.1f}">{neurons}</text>')
    parts.append("</svg>")
    return "".join(parts)


_LAYER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("neurons", "neurons"),
    ("stably_active", "stably active"),
    ("stably_inactive", "stably inactive"),
    ("unstable", "unstable"),
    ("unknown", "unknown"),
    ("connections_before", "connections before"),
    ("connections_after", "connections after"),
)

_TOTAL_ROWS: tuple[tuple[str, str, str], ...] = (
    # (label, key before, key after)
    ("neurons", "neurons_before", "neurons_after"),
    ("layers", "layers_before", "layers_after"),
    ("connections (nonzero weights)", "connections_before", "connections_after"),
)


def _counts_section(summary: Mapping[str, Any]) -> str:
    layers = _per_layer(summary)
    totals = _mapping(summary.get("totals"))
    head = "".join(f"<th>{_e(label)}</th>" for _, label in _LAYER_COLUMNS)
    body = [
        f"<tr><td>{_e(_text(layer.get('layer')))}</td>"
        + "".join(f"<td>{_e(_text(layer.get(key)))}</td>" for key, _ in _LAYER_COLUMNS)
        + "</tr>"
        for layer in layers
    ]
    # The per-layer rows are the ReLU layers; the totals' remaining connections are those of
    # the final affine layer, shown as its own row so that the columns add up.
    output = {
        key: _int(totals.get(key)) - sum(_int(layer.get(key)) for layer in layers)
        for key in ("connections_before", "connections_after")
    }
    if any(output.values()):
        body.append(
            "<tr><td>output (no ReLU)</td>"
            + "<td>-</td>" * (len(_LAYER_COLUMNS) - 2)
            + "".join(f"<td>{count}</td>" for count in output.values())
            + "</tr>"
        )
    foot = "".join(
        f"<td>{sum(_int(layer.get(key)) for layer in layers) + output.get(key, 0)}</td>"
        for key, _ in _LAYER_COLUMNS
    )
    before_after = [
        f"<tr><td>{_e(label)}</td><td>{_e(_text(totals.get(before)))}</td>"
        f"<td>{_e(_text(totals.get(after)))}</td></tr>"
        for label, before, after in _TOTAL_ROWS
    ]
    removed = totals.get("percent_connections_removed")
    removed_text = f"{removed:.2f}%" if isinstance(removed, (int, float)) else "-"
    return "\n".join(
        [
            "<h2>Counts</h2>",
            f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>",
            *body,
            f"</tbody><tfoot><tr><td>total</td>{foot}</tr></tfoot></table>",
            "<table><thead><tr><th></th><th>before</th><th>after</th></tr></thead><tbody>",
            *before_after,
            "</tbody></table>",
            f"<p>Connections removed: <strong>{_e(removed_text)}</strong></p>",
        ]
    )


def _timings_section(timings: Mapping[str, Any]) -> str:
    """One row per stage; the footer is the recorded "total" (wall clock), else the sum."""
    rows = []
    total = 0.0
    for stage, seconds in timings.items():
        if stage == TOTAL_TIMING:
            continue
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            total += float(seconds)
            shown = f"{float(seconds):.2f}"
        else:
            shown = _text(seconds)
        rows.append(f"<tr><td>{_e(stage)}</td><td>{_e(shown)}</td></tr>")
    recorded = timings.get(TOTAL_TIMING)
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        total = float(recorded)
    return "\n".join(
        [
            "<h2>Time per stage</h2>",
            "<table><thead><tr><th>stage</th><th>seconds</th></tr></thead><tbody>",
            *rows,
            f"</tbody><tfoot><tr><td>total</td><td>{total:.2f}</td></tr></tfoot></table>",
        ]
    )


def _equivalence_verdict(compression: Mapping[str, Any]) -> str:
    proved = _mapping(compression.get("equivalence")).get("proved")
    if proved is True:
        return (
            '<span class="verdict-ok">Equivalence proved:</span> the compressed network '
            "computes exactly the original function on the domain (exact real arithmetic)."
        )
    if proved is False:
        return (
            '<span class="verdict-bad">Equivalence NOT proved.</span> Do not use the '
            "compressed network as a replacement for the original."
        )
    return '<span class="muted">No equivalence result recorded.</span>'


def rounded_up(value: Fraction, digits: int = 3) -> str:
    """`value` to `digits` significant digits, rounded toward +infinity (so still an upper
    bound when `value` is one)."""
    context = decimal.Context(prec=digits, rounding=decimal.ROUND_CEILING)
    quotient = context.divide(decimal.Decimal(value.numerator), decimal.Decimal(value.denominator))
    return f"{quotient:g}" if quotient != 0 else "0"


def rounding_bound_text(bound: object, exact_up_to: int = 40, note: bool = True) -> str:
    """The certificate's `rounding_bound` for people: "0 (...exact)", or "at most X" with the
    exact rational when it is at most `exact_up_to` characters long (else, with `note`, a
    pointer to the certificate)."""
    if not isinstance(bound, str):
        return _text(bound)
    try:
        value = Fraction(bound)
    except (ValueError, ZeroDivisionError):
        return bound
    if value == 0:
        return "0 (the exported weights are exact)"
    if len(bound) <= exact_up_to:
        return f"at most {rounded_up(value)} (exactly {bound})"
    pointer = " (the exact rational is in the certificate)" if note else ""
    return f"at most {rounded_up(value)}{pointer}"


def _semantics_warning(network: Mapping[str, Any]) -> str:
    """A float64-rounded fold in the network, said in words (empty when all is exact)."""
    note = network.get("semantics_note")
    if not isinstance(note, str) or not note:
        return ""
    return f'<p class="warning"><strong>Semantics:</strong> {_e(note)}.</p>'


def _equivalence_section(compression: Mapping[str, Any]) -> str:
    equivalence = _mapping(compression.get("equivalence"))
    bound = compression.get("rounding_bound")
    rows = [
        f"<tr><td>{_e(key)}</td><td>{_e(_text(value))}</td></tr>"
        for key, value in equivalence.items()
        if value is None or isinstance(value, (str, int, float, bool))
    ]
    uses = equivalence.get("uses")
    if isinstance(uses, Sequence) and not isinstance(uses, str):
        rows.append(f"<tr><td>stability lemmas used</td><td>{len(uses)}</td></tr>")
    return "\n".join(
        [
            "<h2>Equivalence</h2>",
            f"<p>{_equivalence_verdict(compression)}</p>",
            '<table class="fields"><tbody>',
            *rows,
            "</tbody></table>",
            _obligations_table(equivalence.get("obligations")),
            "<p>Bound on the output deviation caused by storing the compressed weights as "
            "floats (over the whole domain, any output): "
            f"<strong>{_e(rounding_bound_text(bound, exact_up_to=0, note=False))}</strong></p>",
            "<details><summary>exact value</summary>"
            f"<p><code>{_e(_text(bound))}</code></p></details>",
            _empirical_section(_mapping(compression.get("empirical"))),
        ]
    )


def _obligations(value: object) -> list[Mapping[str, Any]]:
    return [_mapping(item) for item in _sequence(value)]


def obligations_count(value: object) -> str:
    """The equivalence obligations as a count with their verdicts, e.g. "3 (3 proved)"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    obligations = _obligations(value)
    if not obligations:
        return "-" if value is None else "0"
    verdicts: dict[str, int] = {}
    for obligation in obligations:
        verdict = _text(obligation.get("verdict"))
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    return f"{len(obligations)} (" + ", ".join(f"{n} {v}" for v, n in verdicts.items()) + ")"


def _obligations_table(value: object) -> str:
    """One row per equivalence obligation: its SMT-LIB2 file, verdict, time and hash."""
    obligations = _obligations(value)
    if not obligations:
        return ""
    rows = []
    for obligation in obligations:
        seconds = obligation.get("seconds")
        shown = f"{float(seconds):.3f}" if isinstance(seconds, (int, float)) else "-"
        verdict = _text(obligation.get("verdict"))
        style = "verdict-ok" if verdict == "proved" else "verdict-bad"
        rows.append(
            f"<tr><td><code>smt/{_e(_text(obligation.get('file')))}</code></td>"
            f'<td class="{style}">{_e(verdict)}</td><td>{_e(shown)}</td>'
            f'<td class="hash text">{_e(_text(obligation.get("sha256")))}</td></tr>'
        )
    return "\n".join(
        [
            "<table><thead><tr><th>obligation (SMT-LIB2 file)</th><th>verdict</th>"
            '<th>seconds</th><th class="text">SHA-256</th></tr></thead><tbody>',
            *rows,
            "</tbody></table>",
        ]
    )


def _difference_text(value: object) -> str:
    """The exact evaluation's largest difference (an exact rational as text): "0", or the
    rational with a rounded-up decimal beside it."""
    if not isinstance(value, str):
        return _text(value)
    try:
        number = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return value
    if number == 0:
        return "0"
    return f"{value} (at most {rounded_up(number)})" if len(value) <= 40 else rounded_up(number)


def _empirical_section(empirical: Mapping[str, Any]) -> str:
    """Both networks evaluated side by side beside the proof: exactly (rational arithmetic) at
    witnesses, corners and random points, and under onnxruntime (float arithmetic)."""
    if not empirical:
        return ""
    rows = []
    if "points" in empirical:
        kinds = ", ".join(
            f"{_int(empirical.get(kind))} {label}"
            for kind, label in (
                ("witnesses", "witnesses"),
                ("corners", "corners"),
                ("random", "random points"),
            )
            if kind in empirical
        )
        skipped = _int(empirical.get("skipped_at_time_limit"))
        points = f"{_int(empirical.get('points'))}" + (f" ({kinds})" if kinds else "")
        if skipped:
            points += f"; {skipped} more skipped at the time limit"
        agree = empirical.get("agree")
        first = empirical.get("first_disagreement")
        rows.append(
            "<tr><td>exact evaluation (rational arithmetic)</td>"
            f"<td>{_e(points)}</td>"
            f"<td>{_e(_difference_text(empirical.get('max_abs_difference')))}</td>"
            f"<td>{_e(_text(agree))}"
            + (f"; first difference at <code>{_e(_text(first))}</code>" if first else "")
            + "</td></tr>"
        )
    runtime = _mapping(empirical.get("onnxruntime"))
    if "max_abs_difference" in runtime:
        difference = runtime.get("max_abs_difference")
        shown = f"{difference:.3g}" if isinstance(difference, (int, float)) else _text(difference)
        rows.append(
            "<tr><td>onnxruntime on both ONNX files (float arithmetic)</td>"
            f"<td>{_e(_text(runtime.get('points')))} random points</td>"
            f"<td>{_e(shown)}</td><td>-</td></tr>"
        )
    elif runtime:
        rows.append(
            "<tr><td>onnxruntime on both ONNX files</td>"
            f'<td colspan="3">not run: {_e(_text(runtime.get("skipped")))}</td></tr>'
        )
    return "\n".join(
        [
            "<h3>Tests beside the proof</h3>",
            "<p>Both networks evaluated at the same domain points. These are tests, not "
            "proofs: the proof above covers every point of the domain.</p>",
            "<table><thead><tr><th>comparison</th><th>points</th>"
            "<th>max |original &minus; compressed|</th><th>agree exactly</th></tr></thead>"
            "<tbody>",
            *rows,
            "</tbody></table>",
            '<p class="muted">onnxruntime computes in each file&#39;s float type, so its '
            "difference can exceed the rounding bound of the weights alone.</p>"
            if "max_abs_difference" in runtime
            else "",
        ]
    )


def _deployment_section(deployment: Mapping[str, Any] | None) -> str:
    """Sizes and onnxruntime speed of both ONNX files (measured after the run; not evidence)."""
    if deployment is None:
        return ""

    def cells(key: str, unit: str, digits: int) -> str:
        values = [_mapping(deployment.get(role)).get(key) for role in ("original", "compressed")]
        shown = [
            f"{v:,.{digits}f} {unit}" if isinstance(v, (int, float)) else "-" for v in values
        ]
        return "".join(f"<td>{_e(text)}</td>" for text in shown)

    def ratio(key: str) -> str:
        value = deployment.get(key)
        return f"{value:g}&times;" if isinstance(value, (int, float)) else "-"

    before, after = deployment.get("original_bytes"), deployment.get("compressed_bytes")
    sizes = "".join(
        f"<td>{_e(f'{v:,} bytes' if isinstance(v, int) else '-')}</td>" for v in (before, after)
    )
    size_ratio = deployment.get("size_ratio")
    rows = [
        f"<tr><td>file size</td>{sizes}<td>"
        + (f"{size_ratio:g} of the original" if isinstance(size_ratio, (int, float)) else "-")
        + "</td></tr>"
    ]
    if "skipped" in deployment:
        note = f"Latency and throughput not measured: {_e(_text(deployment.get('skipped')))}."
    else:
        rows.append(
            f"<tr><td>latency (one input, median)</td>{cells('latency_ms', 'ms', 4)}"
            f"<td>{ratio('latency_speedup')} faster</td></tr>"
        )
        rows.append(
            f"<tr><td>throughput (batch of {_e(_text(deployment.get('batch')))})</td>"
            f"{cells('throughput_per_s', 'inputs/s', 0)}"
            f"<td>{ratio('throughput_speedup')} faster</td></tr>"
        )
        note = (
            f"onnxruntime {_e(_text(deployment.get('onnxruntime')))} on the machine that ran "
            f"the job, {_e(_text(deployment.get('threads')))} thread, the same domain points "
            f"for both files; the median of {_e(_text(deployment.get('repeats')))} timed runs. "
            "Timings depend on the machine and its load; they are not part of the certificate."
        )
    return "\n".join(
        [
            "<h2>Deployment</h2>",
            "<table><thead><tr><th></th><th>original</th><th>compressed</th>"
            "<th>gain</th></tr></thead><tbody>",
            *rows,
            "</tbody></table>",
            f'<p class="muted">{note}</p>',
        ]
    )


def _evidence_section(certificate: Mapping[str, Any]) -> str:
    neurons = [_mapping(n) for n in _sequence(certificate.get("neurons"))]
    unknown = [n for n in neurons if n.get("status") == "unknown"]
    items = [
        ("neuron records", len(neurons)),
        ("case splits (proofs)", len(_mapping(certificate.get("proofs")).get("case_splits", []))),
        ("witness inputs", len(_sequence(certificate.get("witnesses")))),
        (
            "equivalence obligations",
            obligations_count(
                _mapping(_mapping(certificate.get("compression")).get("equivalence")).get(
                    "obligations"
                )
            ),
        ),
    ]
    rows = [f"<tr><td>{_e(label)}</td><td>{_e(count)}</td></tr>" for label, count in items]
    parts = [
        "<h2>Evidence in the certificate</h2>",
        "<table><tbody>",
        *rows,
        "</tbody></table>",
    ]
    if unknown:
        names = ", ".join(f"({_text(n.get('layer'))},{_text(n.get('index'))})" for n in unknown)
        parts.append(
            f"<details><summary>{len(unknown)} unknown neurons (kept)</summary>"
            f"<p><code>{_e(names)}</code></p></details>"
        )
    return "\n".join(parts)


def _certificate_path(certificate: Mapping[str, Any]) -> str:
    """The certificate's path relative to this report: both lie in the output directory,
    beside the compressed network (whose path the certificate records relative to it)."""
    compressed = _mapping(certificate.get("compressed")).get("path")
    if isinstance(compressed, str) and compressed:
        return str(PurePath(compressed).parent / "certificate.json")
    return "certificate.json"


def _recheck_section(certificate: Mapping[str, Any]) -> str:
    command = f"verify-compress check {_certificate_path(certificate)}"
    return "\n".join(
        [
            "<h2>How to re-check</h2>",
            "<p>Re-verify everything from scratch (the hashes of both ONNX files, every "
            "witness by exact evaluation, every proof obligation with a fresh SMT solver, the "
            "equivalence obligations). Run it in the directory that holds this report:</p>",
            f"<pre><code>{_e(command)}</code></pre>",
            "<p>The SMT-LIB2 files in <code>smt/</code> beside the certificate can also be "
            "given to any other SMT solver; each block is expected to be unsat.</p>",
        ]
    )
