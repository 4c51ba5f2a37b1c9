"""The one small interface experiments use to run training, wherever it runs.

A `TrainJob` says what to train (TrainConfig overrides), with how many workers, under which per-worker
memory limit, thread count and timeout. A `Launcher` runs it and returns a `JobResult` in one shape for every
backend, so the scale test and the search share one code path for sequential, parallel and Kubernetes runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Status = Literal["success", "oom", "timeout", "error", "preempted"]  # preempted: the cluster took it away


@dataclass
class TrainJob:
    """One training run to launch: 1 process, or `workers` DDP ranks."""

    name: str
    config: dict[str, Any]
    run_dir: Path
    workers: int = 1
    memory_limit: int | None = None
    threads: int | None = None
    timeout: float | None = None


@dataclass
class JobResult:
    """What came of a TrainJob. `metrics` is rank 0's final JSON line when status is success."""

    name: str
    status: Status
    detail: str = ""
    metrics: dict[str, Any] | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    peak_rss_bytes: list[int] = field(default_factory=list)
    run_dir: str | None = None
    limit_mechanism: str | None = None

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.end_time - self.start_time)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["wall_seconds"] = self.wall_seconds
        return data


class Launcher(Protocol):
    """Runs training jobs somewhere: local processes, containers, or Kubernetes. One interface for all.

    Modelled on the Kubeflow SDK's backends: the experiments and the CLI call only these four, so every
    backend gets the same scale test, search and results format.
    """

    name: str

    def run(self, job: TrainJob) -> JobResult:
        """Run one job (1 process or `workers` DDP ranks) to its end."""
        ...

    def run_many(
        self, jobs: list[TrainJob], parallel: int, on_result: Callable[[JobResult], None] | None = None
    ) -> list[JobResult]:
        """Run independent jobs `parallel` at a time; results in the jobs' order, each also to on_result."""
        ...

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False) -> list[str]:
        """Send every log line of a run to on_line(source, line); returns the sources read."""
        ...

    def delete(self, run_id: str) -> list[str]:
        """Remove what a run left (objects, containers, logs); returns what was removed."""
        ...


def run_many_with_threads(
    run_one: Callable[[TrainJob], JobResult],
    jobs: list[TrainJob],
    parallel: int,
    on_result: Callable[[JobResult], None] | None = None,
    stop: threading.Event | None = None,
) -> list[JobResult]:
    """Run jobs `parallel` at a time, in the order given (callers sort longest first).

    Results come back in the jobs' order; `on_result` is called as each finishes. Jobs not started when
    `stop` is set are skipped (absent from the returned list).
    """
    results: dict[int, JobResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {}
        for index, job in enumerate(jobs):
            futures[pool.submit(_run_unless_stopped, run_one, job, stop)] = index
        for future in as_completed(futures):
            result = future.result()
            if result is None:
                continue
            results[futures[future]] = result
            if on_result is not None:
                on_result(result)
    return [results[index] for index in sorted(results)]


def run_many_interruptible(
    run_one: Callable[[TrainJob], JobResult],
    jobs: list[TrainJob],
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


def _run_unless_stopped(run_one: Callable[[TrainJob], JobResult], job: TrainJob,
                        stop: threading.Event | None) -> JobResult | None:
    if stop is not None and stop.is_set():
        return None
    return run_one(job)
