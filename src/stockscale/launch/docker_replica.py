"""One started container of the docker backend: its log and memory followed from threads, and how it ended.

A container the engine reports OOMKilled (or that exited 137 after reaching its limit) failed for memory,
as does a worker that reported MemoryError itself; any other non-zero exit is an error with the code and the
log's last line.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stockscale.launch.base import Status, TrainJob
from stockscale.launch.containers import Pod
from stockscale.worker import EXIT_MEMORY, EpochReport, parse_result_line


@dataclass
class RunningContainer:
    """One started container and what its log and stats said."""

    pod: Pod
    rank: int
    container: Any
    lines: list[str] = field(default_factory=list)
    peak_bytes: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    threads: list[threading.Thread] = field(default_factory=list)
    epochs: list[EpochReport] = field(default_factory=list)  # rank 0's epoch progress, as it came
    pruned: bool = False  # the job's judge stopped it after its last epoch


def memory_failure(worker: RunningContainer, job: TrainJob) -> bool:
    if worker.oom_killed or worker.exit_code == EXIT_MEMORY:
        return True
    if (parse_result_line(worker.lines) or {}).get("status") == "oom":
        return True
    # 137 = SIGKILL; with a limit and samples near it, it was the kernel's OOM killer under another name.
    return (worker.exit_code == 137 and job.memory_limit is not None
            and worker.peak_bytes >= 0.9 * job.memory_limit)


def failure(worker: RunningContainer, job: TrainJob) -> tuple[Status, str]:
    """The status and detail of a container that exited non-zero, once its log reader has caught up."""
    for thread in worker.threads[:1]:
        thread.join(timeout=5)
    who = f"(container {worker.pod.name})"
    reported = parse_result_line(worker.lines) or {}
    if memory_failure(worker, job):
        how = "OOMKilled" if worker.oom_killed else (
            "MemoryError" if worker.exit_code == EXIT_MEMORY or reported.get("status") == "oom"
            else "exit code 137 at its memory limit")
        return "oom", f"{how} {who}"
    last = next((line.strip()[:300] for line in reversed(worker.lines) if line.strip()), "")
    return "error", f"exit code {worker.exit_code} {who}" + (f": {last}" if last else "")


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
