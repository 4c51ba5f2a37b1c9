"""WarmRunner with real warm workers training tiny configs: the same results as cold, replacement of
workers that die or overrun, pruning that keeps the worker, and nothing left behind on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from stockscale.config import build_train_config
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import JobResult, TrainJob
from stockscale.launch.warm import WarmRunner
from stockscale.limits import detect_mechanism
from stockscale.worker import EpochReport
from tests.conftest import REPO, our_cgroups

MiB = 1024**2
TINY = {"epochs": 2, "hidden_size": 8, "num_layers": 1, "batch_size": 256, "device": "cpu"}
# What differs between two runs of the same trial however they ran: clocks, memory, where it was written.
TIMING_KEYS = {"train_seconds", "samples_per_second", "peak_rss_bytes", "workers", "phase_seconds",
               "wall_seconds", "run_dir", "history"}


def warm_pids() -> list[int]:
    """This test's warm worker processes."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "stockscale.launch.warm_worker" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class PidsPerTrial:
    """on_line: which warm worker pids existed while each trial printed (parallel 1: its worker)."""

    def __init__(self) -> None:
        self.seen: list[set[int]] = []

    def __call__(self, _rank: int, line: str) -> None:
        if line.startswith("data: "):  # each trial's first line
            self.seen.append(set(warm_pids()))


def trial(tmp_path: Path, name: str, **config: Any) -> TrainJob:
    return TrainJob(name=name, config=build_train_config({**TINY, **config}), run_dir=tmp_path / name, threads=1,
                    timeout=120)


def comparable(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    return {
        "metrics": {key: value for key, value in metrics.items() if key not in TIMING_KEYS},
        "history": [{key: value for key, value in row.items() if key != "seconds"} for row in history],
        "config.yaml": (run_dir / "config.yaml").read_bytes(),
        "predictions.json": (run_dir / "predictions.json").read_bytes(),
    }


@pytest.mark.slow
def test_a_warm_trial_is_bit_identical_to_the_same_trial_run_cold(tmp_path: Path) -> None:
    # The two compared trials run on a worker that trained another configuration first.
    other = trial(tmp_path / "warm", "other", hidden_size=16, lr=0.01, seed=7)
    compared = [dict(num_layers=2, dropout=0.3, seed=1), dict(seed=2, loader="memory", lr=0.003)]
    warm = WarmRunner().run_many(
        [other, *(trial(tmp_path / "warm", f"t{i}", **config) for i, config in enumerate(compared))], parallel=1)
    cold = LocalRunner().run_many(
        [trial(tmp_path / "cold", f"t{i}", **config) for i, config in enumerate(compared)], parallel=1)
    assert [result.status for result in warm + cold] == ["success"] * 5
    for warm_result, cold_result in zip(warm[1:], cold, strict=True):
        warm_dir, cold_dir = Path(warm_result.run_dir), Path(cold_result.run_dir)
        assert comparable(warm_dir) == comparable(cold_dir)
        assert warm_result.metrics["val"] == cold_result.metrics["val"]
        assert [(report.epoch, report.val_loss, report.train_loss) for report in warm_result.epochs] == [
            (report.epoch, report.val_loss, report.train_loss) for report in cold_result.epochs]
        warm_weights = torch.load(warm_dir / "model.pt", weights_only=True)
        cold_weights = torch.load(cold_dir / "model.pt", weights_only=True)
        assert warm_weights.keys() == cold_weights.keys()
        assert all(torch.equal(warm_weights[key], cold_weights[key]) for key in warm_weights)
        assert warm_result.metrics["train_seconds"] > 0
        # The trial's own time: from the hand-over to its result, no interpreter or torch start in it.
        assert warm_result.wall_seconds < cold_result.wall_seconds
    assert warm_pids() == []


@pytest.mark.slow
def test_a_worker_over_its_memory_limit_is_replaced_and_only_its_trial_fails(tmp_path: Path) -> None:
    if not detect_mechanism().startswith("cgroup"):
        pytest.skip("no writable memory cgroup on this machine")
    pids = PidsPerTrial()
    limit = 600 * MiB  # a worker with torch imported holds about 300 MiB; 800 replicas' windows do not fit
    jobs = [trial(tmp_path, "big", multiplier=800, loader="memory"), trial(tmp_path, "small")]
    for job in jobs:
        job.memory_limit = limit
    between: list[list[int]] = []

    def one_by_one() -> Any:
        yield jobs[0]
        between.append(warm_pids())  # the next job is taken after the result of the one before
        yield jobs[1]

    results = WarmRunner(on_line=pids).run_many(one_by_one(), parallel=1)
    assert [result.status for result in results] == ["oom", "success"]
    assert results[0].detail == "cgroup OOM kill (worker 0)"
    assert results[0].limit_mechanism == results[1].limit_mechanism == detect_mechanism()
    assert between == [[]], "the killed worker was gone before the next trial"
    assert len(pids.seen[-1]) == 1, "the next trial ran on a new worker"
    assert warm_pids() == [] and our_cgroups() == []


@pytest.mark.slow
def test_pruning_a_warm_trial_keeps_its_worker_for_the_next(tmp_path: Path) -> None:
    pids = PidsPerTrial()
    asked: list[EpochReport] = []

    def stop_after_first(report: EpochReport) -> bool:
        asked.append(report)
        return True

    pruned = trial(tmp_path, "pruned", epochs=3)
    pruned.judge = stop_after_first
    kept = trial(tmp_path, "kept", epochs=3)
    kept.judge = lambda report: False
    results = WarmRunner(on_line=pids).run_many([pruned, kept], parallel=1)
    assert [(result.status, result.detail) for result in results] == [("pruned", "pruned after epoch 1"),
                                                                       ("success", "")]
    assert [report.epoch for report in results[0].epochs] == [1] and asked == results[0].epochs
    assert results[0].metrics is None and results[0].run_dir is None
    assert [report.epoch for report in results[1].epochs] == [1, 2, 3]
    assert len(pids.seen) == 2 and len(pids.seen[0]) == 1 and pids.seen[0] == pids.seen[1]
    assert warm_pids() == []


@pytest.mark.slow
def test_a_trial_past_its_timeout_ends_its_worker_and_the_next_gets_a_new_one(tmp_path: Path) -> None:
    pids = PidsPerTrial()
    endless = trial(tmp_path, "endless", epochs=100_000)
    endless.timeout = 2.0
    results = WarmRunner(on_line=pids, grace_seconds=1.0).run_many([endless, trial(tmp_path, "next")],
                                                                    parallel=1)
    assert [(result.status, result.detail) for result in results] == [("timeout", "timed out after 2 s"),
                                                                       ("success", "")]
    assert 2.0 <= results[0].wall_seconds < 8.0  # the timeout, then SIGTERM and at most 1 s of grace
    assert len(pids.seen) == 2 and pids.seen[0].isdisjoint(pids.seen[1])
    assert [pid for pid in pids.seen[0] if alive(pid)] == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_warm_search_leaves_no_process_cgroup_or_temp_folder(tmp_path: Path, sig: int) -> None:
    search = subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" / "warm_search.py"), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])})
    try:
        assert search.stdout is not None
        workers = json.loads(search.stdout.readline())["workers"]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        search.send_signal(sig)
        code = search.wait(timeout=30)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    assert code == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 10  # after a SIGKILL the workers notice their parent is gone
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in workers if alive(pid)] == []
    while our_cgroups(search.pid) and time.monotonic() < deadline:  # the reaper's grace after a SIGKILL
        time.sleep(0.2)
    assert our_cgroups(search.pid) == []
    assert list(Path(tempfile.gettempdir()).glob(f"stockscale-*{search.pid}@*")) == []



@pytest.mark.slow
def test_a_ddp_job_runs_cold_and_single_worker_jobs_warm(tmp_path: Path) -> None:
    ddp = trial(tmp_path, "ddp", epochs=1)
    ddp.workers = 2
    results: list[JobResult] = WarmRunner().run_many([ddp, trial(tmp_path, "one", epochs=1)], parallel=1)
    assert [result.status for result in results] == ["success", "success"]
    assert results[0].metrics["world_size"] == 2 and len(results[0].peak_rss_bytes) == 2
    assert results[1].metrics["world_size"] == 1


@pytest.mark.slow
def test_a_warm_trials_peak_memory_is_its_own_not_its_workers_so_far(tmp_path: Path) -> None:
    # baselines "cheap": the ridge baseline's library (~110 MiB, loaded after the data is let go) would be the
    # small trial's peak and hide the difference in data this test is about.
    big = trial(tmp_path, "big", multiplier=200, loader="memory", epochs=1, baselines="cheap")  # ~200 MiB of windows
    results = WarmRunner().run_many([big, trial(tmp_path, "small", epochs=1, baselines="cheap")], parallel=1)
    assert [result.status for result in results] == ["success", "success"]
    (big_peak,), (small_peak,) = (result.peak_rss_bytes for result in results)
    assert big_peak > small_peak + 150 * MiB
    assert results[1].metrics["peak_rss_bytes"] < big_peak - 150 * MiB  # what the trial says of itself too
