"""One supervision policy for the replicas of a job: local processes, containers, or a warm worker's trial.

A DDP world without one rank cannot make progress, and a survivor blocked in a collective would otherwise
hang until the timeout, so every runner that starts replicas itself (LocalRunner, DockerRunner, WarmRunner)
ends a job the same way, decided here once:

1. an abort (Ctrl-C, SIGTERM, an error elsewhere in run_many) raises KeyboardInterrupt;
2. a callback that failed (the caller's on_line, the judge) ends the job as an error;
3. the judge's stop ends it as pruned: the judge was asked, so its answer wins over a success that raced it;
4. the first replica that failed ends it; several found dead in one tick: the one the memory limit killed is
   the cause, not a peer that lost its connection to it;
5. every replica done: rank 0's outcome (its result line), once everything rank 0 printed was read;
6. the timeout.

A runner hands in its replicas (anything with the `Replica` methods) and an `EpochWatch` that its output
readers feed with every line; `supervise` returns the status and detail, and the runner cleans up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stockscale.errors import InputError
from stockscale.launch.runner import EpochJudge, Status, TrainJob
from stockscale.worker import EpochReport, parse_epoch_line


class Replica(Protocol):
    """One rank of a job as the policy sees it: a process, a container, a warm worker's trial."""

    @property
    def rank(self) -> int: ...

    def poll(self) -> int | None:
        """Its exit code once it ended (what is known is refreshed here), else None."""

    def memory_failure(self) -> bool:
        """Whether it ended for memory (its limit, a MemoryError)."""

    def failure(self) -> tuple[Status, str]:
        """How it failed (it ended non-zero), in the words every runner reports."""

    def drain(self) -> None:
        """Wait until everything it printed was read (and judged)."""

    def finished(self) -> tuple[Status, str]:
        """Rank 0's outcome once every replica exited 0: success, or an error when no result line says so."""


@dataclass
class EpochWatch:
    """What a job's rank 0 reported while it ran, and what its judge and the caller's on_line made of it.

    `see(rank, line)` is called from reader threads with every line: rank 0's epoch progress is kept as the
    job's epochs and shown to `judge`. Without `answer`, a stop ends the job as pruned (the policy's step 3);
    with it, every verdict goes to `answer` instead (a warm worker ends its own trial when told to stop).
    An exception in a callback is kept and ends the job (step 2); the runner re-raises it."""

    judge: EpochJudge | None = None
    on_line: Callable[[int, str], None] | None = None
    answer: Callable[[bool], None] | None = None
    epochs: list[EpochReport] = field(default_factory=list)
    pruned_after: int | None = None
    errors: list[BaseException] = field(default_factory=list)

    def see(self, rank: int, line: str) -> None:
        if self.errors:
            return  # keep draining the output; the runner re-raises the error at the end
        try:
            report = parse_epoch_line(line) if rank == 0 else None
            if report is not None and self.pruned_after is None:  # a pruned job's epochs end there
                self.epochs.append(report)
                stop = self.judge is not None and bool(self.judge(report))
                if self.answer is not None:
                    if self.judge is not None:
                        self.answer(stop)
                elif stop:
                    self.pruned_after = report.epoch
            if self.on_line is not None:
                self.on_line(rank, line)
        except Exception as error:  # noqa: BLE001  (ends the job; the runner re-raises it)
            self.errors.append(error)
            if self.answer is not None and self.judge is not None:
                self.answer(True)

    def reraise(self) -> None:
        """Raise the first callback error, if one ended the job."""
        if self.errors:
            raise self.errors[0]


def check_job(job: TrainJob) -> None:
    """What a job must be for a runner that starts its replicas to run it (local, warm, docker): InputError
    naming the job otherwise. (Its config was validated when the job was made.)"""
    if job.workers < 1:
        raise InputError(f"job {job.name}: workers must be at least 1, not {job.workers}")
    if job.timeout is not None and job.timeout <= 0:
        raise InputError(f"job {job.name}: timeout must be positive, not {job.timeout}")
    if job.threads is not None and job.threads < 1:
        raise InputError(f"job {job.name}: threads must be at least 1, not {job.threads}")


def supervise(replicas: Sequence[Replica], watch: EpochWatch, *, start: float, timeout: float | None,
              abort: threading.Event, tick: float) -> tuple[Status, str]:
    """Follow `replicas` until the policy above ends the job; `tick` seconds between looks (0 for replicas
    whose poll waits by itself)."""
    deadline = None if timeout is None else start + timeout
    while True:
        if abort.is_set():
            raise KeyboardInterrupt
        if watch.errors:
            return "error", f"a callback failed: {watch.errors[0]}"
        if watch.pruned_after is not None:
            return "pruned", f"pruned after epoch {watch.pruned_after}"
        codes = [replica.poll() for replica in replicas]
        failed = [replica for replica, code in zip(replicas, codes, strict=True) if code not in (None, 0)]
        if failed:
            failed.sort(key=lambda replica: (not replica.memory_failure(), replica.rank))
            return failed[0].failure()
        if all(code == 0 for code in codes):
            replicas[0].drain()
            if watch.pruned_after is not None or watch.errors:
                continue
            return replicas[0].finished()
        if deadline is not None and time.time() >= deadline:
            return "timeout", f"timed out after {timeout:g} s"
        if tick:
            time.sleep(tick)
