"""One started container of the docker backend: its log and memory followed from threads, and how it ended.

A container the engine reports OOMKilled (or that exited 137 after reaching its limit) failed for memory,
as does a worker that reported MemoryError itself; any other non-zero exit is an error with the code and the
log's last line. A RunningContainer is a replica of launch/replicas.py: the one supervision policy follows it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stockscale.launch.containers import Pod
from stockscale.launch.runner import Status
from stockscale.worker import EXIT_MEMORY, parse_result_line


@dataclass
class RunningContainer:
    """One started container and what its log and stats said; `memory_limit` is its job's."""

    pod: Pod
    rank: int
    container: Any
    memory_limit: int | None = None
    lines: list[str] = field(default_factory=list)
    peak_bytes: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    threads: list[threading.Thread] = field(default_factory=list)  # its log's reader first, then its stats'

    def poll(self) -> int | None:
        """Its exit code once the engine says it exited (asked on every call until then)."""
        if self.exit_code is None:
            self.container.reload()
            state = self.container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                self.exit_code, self.oom_killed = int(state["ExitCode"]), bool(state.get("OOMKilled"))
        return self.exit_code

    def memory_failure(self) -> bool:
        if self.oom_killed or self.exit_code == EXIT_MEMORY:
            return True
        if (parse_result_line(self.lines) or {}).get("status") == "oom":
            return True
        # 137 = SIGKILL; with a limit and samples near it, it was the kernel's OOM killer under another name.
        return (self.exit_code == 137 and self.memory_limit is not None
                and self.peak_bytes >= 0.9 * self.memory_limit)

    def failure(self) -> tuple[Status, str]:
        """The status and detail of a container that exited non-zero, once its log reader has caught up."""
        for thread in self.threads[:1]:
            thread.join(timeout=5)
        who = f"(container {self.pod.name})"
        reported = parse_result_line(self.lines) or {}
        if self.memory_failure():
            how = "OOMKilled" if self.oom_killed else (
                "MemoryError" if self.exit_code == EXIT_MEMORY or reported.get("status") == "oom"
                else "exit code 137 at its memory limit")
            return "oom", f"{how} {who}"
        last = next((line.strip()[:300] for line in reversed(self.lines) if line.strip()), "")
        return "error", f"exit code {self.exit_code} {who}" + (f": {last}" if last else "")

    def drain(self) -> None:
        for thread in self.threads[:1]:
            thread.join(timeout=10)

    def finished(self) -> tuple[Status, str]:
        metrics = parse_result_line(self.lines)
        if metrics is None or metrics.get("status", "success") != "success":
            return "error", f"container {self.pod.name} exited 0 without a success result line"
        return "success", ""


def log_lines(container: Any, follow: bool) -> Iterator[str]:
    """The container's log (stdout and stderr, as a pod log is) line by line."""
    pending = b""
    with contextlib.suppress(Exception):
        for chunk in container.logs(stream=True, follow=follow, stdout=True, stderr=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                yield raw.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace").rstrip("\r")


def watch_memory(worker: RunningContainer) -> None:
    """The container's memory use as the engine samples it (about once a second), less inactive file cache."""
    with contextlib.suppress(Exception):
        for sample in worker.container.stats(stream=True, decode=True):
            memory = sample.get("memory_stats") or {}
            stats = memory.get("stats") or {}
            used = int(memory.get("usage") or 0) - int(stats.get("total_inactive_file", stats.get("inactive_file", 0)))
            worker.peak_bytes = max(worker.peak_bytes, used)
            if not memory and worker.exit_code is not None:
                return
