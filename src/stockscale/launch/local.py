"""LocalRunner: a training job as 1..N worker processes on this machine.

Each worker runs the one worker command (`python -m stockscale train --config ... --out ...`) with exactly the
environment a Kubeflow PyTorchJob replica gets, so the same code path runs locally, in an emulated cluster and
in pods. Each worker is in its own session (its whole tree can be killed) and under its own memory limit
(`stockscale.limits`). The first worker that dies ends the whole job, like a PyTorchJob with the default
restart policy Never; how a job ends is launch/replicas.py's one policy, shared with docker and warm.

Rank 0's epoch progress lines are collected as the job's `epochs`, and shown to the job's judge as they come:
when it says stop, the job is ended as a timeout ends it, and reported as pruned. The dry run (`render`) is
each job's YAML and each rank's environment and command line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from stockscale.config import format_size
from stockscale.errors import InputError
from stockscale.files import open_log, owner_tag, sweep_stale, write_text_atomic
from stockscale.launch.processes import WorkerProcess, end_workers, start_worker
from stockscale.launch.replicas import EpochWatch, check_job, supervise
from stockscale.launch.runner import (
    JobResult,
    LineCallback,
    ResultCallback,
    Runner,
    Status,
    TrainJob,
    run_many_interruptible,
)
from stockscale.limits import MemoryLimiter, check_limit, detect_mechanism, sweep_stale_cgroups
from stockscale.supervision import PARENT_ENV, ensure_cgroup_reaper
from stockscale.worker import EXIT_PORT_IN_USE

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
                port = int(sock.getsockname()[1])
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


class LocalRunner(Runner):
    """Runs TrainJobs as local worker processes with the PyTorchJob environment, one memory limit each.

    `worker_command` is the argv prefix of a worker (default: this Python's `-m stockscale train`); each
    worker gets `--config <yaml> --out <run_dir> --threads <n>` appended. `on_line(rank, line)` receives every
    stdout line of every worker, from reader threads (it must be thread-safe when jobs run in parallel).
    `log_dir`, when given, keeps each worker's full stderr as `<log_dir>/<job>/rank-<i>.stderr.log`.
    `grace_seconds` is how long a worker has between SIGTERM and SIGKILL when the job is ended. `abort`, when
    given, is shared with a runner that hands jobs to this one (WarmRunner's DDP jobs): its Ctrl-C ends them.
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
        abort: threading.Event | None = None,
    ) -> None:
        self.worker_command = list(worker_command or [sys.executable, "-m", "stockscale", "train"])
        self.on_line = on_line
        self.log_dir = log_dir
        self.grace_seconds = grace_seconds
        self.limit_mechanism = limit_mechanism
        self._abort = abort or threading.Event()

    # the Runner interface

    def limit_of(self, job: TrainJob) -> tuple[int | None, str | None]:
        """The job's checked memory limit per worker and how it will be held (None, None: no limit)."""
        limit = check_limit(job.memory_limit)
        return limit, None if limit is None else (self.limit_mechanism or detect_mechanism())

    def run(self, job: TrainJob) -> JobResult:
        """Run one job to its end; the first worker that fails ends it. Ctrl-C kills it and re-raises."""
        check_job(job)
        limit, mechanism = self.limit_of(job)
        threads = job.threads or default_threads(job.workers)

        sweep_stale_cgroups()  # what a killed launcher left behind
        if mechanism is not None and mechanism.startswith("cgroup"):
            ensure_cgroup_reaper()  # and what we would leave behind if killed
        sweep_stale(Path(tempfile.gettempdir()), SCRATCH_PREFIX)
        workers: list[WorkerProcess] = []
        watch = EpochWatch(judge=job.judge, on_line=self.on_line)
        port = reserve_port()
        scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-"))
        start = time.time()
        try:
            config_path = scratch / "job.yaml"
            write_text_atomic(config_path, job_yaml(job))
            argv = self._argv(job, config_path, threads)
            for attempt in range(1, PORT_ATTEMPTS + 1):
                for rank in range(job.workers):
                    env = worker_environment(rank, job.workers, port, threads)
                    try:
                        workers.append(self._start(job, rank, argv, env, limit, mechanism, watch))
                    except OSError as error:
                        end_workers(workers, self.grace_seconds)
                        return self._result(job, "error", f"cannot start worker {rank}: {error}", start,
                                            workers, mechanism)
                status, detail = supervise(workers, watch, start=start, timeout=job.timeout, abort=self._abort,
                                           tick=WAIT_TICK)
                if not (status == "error" and _port_was_taken(workers)) or attempt == PORT_ATTEMPTS:
                    break
                # Another program took the port between its choice and rank 0's bind: again, on a fresh one.
                end_workers(workers, self.grace_seconds)
                workers.clear()
                release_port(port)
                port = reserve_port()
        finally:
            # Also on KeyboardInterrupt: no worker, cgroup or port survives the call.
            end_workers(workers, self.grace_seconds)
            release_port(port)
            with contextlib.suppress(OSError):
                for path in scratch.iterdir():
                    path.unlink()
                scratch.rmdir()
        watch.reraise()
        result = self._result(job, status, detail, start, workers, mechanism)
        result.epochs = list(watch.epochs)
        return result

    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        """Run jobs `parallel` at a time; Ctrl-C ends the running ones, skips the rest and re-raises."""
        return run_many_interruptible(self.run, jobs, parallel, on_result, self._abort)

    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        """The dry run: each job's YAML (`<job>/job.yaml`) and, per rank, the environment and command line it
        would start with (`<job>/rank-<i>.sh`; the DDP port is chosen when the job starts)."""
        files: dict[str, str] = {}
        for job in jobs:
            check_job(job)
            limit, mechanism = self.limit_of(job)
            threads = job.threads or default_threads(job.workers)
            files[f"{job.name}/job.yaml"] = job_yaml(job)
            argv = self._argv(job, Path("job.yaml"), threads)
            for rank in range(job.workers):
                env = worker_environment(rank, job.workers, 0, threads, base={})
                env["MASTER_PORT"] = env["PET_MASTER_PORT"] = "$PORT"
                del env[PARENT_ENV]
                files[f"{job.name}/rank-{rank}.sh"] = rank_script(job, rank, env, argv, limit, mechanism,
                                                                  parallel)
        return files

    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
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

    def _argv(self, job: TrainJob, config_path: Path, threads: int) -> list[str]:
        return [*self.worker_command, "--config", str(config_path), "--out", str(job.run_dir),
                "--threads", str(threads)]

    def _start(self, job: TrainJob, rank: int, argv: list[str], env: dict[str, str], limit: int | None,
               mechanism: str | None, watch: EpochWatch) -> WorkerProcess:
        log = None
        if self.log_dir is not None:
            log = open_log(self.log_dir, job.name, f"rank-{rank}.stderr.log")
        try:
            return start_worker(rank, argv, env, MemoryLimiter(limit, mechanism=mechanism), job.name,
                                lambda worker, line: watch.see(worker.rank, line), log)
        except OSError:
            if log is not None:
                log.close()
            raise

    def _result(self, job: TrainJob, status: Status, detail: str, start: float, workers: list[WorkerProcess],
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


def job_yaml(job: TrainJob) -> str:
    """The job's config file, written from its one serialisation (`TrainConfig.overrides()`)."""
    try:
        return str(yaml.safe_dump(job.config.overrides(), sort_keys=True))
    except yaml.YAMLError as error:
        raise InputError(f"job config cannot be written as YAML: {error}") from None


def rank_script(job: TrainJob, rank: int, env: dict[str, str], argv: list[str], limit: int | None,
                mechanism: str | None, parallel: int) -> str:
    """One rank of a dry run as a shell script: what it is, its environment (beyond this one's), its command."""
    lines = [f"# job {job.name}, rank {rank} of {job.workers}: {describe_limit(limit, mechanism)}, "
             f"timeout {f'{job.timeout:g} s' if job.timeout else 'none'}, {parallel} job(s) at a time",
             "# PORT: a free TCP port on 127.0.0.1, chosen when the job starts"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append(shlex.join(argv))
    return "\n".join(lines) + "\n"


def _port_was_taken(workers: list[WorkerProcess]) -> bool:
    """Whether rank 0 failed because its rendezvous port was in use (distributed.PortInUse)."""
    return bool(workers) and workers[0].rank == 0 and workers[0].returncode == EXIT_PORT_IN_USE


def describe_limit(limit: int | None, mechanism: str | None) -> str:
    """'1.0 GiB per worker (cgroup-v1)' or 'no memory limit', for progress lines."""
    if limit is None:
        return "no memory limit"
    return f"{format_size(limit)} per worker ({mechanism or detect_mechanism()})"
