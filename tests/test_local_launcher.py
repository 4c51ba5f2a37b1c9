"""LocalRunner with real worker processes (tests/helpers/fake_worker.py) under real memory limits."""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from stockscale.errors import InputError
from stockscale.launch.local import LocalRunner, default_threads
from stockscale.launch.runner import Runner, TrainJob
from stockscale.limits import MECHANISM_ENV, detect_mechanism
from tests.conftest import our_cgroups
from tests.helpers.fake_config import fake_config

MiB = 1024**2
FAKE_WORKER = [sys.executable, str(Path(__file__).parent / "helpers" / "fake_worker.py")]
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "PET_MASTER_ADDR", "PET_MASTER_PORT", "WORLD_SIZE", "RANK",
            "PET_NODE_RANK", "PET_NNODES", "PYTHONUNBUFFERED", "OMP_NUM_THREADS")


class Lines:
    """Collects every worker's stdout lines; knows the pids the fake workers announce."""

    def __init__(self) -> None:
        self.by_rank: dict[int, list[str]] = collections.defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, rank: int, line: str) -> None:
        with self.lock:
            self.by_rank[rank].append(line)

    def last_json(self, rank: int) -> dict[str, Any]:
        return json.loads(self.by_rank[rank][-1])

    def started(self) -> list[dict[str, Any]]:
        return [json.loads(line) for lines in self.by_rank.values() for line in lines if '"started"' in line]

    def pids(self) -> list[int]:
        return [pid for event in self.started() for pid in (event["pid"], *event["children"])]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False



@pytest.fixture(autouse=True)
def default_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MECHANISM_ENV, raising=False)


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def launcher(lines: Lines) -> LocalRunner:
    return LocalRunner(FAKE_WORKER, on_line=lines, grace_seconds=1.0)


def job(tmp_path: Path, config: dict[str, Any], **kwargs: Any) -> TrainJob:
    return TrainJob(name="job", config=fake_config(config), run_dir=tmp_path / "run", **kwargs)


def test_success_returns_rank0s_final_json_line_as_metrics(launcher: LocalRunner, tmp_path: Path) -> None:
    result = launcher.run(job(tmp_path, {"behave": "success", "metrics": {"val_loss": 0.5}}, workers=2))
    assert result.status == "success" and result.detail == ""
    assert result.metrics == {"status": "success", "rank": 0, "val_loss": 0.5}
    assert len(result.peak_rss_bytes) == 2 and all(peak > 1 * MiB for peak in result.peak_rss_bytes)
    assert result.limit_mechanism is None
    assert result.start_time < result.end_time < result.start_time + 10
    assert result.run_dir == str(tmp_path / "run")


def test_every_rank_gets_exactly_a_pytorchjob_replicas_environment(
    launcher: LocalRunner, lines: Lines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a torchrun around us would have set must not reach the workers: a replica does not have it.
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setenv("PET_NPROC_PER_NODE", "4")
    result = launcher.run(job(tmp_path, {"behave": "env"}, workers=3))
    assert result.status == "success"

    threads = default_threads(3)
    port = lines.last_json(0)["env"]["MASTER_PORT"]
    assert 0 < int(port) < 65536
    for rank in range(3):
        report = lines.last_json(rank)
        assert report["env"] == {
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": port, "WORLD_SIZE": "3", "RANK": str(rank), "PET_NODE_RANK": str(rank),
            "PET_NNODES": "3", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
        }
        argv = report["argv"]
        assert argv[argv.index("--out") + 1] == str(tmp_path / "run")
        assert argv[argv.index("--threads") + 1] == str(threads)
        assert report["session_leader"], "each worker runs in its own session"


def test_one_worker_gets_world_size_1_and_the_config_as_yaml(
    launcher: LocalRunner, lines: Lines, tmp_path: Path
) -> None:
    config = {"behave": "env", "lr": 0.01, "start": date(2010, 1, 4), "data": tmp_path / "d",
              "ranks": {0: {}}}
    result = launcher.run(job(tmp_path, config, threads=2))
    assert result.status == "success"
    report = lines.last_json(0)
    assert report["env"]["WORLD_SIZE"] == "1" and report["env"]["RANK"] == "0"
    assert report["env"]["OMP_NUM_THREADS"] == "2"
    assert report["argv"][report["argv"].index("--threads") + 1] == "2"
    # (JSON, in which the worker reports it, has string keys only)
    assert report["config"] == {"behave": "env", "lr": 0.01, "start": "2010-01-04",
                                "data": str(tmp_path / "d"), "ranks": {"0": {}}}


def test_a_worker_over_its_cgroup_limit_is_oom_killed(launcher: LocalRunner, tmp_path: Path) -> None:
    mechanism = detect_mechanism()
    if not mechanism.startswith("cgroup"):
        pytest.skip("no writable memory cgroup on this machine")
    started = time.monotonic()
    result = launcher.run(job(tmp_path, {"behave": "alloc", "alloc_mib": 1024}, memory_limit=256 * MiB,
                              timeout=30))
    assert result.status == "oom"
    assert result.detail == "cgroup OOM kill (worker 0)"
    assert result.limit_mechanism == mechanism
    # Resident memory, polled: below the limit by what the cgroup also charged (page cache, kernel) and by
    # the growth of the last poll interval before the kill, but clearly the allocation was seen.
    assert 64 * MiB <= result.peak_rss_bytes[0] <= 300 * MiB
    assert time.monotonic() - started < 15
    assert result.metrics is None
    assert our_cgroups() == []


def test_the_watchdog_kills_a_worker_over_its_limit(
    launcher: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MECHANISM_ENV, "watchdog")
    result = launcher.run(job(tmp_path, {"behave": "alloc", "alloc_mib": 1024}, memory_limit=256 * MiB,
                              timeout=30))
    assert result.status == "oom"
    assert result.detail.startswith("watchdog: RSS ") and result.detail.endswith(
        " over limit 256.0 MiB (worker 0)")
    assert result.limit_mechanism == "watchdog"
    assert result.peak_rss_bytes[0] > 256 * MiB


@pytest.mark.parametrize("memory_limit", [None, 512 * MiB], ids=["no-limit", "limit"])
def test_the_first_failing_worker_ends_the_run_and_leaves_no_process_behind(
    launcher: LocalRunner, lines: Lines, tmp_path: Path, memory_limit: int | None
) -> None:
    config = {
        "behave": "sleep",
        "ranks": {0: {"spawn": True},                    # its grandchild lives in a session of its own
                  1: {"behave": "exit", "code": 1, "delay": 0.5},
                  2: {"ignore_term": True}},             # needs the SIGKILL after the grace period
    }
    started = time.monotonic()
    result = launcher.run(job(tmp_path, config, workers=3, memory_limit=memory_limit, timeout=30))
    assert result.status == "error"
    assert result.detail == "exit code 1 (worker 1): boom from rank 1"
    assert time.monotonic() - started < 10
    pids = lines.pids()
    assert len(pids) == 4
    assert [pid for pid in pids if alive(pid)] == []
    assert len(result.peak_rss_bytes) == 3
    assert our_cgroups() == []


def test_a_run_past_its_timeout_is_ended(launcher: LocalRunner, lines: Lines, tmp_path: Path) -> None:
    started = time.monotonic()
    result = launcher.run(job(tmp_path, {"behave": "sleep"}, workers=2, timeout=1.0))
    assert result.status == "timeout" and result.detail == "timed out after 1 s"
    assert 1.0 <= time.monotonic() - started < 5
    assert [pid for pid in lines.pids() if alive(pid)] == []


@pytest.mark.parametrize(
    ("config", "status", "detail"),
    [
        ({"behave": "memoryerror", "report_json": True}, "oom",
         "MemoryError: cannot allocate 1.2 GiB for the training windows (worker 0)"),
        ({"behave": "memoryerror"}, "oom", "MemoryError (worker 0)"),
        ({"behave": "selfkill"}, "error", "killed by signal SIGKILL (worker 0)"),
        ({"behave": "exit", "code": 2}, "error", "exit code 2 (worker 0): boom from rank 0"),
        ({"behave": "nojson"}, "error", "worker 0 exited 0 but its last stdout line is not a JSON object"),
    ],
    ids=["memoryerror-json", "memoryerror", "signal", "exit-code", "no-json"],
)
def test_how_a_worker_failed_is_told(
    launcher: LocalRunner, tmp_path: Path, config: dict[str, Any], status: str, detail: str
) -> None:
    result = launcher.run(job(tmp_path, config))
    assert (result.status, result.detail) == (status, detail)
    assert result.metrics is None


def test_jobs_run_in_parallel_each_with_its_own_port_and_cgroup(lines: Lines, tmp_path: Path) -> None:
    launcher = LocalRunner(FAKE_WORKER, on_line=lines, grace_seconds=1.0)
    jobs = [TrainJob(name=f"j{i}", config=fake_config({"behave": "env", "delay": 0.5}),
                     run_dir=tmp_path / f"j{i}",
                     workers=1, memory_limit=256 * MiB) for i in range(2)]
    finished: list[str] = []
    started = time.monotonic()
    results = launcher.run_many(jobs, parallel=2, on_result=lambda result: finished.append(result.name))
    assert time.monotonic() - started < 5
    assert [result.name for result in results] == ["j0", "j1"] and sorted(finished) == ["j0", "j1"]
    assert all(result.status == "success" for result in results)
    ports = {result.metrics["env"]["MASTER_PORT"] for result in results if result.metrics}
    assert len(ports) == 2
    assert {result.limit_mechanism for result in results} == {detect_mechanism()}
    assert our_cgroups() == []


def interrupt_main_thread_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_ends_every_worker_and_reraises(launcher: LocalRunner, lines: Lines, tmp_path: Path) -> None:
    timer = interrupt_main_thread_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        launcher.run(job(tmp_path, {"behave": "sleep", "spawn": True}, workers=2, memory_limit=256 * MiB,
                         timeout=30))
    timer.join()
    assert len(lines.pids()) == 4
    assert [pid for pid in lines.pids() if alive(pid)] == []
    assert our_cgroups() == []


def test_ctrl_c_during_run_many_ends_the_running_job_and_skips_the_rest(lines: Lines, tmp_path: Path) -> None:
    launcher = LocalRunner(FAKE_WORKER, on_line=lines, grace_seconds=1.0)
    jobs = [TrainJob(name=f"j{i}", config=fake_config({"behave": "sleep"}), run_dir=tmp_path / f"j{i}",
                     timeout=30)
            for i in range(3)]
    results: list[str] = []
    timer = interrupt_main_thread_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        launcher.run_many(jobs, parallel=1, on_result=lambda result: results.append(result.name))
    timer.join()
    assert results == []
    assert len(lines.started()) == 1, "only the first job had started"
    assert [pid for pid in lines.pids() if alive(pid)] == []


def test_bad_jobs_are_refused_before_anything_starts(launcher: LocalRunner, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"below the minimum of 64\.0 MiB"):
        launcher.run(job(tmp_path, {"behave": "success"}, memory_limit=16 * MiB))
    with pytest.raises(InputError, match="workers must be at least 1"):
        launcher.run(job(tmp_path, {"behave": "success"}, workers=0))
    with pytest.raises(InputError, match="timeout must be positive"):
        launcher.run(job(tmp_path, {"behave": "success"}, timeout=0))


def test_a_jobs_kept_logs_can_be_read_and_deleted_through_the_launcher_interface(tmp_path: Path) -> None:
    launcher = LocalRunner(FAKE_WORKER, log_dir=tmp_path / "logs", grace_seconds=1.0)
    result = launcher.run(job(tmp_path, {"behave": "exit", "code": 5}, workers=2))
    assert result.status == "error"
    lines: list[tuple[str, str]] = []
    sources = launcher.logs("job", lambda source, line: lines.append((source, line)))
    assert sources == ["rank-0.stderr.log", "rank-1.stderr.log"]
    assert any(line.startswith("boom from rank") for _, line in lines)
    assert len(launcher.delete("job")) == 2 and launcher.logs("job", lambda *_: None) == []
    with pytest.raises(InputError):
        launcher.delete("../elsewhere")


# Pruning: real `stockscale train` processes whose rank 0 prints an epoch progress line after every epoch.
THREE_EPOCHS = {"epochs": 3, "hidden_size": 8, "num_layers": 1, "batch_size": 256, "device": "cpu"}


def test_a_judge_that_says_stop_after_epoch_1_prunes_the_job_and_ends_its_process(tmp_path: Path) -> None:
    seen: list[Any] = []
    pids: list[int] = []

    def judge(report: Any) -> bool:
        seen.append(report)
        pids.extend(child.pid for child in psutil.Process().children(recursive=True)
                    if "--out" in child.cmdline())  # the training process, not a cgroup reaper
        return report.epoch >= 1

    result = LocalRunner(grace_seconds=1.0).run(job(tmp_path, THREE_EPOCHS, threads=1, judge=judge,
                                                      timeout=120))
    assert (result.status, result.detail) == ("pruned", "pruned after epoch 1")
    assert [report.epoch for report in result.epochs] == [1] and seen == result.epochs
    assert result.epochs[0].val_loss > 0 and result.metrics is None and result.run_dir is None
    assert pids and [pid for pid in pids if alive(pid)] == []


def test_a_judge_that_never_stops_sees_every_epoch_of_a_successful_job(tmp_path: Path) -> None:
    seen: list[int] = []
    result = LocalRunner().run(job(tmp_path, THREE_EPOCHS, threads=1, timeout=120,
                                     judge=lambda report: seen.append(report.epoch) or False))
    assert result.status == "success" and seen == [1, 2, 3]
    assert [report.epoch for report in result.epochs] == [1, 2, 3]
    assert result.metrics is not None
    assert [report.val_loss for report in result.epochs] == [row["val_loss"] for row in json.loads(
        (tmp_path / "run" / "history.json").read_text())]


def test_the_dry_run_is_each_jobs_yaml_and_each_ranks_environment_and_command(tmp_path: Path) -> None:
    runner = LocalRunner(FAKE_WORKER)
    files = runner.render([job(tmp_path, {"behave": "env", "lr": 0.01}, workers=2, threads=3)], 1)
    assert sorted(files) == ["job/job.yaml", "job/rank-0.sh", "job/rank-1.sh"]
    assert yaml.safe_load(files["job/job.yaml"]) == {"behave": "env", "lr": 0.01}
    rank1 = files["job/rank-1.sh"]
    assert "export RANK=1" in rank1 and "export WORLD_SIZE=2" in rank1 and "export OMP_NUM_THREADS=3" in rank1
    assert rank1.rstrip().endswith(f"--config job.yaml --out {tmp_path / 'run'} --threads 3")
    assert "PATH" not in {line.split("=")[0].removeprefix("export ") for line in rank1.splitlines()}
    assert not (tmp_path / "run").exists() and lines_started_nothing(runner)


def lines_started_nothing(runner: LocalRunner) -> bool:
    return runner.left_behind() == [] and runner.run_id is None


def test_a_backend_is_one_factory_in_the_registry(tmp_path: Path) -> None:
    from stockscale.launch.registry import BACKENDS, RunnerOptions, make_runner, register_backend

    made: list[RunnerOptions] = []

    def toy(options: RunnerOptions) -> LocalRunner:
        made.append(options)
        return LocalRunner(FAKE_WORKER, log_dir=options.log_dir)

    register_backend("toy", toy)
    try:
        runner = make_runner("toy", RunnerOptions(log_dir=tmp_path / "logs"))
        result = runner.run(job(tmp_path, {"behave": "success"}))
        assert result.status == "success" and made[0].log_dir == tmp_path / "logs"
        assert isinstance(make_runner("local", RunnerOptions(warm=True)), Runner)
        with pytest.raises(InputError, match="backend must be one of local, docker, kubernetes, toy"):
            make_runner("nowhere")
    finally:
        del BACKENDS["toy"]
