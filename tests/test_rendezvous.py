"""The local rendezvous: rank 0's store listens on loopback only, and a port taken between its choice and
rank 0's bind makes the launcher start the job again on a fresh port instead of failing it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import stockscale.launch.local as local
from stockscale.config import build_train_config
from stockscale.launch.local import LocalRunner, reserve_port
from stockscale.launch.runner import TrainJob
from stockscale.worker import EXIT_PORT_IN_USE
from tests.conftest import TINY


def rank0(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "STOCKSCALE_DIST_TIMEOUT": "30"}
    return subprocess.Popen([sys.executable, "-m", "stockscale", "train", *TINY, "--out", str(tmp_path / "r")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening(pid: int, port: int) -> list[str]:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []
    return [c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def test_rank0_listens_on_loopback_only(tmp_path: Path) -> None:
    port = reserve_port()
    process = rank0(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while not listening(process.pid, port):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        assert listening(process.pid, port) == ["127.0.0.1"]
    finally:
        process.kill()
        process.wait()


def test_rank0_reports_a_taken_port_with_its_own_exit_status(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = rank0(tmp_path, taken.getsockname()[1])
        _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PORT_IN_USE, err
    assert "already in use" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_launcher_retries_on_a_fresh_port_when_rank0_finds_its_port_taken(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1]]
        real = local.reserve_port

        def first_the_taken_one() -> int:
            return ports.pop() if ports else real()

        monkeypatch.setattr(local, "reserve_port", first_the_taken_one)
        monkeypatch.chdir(tmp_path)
        config = {"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1}
        result = LocalRunner().run(TrainJob(name="j", config=build_train_config(config), run_dir=tmp_path / "run",
                                            workers=2, threads=1))
    assert result.status == "success", result.detail
    assert (tmp_path / "run" / "metrics.json").is_file()
