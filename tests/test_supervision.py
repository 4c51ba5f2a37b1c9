"""Signals and supervision with real processes: SIGTERM, SIGHUP and SIGKILL to a launcher leave no worker,
cgroup or temporary folder behind; stale leftovers of killed processes are swept at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stockscale.files import owner_tag, staged_dir, sweep_stale
from stockscale.limits import CGROUP_PREFIX, detect_mechanism, own_cgroup_dir, sweep_stale_cgroups
from tests.conftest import TINY, our_cgroups

CLEAN_WITHIN = 10.0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False



def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def start(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "STOCKSCALE_CACHE": str(tmp_path / "cache")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "stockscale", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_train_launcher_leaves_no_worker_cgroup_or_scratch_folder(tmp_path: Path, sig) -> None:
    limited = detect_mechanism() != "watchdog"
    launcher = start(["train", "--workers", "2", "--memory-limit", "1GiB", "--epochs", "100000",
                      "--hidden-size", "8", "--num-layers", "1", "--threads", "1", "--out", "run"], tmp_path)
    me = psutil.Process(launcher.pid)

    def workers() -> list[psutil.Process]:
        return [p for p in me.children(recursive=True) if "stockscale" in " ".join(p.cmdline())]

    wait_until(lambda: len(workers()) >= 2, 60, "two workers started")
    pids = [p.pid for p in workers()]
    if limited:
        wait_until(lambda: len(our_cgroups(launcher.pid)) == 2, 10, "two worker cgroups")
    time.sleep(3.0)  # well into start-up or training
    launcher.send_signal(sig)
    launcher.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), CLEAN_WITHIN, f"workers {pids} gone")
    wait_until(lambda: not our_cgroups(launcher.pid), CLEAN_WITHIN, "worker cgroups removed")
    if sig != signal.SIGKILL:
        assert launcher.returncode == 128 + sig, launcher.stderr.read().decode()
        assert list((tmp_path / "tmp").glob("stockscale-job-*")) == []
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_during_data_scale_leaves_no_partial_folder(tmp_path: Path) -> None:
    writer = start(["data", "scale", "--multiplier", "20000", "--out", "big"], tmp_path)
    wait_until(lambda: list(tmp_path.glob(".big.tmp-*")), 60, "staging folder created")
    writer.send_signal(signal.SIGTERM)
    assert writer.wait(timeout=30) == 128 + signal.SIGTERM, writer.stderr.read().decode()
    assert list(tmp_path.glob(".big.tmp-*")) == []
    assert not (tmp_path / "big").exists()


def test_stale_staging_folders_of_dead_processes_are_swept_at_the_next_start(tmp_path: Path) -> None:
    host = owner_tag().split("@", 1)[1]
    stale = tmp_path / f".out.tmp-{dead_pid()}@{host}-abc123"
    live = tmp_path / f".out.tmp-{os.getpid()}@{host}-def456"
    elsewhere = tmp_path / f".out.tmp-{dead_pid()}@otherhost-ghi789"
    for folder in (stale, live, elsewhere):
        (folder / "part").mkdir(parents=True)
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "file").write_text("x")
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()
    assert (tmp_path / "out" / "file").read_text() == "x"
    assert sweep_stale(tmp_path, ".out.tmp-") == []


def test_stale_cgroups_of_dead_launchers_are_swept(tmp_path: Path) -> None:
    parent = own_cgroup_dir(1 if detect_mechanism() == "cgroup-v1" else 2)
    if detect_mechanism() == "watchdog" or parent is None:
        pytest.skip("no writable memory cgroup here")
    stale = parent / f"{CGROUP_PREFIX}{dead_pid()}-0123456789ab"
    stale.mkdir()
    try:
        assert stale in sweep_stale_cgroups()
        assert not stale.exists()
    finally:
        if stale.exists():
            stale.rmdir()


def test_sigterm_is_an_interrupt_in_every_command(tmp_path: Path) -> None:
    """A command waiting on its workers (here a search) ends with 143 and a valid partial summary."""
    search = start(["search", "--space", str(_space(tmp_path)), "--out", "s", *TINY[:2], "--max-steps", "100000",
                    "--hidden-size", "8", "--threads", "1"], tmp_path)
    wait_until(lambda: (tmp_path / "s" / "summary.json").exists(), 60, "summary written")
    time.sleep(1.0)
    search.send_signal(signal.SIGTERM)
    assert search.wait(timeout=30) == 128 + signal.SIGTERM, search.stderr.read().decode()
    import json

    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["complete"] is False


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("lr: [0.001]\n")
    return path


def test_main_called_in_process_puts_back_the_callers_signal_handlers_after_an_error():
    """An error (one line, exit 2) leaves main() by an exception: the caller's handlers still come back, so a
    later Ctrl-C in the caller is its own again (not ignored as a second one would be during cleanup)."""
    from stockscale.cli import main

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(["train", "--epochs", "0"]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before
