"""One worker process on this machine: started in its own session under its own memory limit, its output read
by threads, its failure told in words, and its whole tree ended.

Both local runners use it: LocalRunner starts one such process per rank of every job (cold), and
WarmRunner keeps a few alive across trials (warm). What a dead worker is reported as (oom, error, which
signal) is decided here once, so a trial that fails reads the same whichever of them ran it. A WorkerProcess
is a replica of launch/replicas.py: the one supervision policy follows it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from stockscale.launch.runner import Status
from stockscale.limits import LimitReport, MemoryLimiter
from stockscale.worker import EXIT_MEMORY, RunMetrics, result_object

STDERR_TAIL_LINES = 50
WAIT_TICK = 0.05


@dataclass
class WorkerProcess:
    """One running worker and what we learned from it."""

    rank: int
    process: subprocess.Popen[bytes]
    limiter: MemoryLimiter
    readers: list[threading.Thread] = field(default_factory=list)
    last_json: RunMetrics | None = None         # the last stdout line that was a JSON result object
    final_json: RunMetrics | None = None        # the same, while it is still the last non-empty line
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))
    log: IO[str] | None = None                  # where stderr goes as well (swapped per trial by the warm pool)
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    returncode: int | None = None
    report: LimitReport | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self, block: bool = False) -> bool:
        """Whether the process has exited; reaps it only after its process group was swept.

        The exit is first seen without reaping (WNOWAIT), so the pid still names the worker's process group
        and cannot have been reused: anything the worker left in its group is SIGKILLed, then the worker is
        reaped. (Its rusage ru_maxrss is not used as a peak: Linux starts a forked child's maxrss at the
        parent's RSS, so a worker started from a large parent would report the parent's size.)
        """
        if self.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        try:
            info = os.waitid(os.P_PID, self.process.pid, flags)
        except ChildProcessError:  # reaped elsewhere: only the exit status is left to learn
            self.returncode = self.process.wait()
            return True
        if info is None:
            return False
        self.signal_group(signal.SIGKILL)
        _, status = os.waitpid(self.process.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        return True

    def finish_limit(self) -> LimitReport:
        """Stop watching, read the limit's counters and remove the cgroup (idempotent)."""
        if self.report is None:
            self.report = self.limiter.finish(self.returncode)
        return self.report

    def signal_group(self, sig: int) -> None:
        """Signal the worker's process group; only while its pid is not reaped, so it cannot be reused."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def last_stderr_line(self) -> str:
        for line in reversed(self.stderr_tail):
            if line.strip():
                return line.strip()[:300]
        return ""

    # a replica (launch/replicas.py)

    def poll(self) -> int | None:
        return self.returncode if self.exited() else None

    def memory_failure(self) -> bool:
        return memory_failure(self)

    def failure(self) -> tuple[Status, str]:
        return describe_failure(self)

    def drain(self) -> None:
        for reader in self.readers:  # every line it printed was read (and judged)
            reader.join(timeout=5.0)

    def finished(self) -> tuple[Status, str]:
        """Rank 0 exited 0: a success when its last stdout line is a success result object."""
        metrics = self.final_json
        if metrics is None:
            return "error", f"worker {self.rank} exited 0 but its last stdout line is not a JSON object"
        if metrics.get("status", "success") != "success":
            return "error", f"worker {self.rank} exited 0 but reported status {metrics.get('status')!r}: " \
                            f"{metrics.get('detail', '')}"
        return "success", ""

    def swap_log(self, log: IO[str] | None) -> None:
        """Send stderr to `log` from now on; the one before is closed."""
        with self.log_lock:
            old, self.log = self.log, log
        if old is not None:
            old.close()


def start_worker(rank: int, argv: list[str], env: dict[str, str], limiter: MemoryLimiter, name: str,
                 on_stdout: Callable[[WorkerProcess, str], None], log: IO[str] | None = None,
                 stdin: bool = False, on_end: Callable[[WorkerProcess], None] | None = None) -> WorkerProcess:
    """Start `argv` in its own session under `limiter`; every stdout line goes to on_stdout(worker, line)
    from a reader thread, then on_end(worker) at the end of its stdout; stderr to the tail (and `log`).
    With `stdin`, the worker's stdin is a pipe."""
    limiter.prepare()
    try:
        process = subprocess.Popen(limiter.command(argv), env=env,
                                   stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError:
        limiter.finish()
        raise
    limiter.attach(process.pid)
    worker = WorkerProcess(rank, process, limiter, log=log)
    assert process.stdout is not None and process.stderr is not None
    worker.readers = [
        threading.Thread(target=_read_stdout, args=(worker, process.stdout, on_stdout, on_end), daemon=True,
                         name=f"stockscale-{name}-{rank}-out"),
        threading.Thread(target=_read_stderr, args=(worker, process.stderr), daemon=True,
                         name=f"stockscale-{name}-{rank}-err"),
    ]
    for reader in worker.readers:
        reader.start()
    return worker


def _read_stdout(worker: WorkerProcess, stream: IO[bytes], on_stdout: Callable[[WorkerProcess, str], None],
                 on_end: Callable[[WorkerProcess], None] | None) -> None:
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.strip():
                parsed = result_object(line)
                worker.final_json = parsed
                if parsed is not None:
                    worker.last_json = parsed
            on_stdout(worker, line)
    if on_end is not None:
        on_end(worker)


def _read_stderr(worker: WorkerProcess, stream: IO[bytes]) -> None:
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace")
            worker.stderr_tail.append(line.rstrip("\r\n"))
            with worker.log_lock:
                if worker.log is not None:
                    worker.log.write(line)
    worker.swap_log(None)


def end_workers(workers: list[WorkerProcess], grace_seconds: float) -> None:
    """SIGTERM every live worker's group, SIGKILL after the grace period, reap, remove the cgroups."""
    live = [worker for worker in workers if not worker.exited()]
    for worker in live:
        worker.limiter.kill_tree(signal.SIGTERM)  # first, so descendants are found while the worker lives
        worker.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while live and time.monotonic() < deadline:
        time.sleep(WAIT_TICK / 5)
        live = [worker for worker in live if not worker.exited()]
    for worker in live:
        worker.limiter.kill_tree(signal.SIGKILL)
        worker.signal_group(signal.SIGKILL)
    for worker in live:
        worker.exited(block=True)
    for worker in workers:
        worker.finish_limit()
    for worker in workers:
        if worker.process.stdin is not None:
            with contextlib.suppress(OSError):
                worker.process.stdin.close()
        for reader in worker.readers:
            reader.join(timeout=5.0)


def memory_failure(worker: WorkerProcess) -> bool:
    return worker.limiter.limit_hit(worker.returncode) or worker.returncode == EXIT_MEMORY


def describe_failure(worker: WorkerProcess) -> tuple[Status, str]:
    """How a worker that exited non-zero failed: oom (its limit, a MemoryError) or error, and in words."""
    who = f"(worker {worker.rank})"
    code = worker.returncode
    assert code is not None
    reported = worker.last_json if worker.last_json and worker.last_json.get("status") in (
        "oom", "error") else None
    if worker.limiter.limit_hit(code):
        return "oom", f"{worker.finish_limit().describe()} {who}"
    if reported is not None and reported.get("detail"):
        status: Status = "oom" if reported["status"] == "oom" or code == EXIT_MEMORY else "error"
        return status, f"{reported['detail']} {who}"
    if code == EXIT_MEMORY:
        return "oom", f"MemoryError {who}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return "error", f"killed by signal {name} {who}"
    line = worker.last_stderr_line()
    return "error", f"exit code {code} {who}" + (f": {line}" if line else "")
