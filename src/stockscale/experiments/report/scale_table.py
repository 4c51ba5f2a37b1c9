"""Comparison 1's table: one process under a memory limit against N workers, each under the same limit.

Runs are paired by loader; the headline claims no more than the runs show (a boundary that was not reached
makes the ratio a bound, an error is never taken for a boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

from stockscale.config import format_size
from stockscale.experiments.report.text import STATUS_WORDS, machine_text, seconds_text, size_text, wrap
from stockscale.experiments.results import LoadedResults, ScaleRow, ScaleRun, scale_test_folder


@dataclass
class ScaleGroup:
    """The local and cluster runs that used one loader: the two sides of one comparison table."""

    loader: str
    local: ScaleRun | None = None
    cluster: ScaleRun | None = None


def scale_groups(runs: list[ScaleRun]) -> list[ScaleGroup]:
    """Pair runs by loader, the default folders (scale_test_local, scale_test_cluster) first; a second run of
    the same loader and mode gets a table of its own rather than silently replacing the first."""
    canonical = {scale_test_folder("local"): 0, scale_test_folder("cluster"): 1}
    ordered = sorted(runs, key=lambda run: (canonical.get(run.path.parent.name, 2), run.path.parent.name))
    groups: list[ScaleGroup] = []
    for run in ordered:
        side = run.data.settings.mode
        group = next((g for g in groups if g.loader == run.data.settings.loader and getattr(g, side) is None),
                     None)
        if group is None:
            group = ScaleGroup(run.data.settings.loader)
            groups.append(group)
        setattr(group, side, run)
    return groups



def _scale_settings(run: ScaleRun) -> str:
    s = run.data.settings
    unit = "worker" if s.mode == "cluster" else "process"
    mechanism = s.limit_mechanism or "mechanism not recorded"
    limit = (f"limit {format_size(s.memory_limit_bytes)} per {unit} ({mechanism})" if s.memory_limit_bytes
             else "no memory limit")
    steps = f"max steps {s.max_steps}" if s.max_steps else f"epochs {s.epochs}"
    threads = f", {s.threads_per_worker} thread(s) per {unit}" if s.threads_per_worker else ""
    timeout = f", timeout {seconds_text(s.timeout_seconds)}" if s.timeout_seconds else ""
    cores = s.machine.cpus if s.machine and s.machine.cpus else "?"
    if s.mode == "local":
        who = f"{s.workers} process" if s.workers == 1 else f"{s.workers} processes"
    elif s.backend == "docker":
        each = f", each limited to {format_size(s.memory_limit_bytes)}" if s.memory_limit_bytes else ""
        who = (f"cluster: {s.workers} containers (docker){each}, EMULATED: containers of the image sharing this "
               f"machine's {cores} cores")
    elif s.emulated:
        who = f"EMULATED cluster: {s.workers} worker processes sharing this machine's {cores} cores"
    else:
        who = f"{s.backend} cluster: {s.workers} workers"
    when = f", run {s_at[:16].replace('T', ' ')} UTC" if (s_at := run.data.started_at) else ""
    partial = "; PARTIAL (stopped before the end)" if not run.data.complete else ""
    return (f"{who}; {s.loader} loader; {limit}; {steps}{timeout}{threads}; {machine_text(s.machine)}{when}"
            f"{partial}; file {run.path}")


# What marks a boundary: memory (oom) or time (timeout). An error (a crash, a bad input) says nothing about
# how much data fits, so it is shown but never taken for a boundary.
BOUNDARY_STATUSES = ("oom", "timeout")


def _reach(rows: list[ScaleRow]) -> tuple[int | None, ScaleRow | None]:
    """Largest multiplier that succeeded, and the first oom/timeout above it (None: no boundary up there)."""
    reached = max((row.multiplier for row in rows if row.status == "success"), default=None)
    above = [row for row in rows
             if row.status in BOUNDARY_STATUSES and (reached is None or row.multiplier > reached)]
    return reached, min(above, key=lambda row: row.multiplier, default=None)


def _errors_above(rows: list[ScaleRow], reached: int | None) -> str:
    errors = [row.multiplier for row in rows if row.status == "error" and (reached is None or row.multiplier > reached)]
    if not errors:
        return ""
    return f" (error at {', '.join(f'{m}x' for m in sorted(errors))}: not counted as a boundary)"


def boundary(local: list[ScaleRow], cluster: list[ScaleRow]) -> list[str]:
    """The headline of comparison 1, claiming no more than the runs show."""
    l_max, l_fail = _reach(local)
    c_max, c_fail = _reach(cluster)

    def side(name: str, reached: int | None, fail: ScaleRow | None, rows: list[ScaleRow]) -> str:
        got = f"{reached}x" if reached is not None else "no multiplier"
        errors = _errors_above(rows, reached)
        if fail is not None:
            return f"{name} reached {got}, failed at {fail.multiplier}x ({STATUS_WORDS[fail.status]}){errors}"
        if not rows:
            return f"{name} ran nothing"
        return (f"{name} reached {got} and never hit a memory or time limit (tried up to "
                f"{max(r.multiplier for r in rows)}x){errors}")

    lines = [f"Largest multiplier: {side('local', l_max, l_fail, local)}; "
             f"{side('cluster', c_max, c_fail, cluster)}."]
    if l_max is None and c_max is None:
        lines.append("Neither side succeeded at any multiplier: no ratio.")
    elif l_max is None:
        lines.append(f"The cluster reached {c_max}x where one process failed at every multiplier tried: "
                     "no finite ratio.")
    elif c_max is None:
        lines.append(f"The cluster failed at every multiplier tried; one process reached {l_max}x.")
    else:
        ratio = c_max / l_max
        if l_fail is not None and c_fail is not None:
            lines.append(f"=> the cluster handled {ratio:.1f}x larger datasets (both boundaries measured).")
        elif l_fail is not None:
            lines.append(f"=> the cluster handled >= {ratio:.1f}x larger datasets: a lower bound, the cluster's "
                         "own boundary was not reached.")
        elif c_fail is not None:
            lines.append(f"=> ratio <= {ratio:.1f}x: an upper bound, one process never failed, so its boundary "
                         "was not reached.")
        else:
            lines.append("=> ratio unknown: neither side failed, the boundary was not reached (try larger "
                         "--multipliers or a lower --memory-limit).")
    return lines


def bracket(local: ScaleRun, cluster: ScaleRun) -> list[str]:
    """What the boundary ratio can be, given the sizes between which each side's boundary was found, and the
    memory each side had in all: N workers under the same per-worker limit hold N times one process's memory.

    A boundary lies somewhere between the largest success and the smallest failure, so the true ratio lies
    between cluster success / local failure and cluster failure / local success."""
    l_max, l_fail = _reach(local.data.results)
    c_max, c_fail = _reach(cluster.data.results)
    lines = []
    if l_max is not None and l_fail is not None and c_max is not None and c_fail is not None:
        low, high = c_max / l_fail.multiplier, c_fail.multiplier / l_max
        lines.append(f"The boundaries lie between measured sizes (one process: {l_max}x to {l_fail.multiplier}x; "
                     f"the cluster: {c_max}x to {c_fail.multiplier}x), so the ratio lies between {low:.2f}x and "
                     f"{high:.2f}x.")
    limit, workers = local.data.settings.memory_limit_bytes, cluster.data.settings.workers
    if limit and limit == cluster.data.settings.memory_limit_bytes:
        lines.append(f"Memory in all: one process with 1 x {format_size(limit)}; the cluster with {workers} x "
                     f"{format_size(limit)} = {format_size(workers * limit)} ({workers}x as much).")
    return lines


def _like_for_like(a: ScaleRun, b: ScaleRun) -> list[str]:
    keys = ("memory_limit_bytes", "max_steps", "epochs", "timeout_seconds", "limit_mechanism")
    differ = [key for key in keys if getattr(a.data.settings, key) != getattr(b.data.settings, key)]
    if not differ:
        return []
    return [f"Note: the two sides differ in {', '.join(differ)}: not a like-for-like comparison."]


def _scale_cells(row: ScaleRow | None, workers: int) -> str:
    if row is None:
        return f"{'not run':<7} {'':>7} {'':>11} {'':>7}"
    return (f"{STATUS_WORDS[row.status]:<7} {seconds_text(row.wall_seconds):>7} "
            f"{size_text(row.peak_per_worker()):>11} {workers:>7}")


def _missing_scale(mode: str, loader: str) -> str:
    workers = " --workers 2" if mode == "cluster" else ""
    extra = f" --loader {loader} --out results/{scale_test_folder(mode, loader)}" if loader != "memory" else ""
    return f"{mode + ':':<9}not run — run `stockscale scale-test --mode {mode}{workers}{extra}`"


def _format_scale_group(group: ScaleGroup, name_folders: bool) -> list[str]:
    folders = ", ".join(run.path.parent.name for run in (group.local, group.cluster) if run is not None)
    lines = [f"[{group.loader} loader: {folders}]" if name_folders else f"[{group.loader} loader]"]
    sides = [(name, run) for name, run in (("local", group.local), ("cluster", group.cluster))]
    for name, run in sides:
        if run is None:
            lines += wrap("  ", _missing_scale(name, group.loader), indent=4)
        else:
            lines += wrap(f"  {name + ':':<9}", _scale_settings(run))
    present = [(name, run) for name, run in sides if run is not None]
    by_side = {name: {row.multiplier: row for row in run.data.results} for name, run in present}
    multipliers = sorted({m for rows in by_side.values() for m in rows})
    lines.append("")
    head = f"  {'':>10} {'':>10}" + "".join(f" | {name.center(35)}" for name, _ in present)
    cols = f"  {'multiplier':>10} {'dataset':>10}" + f" | {'status':<7} {'time':>7} {'peak/worker':>11} " \
           f"{'workers':>7}" * len(present)
    lines += [head.rstrip(), cols, "  " + "-" * (len(cols) - 2)]
    for m in multipliers:
        rows = [by_side[name].get(m) for name, _ in present]
        dataset = next((r.dataset_bytes for r in rows if r is not None and r.dataset_bytes is not None), None)
        cells = "".join(f" | {_scale_cells(row, run.data.settings.workers)}"
                        for row, (_, run) in zip(rows, present, strict=True))
        lines.append(f"  {str(m) + 'x':>10} {size_text(dataset):>10}{cells}".rstrip())
    lines.append("  dataset: the training windows as float32 [N, 60, 5]; peak/worker: the largest worker's "
                 "peak RSS")
    lines.append("  (RSS also counts shared library pages a cgroup charges to whoever loaded them first, so a "
                 "worker's RSS can pass its limit by that much without an OOM kill)")
    failures = [(name, row) for name, run in present for row in run.data.results
                if row.status != "success" and row.detail]
    for name, row in failures:
        lines += wrap("  ", f"{name} {row.multiplier}x {STATUS_WORDS[row.status]}: {row.detail}", indent=4)
    if group.local is not None and group.cluster is not None:
        lines.append("")
        for line in boundary(group.local.data.results, group.cluster.data.results) + \
                bracket(group.local, group.cluster) + _like_for_like(group.local, group.cluster):
            lines += wrap("  ", line, indent=5)
        for name, run in present:
            if not run.data.complete:
                lines += wrap("  ", f"Note: {name} is PARTIAL (stopped before the end): multipliers it did not "
                               "run may hold its boundary.", indent=5)
        if group.cluster.data.settings.backend == "docker":
            lines.append("  The cluster is EMULATED with containers of the image on this machine, each under its")
            lines.append("  pod's limits. It shows memory per worker, not a real cluster's speed (the containers")
            lines.append("  share this machine's cores).")
        elif group.cluster.data.settings.emulated:
            lines.append("  The cluster is EMULATED: its workers are processes on this machine, each under its")
            lines.append("  own limit like a pod. It shows memory per worker, not a real cluster's speed (the")
            lines.append("  workers share this machine's cores).")
    return lines


def format_scale(results: LoadedResults) -> list[str]:
    lines = ["COMPARISON 1: Dataset Scale", "=" * 27,
             "One process under a memory limit against N data-parallel workers, each under the same limit.", ""]
    groups = scale_groups(results.scale_tests)
    if not groups:
        return lines + [f"  {_missing_scale('local', 'memory')}", f"  {_missing_scale('cluster', 'memory')}"]
    loaders = [group.loader for group in groups]
    for index, group in enumerate(groups):
        if index:
            lines.append("")
        lines += _format_scale_group(group, name_folders=loaders.count(group.loader) > 1)
    return lines


def scale_headlines(results: LoadedResults) -> list[str]:
    """Comparison 1's verdict per loader, as the memory plot states it."""
    lines = []
    for group in scale_groups(results.scale_tests):
        if group.local is not None and group.cluster is not None:
            verdict = boundary(group.local.data.results, group.cluster.data.results)[-1]
            verdict = verdict.removeprefix("=> ").split(" (try")[0].rstrip(".")
            lines.append(f"{group.loader} loader: {verdict}")
    return lines


