"""The Runner: the one interface experiments and the CLI use to run training, wherever it runs.

Modelled on the Kubeflow SDK's TrainerClient, whose backends are complete (train, get_job, logs, wait,
delete), and on torchx's rule that every scheduler can show what it would do without doing it (`submit` is
`submit_dryrun` followed by `schedule`). A caller holds a `Runner` and uses only what is declared here: no
ability is discovered with `getattr` or `hasattr` (tests/test_structure.py checks this), so a new backend is
one module that subclasses Runner plus one line in launch/registry.py.

A `TrainJob` says what to train: a validated `TrainConfig` (validated once, where it was made; a runner
serialises it with `TrainConfig.overrides()` and nothing else), with how many DDP workers, under which
per-worker memory limit, thread count and timeout. Every runner returns a `JobResult` of one shape.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, get_args

from stockscale.config import TrainConfig
from stockscale.worker import EpochReport, RunMetrics

# How a job ended. preempted: the cluster took it away; pruned: the search's pruner stopped it after an epoch
# (see TrainJob.judge). The one list of statuses: the results files' models read it from here.
Status = Literal["success", "oom", "timeout", "error", "preempted", "pruned"]
STATUSES: tuple[str, ...] = get_args(Status)

# Told each epoch's report of a running job (rank 0's progress line) as it arrives; True stops the job, which
# then ends with status "pruned". A search's pruner is one; it is called from a reader thread, so it must be
# thread-safe.
EpochJudge = Callable[[EpochReport], bool]


@dataclass
class TrainJob:
    """One training run to launch: 1 process, or `workers` DDP ranks, training `config`."""

    name: str
    config: TrainConfig
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

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.end_time - self.start_time)


ResultCallback = Callable[[JobResult], None]
LineCallback = Callable[[str, str], None]  # (source: a rank, a container or a pod; line)


class Runner(ABC):
    """Runs training jobs somewhere: local processes, warm workers, containers, or a cluster.

    Everything a caller may use is declared here. The abstract methods are what a backend must say for
    itself; the others have the answer of a backend that cleans up after itself (local processes and
    containers): nothing is left behind, there is no run id, nothing to close.
    """

    name: ClassVar[str]  # the backend, as results record it ("local", "warm", "docker", "kubernetes")
    # run_many pulls jobs lazily, one per free slot, after the last result was told (a sampler then knows
    # every finished trial); False: it needs the whole batch at once (one Indexed Job).
    streams_jobs: ClassVar[bool] = True

    @property
    def prunes(self) -> bool:
        """Whether it honours TrainJob.judge: stops a job after the epoch its judge says to, and reports it
        pruned. True for a runner that starts its replicas itself (local processes, warm workers,
        containers); a cluster runner answers for the kind it was made with (the Indexed Job and per-trial
        PyTorchJob searches prune; a TrainJob, an OptimizationJob or Katib's trials do not), and a
        searcher's check refuses a pruner where it is False (search/searcher.check_cluster_pruner)."""
        return True

    @abstractmethod
    def run(self, job: TrainJob) -> JobResult:
        """Run one job (1 process or `workers` DDP ranks) to its end."""

    @abstractmethod
    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        """Run independent jobs `parallel` at a time; results in the jobs' order, each also to on_result.

        A runner that streams jobs takes the next job from `jobs` only when a slot is free and after
        on_result was called for the one before. One that needs them all at once reads the whole iterable
        first."""

    @abstractmethod
    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        """The dry run of `run_many(jobs, parallel)`: what it would start, as files (name -> text): a job's
        YAML and command lines here, containers' options, a cluster's manifests. Nothing runs and nothing is
        connected to."""

    def render_run(self, job: TrainJob) -> dict[str, str]:
        """The dry run of `run(job)`; the same as a batch of one unless the runner submits a single run
        differently (a cluster: one PyTorchJob, where a search of one trial is still one Indexed Job)."""
        return self.render([job], 1)

    @abstractmethod
    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
        """Send every log line of a run to on_line(source, line); returns the sources read."""

    @abstractmethod
    def delete(self, run_id: str) -> list[str]:
        """Remove what a run left (objects, containers, logs); returns what was removed."""

    def dry_run(self, jobs: Sequence[TrainJob], parallel: int, out_dir: Path) -> list[Path]:
        """Write `render(jobs, parallel)` into `out_dir`; returns the paths written."""
        return self.write_rendered(self.render(jobs, parallel), out_dir)

    def dry_run_run(self, job: TrainJob, out_dir: Path) -> list[Path]:
        """Write `render_run(job)` into `out_dir`; returns the paths written."""
        return self.write_rendered(self.render_run(job), out_dir)

    def write_rendered(self, files: dict[str, str], out_dir: Path) -> list[Path]:
        """Each rendered file written whole, then renamed. A runner whose files need more beside them (a
        kustomization listing them) extends this."""
        from stockscale.files import write_text_atomic

        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.items():
            write_text_atomic(out_dir / name, text)
            written.append(out_dir / name)
        return written

    @property
    def run_id(self) -> str | None:
        """The id under which this runner's jobs can be found again (`stockscale k8s status RUN`); None for
        a runner whose jobs end with the command."""
        return None

    def left_behind(self) -> list[str]:
        """What this runner started and has not removed ("Kind/name"), after an error or Ctrl-C: the CLI
        offers to delete it (`delete(run_id)`). Empty for a runner that cleans up after itself."""
        return []

    def close(self) -> None:  # noqa: B027 - a hook: most runners hold nothing to let go of
        """Let go of long-lived resources (warm workers, an engine connection). Idempotent."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def run_many_with_threads(
    run_one: Callable[[TrainJob], JobResult],
    jobs: Iterable[TrainJob],
    parallel: int,
    on_result: ResultCallback | None = None,
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
    on_result: ResultCallback | None,
    abort: threading.Event,
) -> list[JobResult]:
    """`run_many_with_threads` on a helper thread, so that Ctrl-C (and SIGTERM, which the CLI turns into it)
    reaches the calling thread at once: it sets `abort` (each running job then ends itself and raises), skips
    the jobs not started, waits for the running ones to clean up, and re-raises."""
    done = threading.Event()
    results: list[JobResult] = []
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            results.extend(run_many_with_threads(run_one, jobs, parallel, on_result, abort))
        except BaseException as error:  # handed to the calling thread below
            failure.append(error)
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
    if failure:
        raise failure[0]
    return results
