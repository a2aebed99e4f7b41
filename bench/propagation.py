"""Benchmark: bound propagation and the exact kernel side by side, per box.

Not a test: prints a Markdown table (paste it into docs/BENCHMARKS.md with the command).

    python bench/propagation.py [--only "acas 1_1 prop_1,mnist"] [--exact-library flint|numpy]

For each public benchmark network and VNN-LIB box (the first box of a domain), the hidden
neurons decided stable on the whole box by:
- float CROWN: back-substitution in float64 (`verify_compress.bounds.symbolic_bounds`; no proof);
- kernel CROWN: the same multipliers evaluated exactly (`verify_compress.kernel.bounds.box_bounds`:
  a proof), and its time relative to float CROWN;
- kernel + LP: the neurons CROWN's multipliers leave open, retried with the optimal multipliers
  of the triangle LP (GLOP), still checked exactly (a proof; at least alpha-CROWN's bound on
  the same intermediate bounds, which the LP optimum dominates);
- the full main job at `--time-limit` (proofs on sub-boxes and case splits, witnesses).
`--exact-library numpy` swaps python-flint's matrix product for numpy's object-array product
in the kernel, to measure what the library buys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from verify_compress.bounds import symbolic_bounds  # noqa: E402
from verify_compress.domain import parse_vnnlib  # noqa: E402
from verify_compress.kernel import bounds as kernel_bounds  # noqa: E402
from verify_compress.kernel.bounds import ExactNetwork, box_bounds, target_bound  # noqa: E402
from verify_compress.lp import TriangleLp  # noqa: E402
from verify_compress.onnx_import import load_network  # noqa: E402
from verify_compress.status import Phase  # noqa: E402

BENCHMARKS = ROOT.parent / "shared" / "benchmarks"


def cases() -> list[tuple[str, Path, Path]]:
    found = []
    for network in sorted((BENCHMARKS / "acasxu").glob("*.onnx")):
        short = network.stem.replace("ACASXU_run2a_", "").replace("_batch_2000", "")
        for prop in sorted((BENCHMARKS / "acasxu").glob("prop_*.vnnlib")):
            found.append((f"acas {short} {prop.stem}", network, prop))
    mnist = BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx"
    for prop in sorted((BENCHMARKS / "mnistfc").glob("*.vnnlib")):
        found.append((f"mnist256x2 {prop.stem}", mnist, prop))
    return found


def decided(lower: list[np.ndarray], upper: list[np.ndarray]) -> int:
    return int(sum(np.sum((lo >= 0) | (hi <= 0)) for lo, hi in zip(lower, upper, strict=True)))


def numpy_matmul(left: np.ndarray, right: object) -> np.ndarray:
    rows, columns = right.nrows(), right.ncols()  # type: ignore[attr-defined]
    dense = np.empty((rows, columns), dtype=object)
    for i, row in enumerate(right.tolist()):  # type: ignore[attr-defined]
        dense[i, :] = [int(v) for v in row]
    return np.asarray(left.dot(dense), dtype=object).reshape(left.shape[0], columns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--exact-library", choices=["flint", "numpy"], default="flint")
    parser.add_argument("--skip-job", action="store_true")
    arguments = parser.parse_args()
    if arguments.exact_library == "numpy":
        kernel_bounds.matmul = numpy_matmul  # type: ignore[assignment]
    selected = cases()
    if arguments.only:
        selected = [c for c in selected if any(s in c[0] for s in arguments.only.split(","))]
    print(f"load: {os.getloadavg()[0]:.2f}; exact matrix products: {arguments.exact_library}; "
          f"job time limit {arguments.time_limit:.0f} s\n")
    print("| case | hidden | float CROWN | s | kernel CROWN | s | kernel/float | + LP multipliers | s | job: stable | unknown | job s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path, prop in selected:
        network = load_network(path)
        box = parse_vnnlib(prop, network.input_size).boxes[0]
        hidden = len(network.hidden_neurons())
        started = time.perf_counter()
        floating = symbolic_bounds(network, box)
        float_seconds = time.perf_counter() - started
        layers = len([layer for layer in network.layers if layer.relu])
        float_decided = decided(floating.lower[:layers], floating.upper[:layers])

        started = time.perf_counter()
        exact = ExactNetwork(network)
        certified = box_bounds(exact, box)
        kernel_seconds = time.perf_counter() - started
        kernel_decided = decided(list(certified.lower), list(certified.upper))

        started = time.perf_counter()
        extra = 0
        for layer in range(1, layers):
            open_neurons = [
                n for n in network.hidden_neurons()
                if n.layer == layer and not (certified.shows(n, Phase.ACTIVE) or certified.shows(n, Phase.INACTIVE))
            ]
            if not open_neurons:
                continue
            program = TriangleLp(network, box, certified.lower, certified.upper, layer)
            for neuron in open_neurons:
                for phase in Phase:
                    multipliers = program.multipliers(neuron, phase)
                    if multipliers is None:
                        continue
                    value = target_bound(exact, box, certified, neuron, phase, {}, multipliers)
                    if value is not None and (value <= 0 if phase is Phase.INACTIVE else value >= 0):
                        extra += 1
                        break
        lp_seconds = time.perf_counter() - started

        job = ["-", "-", "-"]
        if not arguments.skip_job:
            out = Path(tempfile.mkdtemp(prefix="bench-propagation-")) / "out"
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "verify_compress.cli.main", str(path), "--vnnlib", str(prop), "--out", str(out),
                 "--json", "--time-limit", str(arguments.time_limit)],
                capture_output=True, text=True, cwd=ROOT,
            )
            seconds = time.perf_counter() - started
            if result.returncode == 0:
                totals = json.loads(result.stdout)["totals"]
                job = [str(totals["stably_active"] + totals["stably_inactive"]), str(totals["unknown"]), f"{seconds:.1f}"]
            else:
                job = ["failed", result.stderr.strip()[-80:], f"{seconds:.1f}"]
        print(
            f"| {name} | {hidden} | {float_decided} | {float_seconds:.3f} | {kernel_decided} | "
            f"{kernel_seconds:.2f} | {kernel_seconds / float_seconds:.0f}x | {kernel_decided + extra} | "
            f"{lp_seconds:.1f} | {' | '.join(job)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
