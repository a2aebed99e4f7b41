"""Benchmark: the main job and the checker on every public benchmark network and domain.

Not a test: runs the `verify-compress` command as a user would and prints a Markdown table.

    python bench/end_to_end.py [--time-limit 60] [--only "acas 1_1 prop_1,synthetic"] [--out DIR] [--hog]

Besides the public benchmarks and the bundled models it runs seeded synthetic networks of
shapes those lack (`bench/synthetic.py`: a wide MNIST-sized net, a convolutional net, a deep
narrow net), written into the output directory.
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

import numpy as np
import onnx

from synthetic import write_cases

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"


def input_size(model: Path) -> int:
    """The number of input values of an ONNX model (its first input, batch dimension left out)."""
    graph = onnx.load(str(model)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:]
    return int(np.prod([d for d in dims if d > 0]))


def pairs() -> list[tuple[str, Path, Path | None]]:
    found: list[tuple[str, Path, Path | None]] = []
    for network in sorted((BENCHMARKS / "acasxu").glob("*.onnx")):
        short = network.stem.replace("ACASXU_run2a_", "").replace("_batch_2000", "")
        for prop in sorted((BENCHMARKS / "acasxu").glob("prop_*.vnnlib")):
            found.append((f"acas {short} {prop.stem}", network, prop))
    mnist = BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx"
    if mnist.is_file():
        for prop in sorted((BENCHMARKS / "mnistfc").glob("*.vnnlib")):
            found.append((f"mnist256x2 {prop.stem}", mnist, prop))
    for model in sorted((ROOT / "models").glob("*.onnx")):
        found.append((f"{model.stem} [0,1]^{input_size(model)}", model, None))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--only", default="", help="comma-separated substrings of case names")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--hog", action="store_true", help="keep one core busy (a CPU hog) throughout")
    arguments = parser.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if arguments.hog else None
    try:
        run_cases(arguments)
    finally:
        if hog is not None:
            hog.kill()


def run_cases(arguments: argparse.Namespace) -> None:
    out = arguments.out or Path(tempfile.mkdtemp(prefix="verify-compress-bench-"))
    selected = [*pairs(), *write_cases(out / "synthetic-networks")]
    if arguments.only:
        selected = [p for p in selected if any(s in p[0] for s in arguments.only.split(","))]
    print(f"time limit {arguments.time_limit:.0f} s per run; outputs in {out}; "
          f"load {os.getloadavg()[0]:.1f}{'; a CPU hog on one core' if arguments.hog else ''}\n")
    print("| case | active | inactive | unstable | unknown | Z3-confirmed | neurons | connections | removed | equivalence | sub-boxes | run s | of which Z3 s | check | check s | run/check | run without Z3 / check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, network, domain in selected:
        target = out / name.replace(" ", "_").replace("[", "").replace("]", "").replace(",", "-").replace("^", "")
        command = [sys.executable, "-m", "verify_compress.cli.main", str(network), "--out", str(target), "--json",
                   "--time-limit", str(arguments.time_limit)]
        if domain is not None:
            command += ["--vnnlib", str(domain)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        run_seconds = time.perf_counter() - started
        if result.returncode != 0:
            print(f"| {name} | run failed (exit {result.returncode}): {result.stderr.strip()[-200:]} |", flush=True)
            continue
        summary = json.loads(result.stdout)
        totals = summary["totals"]
        started = time.perf_counter()
        check = subprocess.run([sys.executable, "-m", "verify_compress.cli.main", "check", str(target / "certificate.json"), "--quiet"],
                               capture_output=True, text=True, cwd=ROOT)
        check_seconds = time.perf_counter() - started
        verdict = "valid" if check.returncode == 0 else f"INVALID ({check.returncode})"
        # The SMT tier confirms stable neurons with Z3 for as long as the limit allows; the
        # last column compares the rest of the run (the proofs proper) with the check.
        smt_seconds = float(summary.get("timings", {}).get("smt", 0.0))
        stable = totals["stably_active"] + totals["stably_inactive"]
        print(
            f"| {name} | {totals['stably_active']} | {totals['stably_inactive']} | {totals['unstable']} | "
            f"{totals['unknown']} | {totals.get('smt_confirmed', 0)}/{stable} | "
            f"{totals['neurons_before']} -> {totals['neurons_after']} | "
            f"{totals['connections_before']} -> {totals['connections_after']} | "
            f"{totals['percent_connections_removed']:.1f}% | {summary.get('equivalence_proved')} | "
            f"{summary.get('proof_subboxes')} | {run_seconds:.0f} | {smt_seconds:.0f} | {verdict} | "
            f"{check_seconds:.0f} | {run_seconds / check_seconds:.1f}x | "
            f"{(run_seconds - smt_seconds) / check_seconds:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")
