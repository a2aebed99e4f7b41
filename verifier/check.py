"""The certificate checker: re-verifies a certificate from scratch (`verify-compress check`).

Stage: certificate -> **check**. It uses the trusted kernel (`verifier.kernel`) and the core
(ONNX import, IR, domain, compression recomputed, the equivalence identities), and no code that
only finds evidence: no witness search, CP-SAT, float bound propagation or branching heuristic.

Trusted: the domain written in the certificate and the ONNX files it names (verified by
SHA-256). Everything else is re-derived or re-checked:
- the document is validated against the generated JSON Schema, then parsed into the format's
  records (`verifier.kernel.format`): a missing, unknown or mistyped field is refused naming
  its JSON path before anything is re-derived;
- every witness is re-evaluated exactly on the re-imported network and must lie in its box;
- the proof boxes are rebuilt from the domain and the recorded bisection trees (every cut
  strictly inside its interval, every box numbered once), and the kernel recomputes certified
  bounds on every proof box in exact arithmetic;
- every recorded case split must hold (its cases cover every phase combination and each case's
  exactly computed bound shows the phase);
- every stable status must be proved on every sub-box, by the sub-box's bounds or a case split;
- the compressed network is recomputed from the statuses; the stored compressed ONNX must
  equal its rounding bit for bit, layer by layer, ReLUs included, and be read without any
  float64-rounded fold; the equivalence obligations are re-derived, compared with the shipped
  files by SHA-256, and re-run by a fresh solver;
- the stability obligations (`verifier.kernel.obligations`, the SMT tier of the stability
  proofs) are re-derived from the domain, the trees, the case splits and the recomputed
  bounds, and must be exactly the listed ones, shipped with the same SHA-256 (no other
  stability file shipped); every stable neuron's recorded `smt` evidence and the summary's
  `smt_confirmed` must follow from the recorded results; with `stability_smt` (the CLI's
  `--smt z3|cvc5`) they are re-run, a refutation makes the certificate invalid, and the count
  of stable neurons the solver confirmed is reported.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .certificate import (
    FORMAT,
    FORMAT_VERSION,
    case_split_from_record,
    parse_certificate,
    point_from_json,
    semantics_note,
    sha256_of,
    summary_block,
)
from .compress import compress, compression_record, rounding_bound
from .domain import Domain
from .equivalence import prove_equivalence
from .errors import CertificateError, VerifyCompressError
from .exact import RationalArray
from .ir import Network
from .kernel.bounds import ExactNetwork
from .kernel.format import Certificate, OriginalNetwork, proof_tree_to_json
from .kernel.obligations import (
    PROVED,
    SmtEvidence,
    StabilityObligation,
    StabilityPlan,
    claim_evidence,
    stability_plan,
)
from .kernel.stability import (
    case_split_holds,
    evidence_name,
    proof_box_bounds,
    proved_claims,
)
from .onnx_export import rounded_layers
from .onnx_import import load_network
from .smt import SOLVERS, Obligation, SmtVerdict, check_many
from .status import Neuron, Phase, Status
from .subdomains import Subdomains
from .workers import Backend, WorkerPool

ProgressCallback = Callable[[str, int, int], None]


@dataclasses.dataclass
class CheckReport:
    valid: bool
    first_failure: str | None
    failures: list[str]
    counts: dict[str, int]
    seconds: float


class _Failed(Exception):
    """Stops the check at the first failing item (its message names the item)."""


class _PoolUnavailable(Exception):
    """The workers asked for cannot be had (Dask missing, a scheduler unreachable): an error
    of the command, never a verdict on the certificate. The cause is the error to raise."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


def check_certificate(
    path: Path,
    progress: ProgressCallback | None = None,
    solver: str = "z3",
    workers: int = 2,
    network: Path | None = None,
    stability_smt: bool = False,
    stability_timeout: float = 60.0,
    backend: Backend = "local",
    scheduler: str | None = None,
) -> CheckReport:
    """Re-verify a certificate; invalid certificates give `valid=False` naming the first failure.

    The original network is `network` if given, else the recorded path (relative to the
    certificate's folder), else a file of the same name beside the certificate; whichever it
    is, its SHA-256 must be the recorded one. Raises CertificateError when the file cannot be
    read as a certificate at all. `stability_smt`: run the stability obligations with `solver`
    (else they are still re-derived and compared by hash, not run), each for at most
    `stability_timeout` seconds. `backend`, `scheduler`: where the proof boxes' bounds are
    computed (`verifier.workers.WorkerPool`); the same kernel function runs on every backend.
    """
    started = time.perf_counter()
    if solver not in SOLVERS:
        raise CertificateError(
            f"solver {solver!r} is not supported; supported: {', '.join(SOLVERS)}"
        )
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CertificateError(f"{path}: no such certificate") from error
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CertificateError(f"{path}: not a JSON certificate ({error})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CertificateError(f"{path}: not a verify-compress certificate (format field)")
    if document.get("format_version") != FORMAT_VERSION:
        raise CertificateError(
            f"{path}: format_version {document.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"  # noqa: E501
        )
    counts: dict[str, int] = {}
    try:
        certificate = parse_certificate(document, "certificate")
        _check(
            certificate,
            path.parent,
            counts,
            progress,
            workers,
            solver,
            network,
            stability_timeout if stability_smt else None,
            (backend, scheduler),
        )
    except _Failed as failure:
        return CheckReport(
            False, str(failure), [str(failure)], counts, time.perf_counter() - started
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        message = f"malformed certificate: {error!r}"
        return CheckReport(False, message, [message], counts, time.perf_counter() - started)
    except _PoolUnavailable as unavailable:
        raise unavailable.__cause__ or VerifyCompressError(str(unavailable)) from None
    except VerifyCompressError as error:
        return CheckReport(False, str(error), [str(error)], counts, time.perf_counter() - started)
    return CheckReport(True, None, [], counts, time.perf_counter() - started)


def _check(
    certificate: Certificate,
    base: Path,
    counts: dict[str, int],
    progress: ProgressCallback | None,
    workers: int,
    solver: str,
    network_file: Path | None,
    stability_timeout: float | None,
    pool_backend: tuple[Backend, str | None],
) -> None:
    network_path = _original_network(certificate.network, base, network_file)
    network = load_network(network_path)
    _require(
        tuple(network.folded_ops) == certificate.network.folded_ops,
        "network.folded_ops differs from the ops the importer folds",
    )
    _require(
        certificate.network.semantics_note == semantics_note(network.rounded_folds),
        "network.semantics_note does not say what the importer's rounded folds mean",
    )
    domain = Domain.from_json(certificate.domain.to_json())
    _require(domain.size == network.input_size, "domain: dimension does not match the network")

    statuses = _check_neurons(certificate, network, domain, counts)
    stability_lemmas, plan = _check_proofs(
        certificate, network, domain, statuses, counts, progress, workers, pool_backend
    )
    recorded_confirmed, shipped = _check_stability_obligations(certificate, base, plan, counts)

    _check_compression(
        certificate,
        base,
        network,
        domain,
        stability_lemmas,
        statuses,
        counts,
        progress,
        solver,
        recorded_confirmed,
    )
    if stability_timeout is not None:
        _run_stability_obligations(
            plan, shipped, counts, progress, workers, solver, stability_timeout
        )


def _original_network(recorded: OriginalNetwork, base: Path, given: Path | None) -> Path:
    candidates = (
        [given]
        if given is not None
        else [
            base / recorded.path,
            base / Path(recorded.path).name,
        ]
    )
    for candidate in candidates:
        if candidate.is_file():
            _require(
                sha256_of(candidate) == recorded.sha256,
                f"network: {candidate} is not the network the certificate names (sha256 differs)",
            )
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise _Failed(f"network: not found (tried {tried}); give it with --network FILE")


def _check_neurons(
    certificate: Certificate, network: Network, domain: Domain, counts: dict[str, int]
) -> dict[Neuron, Status]:
    hidden = network.hidden_neurons()
    entries = certificate.neurons
    statuses: dict[Neuron, Status] = {}
    for entry in entries:
        neuron = Neuron(entry.layer, entry.index)
        _require(neuron not in statuses, f"neuron {neuron}: listed more than once")
        statuses[neuron] = entry.status
    _require(
        set(statuses) == set(hidden), "neurons: the list does not cover exactly the hidden neurons"
    )
    witnesses = certificate.witnesses
    evaluated: dict[int, Any] = {}
    for entry in entries:
        neuron = Neuron(entry.layer, entry.index)
        if statuses[neuron] is not Status.UNSTABLE:
            continue
        for phase in Phase:
            index = entry.evidence.witness(phase)
            if index is None:
                raise _Failed(f"neuron {neuron}: unstable without a {phase.value} witness")
            _require(
                0 <= index < len(witnesses), f"neuron {neuron}: witness {index} does not exist"
            )
            if index not in evaluated:
                witness = witnesses[index]
                item = f"witness {index}"
                point = point_from_json(witness.point, item)
                box_index = witness.box
                _require(
                    0 <= box_index < len(domain.boxes), f"{item}: box {box_index} does not exist"
                )
                box = domain.boxes[box_index]
                _require(
                    len(point) == box.size,
                    f"{item}: has {len(point)} coordinates, expected {box.size}",
                )
                for j, value in enumerate(point):
                    inside = Fraction(float(box.lower[j])) <= value <= Fraction(float(box.upper[j]))
                    _require(inside, f"{item}: coordinate {j} lies outside box {witness.box}")
                evaluated[index] = network.evaluate_exact(RationalArray.from_fractions(point))
            sign = evaluated[index].sign(neuron)
            wanted = 1 if phase is Phase.ACTIVE else -1
            _require(
                sign == wanted,
                f"neuron {neuron}: witness {index} for '{phase.value}' has exact pre-activation "
                f"{evaluated[index].value(neuron)}",
            )
    counts["witnesses"] = len(evaluated)
    return statuses


def _check_proofs(
    certificate: Certificate,
    network: Network,
    domain: Domain,
    statuses: dict[Neuron, Status],
    counts: dict[str, int],
    progress: ProgressCallback | None,
    workers: int,
    pool_backend: tuple[Backend, str | None],
) -> tuple[dict[Neuron, list[str]], StabilityPlan]:
    """Recompute the certified bounds on every proof box and the recorded case splits; every
    stable status must be proved on every sub-box. Returns each stable neuron's evidence name
    (what the equivalence obligations cite) and the stability obligations re-derived."""
    recorded = certificate.proofs
    subdomains = Subdomains.from_json(domain, [proof_tree_to_json(t) for t in recorded.trees])
    _require(
        recorded.sub_boxes == len(subdomains.leaves),
        f"proofs: {recorded.sub_boxes} sub-boxes recorded, the trees have {len(subdomains.leaves)}",
    )
    exact = ExactNetwork(network)
    report = (lambda done, total: progress("proof boxes", done, total)) if progress else None
    backend, scheduler = pool_backend
    processes = workers if len(subdomains.boxes) > 2 else 1
    try:
        pool = WorkerPool(network, exact, processes, backend, scheduler)
    except VerifyCompressError as error:
        raise _PoolUnavailable(str(error)) from error
    with pool:
        bounds = proof_box_bounds(exact, subdomains, report, pool.bounds)
    splits = []
    for k, record in enumerate(recorded.case_splits):
        split = case_split_from_record(record)
        _require(
            case_split_holds(exact, subdomains, bounds, split),
            f"case split {k} (neuron {split.neuron} {split.phase.value} on proof box "
            f"{split.box}) does not hold",
        )
        splits.append(split)
    claims = {
        n: Phase.ACTIVE if s is Status.STABLY_ACTIVE else Phase.INACTIVE
        for n, s in statuses.items()
        if s.is_stable
    }
    proved = proved_claims(subdomains, bounds, splits, claims)
    evidence = {Neuron(e.layer, e.index): e.evidence for e in certificate.neurons}
    names: dict[Neuron, list[str]] = {}
    for neuron, phase in claims.items():
        _require(
            proved.get(neuron) is phase,
            f"neuron {neuron}: status {statuses[neuron].value} is not proved on every sub-box",
        )
        used = [k for k, s in enumerate(splits) if s.neuron == neuron and s.phase is phase]
        listed = evidence[neuron].case_splits
        listed_splits = None if listed is None else list(listed)
        _require(
            listed_splits == used,
            f"neuron {neuron}: evidence lists case splits {listed_splits}, the proofs have {used}",
        )
        names[neuron] = [evidence_name(neuron)]
    counts["proof_boxes"] = len(subdomains.boxes)
    counts["sub_boxes"] = len(subdomains.leaves)
    counts["case_splits"] = len(splits)
    counts["stable_neurons"] = len(claims)
    return names, stability_plan(exact, subdomains, bounds, splits, claims)


def _check_stability_obligations(
    certificate: Certificate, base: Path, plan: StabilityPlan, counts: dict[str, int]
) -> tuple[int, list[StabilityObligation]]:
    """The listed stability obligations are the first ones of the re-derived plan (same ids,
    order, files, hashes, and what they cover: the run writes them while it has time to run
    them, shallow layers first), each shipped in smt/ with that hash and no other stability
    file shipped; every stable neuron's recorded `smt` evidence is what the recorded results
    give (an obligation not listed: not run). Returns how many stable neurons the recorded
    results confirm, and the shipped obligations."""
    listed = certificate.proofs.smt_obligations
    _require(
        [entry.id for entry in listed] == list(plan.ids[: len(listed)]),
        "proofs.smt_obligations: the listed stability obligations are not the first "
        f"{len(listed)} of the re-derived ones",
    )
    shipped_obligations = list(plan.written(len(listed)))
    results: dict[str, str] = {}
    for entry, obligation in zip(listed, shipped_obligations, strict=True):
        _require(
            entry.sha256 == obligation.sha256
            and entry.file == obligation.filename
            and entry.box == obligation.box
            and entry.layer == obligation.layer
            and entry.case_split == obligation.split
            and list(entry.depends) == list(obligation.depends),
            f"stability obligation {obligation.id}: recorded hash, file or coverage differs "
            "from the re-derived obligation",
        )
        _require(
            entry.result != "refuted",
            f"stability obligation {obligation.id}: recorded as refuted, yet claims rest on it",
        )
        results[obligation.id] = entry.result
        shipped = base / "smt" / obligation.filename
        _require(shipped.is_file(), f"smt/{obligation.filename}: missing")
        _require(
            sha256_of(shipped) == obligation.sha256,
            f"smt/{obligation.filename}: differs from the re-derived stability obligation",
        )
    expected = {o.filename for o in shipped_obligations}
    extra = sorted(
        f.name for f in (base / "smt").glob("stability-*.smt2") if f.name not in expected
    )
    _require(not extra, f"smt/{extra[0] if extra else ''}: not a listed stability obligation")
    confirmed = 0
    for neuron_entry in certificate.neurons:
        neuron = Neuron(neuron_entry.layer, neuron_entry.index)
        if neuron not in plan.rests_on:
            continue
        evidence = claim_evidence(plan.rests_on[neuron], results)
        _require(
            neuron_entry.evidence.smt == evidence.value,
            f"neuron {neuron}: evidence smt {neuron_entry.evidence.smt!r}, the recorded "
            f"obligation results give {evidence.value!r}",
        )
        confirmed += evidence is SmtEvidence.CONFIRMED
    counts["stability_obligations"] = len(listed)
    counts["stability_obligations_not_shipped"] = len(plan.ids) - len(listed)
    return confirmed, shipped_obligations


def _run_stability_obligations(
    plan: StabilityPlan,
    shipped: Sequence[StabilityObligation],
    counts: dict[str, int],
    progress: ProgressCallback | None,
    workers: int,
    solver: str,
    timeout: float,
) -> None:
    """Run every shipped stability obligation with `solver`, at most `timeout` seconds each
    (claims resting on one the run did not ship stay unconfirmed): a `sat`
    answer contradicts the kernel (the certificate is invalid); an unknown only leaves its
    claims unconfirmed by this check."""
    obligations = [Obligation(o.id, o.smtlib) for o in shipped]
    results = check_many(obligations, timeout, workers, solver)
    for obligation, result in zip(obligations, results, strict=True):
        _require(
            result.verdict is not SmtVerdict.REFUTED,
            f"stability obligation {obligation.id}: {solver} refutes it ({result.detail})",
        )
    verdicts = {o.id: r.verdict.value for o, r in zip(obligations, results, strict=True)}
    confirmed = sum(
        1
        for ids in plan.rests_on.values()
        if claim_evidence(ids, verdicts) is SmtEvidence.CONFIRMED
    )
    counts["stability_obligations_proved"] = sum(v == PROVED for v in verdicts.values())
    counts[f"stable_neurons_confirmed_by_{solver}"] = confirmed
    if progress is not None:
        progress("stability obligations", len(obligations), len(obligations))


def _check_compression(
    certificate: Certificate,
    base: Path,
    network: Network,
    domain: Domain,
    stability_lemmas: dict[Neuron, list[str]],
    statuses: dict[Neuron, Status],
    counts: dict[str, int],
    progress: ProgressCallback | None,
    solver: str,
    smt_confirmed: int,
) -> None:
    compressed_path = base / certificate.compressed.path
    _require(compressed_path.is_file(), f"compressed: file {compressed_path} not found")
    _require(
        sha256_of(compressed_path) == certificate.compressed.sha256,
        "compressed: sha256 does not match the file",
    )
    compression = compress(network, statuses)
    dtype = certificate.compressed.dtype
    stored = load_network(compressed_path)
    expected = rounded_layers(compression.network, dtype)
    _require(
        len(stored.layers) == len(expected),
        "compressed: layer count differs from the recomputed compression",
    )
    rounded_folds = stored.rounded_folds
    _require(
        not rounded_folds,
        f"compressed: holds ops whose fold is rounded in float64 ({', '.join(rounded_folds)}); "
        "the compressed network must be exactly what its Gemm/MatMul/Relu nodes say",
    )
    for k, (layer, (weights, bias)) in enumerate(zip(stored.layers, expected, strict=True)):
        wanted_relu = compression.network.layers[k].relu
        _require(
            layer.relu == wanted_relu,
            f"compressed: layer {k} {'lacks' if wanted_relu else 'has'} a ReLU, the "
            "recomputed compression "
            f"{'has one' if wanted_relu else 'has none'}",
        )
        same = (
            layer.weights.shape == weights.shape
            and np.array_equal(
                np.asarray(layer.weights, dtype=np.float64), np.asarray(weights, dtype=np.float64)
            )
            and np.array_equal(
                np.asarray(layer.bias, dtype=np.float64), np.asarray(bias, dtype=np.float64)
            )
        )
        _require(same, f"compressed: layer {k} differs from the recomputed compression")
    recorded = certificate.compression.to_json()
    derived = compression_record(compression, rounding_bound(compression, domain, dtype))
    for key, value in derived.items():
        _require(
            recorded.get(key) == value,
            f"compression.{key} does not match the recomputed compression",
        )
    summary = summary_block(network, statuses, compression, True, smt_confirmed)
    _require(
        certificate.summary == summary,
        "summary does not match the statuses and the recomputed compression: "
        + ", ".join(
            field.name
            for field in dataclasses.fields(summary)
            if getattr(certificate.summary, field.name) != getattr(summary, field.name)
        ),
    )
    equivalence = prove_equivalence(
        network, compression, statuses, stability_lemmas, domain, cross_check=False
    )
    _require(equivalence.proved, f"equivalence: {equivalence.message}")
    _require(
        certificate.compression.equivalence.proved is True,
        "compression.equivalence.proved is not true, though the check proves it",
    )
    _check_shipped_obligations(certificate, base, equivalence.obligations)
    if solver != "z3":
        # prove_equivalence ran them with z3; the chosen solver must agree.
        for obligation, result in zip(
            equivalence.obligations,
            check_many(equivalence.obligations, 60.0, 1, solver),
            strict=True,
        ):
            _require(
                result.verdict is SmtVerdict.PROVED,
                f"obligation {obligation.id}: {solver} says {result.verdict.value}",
            )
    counts["equivalence_obligations"] = len(equivalence.obligations)
    if progress is not None:
        progress("equivalence", 1, 1)


def _check_shipped_obligations(
    certificate: Certificate, base: Path, obligations: Sequence[Obligation]
) -> None:  # the equivalence obligations (the stability ones: _check_stability_obligations)
    """Every re-derived equivalence obligation is listed in the certificate and shipped in
    smt/ with the same SHA-256, and nothing else is listed: the files a second solver re-runs
    are exactly the obligations this check proved."""
    listed = certificate.compression.equivalence.obligations
    _require(
        [entry.id for entry in listed] == [o.id for o in obligations],
        "equivalence: the listed obligations differ from the re-derived ones",
    )
    for entry, obligation in zip(listed, obligations, strict=True):
        _require(
            entry.verdict == SmtVerdict.PROVED.value,
            f"equivalence obligation {obligation.id}: recorded verdict {entry.verdict!r}, "
            "the check proves it",
        )
        _require(
            entry.sha256 == obligation.sha256 and entry.file == obligation.filename,
            f"equivalence obligation {obligation.id}: recorded hash or file name differs from "
            "the re-derived obligation",
        )
        shipped = base / "smt" / obligation.filename
        _require(shipped.is_file(), f"smt/{obligation.filename}: missing")
        _require(
            sha256_of(shipped) == obligation.sha256,
            f"smt/{obligation.filename}: differs from the re-derived obligation",
        )
