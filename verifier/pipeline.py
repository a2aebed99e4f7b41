"""The main job, stage by stage: what `verify-compress NET.onnx` runs.

ONNX -> IR -> domain -> stability analysis (certified bounds, witnesses, search, branching)
-> compression -> equivalence -> certificate and report. Each stage lives in its own module; this
one only wires them and writes the output directory atomically (a temporary directory renamed
into place), so a failed or interrupted run leaves no partial output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from .budget import Budget
from .certificate import (
    FORMAT,
    FORMAT_VERSION,
    SEMANTICS,
    case_split_record,
    compression_block,
    point_to_json,
    proof_tree_record,
    semantics_note,
    sha256_of,
    summary_block,
    tool_versions,
)
from .compress import compress, compression_record, rounding_bound
from .config import Config
from .domain import Domain
from .equivalence import (
    empirical_check,
    equivalence_record,
    prove_equivalence,
    runtime_check,
)
from .errors import ModelError
from .kernel.bounds import ExactNetwork
from .kernel.format import (
    Certificate,
    CompressedNetwork,
    Dtype,
    Evidence,
    InputDomain,
    NeuronRecord,
    OriginalNetwork,
    Proofs,
    StabilityObligationEntry,
    WitnessRecord,
)
from .onnx_export import save_onnx
from .onnx_import import load_network, read_interface
from .stability import SmtTier, StabilityAnalysis, analyse, confirm_with_smt
from .status import Phase, Status

ProgressCallback = Callable[[str, int, int], None]
JsonDict = dict[str, Any]


@dataclasses.dataclass
class RunResult:
    certificate: JsonDict
    out_dir: Path
    summary: JsonDict


def _neuron_entries(
    analysis: StabilityAnalysis, witness_ids: dict[int, int], smt: SmtTier
) -> list[NeuronRecord]:
    split_ids = {id(split): k for k, split in enumerate(analysis.case_splits)}
    entries = []
    for neuron, status in analysis.statuses.items():
        evidence = Evidence()
        if status is Status.UNSTABLE:
            ids = {}
            for phase in Phase:
                witness = analysis.table.witness_for(neuron, phase)
                if witness is not None:
                    ids[phase] = witness_ids[id(witness)]
            evidence = Evidence(active=ids.get(Phase.ACTIVE), inactive=ids.get(Phase.INACTIVE))
        elif status.is_stable:
            evidence = Evidence(
                case_splits=tuple(
                    split_ids[id(s)] for s in analysis.case_splits if s.neuron == neuron
                ),
                smt=smt.evidence(neuron).value,
            )
        entries.append(NeuronRecord(neuron.layer, neuron.index, status, evidence))
    return entries


def proofs_record(analysis: StabilityAnalysis, smt: SmtTier) -> Proofs:
    """The certificate's `proofs` block: what the kernel recomputes, and the stability
    obligations (re-derived by check, which compares their hashes) with Z3's results."""
    return Proofs(
        method=PROOF_METHOD,
        trees=tuple(proof_tree_record(tree) for tree in analysis.subdomains.trees),
        sub_boxes=len(analysis.subdomains.leaves),
        case_splits=tuple(case_split_record(split) for split in analysis.case_splits),
        smt_obligations=tuple(
            StabilityObligationEntry(
                id=o.id,
                file=o.filename,
                sha256=o.sha256,
                box=o.box,
                layer=o.layer,
                case_split=o.split,
                depends=tuple(o.depends),
                result=smt.results[o.id].verdict.value,
                seconds=round(smt.results[o.id].seconds, 4),
            )
            for o in smt.written
        ),
    )


PROOF_METHOD = (
    "certified bounds on every proof box (Lagrangian dual bounds with the multipliers of "
    "CROWN's back-substitution, computed in exact integer arithmetic) and case splits on "
    "earlier neurons' phases"
)


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path.resolve())


def run(
    network_path: Path,
    domain: Domain,
    out_dir: Path,
    config: Config,
    data: npt.NDArray[np.float64] | None = None,
    progress: ProgressCallback | None = None,
    write_report: Callable[[JsonDict], str] | None = None,
    started: float | None = None,
) -> RunResult:
    """Run every stage and write certificate.json, compressed.onnx, report.html and smt/.

    The time limit counts from `started` (a `time.monotonic()` value; default: now)."""
    timings: dict[str, float] = {}
    begun = time.perf_counter()
    budget = Budget(config.time_limit, started=started, smt_reserved=config.smt_tier)
    network = load_network(network_path)
    if config.strict_semantics and network.rounded_folds:
        raise ModelError(
            f"{network_path}: {', '.join(network.rounded_folds)} cannot be folded exactly, so "
            "the results would hold for the float64-rounded network only (--strict-semantics)"
        )
    domain.check_dimension(network.input_size)
    timings["import"] = time.perf_counter() - begun
    rng = config.rng()

    budget.weights = sum(layer.connections for layer in network.layers)
    analysis = analyse(network, domain, config, rng, budget, data, progress)
    for stage in analysis.stages:
        timings[stage.name] = stage.seconds
    analysis, smt = confirm_with_smt(
        analysis, ExactNetwork(network), budget, config.workers, progress, _warn, config.smt_tier
    )
    timings["smt"] = smt.seconds

    since = time.perf_counter()
    compression = compress(network, analysis.statuses)
    # A drop-in replacement: the original's interface, and by default its element type.
    interface = read_interface(network_path)
    original_dtype: Dtype = (
        "float64" if interface.elem_type == onnx.TensorProto.DOUBLE else "float32"
    )
    dtype: Dtype = config.export_dtype or original_dtype
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
        deadline=budget.output_deadline(),
    )
    timings["equivalence"] = time.perf_counter() - since
    if progress is not None:
        progress("equivalence", 1, 1)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        save_onnx(compression.network, staging / "compressed.onnx", dtype, interface=interface)
        empirical["onnxruntime"] = _onnxruntime_comparison(
            Path(network_path), staging / "compressed.onnx", domain, rng
        )
        witnesses = analysis.table.witnesses()
        witness_ids = {id(w): k for k, w in enumerate(witnesses)}
        smt_dir = staging / "smt"
        smt_dir.mkdir()
        for obligation in equivalence.obligations:
            (smt_dir / obligation.filename).write_text(obligation.smtlib)
        for stability in smt.written:
            (smt_dir / stability.filename).write_text(stability.smtlib)
        summary = summary_block(
            network, analysis.statuses, compression, equivalence.proved, smt.confirmed
        )
        versions = tool_versions()
        timings["total"] = time.perf_counter() - begun
        certificate = Certificate(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            tool_version=versions["verify-compress"],
            solvers=versions,
            network=OriginalNetwork(
                path=_relative(Path(network_path), out_dir),
                sha256=sha256_of(network_path),
                folded_ops=tuple(network.folded_ops),
                semantics_note=semantics_note(network.rounded_folds),
            ),
            compressed=CompressedNetwork(
                path="compressed.onnx",
                sha256=sha256_of(staging / "compressed.onnx"),
                dtype=dtype,
            ),
            domain=InputDomain.from_json(domain.to_json(), "$.domain"),
            semantics=SEMANTICS,
            config=dataclasses.asdict(config),
            neurons=tuple(_neuron_entries(analysis, witness_ids, smt)),
            witnesses=tuple(
                WitnessRecord(id=k, box=w.box, source=w.source, point=tuple(point_to_json(w.point)))
                for k, w in enumerate(witnesses)
            ),
            proofs=proofs_record(analysis, smt),
            compression=compression_block(
                compression_record(compression, rounding),
                equivalence_record(equivalence),
                empirical,
            ),
            summary=summary,
            timings={k: round(v, 4) for k, v in timings.items()},
        )
        document = certificate.to_json()
        (staging / "certificate.json").write_text(json.dumps(document, indent=1))
        if write_report is not None:
            (staging / "report.html").write_text(write_report(document))
        _replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RunResult(document, out_dir, summary.to_json())


def _warn(message: str) -> None:
    """Say it on stderr whatever the output mode: a refuted stability claim is a bug."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


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
    from .files import replace_directory

    replace_directory(staging, target)
