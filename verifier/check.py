"""The certificate checker: re-verifies a certificate from scratch.

Stage: certificate -> **check** (what an auditor runs: `verify-compress check CERT`).

Trusted: the domain written in the certificate and the ONNX file it names (verified by hash).
Everything else is re-derived or re-checked:
- every witness is re-evaluated exactly on the re-imported network, and must lie in its box;
- every lemma's relaxation rows are re-derived from the network and the lemma's context (the
  certificate only supplies multipliers and claimed numbers), every leaf's residual bound is
  recomputed in exact arithmetic, case splits must cover every phase combination, every
  context must consist of exactly the earlier-layer lemmas of its box, and every obligation is
  regenerated and run by a fresh Z3 (its text must also match the recorded SHA-256);
- the sub-boxes lemmas are about are rebuilt from the domain and the recorded bisection trees
  (every cut strictly inside its interval, every sub-box once), and a fresh solver confirms
  that each split domain box is covered by its sub-boxes;
- every stable status must rest on verified lemmas on every sub-box;
- the compressed network is recomputed from the statuses and the stored compressed ONNX must
  equal its rounding bit for bit; the equivalence obligations are re-run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from verifier.certificate import (
    FORMAT,
    FORMAT_VERSION,
    lemma_from_json,
    per_layer_summary,
    point_from_json,
    sha256_of,
)
from verifier.certify import (
    LOWER,
    UPPER,
    BoundLemma,
    DefinitionRows,
    covers_all_phases,
    leaf_bound,
    leaf_obligation,
    lemma_id,
    scaled_residual,
)
from verifier.compress import compress
from verifier.domain import Domain
from verifier.equivalence import prove_equivalence
from verifier.errors import CertificateError, VerifyCompressError
from verifier.exact import RationalArray
from verifier.ir import Network
from verifier.obligations import RelaxationCache, coverage_obligation
from verifier.onnx_export import rounded_layers
from verifier.onnx_import import load_network
from verifier.relaxation import NeuronFact, Relaxation
from verifier.smt import SOLVERS, Obligation, SmtVerdict, check_many
from verifier.stability import covering_lemmas
from verifier.status import Neuron, Phase, Status
from verifier.subdomains import Subdomains, cover_obligation

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


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


def check_certificate(
    path: Path, progress: ProgressCallback | None = None, solver: str = "z3", workers: int = 2
) -> CheckReport:
    """Re-verify a certificate; invalid certificates give `valid=False` naming the first failure.

    Raises CertificateError when the file cannot be read as a certificate at all.
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
        _check(document, path.parent, counts, progress, workers, solver)
    except _Failed as failure:
        return CheckReport(
            False, str(failure), [str(failure)], counts, time.perf_counter() - started
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        message = f"malformed certificate: {error!r}"
        return CheckReport(False, message, [message], counts, time.perf_counter() - started)
    except VerifyCompressError as error:
        return CheckReport(False, str(error), [str(error)], counts, time.perf_counter() - started)
    return CheckReport(True, None, [], counts, time.perf_counter() - started)


def _check(
    document: dict[str, Any],
    base: Path,
    counts: dict[str, int],
    progress: ProgressCallback | None,
    workers: int,
    solver: str,
) -> None:
    network_path = base / document["network"]["path"]
    _require(network_path.is_file(), f"network: file {network_path} not found")
    _require(
        sha256_of(network_path) == document["network"]["sha256"],
        "network: sha256 does not match the file",
    )
    network = load_network(network_path)
    domain = Domain.from_json(document["domain"])
    _require(domain.size == network.input_size, "domain: dimension does not match the network")

    statuses = _check_neurons(document, network, domain, counts)
    subdomains = _check_subdomains(document, domain, counts, solver)
    lemmas = {
        identifier: lemma_from_json(identifier, data)
        for identifier, data in document["lemmas"].items()
    }
    verified = _check_lemmas(
        document, network, subdomains, lemmas, counts, progress, workers, solver
    )
    ancestries = [subdomains.ancestry(k) for k in subdomains.leaves]
    proved = {i: lemmas[i] for i in verified}
    stability_lemmas: dict[Neuron, list[str]] = {}
    for neuron, status in statuses.items():
        if not status.is_stable:
            continue
        phase = Phase.ACTIVE if status is Status.STABLY_ACTIVE else Phase.INACTIVE
        for leaf, chain in zip(subdomains.leaves, ancestries, strict=True):
            _require(
                covering_lemmas([chain], proved, neuron, phase) is not None,
                f"neuron {neuron}: status {status.value} lacks a verified lemma showing it on "
                f"sub-box {leaf} (or a proof box enclosing it)",
            )
        covering = covering_lemmas(ancestries, proved, neuron, phase) or []
        stability_lemmas[neuron] = [lemma.id for lemma in covering]
    counts["stable_neurons"] = sum(1 for s in statuses.values() if s.is_stable)

    per_layer = per_layer_summary(network, statuses)
    for recorded, derived in zip(document["summary"]["per_layer"], per_layer, strict=True):
        for key in ("layer", "neurons", *(s.value for s in Status)):
            _require(
                recorded[key] == derived[key],
                f"summary.per_layer layer {derived['layer']}: {key} does not match the neurons",
            )

    _check_compression(
        document, base, network, domain, stability_lemmas, statuses, counts, progress, solver
    )


def _check_subdomains(
    document: dict[str, Any], domain: Domain, counts: dict[str, int], solver: str
) -> Subdomains:
    """Rebuild the sub-boxes from the domain and the split trees (which validates the trees),
    and have the solver confirm that each split domain box is covered by its sub-boxes."""
    recorded = document["subdomains"]
    subdomains = Subdomains.from_json(domain, recorded["trees"])
    _require(
        recorded["subboxes"] == len(subdomains.leaves),
        f"subdomains: {recorded['subboxes']} sub-boxes recorded, the trees have "
        f"{len(subdomains.leaves)}",
    )
    covers = {int(entry["box"]): entry for entry in recorded["cover"]}
    obligations = []
    for parent in range(len(domain.boxes)):
        if len(subdomains.leaves_of(parent)) == 1:
            continue
        obligation = cover_obligation(subdomains, parent)
        _require(parent in covers, f"subdomains: box {parent} is split but has no cover record")
        _require(
            covers[parent]["sha256"] == obligation.sha256,
            f"subdomains: recorded obligation {obligation.id} differs from the re-derived one",
        )
        obligations.append(obligation)
    results = check_many(obligations, 60.0, 1, solver)
    for obligation, result in zip(obligations, results, strict=True):
        _require(
            result.verdict is SmtVerdict.PROVED,
            f"obligation {obligation.id}: {solver} says {result.verdict.value} ({result.detail})",
        )
    counts["sub_boxes"] = len(subdomains.leaves)
    return subdomains


def _check_neurons(
    document: dict[str, Any], network: Network, domain: Domain, counts: dict[str, int]
) -> dict[Neuron, Status]:
    hidden = network.hidden_neurons()
    entries = document["neurons"]
    statuses: dict[Neuron, Status] = {}
    for entry in entries:
        neuron = Neuron(int(entry["layer"]), int(entry["index"]))
        _require(neuron not in statuses, f"neuron {neuron}: listed more than once")
        try:
            statuses[neuron] = Status(entry["status"])
        except ValueError:
            raise _Failed(f"neuron {neuron}: unknown status {entry['status']!r}") from None
    _require(
        set(statuses) == set(hidden), "neurons: the list does not cover exactly the hidden neurons"
    )
    witnesses = document["witnesses"]
    evaluated: dict[int, Any] = {}
    for entry in entries:
        neuron = Neuron(int(entry["layer"]), int(entry["index"]))
        if statuses[neuron] is not Status.UNSTABLE:
            continue
        for phase in Phase:
            _require(
                phase.value in entry["evidence"],
                f"neuron {neuron}: unstable without a {phase.value} witness",
            )
            index = int(entry["evidence"][phase.value])
            _require(
                0 <= index < len(witnesses), f"neuron {neuron}: witness {index} does not exist"
            )
            if index not in evaluated:
                witness = witnesses[index]
                item = f"witness {index}"
                point = point_from_json(witness["point"], item)
                box_index = int(witness["box"])
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
                    _require(inside, f"{item}: coordinate {j} lies outside box {witness['box']}")
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


def _check_lemmas(
    document: dict[str, Any],
    network: Network,
    subdomains: Subdomains,
    lemmas: dict[str, BoundLemma],
    counts: dict[str, int],
    progress: ProgressCallback | None,
    workers: int,
    solver: str,
) -> set[str]:
    """Verify every lemma in dependency order; returns the ids verified.

    The obligations are re-derived one lemma at a time and go to the solver as they are
    written (each is compared with its recorded hash first).
    """
    obligations: list[Obligation] = []
    derived = _derived_obligations(document, network, subdomains, lemmas, progress, obligations)
    results = check_many(derived, 60.0, workers, solver)
    for obligation, result in zip(obligations, results, strict=True):
        _require(
            result.verdict is SmtVerdict.PROVED,
            f"obligation {obligation.id}: {solver} says {result.verdict.value} ({result.detail})",
        )
    counts["lemmas"] = len(lemmas)
    counts["obligations"] = len(obligations)
    return set(lemmas)


def _derived_obligations(
    document: dict[str, Any],
    network: Network,
    subdomains: Subdomains,
    lemmas: dict[str, BoundLemma],
    progress: ProgressCallback | None,
    derived: list[Obligation],
) -> Iterator[Obligation]:
    """Check each lemma's certificate exactly and yield its obligations re-derived from the
    network (also appended to `derived`); raises _Failed at the first problem."""
    contexts = document["contexts"]
    rows = DefinitionRows(network)
    relaxations = RelaxationCache()
    ordered = sorted(lemmas.values(), key=lambda lemma: (lemma.box, lemma.neuron.layer, lemma.id))
    for lemma in ordered:
        item = f"lemma {lemma.id}"
        _require(
            lemma.id == lemma_id(lemma.box, lemma.neuron, lemma.sign),
            f"{item}: id does not match its statement",
        )
        _require(0 <= lemma.box < len(subdomains.boxes), f"{item}: box {lemma.box} does not exist")
        layer = lemma.neuron.layer
        _require(
            0 <= layer < len(network.layers)
            and 0 <= lemma.neuron.index < network.layers[layer].outputs,
            f"{item}: neuron {lemma.neuron} does not exist",
        )
        _require(lemma.context in contexts, f"{item}: context {lemma.context} missing")
        facts = _context_facts(network, subdomains, lemmas, lemma, list(contexts[lemma.context]))
        _require(bool(lemma.leaves), f"{item}: has no leaves")
        # Also for a single leaf: one that carries an assumption proves nothing on its own.
        _require(
            covers_all_phases(dict(leaf.assumptions) for leaf in lemma.leaves),
            f"{item}: case split does not cover all phases",
        )
        recorded = document["lemmas"][lemma.id].get("obligations", [])
        _require(
            len(recorded) == len(lemma.leaves) + (1 if len(lemma.leaves) > 1 else 0),
            f"{item}: obligation list does not match its leaves",
        )
        for position, leaf in enumerate(lemma.leaves):
            for neuron, _ in leaf.assumptions:
                _require(
                    neuron.layer < layer,
                    f"{item}: assumption on {neuron} is not an earlier-layer neuron",
                )
            key = (lemma.box, layer, lemma.context, leaf.assumptions)
            relaxation = relaxations.get(key)
            if relaxation is None:
                box = subdomains.boxes[lemma.box]
                relaxation = Relaxation(network, box, layer, facts, dict(leaf.assumptions))
                relaxations.put(key, relaxation)
            try:
                scaled = scaled_residual(relaxation, lemma.neuron, lemma.sign, leaf.multipliers)
                bound = leaf_bound(relaxation, lemma.neuron, lemma.sign, leaf.multipliers, scaled)
            except ValueError as error:
                raise _Failed(f"{item} leaf {position}: {error}") from None
            _require(
                bound <= leaf.bound,
                f"{item} leaf {position}: residual bound {bound} exceeds the stated {leaf.bound}",
            )
            allowed = lemma.value if lemma.sign == UPPER else -lemma.value
            _require(
                leaf.bound <= allowed,
                f"{item} leaf {position}: bound {leaf.bound} does not give value {lemma.value}",
            )
            obligation = leaf_obligation(
                relaxation,
                lemma.neuron,
                lemma.sign,
                leaf,
                f"{lemma.id}.leaf{position}",
                rows,
                scaled,
            )
            yield _matching(obligation, recorded[position]["sha256"], item, derived)
        if len(lemma.leaves) > 1:
            yield _matching(coverage_obligation(lemma), recorded[-1]["sha256"], item, derived)
        if progress is not None:
            progress("lemmas", len(derived), 0)


def _context_facts(
    network: Network,
    subdomains: Subdomains,
    lemmas: dict[str, BoundLemma],
    lemma: BoundLemma,
    context: list[str],
) -> dict[Neuron, NeuronFact]:
    """The bounds a lemma's relaxation may use: its context must hold exactly one lower and
    one upper bound lemma of every earlier-layer neuron, each proved on the lemma's box or on
    a proof box enclosing it (a lemma holds on every box inside its own)."""
    item = f"lemma {lemma.id}"
    boxes = subdomains.ancestry(lemma.box)
    chosen: dict[tuple[Neuron, int], Fraction] = {}
    for identifier in context:
        _require(identifier in lemmas, f"{item}: uses missing lemma {identifier}")
        used = lemmas[identifier]
        _require(
            used.neuron.layer < lemma.neuron.layer,
            f"{item}: context lemma {identifier} is not about an earlier layer",
        )
        _require(
            used.box in boxes,
            f"{item}: context lemma {identifier} is on box {used.box}, which does not "
            f"enclose box {lemma.box}",
        )
        key = (used.neuron, used.sign)
        _require(key not in chosen, f"{item}: context has two {used.sense} bounds of {used.neuron}")
        chosen[key] = used.value
    facts: dict[Neuron, NeuronFact] = {}
    for k in range(lemma.neuron.layer):
        for i in range(network.layers[k].outputs):
            neuron = Neuron(k, i)
            _require(
                (neuron, LOWER) in chosen and (neuron, UPPER) in chosen,
                f"{item}: context {lemma.context} lacks a lower or upper bound of {neuron}",
            )
            facts[neuron] = NeuronFact(chosen[(neuron, LOWER)], chosen[(neuron, UPPER)])
    return facts


def _matching(
    obligation: Obligation, digest: str, item: str, derived: list[Obligation]
) -> Obligation:
    _require(
        obligation.sha256 == digest,
        f"{item}: recorded obligation {obligation.id} differs from the re-derived one",
    )
    derived.append(obligation)
    return obligation


def _check_compression(
    document: dict[str, Any],
    base: Path,
    network: Network,
    domain: Domain,
    stability_lemmas: dict[Neuron, list[str]],
    statuses: dict[Neuron, Status],
    counts: dict[str, int],
    progress: ProgressCallback | None,
    solver: str,
) -> None:
    compressed_path = base / document["compressed"]["path"]
    _require(compressed_path.is_file(), f"compressed: file {compressed_path} not found")
    _require(
        sha256_of(compressed_path) == document["compressed"]["sha256"],
        "compressed: sha256 does not match the file",
    )
    compression = compress(network, statuses)
    dtype = document["compressed"].get("dtype", "float32")
    stored = load_network(compressed_path)
    expected = rounded_layers(compression.network, dtype)
    _require(
        len(stored.layers) == len(expected),
        "compressed: layer count differs from the recomputed compression",
    )
    for k, (layer, (weights, bias)) in enumerate(zip(stored.layers, expected, strict=True)):
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
    recorded = document["compression"]
    for key in ("neurons_after", "layers_after", "connections_after"):
        _require(
            recorded[key] == getattr(compression.counts, key),
            f"compression.{key} does not match the recomputed compression",
        )
    equivalence = prove_equivalence(
        network, compression, statuses, stability_lemmas, domain, cross_check=False
    )
    _require(equivalence.proved, f"equivalence: {equivalence.message}")
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
