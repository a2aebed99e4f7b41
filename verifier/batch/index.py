"""The batch's overview: `OUT/index.json` and `OUT/index.html`, one row per job and totals.

Stage: jobs -> backend -> one main job each -> **index**. Both are pure functions of the job
results (`index_document`, `render_index`); `write_index` writes both atomically. The batch
rewrites them after every finished job, so a long batch can be watched (`finished` of
`jobs_total`). Rows are in the jobs file's order. A row's `report` and `certificate` are paths
relative to `OUT/`; they are given only for a job whose run finished (a failed job leaves no
output of its own).

The index summarises the job outputs; it proves nothing: each job's certificate does, and the
check result column says whether `verify-compress check`'s kernel accepted it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..batch.execute import CheckVerdict, JobResult, JobStatus
from ..files import atomic_write_text

INDEX_FORMAT = "verify-compress-batch-index"
INDEX_FORMAT_VERSION = 1
JSON_NAME = "index.json"
HTML_NAME = "index.html"
JsonDict = dict[str, Any]

STATUS_KEYS = ("stably_active", "stably_inactive", "unstable", "unknown")
SIZE_KEYS = ("neurons_before", "neurons_after", "connections_before", "connections_after")


def job_row(result: JobResult) -> JsonDict:
    """The index row of one job."""
    spec = result.spec
    totals = result.totals or {}
    ran = result.totals is not None
    counts: JsonDict = {key: totals.get(key) for key in (*STATUS_KEYS, *SIZE_KEYS)}
    counts["stable"] = (
        int(totals["stably_active"]) + int(totals["stably_inactive"]) if ran else None
    )
    return {
        "name": spec.name,
        "network": str(spec.network),
        "domain": spec.domain.describe(),
        "time_limit": spec.time_limit,
        "seed": spec.seed,
        "status": result.status.value,
        "error": result.error,
        "resumed": result.resumed,
        **counts,
        "percent_connections_removed": totals.get("percent_connections_removed"),
        "equivalence_proved": result.equivalence_proved,
        "run_seconds": result.run_seconds,
        "wall_seconds": result.wall_seconds,
        "check": {
            "result": result.check.verdict.value,
            "first_failure": result.check.first_failure,
            "seconds": result.check.seconds,
        },
        "deployment": dict(result.deployment) if result.deployment is not None else None,
        "report": f"{spec.name}/report.html" if ran else None,
        "certificate": f"{spec.name}/certificate.json" if ran else None,
    }


def totals_of(results: Sequence[JobResult]) -> JsonDict:
    """Counts over all jobs; neuron and connection counts over the jobs that ran."""
    ran = [r for r in results if r.totals is not None]

    def total(key: str) -> int:
        return sum(int((r.totals or {})[key]) for r in ran)

    before, after = total("connections_before"), total("connections_after")
    return {
        "jobs": len(results),
        **{status.value: sum(r.status is status for r in results) for status in JobStatus},
        "resumed": sum(r.resumed for r in results),
        **{
            f"check_{verdict.value.replace(' ', '_')}": sum(
                r.check.verdict is verdict for r in results
            )
            for verdict in CheckVerdict
        },
        "stable": total("stably_active") + total("stably_inactive"),
        **{key: total(key) for key in (*STATUS_KEYS, *SIZE_KEYS)},
        "percent_connections_removed": round(100.0 * (before - after) / before, 4)
        if before
        else None,
        "run_seconds": round(sum(r.run_seconds or 0.0 for r in results), 3),
    }


def index_document(
    results: Sequence[JobResult],
    jobs_total: int,
    jobs_file: Path,
    backend: str,
    seconds: float,
) -> JsonDict:
    """The `index.json` document (rows in the order of `results`)."""
    return {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "tool_version": __version__,
        "jobs_file": str(jobs_file),
        "backend": backend,
        "jobs_total": jobs_total,
        "finished": len(results),
        "seconds": round(seconds, 3),
        "totals": totals_of(results),
        "jobs": [job_row(result) for result in results],
    }


def write_index(out_root: Path, document: Mapping[str, Any]) -> None:
    """`index.json` and `index.html` in `out_root`, each written atomically."""
    atomic_write_text(out_root / JSON_NAME, json.dumps(document, indent=1))
    atomic_write_text(out_root / HTML_NAME, render_index(document))


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #1a1a1a; background: #fafafa; }
h1 { font-size: 1.4rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
thead th, tfoot td { background: #f0f0f0; }
.ok { color: #2e7d32; font-weight: bold; }
.bad { color: #c62828; font-weight: bold; }
.muted { color: #666; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: object, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return _e(value)


def _status_cell(row: Mapping[str, Any]) -> str:
    status = str(row.get("status"))
    css = "ok" if status == JobStatus.OK.value else "bad"
    resumed = " (resumed)" if row.get("resumed") else ""
    error = row.get("error")
    title = f' title="{_e(error)}"' if error else ""
    return f'<td class="text {css}"{title}>{_e(status)}{resumed}</td>'


def _check_cell(check: Mapping[str, Any]) -> str:
    verdict = str(check.get("result"))
    css = "ok" if verdict == CheckVerdict.VALID.value else "bad"
    failure = check.get("first_failure")
    title = f' title="{_e(failure)}"' if failure else ""
    return f'<td class="text {css}"{title}>{_e(verdict)}</td>'


def _deployment_cells(deployment: object) -> str:
    figures = deployment if isinstance(deployment, Mapping) else {}

    def speed(role: str, key: str, digits: int) -> str:
        value = figures.get(role, {}).get(key) if isinstance(figures.get(role), Mapping) else None
        return _n(value, digits)

    def ratio(key: str) -> str:
        value = figures.get(key)
        return f"{value:g}&times;" if isinstance(value, (int, float)) else "-"

    sizes = (
        f"{_n(figures.get('original_bytes'))} &rarr; {_n(figures.get('compressed_bytes'))}"
        if figures
        else "-"
    )
    return (
        f"<td>{sizes}</td>"
        f"<td>{speed('original', 'latency_ms', 4)} &rarr; {speed('compressed', 'latency_ms', 4)}"
        f" ({ratio('latency_speedup')})</td>"
        f"<td>{ratio('throughput_speedup')}</td>"
    )


def render_index(document: Mapping[str, Any]) -> str:
    """`index.html`: one self-contained page (no scripts), links to each job's report."""
    rows = []
    for row in document.get("jobs", []):
        report = row.get("report")
        name = (
            f'<a href="{_e(report)}">{_e(row.get("name"))}</a>' if report else _e(row.get("name"))
        )
        error = row.get("error")
        rows.append(
            "<tr>"
            f'<td class="text">{name}</td>'
            f'<td class="text">{_e(Path(str(row.get("network"))).name)}</td>'
            f'<td class="text">{_e(row.get("domain"))}</td>'
            + _status_cell(row)
            + f"<td>{_n(row.get('stable'))}</td>"
            f"<td>{_n(row.get('unstable'))}</td>"
            f"<td>{_n(row.get('unknown'))}</td>"
            f"<td>{_n(row.get('percent_connections_removed'), 1)}"
            + ("%" if row.get("percent_connections_removed") is not None else "")
            + "</td>"
            f"<td>{_n(row.get('run_seconds'), 1)}</td>"
            + _check_cell(row.get("check", {}))
            + _deployment_cells(row.get("deployment"))
            + "</tr>"
            + (
                f'<tr><td></td><td class="text bad" colspan="12">{_e(error)}</td></tr>'
                if error
                else ""
            )
        )
    totals = document.get("totals", {})
    footer = (
        "<tr>"
        f'<td class="text">total: {_n(totals.get("jobs"))} jobs</td><td></td><td></td>'
        f'<td class="text">{_n(totals.get("ok"))} ok, {_n(totals.get("failed"))} failed, '
        f"{_n(totals.get('timed-out'))} timed out</td>"
        f"<td>{_n(totals.get('stable'))}</td><td>{_n(totals.get('unstable'))}</td>"
        f"<td>{_n(totals.get('unknown'))}</td>"
        f"<td>{_n(totals.get('percent_connections_removed'), 1)}%</td>"
        f"<td>{_n(totals.get('run_seconds'), 1)}</td>"
        f'<td class="text">{_n(totals.get("check_valid"))} valid</td>'
        "<td></td><td></td><td></td></tr>"
    )
    finished = document.get("finished")
    total = document.get("jobs_total")
    progress = "" if finished == total else f" ({_n(finished)} of {_n(total)} jobs finished)"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>verify-compress batch: {_e(Path(str(document.get('jobs_file'))).name)}"
            "</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>verify-compress batch: {_e(document.get('jobs_file'))}{progress}</h1>",
            f'<p class="muted">verify-compress {_e(document.get("tool_version"))}, backend '
            f"{_e(document.get('backend'))}, {_n(document.get('seconds'), 1)} s wall time. "
            "Each job's certificate is its evidence; the check column says whether the "
            "kernel of <code>verify-compress check</code> accepted it. Deployment: file "
            "bytes, onnxruntime latency of one input in ms and throughput gain (original "
            "&rarr; compressed; timings of the machine that ran the job).</p>",
            "<table><thead><tr>"
            '<th class="text">job</th><th class="text">network</th>'
            '<th class="text">domain</th><th class="text">status</th>'
            "<th>stable</th><th>unstable</th><th>unknown</th><th>connections removed</th>"
            '<th>run s</th><th class="text">check</th><th>bytes</th><th>latency ms</th>'
            "<th>throughput</th></tr></thead>",
            "<tbody>",
            *rows,
            "</tbody>",
            f"<tfoot>{footer}</tfoot>",
            "</table>",
            "</body>",
            "</html>",
            "",
        ]
    )
