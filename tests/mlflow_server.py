"""A real `mlflow server` for the tracking tests: on loopback, a free port, a temporary sqlite store and
artifact folder. CI starts one for the whole suite (.ci/run: STOCKSCALE_TEST_MLFLOW_URI); a test that needs
a server of its own (to stop it) starts one here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

READY_SECONDS = 180.0  # a fresh store's migrations and the server's imports take tens of seconds on 2 busy cores


def allowed_hosts() -> str:
    """The Host headers the server answers: loopback, and this machine's host name, by which the pod-route test
    reaches it (a name that is not loopback, as a pod's would be; MLflow refuses unknown names by default)."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    return ",".join(f"{name}{port}" for name in names for port in ("", ":*"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """`mlflow server` as a child process in its own session (stopped with its workers by stop())."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        mlflow = Path(sys.executable).with_name("mlflow")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--allowed-hosts", allowed_hosts(),
                 "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                 "--artifacts-destination", str(folder / "artifacts")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_SECONDS) -> str:
        return wait_ready(self.uri, timeout, self.process, self.log)

    def stop(self, graceful: bool = True) -> None:
        """End the server and its workers (graceful: SIGTERM first; else SIGKILL at once, a crash)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_ready(uri: str, timeout: float = READY_SECONDS, process: subprocess.Popen | None = None,
               log: Path | None = None) -> str:
    """`uri` once its /health answers; RuntimeError with the server's log when it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return uri
        except OSError:
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"mlflow server at {uri} did not become ready in {timeout:.0f} s\n{tail}")
