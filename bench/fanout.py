"""Benchmark: one job's tasks (proof boxes of a bisection, case splits of many claims) on the
worker pool's backends: this process, local processes, a Dask LocalCluster. When does fanning
them out over Dask pay?

Not a test. Two parts, side by side in one run, each printed as a Markdown table:

1. One hard job (default: ACAS Xu 1_1 prop_6, `--time-limit 60`, without the SMT tier so the
   wall time is the analysis) with `--workers 1` (every task in this process), `--workers 2`
   (two local processes) and `--backend dask --workers 2` (a LocalCluster of two worker
   processes). Each configuration runs in a fresh process of its own that counts the pool's
   tasks: the maps that fan out (two tasks or more; with `--workers 1` they run here one
   after the other), their tasks, and the seconds the job spent in them. Then unknown neurons, sub-boxes, case splits, and `verify-compress check`
   on the certificate.
2. The crossover: the wall time of one `WorkerPool.map` of `--batch` tasks (2, as in a
   bisection; 8, as in case splits on a bigger cluster) of a calibrated CPU-bound task of a
   given size, in this process vs on 2 local processes vs on 2 Dask workers, and the real
   task of a bisection (the certified bounds of the two halves of an ACAS Xu box). From these:
   the overhead per map and per task of each backend, and the task size from which each
   beats this process.

    python bench/fanout.py [--time-limit 60] [--case acas_1_1_prop_6] [--parts job,crossover]

The machine is shared: `uptime` is printed beside every timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
CASES = {
    "acas_1_1_prop_6": ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_6.vnnlib"),
    "acas_2_1_prop_6": ("acasxu/ACASXU_run2a_2_1_batch_2000.onnx", "acasxu/prop_6.vnnlib"),
    "acas_1_1_prop_3": ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_3.vnnlib"),
    "mnist_prop_1_0.05": ("mnistfc/mnist-net_256x2.onnx", "mnistfc/prop_1_0.05.vnnlib"),
}
CONFIGS = {
    "local1": ("this process (--workers 1)", "local", 1),
    "local2": ("2 local processes (--workers 2)", "local", 2),
    "dask2": ("Dask LocalCluster, 2 workers", "dask", 2),
}
SIZES_MS = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
"""Task sizes of the crossover (ms of CPU work in this process)."""


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        load = os.getloadavg()
        return f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def load_of(line: str) -> str:
    return line.split("load average:")[-1].strip() if "load average:" in line else line


# ---------------------------------------------------------------------------------------------
# Part 1: one hard job, in a process of its own per configuration


def one_job(case: str, config_key: str, time_limit: float, out: Path) -> dict[str, Any]:
    """Run the main job in this process with a counting pool; return its figures."""
    from verify_compress import workers as workers_module
    from verify_compress.cli.run import build_domain
    from verify_compress.config import Config
    from verify_compress.onnx_import import load_network
    from verify_compress.pipeline import run as run_pipeline

    started = time.monotonic()
    _, backend, workers = CONFIGS[config_key]
    counts = {"maps": 0, "fanned_maps": 0, "tasks": 0, "fanned_tasks": 0}
    seconds = {"map": 0.0, "fanned_map": 0.0, "pool_start": 0.0}
    original_map = workers_module.WorkerPool.map
    original_init = workers_module.WorkerPool.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        since = time.perf_counter()
        original_init(self, *args, **kwargs)
        seconds["pool_start"] += time.perf_counter() - since

    def counting_map(self: Any, function: Any, tasks: Any) -> Any:
        since = time.perf_counter()
        result = original_map(self, function, tasks)
        spent = time.perf_counter() - since
        counts["maps"] += 1
        counts["tasks"] += len(tasks)
        seconds["map"] += spent
        if len(tasks) >= 2:
            counts["fanned_maps"] += 1
            counts["fanned_tasks"] += len(tasks)
            seconds["fanned_map"] += spent
        return result

    workers_module.WorkerPool.__init__ = counting_init  # type: ignore[method-assign]
    workers_module.WorkerPool.map = counting_map  # type: ignore[method-assign]
    network_file, vnnlib = (BENCHMARKS / part for part in CASES[case])
    network = load_network(network_file)
    domain, _ = build_domain(None, None, vnnlib, None, network.input_size)
    config = Config(
        time_limit=time_limit, workers=workers, backend=backend, smt_tier=False  # type: ignore[arg-type]
    )
    result = run_pipeline(network_file, domain, out, config, started=started)
    wall = time.monotonic() - started
    certificate = result.certificate
    totals = certificate["summary"]["totals"]
    return {
        "wall": wall,
        "unknown": totals["unknown"],
        "stable": totals["stably_active"] + totals["stably_inactive"],
        "unstable": totals["unstable"],
        "sub_boxes": certificate["proofs"]["sub_boxes"],
        "case_splits": len(certificate["proofs"]["case_splits"]),
        "timings": certificate["timings"],
        **counts,
        **{f"{k}_seconds": v for k, v in seconds.items()},
    }


def job_part(case: str, configs: list[str], time_limit: float, out: Path) -> list[dict[str, Any]]:
    rows = []
    for key in configs:
        folder = out / f"{case}-{key}"
        before = uptime()
        process = subprocess.run(
            [sys.executable, __file__, "--one-job", key, "--case", case,
             "--time-limit", f"{time_limit:g}", "--out", str(folder)],
            capture_output=True, text=True,
        )
        after = uptime()
        if process.returncode != 0:
            print(process.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{key}: the job failed")
        figures = json.loads(process.stdout.strip().splitlines()[-1])
        since = time.monotonic()
        check = subprocess.run(
            [sys.executable, "-m", "verify_compress.cli.main", "check",
             str(folder / "certificate.json"), "--quiet"],
            capture_output=True, text=True,
        )
        figures["check"] = check.stdout.strip() or check.stderr.strip()
        figures["check_seconds"] = time.monotonic() - since
        figures.update(key=key, before=before, after=after)
        print(f"  {key}: {figures['wall']:.1f} s, {figures['unknown']} unknown, "
              f"{figures['sub_boxes']} sub-boxes, {figures['fanned_tasks']} fanned-out tasks; "
              f"check: {figures['check']} ({before} -> {after})", file=sys.stderr)
        rows.append(figures)
    return rows


def job_table(case: str, time_limit: float, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"One job: {case}, --time-limit {time_limit:g}, no SMT tier "
        f"({os.cpu_count()} cores)\n",
        "| pool | wall s | unknown | stable | sub-boxes | case splits | pool start s "
        "| maps of >= 2 tasks | their tasks | s in them | ms per map "
        "| ms per task | check | load before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_map = 1000 * row["fanned_map_seconds"] / max(1, row["fanned_maps"])
        per_task = 1000 * row["fanned_map_seconds"] / max(1, row["fanned_tasks"])
        lines.append(
            f"| {CONFIGS[row['key']][0]} | {row['wall']:.1f} | {row['unknown']} | "
            f"{row['stable']} | {row['sub_boxes']} | {row['case_splits']} | "
            f"{row['pool_start_seconds']:.2f} | {row['fanned_maps']} | {row['fanned_tasks']} | "
            f"{row['fanned_map_seconds']:.1f} | {per_map:.2f} | {per_task:.2f} | "
            f"{row['check']} | {load_of(row['before'])} -> {load_of(row['after'])} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Part 2: the crossover


def spin(state: Any, iterations: int) -> int:
    """CPU-bound work of a given size (the state is not used)."""
    total = 0
    for k in range(iterations):
        total += k * k % 7
    return total


def calibrate() -> float:
    """Iterations of `spin` per millisecond in this process."""
    best = float("inf")
    for _ in range(5):
        since = time.perf_counter()
        spin(None, 200_000)
        best = min(best, time.perf_counter() - since)
    return 200_000 / (best * 1000)


def time_rounds(
    pools: dict[str, Any], function: Any, tasks: list[Any], budget: float
) -> dict[str, float]:
    """Median seconds of `pool.map(function, tasks)` per pool, the pools taking turns (one map
    each per round, so a change of the machine's load falls on all of them) for about
    `budget` s per pool, at least 5 rounds."""
    for pool in pools.values():
        pool.map(function, tasks)  # warm: states built, connections open
    times: dict[str, list[float]] = {key: [] for key in pools}
    spent = 0.0
    while min(len(t) for t in times.values()) < 5 or (
        spent < budget * len(pools) and len(times["local1"]) < 200
    ):
        for key, pool in pools.items():
            since = time.perf_counter()
            pool.map(function, tasks)
            times[key].append(time.perf_counter() - since)
            spent += times[key][-1]
    return {key: statistics.median(t) for key, t in times.items()}


def real_tasks(batch: int) -> tuple[Any, Any, list[Any], str]:
    """The bisection's real tasks: bounds of the two halves of ACAS Xu boxes (`batch` of them:
    halves of the prop_6 domain bisected along successive inputs)."""
    from verify_compress.cli.run import build_domain
    from verify_compress.kernel.bounds import ExactNetwork, box_bounds
    from verify_compress.onnx_import import load_network
    from verify_compress.subdomains import bisect

    network_file, vnnlib = (BENCHMARKS / part for part in CASES["acas_1_1_prop_6"])
    network = load_network(network_file)
    domain, _ = build_domain(None, None, vnnlib, None, network.input_size)
    exact = ExactNetwork(network)
    box = domain.boxes[0]
    whole = box_bounds(exact, box)
    tasks = []
    dimension = 0
    while len(tasks) < batch:
        cut = bisect(box, dimension % box.size)
        assert cut is not None
        tasks += [(cut[1], whole), (cut[2], whole)]
        dimension += 1
    return network, exact, tasks[:batch], "ACAS Xu bounds of a half box"


def crossover_part(batches: list[int], budget: float) -> tuple[str, list[dict[str, Any]]]:
    from contextlib import ExitStack

    from verify_compress.kernel.bounds import ExactNetwork
    from verify_compress.workers import WorkerPool, bounds_of_box

    per_ms = calibrate()
    rows: list[dict[str, Any]] = []
    network, _, _, real_label = real_tasks(2)
    with ExitStack() as stack:
        pools: dict[str, Any] = {}
        starts: dict[str, float] = {}
        for key, (_, backend, workers) in CONFIGS.items():
            since = time.perf_counter()
            pools[key] = stack.enter_context(
                WorkerPool(network, ExactNetwork(network), workers, backend)  # type: ignore[arg-type]
            )
            starts[key] = time.perf_counter() - since
        for batch in batches:
            before = uptime()
            cells: list[tuple[Any, Any, list[Any]]] = [
                (real_label, bounds_of_box, real_tasks(batch)[2])
            ]
            cells += [(size, spin, [int(size * per_ms)] * batch) for size in SIZES_MS]
            for size, function, tasks in cells:
                medians = time_rounds(pools, function, tasks, budget)
                for key, seconds in medians.items():
                    rows.append(dict(key=key, batch=batch, size=size, seconds=seconds))
            after = uptime()
            for row in rows:
                if row["batch"] == batch:
                    row.update(before=before, after=after, start=starts[row["key"]])
            print(f"  crossover, maps of {batch}: {before} -> {after}", file=sys.stderr)
    return real_label, rows


def crossover_table(real_label: str, rows: list[dict[str, Any]], batches: list[int]) -> str:
    """Per batch: one row per task size, ms per map on each backend and speed-up over this
    process; then each backend's overhead (the empty task) and the task size from which it
    would pay on free cores (a map of n tasks on w workers: n t > ceil(n / w) t + overhead)."""
    out = []
    keys = list(CONFIGS)
    sizes: list[Any] = [real_label, *SIZES_MS]

    def seconds(key: str, batch: int, size: Any) -> float:
        return float(
            next(r for r in rows if (r["key"], r["batch"], r["size"]) == (key, batch, size))[
                "seconds"
            ]
        )

    for batch in batches:
        some = next(r for r in rows if r["batch"] == batch)
        out.append(
            f"\nOne map of {batch} tasks: median ms per map (speed-up over this process); "
            f"load {load_of(some['before'])} -> {load_of(some['after'])}\n"
        )
        out.append("| task | " + " | ".join(CONFIGS[k][0] for k in keys) + " |")
        out.append("|---" * (len(keys) + 1) + "|")
        for size in sizes:
            base = seconds("local1", batch, size)
            cells = [
                f"{1000 * seconds(key, batch, size):.2f} "
                f"({base / seconds(key, batch, size):.2f}x)"
                for key in keys
            ]
            name = size if isinstance(size, str) else f"{size:g} ms of work"
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
        for key in keys[1:]:
            workers = CONFIGS[key][2]
            overhead = seconds(key, batch, 0.0)
            saved_tasks = batch - -(-batch // workers)
            faster = [s for s in SIZES_MS if s > 0 and seconds(key, batch, s) < seconds(
                "local1", batch, s)]
            out.append(
                f"- {CONFIGS[key][0]}: {1000 * overhead:.2f} ms per map of {batch} empty tasks "
                f"({1000 * overhead / batch:.2f} ms per task); on free cores it pays from "
                f"{1000 * overhead / saved_tasks:.1f} ms of work per task; measured faster "
                f"than this process at: "
                + (", ".join(f"{s:g} ms" for s in faster) if faster else "none of these sizes")
            )
    out.append("")
    for key in keys:
        start = next(r for r in rows if r["key"] == key)["start"]
        out.append(f"- {CONFIGS[key][0]}: pool started in {start:.2f} s")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", default="acas_1_1_prop_6", choices=list(CASES))
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of: " + ", ".join(CONFIGS))
    parser.add_argument("--parts", default="job,crossover")
    parser.add_argument("--batches", default="2,8", help="tasks per map in the crossover")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of repeats per cell")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one-job", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if not BENCHMARKS.is_dir():
        sys.exit(f"public benchmarks not found at {BENCHMARKS}")
    out = arguments.out or Path(tempfile.mkdtemp(prefix="verify-compress-fanout-"))
    if arguments.one_job:
        figures = one_job(arguments.case, arguments.one_job, arguments.time_limit, out)
        print(json.dumps(figures))
        return
    parts = arguments.parts.split(",")
    print(f"`python bench/fanout.py {' '.join(sys.argv[1:])}`; {os.cpu_count()} cores; "
          f"outputs in {out}\n")
    if "job" in parts:
        rows = job_part(arguments.case, arguments.configs.split(","), arguments.time_limit, out)
        print(job_table(arguments.case, arguments.time_limit, rows))
        print()
    if "crossover" in parts:
        batches = [int(b) for b in arguments.batches.split(",")]
        real_label, rows = crossover_part(batches, arguments.budget)
        print("Crossover (ms of work: a CPU-bound task calibrated in this process)")
        print(crossover_table(real_label, rows, batches))


if __name__ == "__main__":
    main()
