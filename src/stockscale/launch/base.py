"""The one small interface experiments use to run training, wherever it runs.

A `TrainJob` says what to train (TrainConfig overrides), with how many workers, under which per-worker
memory limit, thread count and timeout. A `Launcher` runs it and returns a `JobResult` in one shape for every
backend, so the scale test and the search share one code path for sequential, parallel and Kubernetes runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from stockscale.config import TrainOverrides
from stockscale.worker import EpochReport, RunMetrics

# preempted: the cluster took it away; pruned: the search's pruner stopped it after an epoch (see TrainJob.judge)
Status = Literal["success", "oom", "timeout", "error", "preempted", "pruned"]

# Told each epoch's report of a running job (rank 0's progress line) as it arrives; True stops the job, which
# then ends with status "pruned". A search's pruner is one (experiments/search); it is called from a reader
# thread, so it must be thread-safe.
EpochJudge = Callable[[EpochReport], bool]


@dataclass
class TrainJob:
    """One training run to launch: 1 process, or `workers` DDP ranks.

    `config` holds the TrainConfig overrides the run sets, as given: a launcher writes exactly these into the
    job's YAML or the pods' flags. Whoever builds a job has validated them (build_train_config); a launcher's
    worker, or its manifest renderer, checks them again where they are read.
    """

    name: str
    config: TrainOverrides
    run_dir: Path
    workers: int = 1
    memory_limit: int | None = None
    threads: int | None = None
    timeout: float | None = None
    judge: EpochJudge | None = field(default=None, repr=False, compare=False)


@dataclass
class JobResult:
    """What came of a TrainJob. `metrics` is rank 0's final JSON line when status is success."""

    name: str
    status: Status
    detail: str = ""
    metrics: RunMetrics | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    peak_rss_bytes: list[int] = field(default_factory=list)
    run_dir: str | None = None
    limit_mechanism: str | None = None
    # The epoch progress rank 0 reported while it ran, in order (what a pruned job leaves: its last loss and
    # how many epochs it did).
    epochs: list[EpochReport] = field(default_factory=list)
    # The settings a search controller chose for this trial (Katib sampling ranges), when the job did not fix
    # them itself; None otherwise.
    config: TrainOverrides | None = None

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.end_time - self.start_time)


class Launcher(Protocol):
    """Runs training jobs somewhere: local processes, containers, or Kubernetes. One interface for all.

    Modelled on the Kubeflow SDK's backends: the experiments and the CLI call only these four, so every
    backend gets the same scale test, search and results format.
    """

    name: str
    streams_jobs: bool  # run_many pulls jobs lazily, one per free slot (see run_many)

    def run(self, job: TrainJob) -> JobResult:
        """Run one job (1 process or `workers` DDP ranks) to its end."""
        ...

    def run_many(
        self, jobs: Iterable[TrainJob], parallel: int, on_result: Callable[[JobResult], None] | None = None
    ) -> list[JobResult]:
        """Run independent jobs `parallel` at a time; results in the jobs' order, each also to on_result.

        A launcher that runs jobs as they come (`streams_jobs`) takes the next job from `jobs` only when a
        slot is free and after on_result was called for the one before, so a search can ask its sampler for a
        trial knowing every result so far. One that needs them all at once (an Indexed Job) reads the whole
        iterable first."""
        ...

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False) -> list[str]:
        """Send every log line of a run to on_line(source, line); returns the sources read."""
        ...

    def delete(self, run_id: str) -> list[str]:
        """Remove what a run left (objects, containers, logs); returns what was removed."""
        ...


def run_many_with_threads(
    run_one: Callable[[TrainJob], JobResult],
    jobs: Iterable[TrainJob],
    parallel: int,
    on_result: Callable[[JobResult], None] | None = None,
    stop: threading.Event | None = None,
) -> list[JobResult]:
    """Run jobs `parallel` at a time, in the order given (callers sort longest first).

    Each of `parallel` slots takes the next job from `jobs` when it is free and after `on_result` was called
    for its last one, so `jobs` may be a generator that decides the next job from the results so far.
    Results come back in the jobs' order. Jobs not started when `stop` is set are skipped (absent from the
    returned list). The first error ends the run: no new job starts, and it is re-raised.
    """
    source: Iterator[TrainJob] = iter(jobs)
    taking = threading.Lock()
    results: dict[int, JobResult] = {}
    counter = iter(range(1 << 62))
    failed = threading.Event()

    def next_job() -> tuple[int, TrainJob] | None:
        with taking:
            if failed.is_set() or (stop is not None and stop.is_set()):
                return None
            job = next(source, None)
            return None if job is None else (next(counter), job)

    def slot() -> None:
        try:
            while (taken := next_job()) is not None:
                index, job = taken
                result = run_one(job)
                results[index] = result
                if on_result is not None:
                    on_result(result)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(slot) for _ in range(max(1, parallel))]
        errors = [error for future in as_completed(futures) if (error := future.exception()) is not None]
    if errors:
        raise errors[0]
    return [results[index] for index in sorted(results)]


def run_many_interruptible(
    run_one: Callable[[TrainJob], JobResult],
    jobs: Iterable[TrainJob],
    parallel: int,
    on_result: Callable[[JobResult], None] | None,
    abort: threading.Event,
) -> list[JobResult]:
    """`run_many_with_threads` on a helper thread, so that Ctrl-C (and SIGTERM, which the CLI turns into it)
    reaches the calling thread at once: it sets `abort` (each running job then ends itself and raises), skips
    the jobs not started, waits for the running ones to clean up, and re-raises."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["results"] = run_many_with_threads(run_one, jobs, parallel, on_result, abort)
        except BaseException as error:  # handed to the calling thread below
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=drive, name="stockscale-run-many", daemon=True).start()
    try:
        while not done.wait(timeout=0.2):
            pass
    except KeyboardInterrupt:
        abort.set()
        done.wait()
        abort.clear()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]
