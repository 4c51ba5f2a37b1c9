"""Comparison 1, dataset scale: where one process hits its memory limit, against N workers under the same
per-worker limit.

Each multiplier runs in fresh process(es) through a Runner, so the local and cluster sides differ only in
`workers`. Two ways to choose the multipliers:

- a grid: runs go from small to large and stop at the first oom or timeout (unless keep_going): past the
  boundary every larger size fails the same way;
- a boundary search: from a first guess, double (or halve) until one size succeeds and the next fails (or
  the ceiling succeeds), then bisect that bracket geometrically until failure / success <= the resolution
  (sqrt 2 by default, as fine as a sqrt-2 grid). A boundary that a grid of k points spans costs about
  log2 of the bracket's width plus one or two probes, instead of every grid point below it.

Every probe is a fresh process (or N), one after another under its own limit: probes never overlap, so
no probe's memory or time is measured while another one runs. The results file is rewritten after every
run, so an interrupted test still leaves a valid (incomplete) file. Format: docs/results.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from stockscale.config import TrainConfig, build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.replicas import materialized_bytes
from stockscale.experiments.results import Boundary, Machine, ScaleRow, ScaleSettings, ScaleTest
from stockscale.experiments.scale_settings import BoundarySearch, ScaleTestSettings
from stockscale.files import prepare_results_dir, utc_timestamp, write_json_atomic
from stockscale.launch.runner import JobResult, Runner, TrainJob
from stockscale.locks import folder_lock
from stockscale.machine import machine_info
from stockscale.tracking import NO_TRACKING, Tracker
from stockscale.worker import RunMetrics

FORMAT_VERSION: Literal[1] = 1
KIND: Literal["scale_test"] = "scale_test"  # results.json's "kind": the marker that lets a rerun clear this folder
STOPPING = ("oom", "timeout")


def run_config(settings: ScaleTestSettings, multiplier: int) -> TrainConfig:
    # A probe measures memory and time: no ridge baseline (its library would add to rank 0's peak).
    overrides = {"baselines": "cheap", **settings.train, "multiplier": multiplier, "loader": settings.loader}
    if settings.max_steps is not None:
        overrides["max_steps"] = settings.max_steps
    if settings.epochs is not None:
        overrides["epochs"] = settings.epochs
    return build_train_config(overrides, "scale test settings")


def run_scale_test(settings: ScaleTestSettings, launcher: Runner, out: Path,
                   on_result: Callable[[ScaleRow], None] | None = None,
                   tracker: Tracker | None = None) -> ScaleTest:
    """Run the grid (smallest first) or the boundary search and write `<out>/results.json`; return its content.
    The folder is locked while it runs (locks.folder_lock). A `tracker` is told the test (a parent run) and
    each probe's result (its children)."""
    base_cfg = run_config(settings, 1)
    windows_per_replica = prepare_from_config(base_cfg).train_windows  # also checks the source up front
    prepare_results_dir(out, "results.json", KIND, (), clear=False)  # exists and is writable, to hold the lock
    with folder_lock(out, "stockscale scale-test"):
        return _run_scale_test(settings, launcher, out, windows_per_replica, on_result, tracker or NO_TRACKING)


def _run_scale_test(settings: ScaleTestSettings, launcher: Runner, out: Path, windows_per_replica: int,
                    on_result: Callable[[ScaleRow], None] | None, tracker: Tracker) -> ScaleTest:
    runs_dir = out / "runs"
    # An earlier test's results and run directories are replaced, but only where results.json says so.
    prepare_results_dir(out, "results.json", KIND, ("runs", "logs", "results.json"), clear=True)
    doc = ScaleTest(kind=KIND, format_version=FORMAT_VERSION, started_at=utc_timestamp(), finished_at=None,
                    complete=False, settings=settings_record(settings, launcher), boundary=boundary_record([]),
                    results=[])
    write_json_atomic(out / "results.json", doc.document())

    def probe(multiplier: int) -> str:
        """Run one multiplier, record it (results stay sorted by multiplier) and return its status."""
        cfg = run_config(settings, multiplier)
        job = TrainJob(name=f"m{multiplier}", config=cfg, run_dir=runs_dir / f"m{multiplier}",
                       workers=settings.workers, memory_limit=settings.memory_limit, threads=settings.threads,
                       timeout=settings.timeout)
        result = launcher.run(job)
        entry = result_entry(multiplier, multiplier * windows_per_replica, result)
        entry.probe = len(doc.results) + 1
        doc.results = sorted([*doc.results, entry], key=lambda run: run.multiplier)
        if result.limit_mechanism:
            doc.settings.limit_mechanism = result.limit_mechanism
        if settings.search is not None:
            doc.settings.multipliers = [run.multiplier for run in doc.results]
        doc.boundary = boundary_record(doc.results)
        write_json_atomic(out / "results.json", doc.document())
        tracker.on_result(result, job.config.overrides(), {"stockscale.kind": "probe", "multiplier": str(multiplier)})
        if on_result is not None:
            on_result(entry)
        return entry.status

    tracker.on_start("scale-test", out.name, doc.settings.model_dump(mode="json", exclude_unset=True))
    try:
        if settings.search is None:
            for multiplier in sorted(settings.multipliers):
                if probe(multiplier) in STOPPING and not settings.keep_going:
                    break
        else:
            find_boundary(settings.search, probe)
    except BaseException:
        tracker.on_end(False, [out / "results.json"])
        raise
    doc.finished_at, doc.complete = utc_timestamp(), True
    write_json_atomic(out / "results.json", doc.document())
    tracker.on_end(True, [out / "results.json"])
    return doc


def find_boundary(search: BoundarySearch, probe: Callable[[int], str]) -> None:
    """Bracket the boundary by doubling (halving after a failure), then bisect the bracket on the lattice.

    `probe(m)` runs multiplier m and returns its status. oom and timeout are failures; success moves the
    lower end up. Any other status (error) ends the search: it says nothing about memory, and going on
    would only repeat it.
    """
    success: int | None = None  # lattice step of the largest multiplier that succeeded
    failure: int | None = None  # lattice step of the smallest multiplier that failed
    step: int | None = search.start_step
    while step is not None:
        status = probe(search.multiplier(step))
        if status == "success":
            success = step
        elif status in STOPPING:
            failure = step
        else:
            return
        step = next_step(success, failure, search)


def next_step(success: int | None, failure: int | None, search: BoundarySearch) -> int | None:
    """The lattice step to probe next, or None when the bracket is as fine as the lattice (or cannot be)."""
    if failure is None:  # going up: double, never above the ceiling
        assert success is not None
        step = success + search.doubling
        while step > success and search.multiplier(step) > search.ceiling:
            step -= 1
        return step if step > success else None
    if success is None:  # going down: halve, down to 1x
        return failure - search.doubling if search.multiplier(failure) > 1 else None
    middle = (success + failure) // 2
    if middle == success or search.multiplier(middle) in (search.multiplier(success), search.multiplier(failure)):
        return None  # neighbours on the lattice (or the same whole multiplier)
    return middle


def boundary_record(results: list[ScaleRow]) -> Boundary:
    """The bracket the probes found: largest success, smallest failure above it (oom/timeout), their ratio."""
    reached = max((run.multiplier for run in results if run.status == "success"), default=None)
    above = [run.multiplier for run in results if run.status in STOPPING
             and (reached is None or run.multiplier > reached)]
    failed = min(above, default=None)
    return Boundary(largest_success=reached, smallest_failure=failed,
                    ratio=failed / reached if reached and failed else None)


def settings_record(settings: ScaleTestSettings, launcher: Runner) -> ScaleSettings:
    return ScaleSettings(
        mode=settings.mode,
        # Processes or containers of the image on this machine are an emulated cluster: they share its cores.
        backend=launcher.name,
        emulated=settings.workers > 1 and launcher.name in ("local", "docker"),
        workers=settings.workers,
        memory_limit_bytes=settings.memory_limit,
        limit_mechanism=None,
        timeout_seconds=settings.timeout,
        loader=settings.loader,
        max_steps=settings.max_steps,
        epochs=settings.epochs,
        threads_per_worker=settings.threads,
        multipliers=sorted(settings.multipliers) if settings.search is None else [],
        search=settings.search.record() if settings.search is not None else {"method": "grid"},
        train=settings.train,
        launcher=launcher.name,
        machine=Machine.model_validate(machine_info()),
    )


def result_entry(multiplier: int, windows: int, result: JobResult) -> ScaleRow:
    metrics = result.metrics or RunMetrics()
    return ScaleRow(
        multiplier=multiplier,
        status=result.status,
        detail=result.detail,
        train_windows=metrics.get("train_samples", windows),
        dataset_bytes=materialized_bytes(metrics.get("train_samples", windows)),
        wall_seconds=result.wall_seconds,
        peak_rss_bytes=list(result.peak_rss_bytes),
        samples_per_second=metrics.get("samples_per_second"),
        steps=metrics.get("steps"),
        data_resident_bytes=metrics.get("data_resident_bytes"),
        run_dir=result.run_dir if result.status == "success" else None,
    )


def format_table(doc: ScaleTest) -> str:
    """The results as a fixed-width table, for the terminal."""
    settings = doc.settings
    limit = settings.memory_limit_bytes
    lines = [
        f"scale test, {settings.mode}: {settings.workers} worker(s)"
        + (" (emulated: processes sharing this machine's cores)" if settings.emulated else "")
        + f", limit {limit / 2**20:.0f} MiB per worker ({settings.limit_mechanism or 'no limit'})"
        if limit else f"scale test, {settings.mode}: {settings.workers} worker(s), no memory limit",
        f"loader {settings.loader}, max steps {settings.max_steps}, timeout {settings.timeout_seconds} s",
        f"{'multiplier':>10}  {'status':<8} {'windows':>10} {'dataset':>10} {'time s':>8} {'peak RSS/worker':>16}"
        f" {'samples/s':>10}  detail",
    ]
    for run in doc.results:
        peak = run.peak_per_worker()
        rate = run.samples_per_second
        peak_text, rate_text = (f"{peak / 2**20:.0f} MiB" if peak else "-"), (f"{rate:.0f}" if rate else "-")
        lines.append(
            f"{run.multiplier:>10}  {run.status:<8} {run.train_windows or 0:>10,} "
            f"{(run.dataset_bytes or 0) / 2**20:>7.0f} MiB {run.wall_seconds or 0.0:>8.1f} "
            f"{peak_text:>16} {rate_text:>10}  {run.detail}"
        )
    return "\n".join(lines)
