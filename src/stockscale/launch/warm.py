"""WarmRunner: a search's trials on a few long-lived worker processes instead of one fresh process each.

A fresh `stockscale train` spends seconds starting (interpreter, torch, the base series) before it trains,
which is most of a small trial. `run_many(jobs, parallel)` keeps `parallel` warm workers
(launch/warm_worker.py), each under the job's memory limit in its own session and cgroup like a cold worker,
and hands each the next trial over a pipe (JSON lines). A trial's result is the same as the same trial run
cold by LocalRunner (each starts from its own seed with a fresh model and optimizer); only where it ran and
how long it waited differ.

- A worker that crashes, exceeds its memory limit or runs past the trial's timeout is ended and replaced;
  only its trial fails, reported as LocalRunner reports it (oom, error, timeout).
- A trial's judge is answered after every epoch: the worker waits for `continue`/`stop`, and a stopped trial
  ends as pruned with the worker kept for the next one.
- A job that asks another memory limit or thread count gets a worker started for it; a DDP job (workers > 1)
  runs cold on LocalRunner.
- A trial's start and end time are from when it was handed to a worker to its result: a worker's own start
  is in no trial. Its peak memory is the worker's VmHWM, which the worker resets when a trial starts.
- run_many's end, Ctrl-C and SIGTERM (as KeyboardInterrupt) end every worker; workers also end with us
  (supervision.follow_parent), and their cgroups are reaped as LocalRunner's are.

A trial is followed by launch/replicas.py's one policy, as a cold job is: the worker's trial is its replica.
The dry run (`render`) is each trial's request as the worker would read it, with the worker's command line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from stockscale.files import open_log
from stockscale.launch.local import LocalRunner, default_threads, describe_limit, worker_environment
from stockscale.launch.processes import WorkerProcess, describe_failure, end_workers, memory_failure, start_worker
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
from stockscale.launch.warm_worker import DONE_EVENT
from stockscale.limits import MemoryLimiter, sweep_stale_cgroups, vm_hwm
from stockscale.supervision import PARENT_ENV, ensure_cgroup_reaper
from stockscale.worker import EpochReport, JsonObject, RunMetrics, json_object

TICK = 0.05
STARTUP_SECONDS = 120.0
WORKER_COMMAND = [sys.executable, "-m", "stockscale.launch.warm_worker"]

# What a worker is started with: a job with other values needs another worker.
WorkerKey = tuple[int | None, str | None, int]  # memory limit, limit mechanism, threads


@dataclass
class _Warm:
    """One long-lived worker, its settings, and its stdout lines (None once its stdout ended)."""

    process: WorkerProcess
    key: WorkerKey
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    served: int = 0

    def send(self, text: str) -> None:
        stdin = self.process.process.stdin
        assert stdin is not None
        stdin.write(text.encode() + b"\n")
        stdin.flush()

    def gone(self) -> bool:
        """Whether it died while idle (or printed its end): then it must not take a trial."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.process.exited()
            if line is None:
                return True


@dataclass
class _Outcome:
    status: Status
    detail: str
    epochs: list[EpochReport]
    peak: int
    metrics: RunMetrics | None = None


class _Trial:
    """A warm worker's current trial as a replica of launch/replicas.py: it ends when the worker says the
    trial is done (its `warm_done` line), or when the worker dies. Each poll reads the worker's lines for up to
    one tick, so a trial that prints without pause is still checked for its timeout and an abort."""

    rank = 0

    def __init__(self, warm: _Warm, watch: EpochWatch, grace_seconds: float) -> None:
        self.warm = warm
        self.watch = watch
        self.grace_seconds = grace_seconds
        self.done: JsonObject | None = None  # the worker's warm_done line
        self.died = False
        self.peak = 0

    def poll(self) -> int | None:
        if self.done is not None:
            return 0 if self.done.get("status") in ("success", "pruned") else 1
        if self.died:
            return self.warm.process.returncode or 1
        until = time.monotonic() + TICK
        while (left := until - time.monotonic()) > 0:
            try:
                line = self.warm.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:  # it died: a crash, its memory limit
                self.died = True
                end_workers([self.warm.process], self.grace_seconds)
                self.peak = self.warm.process.finish_limit().polled_peak_rss_bytes
                return self.poll()
            done = json_object(line)
            if done is not None and done.get("event") == DONE_EVENT:
                self.peak = vm_hwm(self.warm.process.pid) or 0
                self.done = done
                return self.poll()
            self.watch.see(0, line)
        return None

    def memory_failure(self) -> bool:
        if self.done is not None:
            return self.done.get("status") == "oom"
        return memory_failure(self.warm.process)

    def failure(self) -> tuple[Status, str]:
        if self.done is not None:
            return cast(Status, self.done.get("status", "error")), str(self.done.get("detail", ""))
        if self.warm.process.returncode:
            return describe_failure(self.warm.process)
        return "error", "the warm worker exited during the trial (worker 0)"

    def drain(self) -> None:
        """Its lines were read up to its warm_done line, each judged as it came."""

    def finished(self) -> tuple[Status, str]:
        assert self.done is not None
        return cast(Status, self.done.get("status", "error")), str(self.done.get("detail", ""))


class WarmRunner(Runner):
    """Runs TrainJobs on warm worker processes: the Runner interface, and LocalRunner's options.

    `on_line(rank, line)` gets every stdout line of a trial (rank 0), from the thread that runs it. `log_dir`
    keeps each trial's stderr as `<log_dir>/<job>/rank-0.stderr.log` (what `logs` and `delete` read).
    `grace_seconds` is how long a worker has between SIGTERM and SIGKILL. `worker_command` is the warm
    worker's argv (default: this Python's `-m stockscale.launch.warm_worker`).
    """

    name = "local"
    streams_jobs = True

    def __init__(
        self,
        on_line: Callable[[int, str], None] | None = None,
        log_dir: Path | None = None,
        grace_seconds: float = 5.0,
        limit_mechanism: str | None = None,
        worker_command: list[str] | None = None,
    ) -> None:
        self.on_line = on_line
        self.log_dir = log_dir
        self.grace_seconds = grace_seconds
        self.limit_mechanism = limit_mechanism
        self.worker_command = list(worker_command or WORKER_COMMAND)
        self._abort = threading.Event()
        # DDP jobs run cold; they stop on our Ctrl-C too.
        self.cold = LocalRunner(on_line=on_line, log_dir=log_dir, grace_seconds=grace_seconds,
                                limit_mechanism=limit_mechanism, abort=self._abort)
        self._idle: list[_Warm] = []
        self._lock = threading.Lock()
        self._swept = False

    # public API

    def run(self, job: TrainJob) -> JobResult:
        """Run one job on a warm worker started for it, then end the worker (run_many keeps them)."""
        try:
            return self._run_one(job)
        finally:
            self.close()

    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        """Run jobs on `parallel` warm workers, each taking the next job when it is free; every worker is
        ended when the jobs are done, and on Ctrl-C (the running trials end, the rest are skipped)."""
        source = iter(jobs)
        first = next(source, None)
        if first is None:
            return []
        try:
            self._prewarm(first, max(1, parallel))
            return run_many_interruptible(self._run_one, itertools.chain([first], source), parallel, on_result,
                                          self._abort)
        finally:
            self.close()

    def _prewarm(self, job: TrainJob, count: int) -> None:
        """Start `count` workers at once for the first job's settings before any trial is handed out, so the
        first trials start together, in the order given, and no trial waits for a worker to start. They are
        started from this thread (a worker's PDEATHSIG follows the thread that started it) and start up in
        parallel; then each is waited for in turn."""
        check_job(job)
        if job.workers > 1:
            return  # it runs cold
        key = self._key(job)
        starting = [self._start(key, job) for _ in range(count)]
        ready: list[_Warm] = []
        try:
            for warm in starting:
                if isinstance(warm, _Warm) and isinstance(self._ready(warm, job), _Warm):
                    ready.append(warm)
        except KeyboardInterrupt:
            for warm in starting:
                if isinstance(warm, _Warm):
                    self._end(warm)
            raise
        with self._lock:
            self._idle.extend(ready)

    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        """The dry run: each trial's request as a warm worker reads it (`<job>/trial.json`) and the worker's
        environment and command line (`<job>/worker.sh`); a DDP job, what LocalRunner would start."""
        files: dict[str, str] = {}
        for job in jobs:
            check_job(job)
            if job.workers > 1:
                files.update(self.cold.render([job], parallel))
                continue
            limit, mechanism, threads = self._key(job)
            request = json.dumps(self._request(job, threads), indent=2, sort_keys=True)
            files[f"{job.name}/trial.json"] = request + "\n"
            env = worker_environment(0, 1, 0, threads, base={})
            lines = [f"# job {job.name}: a warm worker, {describe_limit(limit, mechanism)}, {parallel} at a time; "
                     "each trial is one JSON line on its stdin"]
            lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())
                      if name not in ("MASTER_PORT", "PET_MASTER_PORT", PARENT_ENV)]
            lines.append(shlex.join(self.worker_command))
            files[f"{job.name}/worker.sh"] = "\n".join(lines) + "\n"
        return files

    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
        """The kept stderr log of trial `run_id` (needs `log_dir`)."""
        return self.cold.logs(run_id, on_line, follow=follow)

    def delete(self, run_id: str) -> list[str]:
        """What a trial leaves besides its run directory: its kept log."""
        return self.cold.delete(run_id)

    def close(self) -> None:
        """End every idle worker (busy ones are ended by the trial that holds them)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for warm in idle:
            with contextlib.suppress(OSError):
                warm.process.process.stdin.close()  # type: ignore[union-attr]  # end of input: it leaves
        end_workers([warm.process for warm in idle], self.grace_seconds)

    # one trial

    def _key(self, job: TrainJob) -> WorkerKey:
        """The settings a worker is started with for `job`: its limit, how it is held, its threads."""
        return (*self.cold.limit_of(job), job.threads or default_threads(1))

    def _run_one(self, job: TrainJob) -> JobResult:
        check_job(job)
        if job.workers > 1:
            return self.cold.run(job)
        key = self._key(job)
        start = time.time()
        held = key[1]  # the limit's mechanism, until the worker says which one holds it
        taken = self._take(key, job)
        if isinstance(taken, _Outcome):  # the worker died before it could take the trial
            outcome = taken
        else:
            try:
                start = time.time()
                outcome = self._trial(taken, job, key[2], start)
                held = taken.process.limiter.mechanism  # the watchdog, if the cgroup could not be used
            finally:
                self._release(taken)
        run_dir = job.run_dir if outcome.status == "success" or Path(job.run_dir).exists() else None
        return JobResult(
            name=job.name, status=outcome.status, detail=outcome.detail, metrics=outcome.metrics,
            start_time=start, end_time=time.time(), peak_rss_bytes=[outcome.peak],
            run_dir=str(run_dir) if run_dir is not None else None,
            limit_mechanism=held if job.memory_limit is not None else None, epochs=outcome.epochs)

    @staticmethod
    def _request(job: TrainJob, threads: int) -> dict[str, Any]:
        """The trial as the worker reads it: its config's one serialisation (`TrainConfig.overrides()`)."""
        return {"op": "trial", "config": job.config.overrides(), "out": str(job.run_dir), "threads": threads,
                "judge": job.judge is not None}

    def _trial(self, warm: _Warm, job: TrainJob, threads: int, start: float) -> _Outcome:
        """Hand `job` to `warm` and follow it to its end (launch/replicas.py's policy); an abort ends the
        worker and raises KeyboardInterrupt, a failed callback ends it and is re-raised."""
        process = warm.process
        process.last_json = None
        process.swap_log(self._open_log(job))

        def answer(stop: bool) -> None:
            with contextlib.suppress(OSError):
                warm.send("stop" if stop else "continue")

        watch = EpochWatch(judge=job.judge, on_line=self.on_line, answer=answer)
        trial = _Trial(warm, watch, self.grace_seconds)
        with contextlib.suppress(OSError):  # a worker that died just now: its stdout tells
            warm.send(json.dumps(self._request(job, threads)))
        warm.served += 1
        try:
            status, detail = supervise([trial], watch, start=start, timeout=job.timeout, abort=self._abort, tick=0)
        except KeyboardInterrupt:
            self._end(warm)
            raise
        if trial.done is None or trial.done.get("leaving") or watch.errors:
            self._end(warm)  # timed out, dead, leaving, or mid-trial when a callback failed
            if trial.done is None and not trial.died:
                trial.peak = process.finish_limit().polled_peak_rss_bytes
        watch.reraise()
        metrics = process.last_json if status == "success" else None
        return _Outcome(status, detail, watch.epochs, trial.peak, metrics)

    def _open_log(self, job: TrainJob) -> IO[str] | None:
        if self.log_dir is None:
            return None
        return open_log(self.log_dir, job.name, "rank-0.stderr.log")

    # the pool

    def _take(self, key: WorkerKey, job: TrainJob) -> _Warm | _Outcome:
        """An idle worker started with `key`, else a new one (an idle one with other settings is ended)."""
        with self._lock:
            matching = [warm for warm in self._idle if warm.key == key]
            other = [warm for warm in self._idle if warm.key != key]
            chosen = matching[0] if matching else None
            stale = [] if chosen is not None else other[:1]
            for warm in [*([chosen] if chosen else []), *stale]:
                self._idle.remove(warm)
        if stale:
            self._end(stale[0])
        if chosen is not None and not chosen.gone():
            return chosen
        if chosen is not None:
            self._end(chosen)
        return self._spawn(key, job)

    def _release(self, warm: _Warm) -> None:
        if warm.process.returncode is None and warm.process.report is None:
            warm.process.swap_log(None)
            with self._lock:
                self._idle.append(warm)

    def _spawn(self, key: WorkerKey, job: TrainJob) -> _Warm | _Outcome:
        """Start a worker and have it prepare the job's base series; the failure if it dies doing so."""
        warm = self._start(key, job)
        return warm if isinstance(warm, _Outcome) else self._ready(warm, job)

    def _start(self, key: WorkerKey, job: TrainJob) -> _Warm | _Outcome:
        """Start a worker process and ask it to prepare the job's base series (it answers when ready)."""
        limit, mechanism, threads = key
        if not self._swept:
            sweep_stale_cgroups()  # what a killed launcher left behind
            self._swept = True
        if mechanism is not None and mechanism.startswith("cgroup"):
            ensure_cgroup_reaper()  # and what we would leave behind if killed
        lines: queue.Queue[str | None] = queue.Queue()
        env = worker_environment(0, 1, 0, threads)
        try:
            process = start_worker(0, self.worker_command, env, MemoryLimiter(limit, mechanism=mechanism),
                                   "warm", lambda _, line: lines.put(line), stdin=True,
                                   on_end=lambda _: lines.put(None))
        except OSError as error:
            return _Outcome("error", f"cannot start worker 0: {error}", [], 0)
        warm = _Warm(process, key, lines)
        with contextlib.suppress(OSError):
            warm.send(json.dumps({"op": "prepare", "config": job.config.overrides()}))
        return warm

    def _ready(self, warm: _Warm, job: TrainJob) -> _Warm | _Outcome:
        """Wait until a started worker says it is ready; the failure if it dies or takes too long."""
        process, lines = warm.process, warm.lines
        # A trial's timeout counts from its hand-over; a worker's start has its own, as long at least.
        allowed = None if job.timeout is None else max(job.timeout, STARTUP_SECONDS)
        deadline = None if allowed is None else time.time() + allowed
        while True:
            try:
                line = lines.get(timeout=TICK)
            except queue.Empty:
                if self._abort.is_set():
                    self._end(warm)
                    raise KeyboardInterrupt from None
                if deadline is not None and time.time() >= deadline:
                    self._end(warm)
                    return _Outcome("timeout", f"the worker did not start within {allowed:g} s", [],
                                    process.finish_limit().polled_peak_rss_bytes)
                continue
            if line is None:
                self._end(warm)
                status, detail = describe_failure(process) if process.returncode else (
                    "error", "the warm worker exited as it started (worker 0)")
                return _Outcome(status, detail, [], process.finish_limit().polled_peak_rss_bytes)
            done = json_object(line)
            if done is not None and done.get("event") == DONE_EVENT:
                return warm

    def _end(self, warm: _Warm) -> None:
        end_workers([warm.process], self.grace_seconds)
