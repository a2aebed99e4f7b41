"""The main job, stage by stage: what `verify-compress NET.onnx` runs.

ONNX -> IR -> domain and bounds -> witnesses -> stability search -> certification ->
compression -> equivalence -> certificate and report. Each stage lives in its own module; this
one only wires them and writes the output directory atomically (a temporary directory renamed
into place), so a failed or interrupted run leaves no partial output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from verifier.certificate import (
    FORMAT,
    FORMAT_VERSION,
    SEMANTICS,
    lemma_to_json,
    per_layer_summary,
    point_to_json,
    sha256_of,
    tool_versions,
)
from verifier.compress import compress, compression_record, rounding_bound
from verifier.config import Config
from verifier.domain import Domain
from verifier.equivalence import (
    empirical_check,
    equivalence_record,
    prove_equivalence,
    runtime_check,
)
from verifier.onnx_export import save_onnx
from verifier.onnx_import import load_network
from verifier.smt import Obligation
from verifier.stability import StabilityAnalysis, analyse
from verifier.status import Neuron, Phase, Status

ProgressCallback = Callable[[str, int, int], None]
JsonDict = dict[str, Any]


@dataclasses.dataclass
class RunResult:
    certificate: JsonDict
    out_dir: Path
    summary: JsonDict


def _neuron_entries(analysis: StabilityAnalysis, witness_ids: dict[int, int]) -> list[JsonDict]:
    entries = []
    for neuron, status in analysis.statuses.items():
        evidence: JsonDict = {}
        if status is Status.UNSTABLE:
            for phase in Phase:
                witness = analysis.table.witness_for(neuron, phase)
                if witness is not None:
                    evidence[phase.value] = witness_ids[id(witness)]
        elif status.is_stable:
            evidence["lemmas"] = analysis.stability_lemmas(neuron)
        else:
            claimed = analysis.claims.get(neuron)
            evidence["claimed"] = claimed.value if claimed else None
            evidence["seen"] = sorted(p.value for p in analysis.table.seen(neuron))
        entries.append(
            {
                "layer": neuron.layer,
                "index": neuron.index,
                "status": status.value,
                "evidence": evidence,
            }
        )
    return entries


def _lemmas_json(analysis: StabilityAnalysis) -> tuple[JsonDict, JsonDict, list[Obligation]]:
    lemmas: JsonDict = {}
    contexts: JsonDict = {}
    obligations: list[Obligation] = []
    for proof in analysis.proofs:
        for identifier, check in analysis.lemma_checks.items():
            lemma = proof.lemmas.get(identifier)
            if lemma is None:
                continue
            records = [
                {
                    "file": f"smt/{o.filename}",
                    "sha256": o.sha256,
                    "result": r.verdict.value,
                    "seconds": round(r.seconds, 4),
                }
                for o, r in zip(check.obligations, check.results, strict=True)
            ]
            lemmas[identifier] = lemma_to_json(lemma, records)
            obligations.extend(check.obligations)
            contexts.setdefault(lemma.context, proof.contexts[lemma.context])
    return lemmas, contexts, obligations


def _subdomains_json(analysis: StabilityAnalysis) -> tuple[JsonDict, list[Obligation]]:
    """The split trees (lemma box k is proof box k) and Z3's check that the sub-boxes cover the
    domain."""
    records = []
    obligations = []
    for parent, check in sorted(analysis.cover_checks.items()):
        for obligation, result in zip(check.obligations, check.results, strict=True):
            records.append(
                {
                    "box": parent,
                    "file": f"smt/{obligation.filename}",
                    "sha256": obligation.sha256,
                    "result": result.verdict.value,
                }
            )
            obligations.append(obligation)
    trees = analysis.subdomains.to_json()
    count = len(analysis.subdomains.leaves)
    return {"trees": trees, "subboxes": count, "cover": records}, obligations


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path.resolve())


EQUIVALENCE_SECONDS_PER_WEIGHT = 3e-5
"""Time kept from the analysis for the equivalence proof, per nonzero weight (measured: 2.3 to
7.1 s for the 268,800 weights of mnist-net_256x2, 0.3 s for ACAS Xu's 13,000)."""
EQUIVALENCE_SHARE = 0.25
"""At most this share of the time limit is kept for it (a random 784-256x4-10 net, 400,000
weights, takes 11 s to prove: 0.15 of 60 s kept 9 s)."""
OUTPUT_SHARE = 0.02
"""Also kept from the analysis, for its own last steps and for writing the outputs (with
0.1 of 60 s kept for the equivalence proof alone, mnist-net_256x2 on an eps = 0.05 box ran
61 s: the analysis ended 1 s late, writing took 1 s more)."""


def run(
    network_path: Path,
    domain: Domain,
    out_dir: Path,
    config: Config,
    data: npt.NDArray[np.float64] | None = None,
    progress: ProgressCallback | None = None,
    write_report: Callable[[JsonDict], str] | None = None,
) -> RunResult:
    """Run every stage and write certificate.json, compressed.onnx, report.html and smt/."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    job_deadline = time.monotonic() + config.time_limit
    network = load_network(network_path)
    domain.check_dimension(network.input_size)
    timings["import"] = time.perf_counter() - started
    rng = config.rng()

    # The time limit covers the whole job: the analysis leaves time for the equivalence proof.
    reserve = OUTPUT_SHARE * config.time_limit + min(
        EQUIVALENCE_SHARE * config.time_limit,
        EQUIVALENCE_SECONDS_PER_WEIGHT * sum(layer.connections for layer in network.layers),
    )
    analysis_config = dataclasses.replace(config, time_limit=config.time_limit - reserve)
    analysis = analyse(network, domain, analysis_config, rng, data, progress)
    for stage in analysis.stages:
        timings[stage.name] = stage.seconds

    since = time.perf_counter()
    compression = compress(network, analysis.statuses)
    dtype = config.export_dtype or str(network.dtype)
    rounding = rounding_bound(compression, domain, dtype)
    timings["compress"] = time.perf_counter() - since

    since = time.perf_counter()
    lemma_ids = {
        n: analysis.stability_lemmas(n) for n in analysis.statuses if analysis.statuses[n].is_stable
    }
    equivalence = prove_equivalence(
        network, compression, analysis.statuses, lemma_ids, domain, rng=rng
    )
    witness_points = (
        np.array([w.point for w in analysis.table.witnesses()])
        if analysis.table.witnesses()
        else None
    )
    empirical = empirical_check(
        network,
        compression.network,
        domain,
        witness_points,
        rng,
        deadline=job_deadline - OUTPUT_SHARE * config.time_limit,
    )
    timings["equivalence"] = time.perf_counter() - since
    if progress is not None:
        progress("equivalence", 1, 1)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        save_onnx(compression.network, staging / "compressed.onnx", dtype)
        empirical["onnxruntime"] = _onnxruntime_comparison(
            Path(network_path), staging / "compressed.onnx", domain, rng
        )
        witnesses = analysis.table.witnesses()
        witness_ids = {id(w): k for k, w in enumerate(witnesses)}
        lemmas, contexts, obligations = _lemmas_json(analysis)
        subdomains, cover_obligations = _subdomains_json(analysis)
        obligations = obligations + cover_obligations + list(equivalence.obligations)
        smt_dir = staging / "smt"
        smt_dir.mkdir()
        for obligation in obligations:
            (smt_dir / obligation.filename).write_text(obligation.smtlib)
        per_layer = per_layer_summary(
            network,
            analysis.statuses,
            {c.layer: c.connections_after for c in compression.counts.per_layer},
        )
        record = compression_record(compression, rounding)
        record["equivalence"] = equivalence_record(equivalence)
        record["empirical"] = empirical
        status_totals = neurons_by_status(analysis.statuses)
        versions = tool_versions()
        summary: JsonDict = {
            "per_layer": per_layer,
            "totals": {
                "neurons_before": record["neurons_before"],
                "neurons_after": record["neurons_after"],
                "layers_before": record["layers_before"],
                "layers_after": record["layers_after"],
                "connections_before": record["connections_before"],
                "connections_after": record["connections_after"],
                "percent_connections_removed": record["percent_connections_removed"],
                **status_totals,
            },
            "equivalence_proved": equivalence.proved,
        }
        timings["total"] = time.perf_counter() - started
        certificate: JsonDict = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": versions["verify-compress"],
            "solvers": versions,
            "network": {
                "path": _relative(Path(network_path), out_dir),
                "sha256": sha256_of(network_path),
                "folded_ops": list(network.folded_ops),
            },
            "compressed": {
                "path": "compressed.onnx",
                "sha256": sha256_of(staging / "compressed.onnx"),
                "dtype": dtype,
            },
            "domain": domain.to_json(),
            "subdomains": subdomains,
            "semantics": SEMANTICS,
            "config": {k: v for k, v in dataclasses.asdict(config).items()},
            "neurons": _neuron_entries(analysis, witness_ids),
            "witnesses": [
                {"id": k, "box": w.box, "source": w.source, "point": point_to_json(w.point)}
                for k, w in enumerate(witnesses)
            ],
            "contexts": contexts,
            "lemmas": lemmas,
            "compression": record,
            "summary": summary,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        (staging / "certificate.json").write_text(json.dumps(certificate, indent=1))
        if write_report is not None:
            (staging / "report.html").write_text(write_report(certificate))
        _replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RunResult(certificate, out_dir, summary)


def _onnxruntime_comparison(
    original: Path, compressed: Path, domain: Domain, rng: np.random.Generator
) -> JsonDict:
    """Both ONNX files under onnxruntime at 10,000 domain points, when it is installed.

    An empirical figure beside the proof: onnxruntime computes in the files' float dtype, so
    its difference is not bounded by the weight rounding bound alone.
    """
    try:
        import onnxruntime  # noqa: F401  (optional: part of the `test` extra)
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    return runtime_check(original, compressed, domain, 10_000, rng)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move `staging` to `target`, replacing an earlier output directory only once complete."""
    from verifier.files import replace_directory

    replace_directory(staging, target)


def neurons_by_status(statuses: dict[Neuron, Status]) -> dict[str, int]:
    """How many neurons have each status, keyed by the status's certificate name."""
    return {s.value: sum(1 for v in statuses.values() if v is s) for s in Status}
