"""Benchmark: are the neurons a run left unknown stable? A per-neuron MILP on them.

Not a test and not a proof (HiGHS works in floating point with tolerances; see
`bench/milp_baseline.py`): it measures the gap a run leaves. For each certificate given, it
reads the network and the domain the certificate names, and for every neuron the certificate
calls "unknown" asks HiGHS, box by box of the domain, whether the neuron can be active and
whether it can be inactive there. A neuron is MILP-stable on the domain when one phase is
impossible on every box (the same phase on all of them).

    python bench/milp_residue.py OUT/certificate.json [more certificates]
        [--solve-seconds 30] [--seconds 600]

Needs `highspy` (pip install highspy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from verify_compress.bounds import symbolic_bounds
from verify_compress.domain import Box
from verify_compress.onnx_import import load_network

from milp_baseline import per_neuron_milp


def residue(certificate: Path, solve_seconds: float, seconds: float) -> dict[str, object]:
    document = json.loads(certificate.read_text())
    network = load_network(certificate.parent / document["network"]["path"])
    unknown = sorted(
        (n["layer"], n["index"]) for n in document["neurons"] if n["status"] == "unknown"
    )
    started = time.monotonic()
    deadline = started + seconds
    # Per neuron, the phases HiGHS showed impossible on every box so far (None: undecided).
    impossible: dict[tuple[int, int], set[str] | None] = {
        n: {"active", "inactive"} for n in unknown
    }
    for box in document["domain"]["boxes"]:
        lower = np.array([float(v) for v in box["lower"]])
        upper = np.array([float(v) for v in box["upper"]])
        open_neurons = [n for n in unknown if impossible[n]]
        if not open_neurons:
            break
        bounds = symbolic_bounds(network, Box(lower, upper))
        verdicts = per_neuron_milp(
            network, lower, upper, bounds, open_neurons, set(), set(), solve_seconds, deadline
        )
        for neuron in open_neurons:
            phase = verdicts.stable.get(neuron)
            if neuron in verdicts.timed_out:
                impossible[neuron] = None
            elif phase is None:
                impossible[neuron] = set()
            else:
                # "active" stable means the inactive phase cannot occur, and vice versa.
                cannot = "inactive" if phase == "active" else "active"
                kept = impossible[neuron]
                impossible[neuron] = kept & {cannot} if kept is not None else None
    stable = {n: next(iter(p)) for n, p in impossible.items() if p}
    return {
        "case": certificate.parent.name,
        "unknown": len(unknown),
        "stable": len(stable),
        "by_layer": _by_layer(stable),
        "unstable": sum(1 for p in impossible.values() if p == set()),
        "undecided": sum(1 for p in impossible.values() if p is None),
        "seconds": time.monotonic() - started,
    }


def _by_layer(neurons: dict[tuple[int, int], str]) -> str:
    layers: dict[int, int] = {}
    for layer, _ in neurons:
        layers[layer] = layers.get(layer, 0) + 1
    return ", ".join(f"L{layer}: {count}" for layer, count in sorted(layers.items())) or "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("certificates", type=Path, nargs="+")
    parser.add_argument("--solve-seconds", type=float, default=30.0, help="per MILP solve")
    parser.add_argument("--seconds", type=float, default=600.0, help="per certificate")
    arguments = parser.parse_args()
    print(
        "| case | unknown | MILP stable | stable per layer | MILP unstable | undecided | MILP s |"
    )
    print("|---|---|---|---|---|---|---|")
    for certificate in arguments.certificates:
        row = residue(certificate, arguments.solve_seconds, arguments.seconds)
        print(
            f"| {row['case']} | {row['unknown']} | {row['stable']} | {row['by_layer']} | "
            f"{row['unstable']} | {row['undecided']} | {row['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
