"""The worker pool computes exactly what this process computes, task by task, on local
processes and on a real Dask LocalCluster (2 worker processes); the main job on the Dask
backend fans its tasks out there and writes the certificate the local backend writes; `check`
on the Dask backend computes the proof boxes there and reaches the local verdicts; a missing
Dask or a bad scheduler address is one line and exit 2.

The Dask tests skip when Dask is not installed (`pip install 'verify-compress[dask]'`)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_kernel_bounds import random_box, random_network

from verify_compress.branching import CaseSplitTask, case_split_task
from verify_compress.check import check_certificate
from verify_compress.cli.main import main
from verify_compress.config import Config
from verify_compress.domain import Box, Domain
from verify_compress.errors import MissingToolError
from verify_compress.ir import Network
from verify_compress.kernel.bounds import ExactNetwork, LayerBounds, box_bounds
from verify_compress.kernel.stability import CaseSplit
from verify_compress.onnx_export import save_onnx
from verify_compress.pipeline import run
from verify_compress.status import Neuron, Phase
from verify_compress.subdomains import bisect
from verify_compress.workers import WorkerPool, WorkerState, on_this_clock

from conftest import random_network as seeded_network

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits_l1.onnx"
SMALL_BOX = ["--lower", "0", "--upper", "0.1"]
"""digits_l1 on [0, 0.1]^64: two claims need case splits (tasks for the pool), and every
neuron is decided in well under a second, so the statuses do not depend on timing."""
DEEPER = [3, 16, 16, 16, 16, 2]
"""Layer sizes of the random network of the Dask pool: with seed 1 on its random box, 4 of its
12 claims on unsettled neurons hold by case splits, the others do not."""


def bisection_tasks(
    network: Network, exact: ExactNetwork, box: Box
) -> list[tuple[Box, LayerBounds | None]]:
    whole = box_bounds(exact, box)
    tasks: list[tuple[Box, LayerBounds | None]] = []
    for dimension in range(box.size):
        cut = bisect(box, dimension)
        assert cut is not None
        tasks += [(cut[1], whole), (cut[2], whole)]
    return [*tasks, (box, None)]


def assert_bounds_equal(tasks: list[Any], batched: list[LayerBounds], exact: ExactNetwork) -> None:
    assert len(batched) == len(tasks)
    for (box, enclosing), bounds in zip(tasks, batched, strict=True):
        alone = box_bounds(exact, box, enclosing=enclosing)
        for k in range(len(alone.lower)):
            np.testing.assert_array_equal(bounds.lower[k], alone.lower[k])
            np.testing.assert_array_equal(bounds.upper[k], alone.upper[k])


def test_bounds_of_a_batch_on_two_processes_equal_the_bounds_box_by_box() -> None:
    network = random_network(11, [3, 12, 12, 12, 2])
    exact = ExactNetwork(network)
    tasks = bisection_tasks(network, exact, random_box(11, 3))
    with WorkerPool(network, exact, 2) as pool:
        assert_bounds_equal(tasks, pool.bounds(tasks), exact)


def test_a_scheduler_is_for_the_dask_backend_only() -> None:
    network = random_network(1, [2, 3, 1])
    with pytest.raises(Exception, match=r"^--scheduler is for --backend dask only$"):
        WorkerPool(network, ExactNetwork(network), 2, "local", "tcp://localhost:8786")


@dataclasses.dataclass(frozen=True)
class Timed:
    deadline: float
    label: str


def test_a_deadline_moves_onto_the_workers_clock_and_nothing_else_does() -> None:
    assert on_this_clock(Timed(100.0, "x"), 2.5) == Timed(102.5, "x")
    assert on_this_clock((1.0, 2.0), 2.5) == (1.0, 2.0)
    assert on_this_clock(Timed, 2.5) is Timed


# ---------------------------------------------------------------------------------------------
# Dask


@pytest.fixture(scope="module")
def dask_pool() -> Iterator[tuple[WorkerPool, Network, ExactNetwork]]:
    pytest.importorskip("dask.distributed")
    network = random_network(1, DEEPER)
    exact = ExactNetwork(network)
    with WorkerPool(network, exact, 2, "dask") as pool:
        yield pool, network, exact


def as_plain(split: CaseSplit | None) -> Any:
    """A case split as tuples and lists (its multipliers are arrays), to compare with ==."""
    if split is None:
        return None
    cases = [
        (case.assumptions, [m.tolist() for m in case.multipliers or ()]) for case in split.cases
    ]
    return split.box, split.neuron, split.phase, cases


def where_and_which_state(state: WorkerState, task: int) -> tuple[int, int, int]:
    return os.getpid(), id(state), task


def test_the_dask_pool_computes_the_bounds_the_local_pool_computes(
    dask_pool: tuple[WorkerPool, Network, ExactNetwork],
) -> None:
    pool, network, exact = dask_pool
    assert pool.workers == 2
    tasks = bisection_tasks(network, exact, random_box(1, 3))
    on_dask = pool.bounds(tasks)
    assert_bounds_equal(tasks, on_dask, exact)
    with WorkerPool(network, exact, 2) as local:
        on_processes = local.bounds(tasks)
    for mine, theirs in zip(on_dask, on_processes, strict=True):
        for k in range(len(mine.lower)):
            np.testing.assert_array_equal(mine.lower[k], theirs.lower[k])
            np.testing.assert_array_equal(mine.upper[k], theirs.upper[k])


def test_the_dask_pool_finds_the_case_splits_the_local_pool_finds(
    dask_pool: tuple[WorkerPool, Network, ExactNetwork],
) -> None:
    pool, network, exact = dask_pool
    box = random_box(1, 3)
    bounds = box_bounds(exact, box)
    unsettled = [
        Neuron(layer, index)
        for layer in range(1, len(DEEPER) - 2)
        for index in range(DEEPER[layer + 1])
        if bounds.lower[layer][index] < 0 < bounds.upper[layer][index]
    ]
    assert len(unsettled) == 6
    deadline = time.monotonic() + 60
    tasks = [
        CaseSplitTask(box, 0, bounds, neuron, phase, 3, 64, deadline)
        for neuron in unsettled
        for phase in Phase
    ]
    on_dask = pool.map(case_split_task, tasks)
    with WorkerPool(network, exact, 2) as local:
        on_processes = local.map(case_split_task, tasks)
    here = [case_split_task(WorkerState(network, exact), task) for task in tasks]
    found = [[as_plain(split) for split, _ in results] for results in (on_dask, on_processes, here)]
    assert found[0] == found[1] == found[2]
    assert sum(split is not None for split in found[2]) == 4
    for (_, mine), (_, theirs) in zip(on_dask, here, strict=True):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_each_dask_worker_builds_its_state_once_and_keeps_it(
    dask_pool: tuple[WorkerPool, Network, ExactNetwork],
) -> None:
    pool, _, _ = dask_pool
    first = pool.map(where_and_which_state, list(range(20)))
    second = pool.map(where_and_which_state, list(range(20)))
    assert [task for _, _, task in first] == list(range(20))
    states = {(pid, state) for pid, state, _ in first + second}
    pids = {pid for pid, _ in states}
    assert os.getpid() not in pids, "the tasks ran on the workers"
    assert len(states) == len(pids) <= 2, "one state per worker process, kept across maps"


def statuses(out: Path) -> list[tuple[int, int, str]]:
    certificate = json.loads((out / "certificate.json").read_text())
    return [(n["layer"], n["index"], n["status"]) for n in certificate["neurons"]]


def run_main(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(args)
    return int(exited.value.code or 0)


@pytest.fixture
def dask_maps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every map of tasks sent to Dask workers during the test (skips without
    Dask)."""
    pytest.importorskip("dask.distributed")
    from verify_compress.batch.backends import DaskTaskPool

    sent: list[int] = []
    original_map = DaskTaskPool.map

    def counting_map(self: DaskTaskPool, call: Any, tasks: Any) -> Any:
        sent.append(len(tasks))
        return original_map(self, call, tasks)

    monkeypatch.setattr(DaskTaskPool, "map", counting_map)
    return sent


def test_the_main_job_on_dask_fans_out_and_writes_the_certificate_of_the_local_backend(
    tmp_path: Path, dask_maps: list[int]
) -> None:
    sent = dask_maps
    common = [str(DIGITS), *SMALL_BOX, "--time-limit", "60", "--no-confirm-smt", "--quiet"]
    assert run_main([*common, "--out", str(tmp_path / "local")]) == 0
    assert not sent
    assert run_main([*common, "--backend", "dask", "--out", str(tmp_path / "dask")]) == 0
    assert sent and sum(sent) >= 2, "the case splits ran on the Dask workers"
    assert statuses(tmp_path / "dask") == statuses(tmp_path / "local")
    local = json.loads((tmp_path / "local" / "certificate.json").read_text())
    dask = json.loads((tmp_path / "dask" / "certificate.json").read_text())
    assert dask["config"]["backend"] == "dask" and local["config"]["backend"] == "local"
    assert dask["proofs"]["case_splits"] == local["proofs"]["case_splits"]
    assert dask["summary"]["totals"] == local["summary"]["totals"]
    assert run_main(["check", str(tmp_path / "dask" / "certificate.json"), "--quiet"]) == 0


def test_without_dask_the_main_job_on_dask_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "out"
    assert run_main([str(DIGITS), "--backend", "dask", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error == (
        "error: the dask backend needs Dask distributed, which is not installed: "
        "pip install 'verify-compress[dask]'\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--backend", "dask", "--scheduler", "nonsense"],
            "error: dask scheduler nonsense: cannot connect (missing port number in address "
            "'nonsense')\n",
        ),
        (
            ["--scheduler", "tcp://localhost:8786"],
            "error: --scheduler is for --backend dask only\n",
        ),
    ],
)
def test_a_bad_scheduler_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if "dask" in args:
        pytest.importorskip("dask.distributed")
    out = tmp_path / "out"
    assert run_main([str(DIGITS), *args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == message
    assert not out.exists()


@pytest.fixture(scope="module")
def bisected_certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deep random network certified on nested sub-boxes of [-1, 1]^2 (many proof boxes)."""
    root = tmp_path_factory.mktemp("bisected")
    # The network of tests/test_check.py's nested sub-boxes test (trees at least two cuts deep).
    save_onnx(seeded_network(np.random.default_rng(0), [2, 6, 6, 6, 6, 6, 2]), root / "deep.onnx")
    config = Config(time_limit=20, samples=50, gradient_steps=0, max_split_depth=0)
    result = run(root / "deep.onnx", Domain.box(-np.ones(2), np.ones(2)), root / "out", config)
    certificate = result.out_dir / "certificate.json"
    assert json.loads(certificate.read_text())["proofs"]["sub_boxes"] > 2
    return certificate


def test_check_on_dask_computes_the_proof_boxes_there_and_reaches_the_local_verdict(
    bisected_certificate: Path, dask_maps: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    sent = dask_maps
    local = check_certificate(bisected_certificate, workers=2)
    assert local.valid, local.first_failure
    assert not sent
    assert run_main(["check", str(bisected_certificate), "--backend", "dask", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["backend"] == "dask"
    assert report["counts"] == local.counts
    assert sum(sent) >= 2, "the proof boxes' bounds were computed on the Dask workers"

    # A sub-box dropped from the tree: the same failure on Dask as here.
    document = json.loads(bisected_certificate.read_text())
    tree = document["proofs"]["trees"][0]
    document["proofs"]["trees"][0] = tree["box"]
    document["proofs"]["sub_boxes"] = 1
    tampered = bisected_certificate.parent / "tampered.json"
    tampered.write_text(json.dumps(document))
    here = check_certificate(tampered, workers=1)
    on_dask = check_certificate(tampered, workers=2, backend="dask")
    assert not here.valid and not on_dask.valid
    assert on_dask.first_failure == here.first_failure


def test_without_dask_check_on_dask_says_how_to_install_it(
    bisected_certificate: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)
    assert run_main(["check", str(bisected_certificate), "--backend", "dask"]) == 2
    assert capsys.readouterr().err == (
        "error: the dask backend needs Dask distributed, which is not installed: "
        "pip install 'verify-compress[dask]'\n"
    )
    # Called as a library: an error, never a verdict on the certificate.
    with pytest.raises(MissingToolError, match="needs Dask distributed"):
        check_certificate(bisected_certificate, workers=2, backend="dask")
