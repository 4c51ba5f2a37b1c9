"""LocalLauncher: a training job as 1..N worker processes on this machine.

Each worker runs the one worker command (`python -m stockscale train --config ... --out ...`) with exactly the
environment a Kubeflow PyTorchJob replica gets, so the same code path runs locally, in an emulated cluster and
in pods. Each worker is in its own session (its whole tree can be killed) and under its own memory limit
(`stockscale.limits`). The first worker that dies ends the whole job, like a PyTorchJob with the default
restart policy Never: a DDP world without one rank cannot make progress, and a survivor blocked in a
collective would otherwise hang until the timeout.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from stockscale.config import format_size
from stockscale.errors import InputError
from stockscale.files import owner_tag, sweep_stale, write_text_atomic
from stockscale.launch.base import JobResult, Status, TrainJob, run_many_interruptible
from stockscale.limits import LimitReport, MemoryLimiter, check_limit, detect_mechanism, sweep_stale_cgroups
from stockscale.supervision import PARENT_ENV, ensure_cgroup_reaper
from stockscale.worker import EXIT_MEMORY, EXIT_PORT_IN_USE, result_object

# The exit status the train command uses for a MemoryError (out of memory inside Python).
STDERR_TAIL_LINES = 50
SCRATCH_PREFIX = "stockscale-job-"
PORT_ATTEMPTS = 3
WAIT_TICK = 0.05

# Variables of other launchers (torchrun / torchelastic) that must not leak from our own environment into a
# worker: a PyTorchJob replica does not have them, and distributed.py would read them.
_FOREIGN_DIST_VARS = ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "ROLE_NAME", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                      "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE")

_ports_lock = threading.Lock()
_ports_in_use: set[int] = set()


def reserve_port() -> int:
    """A free TCP port on 127.0.0.1 that no other job of this process holds (give it back: release_port)."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _ports_in_use:
                _ports_in_use.add(port)
                return port
    raise OSError("no free TCP port found for the DDP master")


def release_port(port: int) -> None:
    with _ports_lock:
        _ports_in_use.discard(port)


def default_threads(workers: int) -> int:
    """Torch threads per worker that do not oversubscribe the cores we may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, workers))


def worker_environment(rank: int, world_size: int, master_port: int, threads: int,
                       master_addr: str = "127.0.0.1", base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of rank `rank`: what the Kubeflow training operator gives a PyTorchJob replica."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name in _FOREIGN_DIST_VARS or name.startswith("PET_"):
            del env[name]
    env.update({
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NNODES": str(world_size),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads),
        PARENT_ENV: str(os.getpid()),  # the worker ends with us (stockscale.supervision.follow_parent)
    })
    return env


@dataclass
class _Worker:
    """One running rank and what we learned from it."""

    rank: int
    process: subprocess.Popen[bytes]
    limiter: MemoryLimiter
    readers: list[threading.Thread] = field(default_factory=list)
    last_json: dict[str, Any] | None = None     # the last stdout line that was a JSON object
    final_json: dict[str, Any] | None = None    # the same, while it is still the last non-empty line
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))
    returncode: int | None = None
    report: LimitReport | None = None

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


class LocalLauncher:
    """Runs TrainJobs as local worker processes with the PyTorchJob environment, one memory limit each.

    `worker_command` is the argv prefix of a worker (default: this Python's `-m stockscale train`); each
    worker gets `--config <yaml> --out <run_dir> --threads <n>` appended. `on_line(rank, line)` receives every
    stdout line of every worker, from reader threads (it must be thread-safe when jobs run in parallel).
    `log_dir`, when given, keeps each worker's full stderr as `<log_dir>/<job>/rank-<i>.stderr.log`.
    `grace_seconds` is how long a worker has between SIGTERM and SIGKILL when the job is ended.
    """

    name = "local"
    streams_jobs = True

    def __init__(
        self,
        worker_command: list[str] | None = None,
        on_line: Callable[[int, str], None] | None = None,
        log_dir: Path | None = None,
        grace_seconds: float = 5.0,
        limit_mechanism: str | None = None,
    ) -> None:
        self.worker_command = list(worker_command or [sys.executable, "-m", "stockscale", "train"])
        self.on_line = on_line
        self.log_dir = log_dir
        self.grace_seconds = grace_seconds
        self.limit_mechanism = limit_mechanism
        self._abort = threading.Event()

    # public API

    def run(self, job: TrainJob) -> JobResult:
        """Run one job to its end; the first worker that fails ends it. Ctrl-C kills it and re-raises."""
        if job.workers < 1:
            raise InputError(f"job {job.name}: workers must be at least 1, not {job.workers}")
        if job.timeout is not None and job.timeout <= 0:
            raise InputError(f"job {job.name}: timeout must be positive, not {job.timeout}")
        if job.threads is not None and job.threads < 1:
            raise InputError(f"job {job.name}: threads must be at least 1, not {job.threads}")
        limit = check_limit(job.memory_limit)
        mechanism = None if limit is None else (self.limit_mechanism or detect_mechanism())
        threads = job.threads or default_threads(job.workers)

        sweep_stale_cgroups()  # what a killed launcher left behind
        if mechanism is not None and mechanism.startswith("cgroup"):
            ensure_cgroup_reaper()  # and what we would leave behind if killed
        sweep_stale(Path(tempfile.gettempdir()), SCRATCH_PREFIX)
        workers: list[_Worker] = []
        callback_errors: list[BaseException] = []
        port = reserve_port()
        scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))
        start = time.time()
        try:
            config_path = self._write_config(scratch, job.config)
            argv = [*self.worker_command, "--config", str(config_path), "--out", str(job.run_dir),
                    "--threads", str(threads)]
            for attempt in range(1, PORT_ATTEMPTS + 1):
                for rank in range(job.workers):
                    env = worker_environment(rank, job.workers, port, threads)
                    try:
                        workers.append(self._start(job, rank, argv, env, limit, mechanism, callback_errors))
                    except OSError as error:
                        self._end_all(workers)
                        return self._result(job, "error", f"cannot start worker {rank}: {error}", start,
                                            workers, mechanism)
                status, detail = self._wait(job, workers, start)
                if not (status == "error" and _port_was_taken(workers)) or attempt == PORT_ATTEMPTS:
                    break
                # Another program took the port between its choice and rank 0's bind: again, on a fresh one.
                self._end_all(workers)
                workers.clear()
                release_port(port)
                port = reserve_port()
        finally:
            # Also on KeyboardInterrupt: no worker, cgroup or port survives the call.
            self._end_all(workers)
            release_port(port)
            with contextlib.suppress(OSError):
                for path in scratch.iterdir():
                    path.unlink()
                scratch.rmdir()
        if callback_errors:
            raise callback_errors[0]
        return self._result(job, status, detail, start, workers, mechanism)

    def run_many(
        self, jobs: list[TrainJob], parallel: int, on_result: Callable[[JobResult], None] | None = None
    ) -> list[JobResult]:
        """Run jobs `parallel` at a time; Ctrl-C ends the running ones, skips the rest and re-raises."""
        return run_many_interruptible(self.run, jobs, parallel, on_result, self._abort)

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False) -> list[str]:
        """The kept stderr logs of job `run_id` (needs `log_dir`); local jobs end with their launcher, so
        there is nothing to follow."""
        folder = self._log_folder(run_id)
        files = sorted(folder.glob("rank-*.stderr.log")) if folder is not None else []
        for path in files:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                on_line(path.name.removesuffix(".stderr.log"), line)
        return [path.name for path in files]

    def delete(self, run_id: str) -> list[str]:
        """What a local job leaves besides its run directory: its kept logs."""
        folder = self._log_folder(run_id)
        if folder is None or not folder.is_dir():
            return []
        removed = [str(path) for path in sorted(folder.iterdir())]
        shutil.rmtree(folder)
        return removed

    def _log_folder(self, run_id: str) -> Path | None:
        if self.log_dir is None:
            return None
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise InputError(f"{run_id!r} is not a job name")
        return self.log_dir / run_id

    # internals

    @staticmethod
    def _write_config(directory: Path, config: dict[str, Any]) -> Path:
        try:
            text = yaml.safe_dump(_plain(config), sort_keys=True)
        except yaml.YAMLError as error:
            raise InputError(f"job config cannot be written as YAML: {error}") from None
        target = directory / "job.yaml"
        write_text_atomic(target, text)
        return target

    def _start(self, job: TrainJob, rank: int, argv: list[str], env: dict[str, str], limit: int | None,
               mechanism: str | None, callback_errors: list[BaseException]) -> _Worker:
        limiter = MemoryLimiter(limit, mechanism=mechanism)
        limiter.prepare()
        try:
            process = subprocess.Popen(limiter.command(argv), env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError:
            limiter.finish()
            raise
        limiter.attach(process.pid)
        worker = _Worker(rank, process, limiter)
        log = None
        if self.log_dir is not None:
            folder = self.log_dir / job.name
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / f"rank-{rank}.stderr.log", "w", encoding="utf-8")  # noqa: SIM115
        assert process.stdout is not None and process.stderr is not None
        worker.readers = [
            threading.Thread(target=self._read_stdout, args=(worker, process.stdout, callback_errors),
                             daemon=True, name=f"stockscale-{job.name}-{rank}-out"),
            threading.Thread(target=self._read_stderr, args=(worker, process.stderr, log),
                             daemon=True, name=f"stockscale-{job.name}-{rank}-err"),
        ]
        for reader in worker.readers:
            reader.start()
        return worker

    def _read_stdout(self, worker: _Worker, stream: IO[bytes], callback_errors: list[BaseException]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    parsed = result_object(line)
                    worker.final_json = parsed
                    if parsed is not None:
                        worker.last_json = parsed
                if self.on_line is not None and not callback_errors:
                    try:
                        self.on_line(worker.rank, line)
                    except Exception as error:  # keep draining the pipe; run() re-raises it at the end
                        callback_errors.append(error)

    @staticmethod
    def _read_stderr(worker: _Worker, stream: IO[bytes], log: IO[str] | None) -> None:
        with stream, log if log is not None else contextlib.nullcontext():
            for raw in stream:
                line = raw.decode("utf-8", errors="replace")
                worker.stderr_tail.append(line.rstrip("\r\n"))
                if log is not None:
                    log.write(line)

    def _wait(self, job: TrainJob, workers: list[_Worker], start: float) -> tuple[Status, str]:
        """Wait for every worker to exit 0, the first failure, the timeout or an abort."""
        deadline = None if job.timeout is None else start + job.timeout
        while True:
            if self._abort.is_set():
                raise KeyboardInterrupt
            failed = [worker for worker in workers if worker.exited() and worker.returncode != 0]
            if failed:
                # Several found dead in one tick: the one the memory limit killed is the cause, not a peer
                # that lost its connection to it.
                failed.sort(key=lambda worker: (not self._memory_failure(worker), worker.rank))
                return self._failure(failed[0])
            if all(worker.returncode == 0 for worker in workers):
                return self._success(workers[0])
            if deadline is not None and time.time() >= deadline:
                return "timeout", f"timed out after {job.timeout:g} s"
            time.sleep(WAIT_TICK)

    @staticmethod
    def _memory_failure(worker: _Worker) -> bool:
        return worker.limiter.limit_hit(worker.returncode) or worker.returncode == EXIT_MEMORY

    @staticmethod
    def _failure(worker: _Worker) -> tuple[Status, str]:
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

    @staticmethod
    def _success(rank0: _Worker) -> tuple[Status, str]:
        metrics = rank0.final_json
        if metrics is None:
            return "error", "worker 0 exited 0 but its last stdout line is not a JSON object"
        if metrics.get("status", "success") != "success":
            return "error", f"worker 0 exited 0 but reported status {metrics.get('status')!r}: " \
                            f"{metrics.get('detail', '')}"
        return "success", ""

    def _end_all(self, workers: list[_Worker]) -> None:
        """SIGTERM every live worker's group, SIGKILL after the grace period, reap, remove the cgroups."""
        live = [worker for worker in workers if not worker.exited()]
        for worker in live:
            worker.limiter.kill_tree(signal.SIGTERM)  # first, so descendants are found while the worker lives
            worker.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while live and time.monotonic() < deadline:
            time.sleep(WAIT_TICK)
            live = [worker for worker in live if not worker.exited()]
        for worker in live:
            worker.limiter.kill_tree(signal.SIGKILL)
            worker.signal_group(signal.SIGKILL)
        for worker in live:
            worker.exited(block=True)
        for worker in workers:
            worker.finish_limit()
        for worker in workers:
            for reader in worker.readers:
                reader.join(timeout=5.0)

    def _result(self, job: TrainJob, status: Status, detail: str, start: float, workers: list[_Worker],
                mechanism: str | None) -> JobResult:
        reports = [worker.finish_limit() for worker in workers]
        used = sorted({report.mechanism for report in reports if report.mechanism})
        # One worker that fell back to the watchdog makes the weakest guarantee the job's.
        held = "watchdog" if "watchdog" in used else (used[0] if used else mechanism)
        run_dir = job.run_dir if status == "success" or Path(job.run_dir).exists() else None
        return JobResult(
            name=job.name,
            status=status,
            detail=detail,
            metrics=workers[0].final_json if status == "success" and workers else None,
            start_time=start,
            end_time=time.time(),
            # Resident memory, not the cgroup's charge: a v1 cgroup's peak also counts page cache.
            peak_rss_bytes=[report.polled_peak_rss_bytes for report in reports],
            run_dir=str(run_dir) if run_dir is not None else None,
            limit_mechanism=held if job.memory_limit is not None else None,
        )


def _port_was_taken(workers: list[_Worker]) -> bool:
    """Whether rank 0 failed because its rendezvous port was in use (distributed.PortInUse)."""
    return bool(workers) and workers[0].rank == 0 and workers[0].returncode == EXIT_PORT_IN_USE


def _plain(value: Any) -> Any:
    """Paths and dates as the strings TrainConfig parses back; containers recursively; the rest as is."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def describe_limit(limit: int | None, mechanism: str | None) -> str:
    """'1.0 GiB per worker (cgroup-v1)' or 'no memory limit', for progress lines."""
    if limit is None:
        return "no memory limit"
    return f"{format_size(limit)} per worker ({mechanism or detect_mechanism()})"
