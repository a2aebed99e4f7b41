"""Benchmark: the stability analysis stage by stage, single vs per-neuron search, and checking.

Not a test: it prints Markdown tables (paste them into docs/BENCHMARKS.md with the command).

    python bench/stability.py [--time-limit 120] [--search-limit 60] [--cases acas_prop3,...]

For each case: neurons still open and time after each stage (certified bounds, witnesses, the
first proof pass, the CP-SAT search, the deeper proof pass); final statuses; then the single search and the per-neuron search run side by
side on the same undecided set (same witness table state), with their time ratio; then the
whole main job (`verify_compress.pipeline.run`) and `check_certificate` on its output, with the ratio.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verify_compress.bounds import symbolic_bounds  # noqa: E402
from verify_compress.budget import Budget  # noqa: E402
from verify_compress.check import check_certificate  # noqa: E402
from verify_compress.config import Config  # noqa: E402
from verify_compress.domain import Domain, box_from_cli, parse_vnnlib  # noqa: E402
from verify_compress.onnx_import import load_network  # noqa: E402
from verify_compress.pipeline import run  # noqa: E402
from verify_compress.search import per_neuron_search, stability_search  # noqa: E402
from verify_compress.stability import analyse  # noqa: E402
from verify_compress.witnesses import WitnessTable, find_witnesses  # noqa: E402

BENCHMARKS = ROOT.parent / "shared" / "benchmarks"


def cases() -> dict[str, tuple[Path, str | None]]:
    acas = BENCHMARKS / "acasxu"
    mnist = BENCHMARKS / "mnistfc"
    found: dict[str, tuple[Path, str | None]] = {
        "acas_1_1_prop_1": (acas / "ACASXU_run2a_1_1_batch_2000.onnx", str(acas / "prop_1.vnnlib")),
        "acas_1_1_prop_3": (acas / "ACASXU_run2a_1_1_batch_2000.onnx", str(acas / "prop_3.vnnlib")),
        "mnist_unit_box": (mnist / "mnist-net_256x2.onnx", None),
        "mnist_prop_0_0.03": (mnist / "mnist-net_256x2.onnx", str(mnist / "prop_0_0.03.vnnlib")),
    }
    for model in sorted((ROOT / "models").glob("*.onnx")):
        found[model.stem] = (model, None)
    return {name: case for name, case in found.items() if case[0].is_file()}


def domain_for(network_path: Path, vnnlib: str | None) -> Domain:
    network = load_network(network_path)
    if vnnlib:
        return parse_vnnlib(vnnlib, network.input_size)
    return box_from_cli([0.0], [1.0], network.input_size)


def search_comparison(name: str, network_path: Path, domain: Domain, config: Config) -> str:
    network = load_network(network_path)
    bounds = [symbolic_bounds(network, box) for box in domain.boxes]
    hidden = network.hidden_neurons()
    undecided = [
        n
        for n in hidden
        if len({b.phase_of(n) for b in bounds} - {None}) != 1
        or any(b.phase_of(n) is None for b in bounds)
    ]
    table = WitnessTable(network, domain)
    find_witnesses(network, domain, table, undecided, config, config.rng())
    candidates = [n for n in undecided if len(table.seen(n)) < 2]
    row = [name, str(len(candidates))]
    for method in (stability_search, per_neuron_search):
        fresh = copy.deepcopy(table)
        started = time.perf_counter()
        result = method(
            network, domain, bounds, fresh, candidates, config, time.monotonic() + config.time_limit
        )
        seconds = time.perf_counter() - started
        row += [f"{seconds:.1f}", f"{len(result.claims)}/{len(result.undecided)}"]
    single, per = float(row[2]), float(row[4])
    row.append(f"{per / single:.1f}x" if single > 0 else "-")
    return "| " + " | ".join(row) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--search-limit", type=float, default=60.0)
    parser.add_argument("--cases", default="")
    parser.add_argument("--skip-search-comparison", action="store_true")
    arguments = parser.parse_args()
    selected = cases()
    if arguments.cases:
        selected = {k: v for k, v in selected.items() if k in arguments.cases.split(",")}
    config = Config(time_limit=arguments.time_limit)

    print("## Stages (neurons still open after each stage, stage time in s)\n")
    stage_names = ("bounds", "witnesses", "proofs", "search", "deeper proofs")
    print(
        "| case | hidden | "
        + " | ".join(stage_names)
        + " | stably active | stably inactive | unstable | unknown | total s |"
    )
    print("|---|---|" + "---|" * len(stage_names) + "---|---|---|---|---|")
    for name, (path, vnnlib) in selected.items():
        network = load_network(path)
        domain = domain_for(path, vnnlib)
        started = time.perf_counter()
        budget = Budget(config.time_limit, sum(layer.connections for layer in network.layers))
        analysis = analyse(network, domain, config, config.rng(), budget)
        total = time.perf_counter() - started
        stages = {s.name: s for s in analysis.stages}
        counts = Counter(s.value for s in analysis.statuses.values())
        cells = [name, str(len(analysis.statuses))]
        for stage in stage_names:
            record = stages[stage]
            cells.append(f"{record.undecided} ({record.seconds:.1f})")
        cells += [
            str(counts[k]) for k in ("stably_active", "stably_inactive", "unstable", "unknown")
        ]
        cells.append(f"{total:.1f}")
        print("| " + " | ".join(cells) + " |", flush=True)

    if not arguments.skip_search_comparison:
        print("\n## Single CP-SAT search vs one CP-SAT problem per neuron (same undecided set)\n")
        print(
            f"Time limit per method: {arguments.search_limit:.0f} s. claims/undecided after each.\n"
        )
        print(
            "| case | candidates | single s | single claims/undecided | per-neuron s | per-neuron claims/undecided | per-neuron / single |"
        )
        print("|---|---|---|---|---|---|---|")
        search_config = Config(time_limit=arguments.search_limit)
        for name, (path, vnnlib) in selected.items():
            print(
                search_comparison(name, path, domain_for(path, vnnlib), search_config), flush=True
            )

    print("\n## Main job vs checker\n")
    print("| case | run s | check s | run / check | valid | proof boxes | case splits |")
    print("|---|---|---|---|---|---|---|")
    for name, (path, vnnlib) in selected.items():
        domain = domain_for(path, vnnlib)
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            result = run(path, domain, Path(scratch) / name, config)
            run_seconds = time.perf_counter() - started
            report = check_certificate(result.out_dir / "certificate.json")
            ratio = run_seconds / report.seconds if report.seconds else float("inf")
            print(
                f"| {name} | {run_seconds:.1f} | {report.seconds:.1f} | {ratio:.1f}x | {report.valid} | "
                f"{report.counts.get('proof_boxes', 0)} | {report.counts.get('case_splits', 0)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
