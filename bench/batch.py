"""Benchmark: the batch mode on the public benchmark cases, one job at a time vs two at a time
vs a Dask LocalCluster of two workers.

Not a test: runs `verify-compress batch` as a user would, on a jobs file listing the 15 ACAS Xu
cases (networks 1_1, 2_1, 3_3 x properties 1, 2, 3, 4, 6) and the 3 MNIST cases of
../shared/benchmarks, once per configuration (each in a fresh output folder), and prints
Markdown tables: wall time and speed-up over `--jobs 1`, and each case's run time.

    python bench/batch.py [--time-limit 30] [--only "1_1,mnist"] [--configs "jobs1,jobs2,dask2"]

A job ends by its time limit, so cases that use their whole limit take as long side by side as
alone; the speed-up of the others depends on free cores (`uptime` is printed beside it).
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
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
CONFIGS = {
    "jobs1": ("local, --jobs 1", ["--backend", "local", "--jobs", "1"]),
    "jobs2": ("local, --jobs 2", ["--backend", "local", "--jobs", "2"]),
    "dask2": ("dask LocalCluster, 2 workers", ["--backend", "dask", "--jobs", "2"]),
}


def cases() -> list[tuple[str, Path, Path]]:
    found = []
    for network in sorted((BENCHMARKS / "acasxu").glob("*.onnx")):
        short = network.stem.replace("ACASXU_run2a_", "").replace("_batch_2000", "")
        for prop in sorted((BENCHMARKS / "acasxu").glob("prop_*.vnnlib")):
            found.append((f"acas_{short}_{prop.stem}", network, prop))
    mnist = BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx"
    for prop in sorted((BENCHMARKS / "mnistfc").glob("*.vnnlib")):
        found.append((f"mnist256x2_{prop.stem}", mnist, prop))
    return found


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        load = os.getloadavg()
        return f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=30.0, help="per job, seconds")
    parser.add_argument("--only", default="", help="comma-separated substrings of case names")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of: " + ", ".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()
    if not BENCHMARKS.is_dir():
        sys.exit(f"public benchmarks not found at {BENCHMARKS}")
    selected = cases()
    if arguments.only:
        selected = [c for c in selected if any(s in c[0] for s in arguments.only.split(","))]
    out = arguments.out or Path(tempfile.mkdtemp(prefix="verify-compress-batch-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    jobs = out / "jobs.csv"
    jobs.write_text(
        "name,network,vnnlib,time_limit\n"
        + "".join(f"{name},{net},{prop},{arguments.time_limit:g}\n" for name, net, prop in selected)
    )
    print(f"{len(selected)} jobs, time limit {arguments.time_limit:g} s each, 1 worker per job; "
          f"{os.cpu_count()} cores; outputs in {out}\n")
    documents: dict[str, dict] = {}
    walls: dict[str, float] = {}
    loads: dict[str, tuple[str, str]] = {}
    for key in arguments.configs.split(","):
        label, options = CONFIGS[key]
        before = uptime()
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "verify_compress.cli.main", "batch", str(jobs), "--out", str(out / key),
             "--json", *options],
            capture_output=True, text=True, cwd=ROOT,
        )
        walls[key] = time.perf_counter() - started
        loads[key] = (before, uptime())
        if result.returncode not in (0, 1):
            print(f"{label}: batch failed (exit {result.returncode}): {result.stderr.strip()[-300:]}")
            continue
        documents[key] = json.loads(result.stdout)
        print(f"{label}: {walls[key]:.1f} s  [before: {before}] [after: {loads[key][1]}]", flush=True)
    print()
    print("| configuration | wall s | speed-up | ok | failed | timed out | check valid | stable | unknown | sum of run s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = walls.get("jobs1")
    for key, document in documents.items():
        totals = document["totals"]
        speedup = f"{base / walls[key]:.2f}x" if base else "-"
        print(f"| {CONFIGS[key][0]} | {walls[key]:.1f} | {speedup} | {totals['ok']} | {totals['failed']} | "
              f"{totals['timed-out']} | {totals['check_valid']} | {totals['stable']} | {totals['unknown']} | "
              f"{totals['run_seconds']:.1f} |")
    print()
    keys = list(documents)
    print("| case | " + " | ".join(f"{key}: stable/unknown, run s, job s" for key in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, _, _ in selected:
        cells = []
        for key in keys:
            row = next(r for r in documents[key]["jobs"] if r["name"] == name)
            if row["status"] != "ok":
                cells.append(f"{row['status']}: {row['error']}")
                continue
            cells.append(f"{row['stable']}/{row['unknown']}, {row['run_seconds']:.1f}, "
                         f"{row['wall_seconds']:.1f} ({row['check']['result']})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
