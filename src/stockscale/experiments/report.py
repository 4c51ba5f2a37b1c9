"""`stockscale compare`: read whatever results exist, print the two comparisons, write report.md.

Every number in the report comes from a results file (docs/results.md), read through the typed models of
experiments/results.py. A side that was not run is said to be missing, with the command that would run it;
nothing is filled in. A results file that cannot be read or does not have the documented shape becomes a
warning naming the file, and the rest still reports: one corrupt file must not hide the other measurements.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stockscale.config import format_size, one_line
from stockscale.errors import InputError
from stockscale.experiments.projection import Projection, ProjectionSettings, build_projection, format_projection
from stockscale.experiments.results import (
    LoadedResults,
    Machine,
    Predictions,
    ScaleRow,
    ScaleRun,
    SearchRun,
    scale_test_folder,
)
from stockscale.experiments.timings import OUTLIER_FACTOR, find_outliers, median_speedup
from stockscale.files import replace_with, write_text_atomic

# ---------------------------------------------------------------- the printed comparison

WIDTH = 100
STATUS_WORDS = {"success": "success", "oom": "OOM", "timeout": "timeout", "error": "error", "preempted": "preempted"}


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def _size(value: float | None) -> str:
    return "-" if value is None else format_size(value)


def _machine(machine: Machine | None) -> str:
    if machine is None or machine.cpus is None:
        return "machine not recorded"
    memory = f", {format_size(machine.memory_bytes)}" if machine.memory_bytes else ""
    return f"machine: {machine.cpus} cores{memory}"


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


def _wrap(prefix: str, text: str, indent: int | None = None) -> list[str]:
    """Fixed-width lines no wider than WIDTH, broken only at spaces (paths stay whole)."""
    pad = " " * (len(prefix) if indent is None else indent)
    glued = _UNIT.sub("\\1\x00\\2", text)  # keep "300 s", "4.0 GiB" on one line
    lines = textwrap.wrap(glued, WIDTH, initial_indent=prefix, subsequent_indent=pad, break_long_words=False,
                          break_on_hyphens=False)
    return [line.replace("\x00", " ") for line in lines]


_UNIT = re.compile(r"(\d) (s|x|B|KiB|MiB|GiB|TiB)\b")


def _scale_settings(run: ScaleRun) -> str:
    s = run.data.settings
    unit = "worker" if s.mode == "cluster" else "process"
    mechanism = s.limit_mechanism or "mechanism not recorded"
    limit = (f"limit {format_size(s.memory_limit_bytes)} per {unit} ({mechanism})" if s.memory_limit_bytes
             else "no memory limit")
    steps = f"max steps {s.max_steps}" if s.max_steps else f"epochs {s.epochs}"
    threads = f", {s.threads_per_worker} thread(s) per {unit}" if s.threads_per_worker else ""
    timeout = f", timeout {_secs(s.timeout_seconds)}" if s.timeout_seconds else ""
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
    return (f"{who}; {s.loader} loader; {limit}; {steps}{timeout}{threads}; {_machine(s.machine)}{when}"
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


def _boundary(local: list[ScaleRow], cluster: list[ScaleRow]) -> list[str]:
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


def _like_for_like(a: ScaleRun, b: ScaleRun) -> list[str]:
    keys = ("memory_limit_bytes", "max_steps", "epochs", "timeout_seconds", "limit_mechanism")
    differ = [key for key in keys if getattr(a.data.settings, key) != getattr(b.data.settings, key)]
    if not differ:
        return []
    return [f"Note: the two sides differ in {', '.join(differ)}: not a like-for-like comparison."]


def _scale_cells(row: ScaleRow | None, workers: int) -> str:
    if row is None:
        return f"{'not run':<7} {'':>7} {'':>11} {'':>7}"
    return (f"{STATUS_WORDS[row.status]:<7} {_secs(row.wall_seconds):>7} "
            f"{_size(row.peak_per_worker()):>11} {workers:>7}")


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
            lines += _wrap("  ", _missing_scale(name, group.loader), indent=4)
        else:
            lines += _wrap(f"  {name + ':':<9}", _scale_settings(run))
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
        lines.append(f"  {str(m) + 'x':>10} {_size(dataset):>10}{cells}".rstrip())
    lines.append("  dataset: the training windows as float32 [N, 60, 5]; peak/worker: the largest worker's "
                 "peak RSS")
    lines.append("  (RSS also counts shared library pages a cgroup charges to whoever loaded them first, so a "
                 "worker's RSS can pass its limit by that much without an OOM kill)")
    failures = [(name, row) for name, run in present for row in run.data.results
                if row.status != "success" and row.detail]
    for name, row in failures:
        lines += _wrap("  ", f"{name} {row.multiplier}x {STATUS_WORDS[row.status]}: {row.detail}", indent=4)
    if group.local is not None and group.cluster is not None:
        lines.append("")
        for line in _boundary(group.local.data.results, group.cluster.data.results) + \
                _like_for_like(group.local, group.cluster):
            lines += _wrap("  ", line, indent=5)
        for name, run in present:
            if not run.data.complete:
                lines += _wrap("  ", f"Note: {name} is PARTIAL (stopped before the end): multipliers it did not "
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


def _format_scale(results: LoadedResults) -> list[str]:
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


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in config.items())


def _grid_size(run: SearchRun) -> int:
    size = 1
    for values in run.data.settings.space.values():
        size *= len(values)
    return size


def _search_settings(run: SearchRun) -> str:
    s = run.data.settings
    train = ", ".join(f"{k} {v}" for k, v in s.train.items() if v is not None) or "training settings not recorded"
    if s.backend == "kubernetes":
        where = f"kubernetes, up to {s.workers} pods at once" if s.workers else "kubernetes"
    else:
        at_once = s.workers or 1
        where = f"{s.backend}, {at_once} trial{'s' if at_once > 1 else ''} at a time"
        if s.backend == "docker":
            where += " as containers of the image on this machine"
        elif s.emulated:
            where += " (EMULATED)"
    threads = f", {s.threads_per_trial} thread(s) per trial" if s.threads_per_trial else ""
    timeout = f", trial timeout {_secs(s.trial_timeout_seconds)}" if s.trial_timeout_seconds else ""
    partial = "; PARTIAL (stopped before the end)" if not run.data.complete else ""
    return f"{where}{threads}{timeout}; {train}; {_machine(s.machine)}{partial}; file {run.path}"


def _same_work(a: SearchRun, b: SearchRun) -> bool:
    """Whether two searches trained the same configs with the same training settings."""
    configs = [sorted(json.dumps(t.config, sort_keys=True) for t in run.data.results) for run in (a, b)]
    return configs[0] == configs[1] and a.data.settings.train == b.data.settings.train


def _format_search(results: LoadedResults) -> list[str]:
    lines = ["COMPARISON 2: Hyperparameter Search", "=" * 35]
    runs = results.searches
    roles = [run.role for run in runs]
    hints = {"sequential": "--backend sequential", "parallel": "--backend parallel --workers 2",
             "cloud": "--backend kubernetes"}
    extra = [role for role in [*roles, *results.dry_runs] if role not in hints]
    for role in list(hints) + list(dict.fromkeys(extra)):
        for run in (run for run in runs if run.role == role):
            lines += _wrap(f"  {role + ':':<12}", _search_settings(run))
        if role in roles:
            continue
        if (dry_run := results.dry_runs.get(role)) is not None:
            when = f", written {dry_run.written_at[:16].replace('T', ' ')} UTC" if dry_run.written_at else ""
            lines += _wrap(f"  {role + ':':<12}", f"dry run: manifests in {dry_run.manifest_dir}, nothing ran "
                           f"({len(dry_run.files)} files from `stockscale {dry_run.command} --backend "
                           f"{dry_run.backend} --dry-run`{when})")
        else:
            lines.append(f"  {role + ':':<12}not run — run `stockscale search {hints[role]}`")
    if not runs:
        return lines
    base = results.search("sequential")
    lines.append("")
    head = (f"  {'search':<12} {'configs':>7}  {'ok/failed':>9}  {'total time':>10}  {'sum of trials':>13}  "
            f"{'speedup':>7}  {'(medians)':>9}  {'time saved':>13}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    notes = []
    for run in runs:
        d = run.data
        grid = _grid_size(run)
        configs = str(len(d.results)) if len(d.results) == grid else f"{len(d.results)}/{grid}"
        speedup = saved = medians = "-"
        if base is None:
            speedup = medians = "n/a"
        elif run is not base:
            speedup = f"{base.data.total_wall_seconds / d.total_wall_seconds:.2f}x" if d.total_wall_seconds else "-"
            robust = median_speedup(base, run)
            medians = f"{robust:.2f}x" if robust is not None else "-"
            delta = base.data.total_wall_seconds - d.total_wall_seconds
            share = delta / base.data.total_wall_seconds * 100 if base.data.total_wall_seconds else 0.0
            saved = f"{_secs(delta)} ({share:.0f}%)"
            if not (_same_work(base, run) and base.data.complete and d.complete):
                notes += _wrap("  ", f"Note: {run.role} did not run the same complete work as sequential "
                               "(configs, training settings or completeness differ): its speedup is not "
                               "like-for-like.", indent=4)
        lines.append(f"  {run.role:<12} {configs:>7}  {f'{d.successes}/{d.failures}':>9}  "
                     f"{_secs(d.total_wall_seconds):>10}  {_secs(d.sum_trial_seconds):>13}  {speedup:>7}  "
                     f"{medians:>9}  {saved:>13}")
    if base is None:
        notes.append("  Speedups need the sequential search: run `stockscale search --backend sequential`.")
    else:
        notes += _wrap("  ", "speedup: the sequential total time over this search's; (medians): the median over "
                       "configs of sequential / this search's trial time, times the trials it ran at once — "
                       "what a full lane of typical trials gives, which one slow trial does not move.", indent=2)
    for outlier in find_outliers(runs):
        notes += _wrap("  ", f"Outlier: {outlier.role} {outlier.name} took {_secs(outlier.seconds)}, "
                       f"{outlier.ratio:.1f}x the {_secs(outlier.peer_seconds)} the same config took in the "
                       f"other search(es) (flagged above {OUTLIER_FACTOR:g}x): noise on the machine? Totals "
                       "and the plain speedup carry its delay; the medians do not.", indent=4)
    lines += notes
    lines += ["", "  Best config (lowest validation loss); its test RMSE beside the persistence baseline's",
              "  (persistence: tomorrow's close = today's, the model to beat):"]
    for run in runs:
        lines += _format_best(run)
    failed = [(run.role, t) for run in runs for t in run.data.results if t.status != "success"]
    for role, trial in failed[:8]:
        lines += _wrap("  ", f"failed: {role} {trial.name} {STATUS_WORDS[trial.status]}"
                             f"{': ' + trial.detail if trial.detail else ''}", indent=4)
    if len(failed) > 8:
        lines.append(f"  ... and {len(failed) - 8} more failed trials")
    return lines


def _format_best(run: SearchRun) -> list[str]:
    best = run.data.best
    if best is None:
        return [f"  {run.role:<12}no trial succeeded"]
    lines = _wrap(f"  {run.role:<12}", f"{best.name}: {_config_text(best.config)}")
    rmse = best.test.rmse
    base = best.baseline_test.rmse if best.baseline_test is not None else None
    text = f"val loss {best.val_loss:.4f}; test RMSE {'$' + format(rmse, '.2f') if rmse is not None else '-'}"
    if base is None:
        text += " (persistence baseline not recorded)"
    else:
        text += f" vs persistence ${base:.2f}"
        if rmse is not None and base > 0:
            diff = rmse - base
            verdict = "beats persistence by" if diff < 0 else "is worse than persistence by"
            text += f": the LSTM {verdict} ${abs(diff):.2f} ({abs(diff) / base * 100:.1f}%)"
    return lines + _wrap(f"  {'':<12}", text)


def format_comparison(results: LoadedResults) -> str:
    """The report as `stockscale compare` prints it: plain fixed-width text, every figure from a file."""
    lines = [f"stockscale comparison — results from {results.results_dir}", ""]
    lines += _format_scale(results)
    lines += [""]
    lines += _format_search(results)
    if results.warnings:
        lines += ["", "WARNINGS (files left out of this report)"]
        for warning in results.warnings:
            lines += _wrap("  ", warning, indent=4)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- report.md with plots

def format_report_text(results: LoadedResults, settings: ProjectionSettings | None = None) -> str:
    """What `compare` (and `demo`) print: the two comparisons, then the projection for a real cluster."""
    projection = build_projection(results, settings or ProjectionSettings())
    return format_comparison(results) + "\n\n" + format_projection(projection)


def best_search(results: LoadedResults) -> SearchRun | None:
    """The search whose best trial has the lowest validation loss (ties: sequential, parallel, cloud)."""
    candidates = [run for run in results.searches if run.data.best is not None]
    return min(candidates, key=lambda run: run.data.best.val_loss, default=None)  # type: ignore[union-attr]


def grid_search(results: LoadedResults) -> SearchRun | None:
    """The search with the most trials that have a validation loss: the fullest grid to draw."""
    def filled(run: SearchRun) -> int:
        return sum(1 for t in run.data.results if t.status == "success" and t.val_loss is not None)
    candidates = [run for run in results.searches if filled(run)]
    return max(candidates, key=filled, default=None)  # max keeps the first of equals: sequential first


def _resolve_run_dir(run_dir: str, search: SearchRun, results_dir: Path) -> Path | None:
    """A trial's run directory as recorded (relative to where the search ran), or found again under the
    search's folder when the results directory has moved."""
    recorded = Path(run_dir)
    # Searches record run_dir relative to where they ran, normally the results directory's parent.
    candidates = [recorded if recorded.is_absolute() else results_dir.parent / recorded]
    parts = recorded.parts
    if search.path.parent.name in parts:
        tail = parts[parts.index(search.path.parent.name) + 1:]
        candidates.append(search.path.parent.joinpath(*tail))
    return next((path for path in candidates if (path / "predictions.json").is_file()), None)


def load_predictions(results: LoadedResults) -> tuple[Predictions | None, str, str]:
    """(predictions, title, note): the best trial's test predictions, or None with the reason."""
    search = best_search(results)
    if search is None or search.data.best is None:
        return None, "", "no successful search trial to take predictions from"
    best = search.data.best
    if not best.run_dir:
        return None, "", f"the best trial ({search.role} {best.name}) has no run directory recorded"
    folder = _resolve_run_dir(best.run_dir, search, results.results_dir)
    if folder is None:
        return None, "", f"predictions.json not found in the best trial's run directory {best.run_dir}"
    path = folder / "predictions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        predictions = Predictions.model_validate(data)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = one_line(error, str(path)) if isinstance(error, ValidationError) else f"{path}: unreadable"
        return None, "", f"skipped {reason}"
    lengths = {len(predictions.dates), len(predictions.actual), len(predictions.predicted),
               len(predictions.baseline)}
    if len(lengths) != 1 or not predictions.dates:
        return None, "", f"{path}: dates, actual, predicted and baseline are empty or of different lengths"
    title = f"Best model ({search.role} {best.name}: {_config_text(best.config)})"
    return predictions, title, ""


PLOTS = ("memory.png", "timeline.png", "grid.png", "predictions.png")


def write_report(results: LoadedResults, out_dir: Path,
                 projection_settings: ProjectionSettings | None = None) -> Path:
    """Write `out_dir/report.md` with the comparison, the four plots and the projection; return its path.

    `out_dir` is a report folder: report.md and the PNGs named in PLOTS are replaced there, each written to
    a temporary file and renamed; a plot whose data is missing is skipped with a note (and an older PNG of
    that name removed, so the folder never shows a stale picture). report.md is written last."""
    from stockscale.experiments import plots

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"report directory {out_dir} cannot be created ({error.strerror})") from None
    settings = projection_settings or ProjectionSettings()
    predictions, title, predictions_note = load_predictions(results)
    grid_run = grid_search(results)
    outliers = [(outlier.role, outlier.trial) for outlier in find_outliers(results.searches)]
    # Each figure is drawn into the temporary file that then replaces the PNG, so no reader sees half of one.
    drawers = {
        "memory.png": lambda out: plots.plot_memory(results.scale_tests, out, scale_headlines(results)),
        "timeline.png": lambda out: plots.plot_timeline(results.searches, out, search_headline(results), outliers),
        "grid.png": lambda out: plots.plot_grid(grid_run, out),
        "predictions.png": lambda out: plots.plot_predictions(predictions, title, predictions_note, out),
    }
    notes: dict[str, str] = {}
    for name, draw in drawers.items():
        try:
            replace_with(out_dir / name, draw)
        except plots.PlotSkipped as skipped:
            notes[name] = str(skipped)
            (out_dir / name).unlink(missing_ok=True)
    text = _report_markdown(results, build_projection(results, settings), notes, grid_run)
    report = out_dir / "report.md"
    write_text_atomic(report, text)
    return report


def scale_headlines(results: LoadedResults) -> list[str]:
    """Comparison 1's verdict per loader, as the memory plot states it."""
    lines = []
    for group in scale_groups(results.scale_tests):
        if group.local is not None and group.cluster is not None:
            verdict = _boundary(group.local.data.results, group.cluster.data.results)[-1]
            verdict = verdict.removeprefix("=> ").split(" (try")[0].rstrip(".")
            lines.append(f"{group.loader} loader: {verdict}")
    return lines


def search_headline(results: LoadedResults) -> str:
    """Comparison 2's speed-ups, as the timeline states them."""
    base = results.search("sequential")
    if base is None or not base.data.total_wall_seconds:
        return ""
    parts = []
    for run in results.searches:
        if run is base or not run.data.total_wall_seconds:
            continue
        plain = base.data.total_wall_seconds / run.data.total_wall_seconds
        robust = median_speedup(base, run)
        medians = f" ({robust:.2f}x from per-config medians)" if robust is not None else ""
        parts.append(f"{run.role} {plain:.2f}x faster than sequential{medians}")
    return "; ".join(parts)


def _figure(name: str, alt: str, notes: dict[str, str]) -> str:
    return f"_Plot skipped: {notes[name]}._" if name in notes else f"![{alt}]({name})"


def _report_markdown(results: LoadedResults, projection: Projection, notes: dict[str, str],
                     grid_run: SearchRun | None) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    grid_from = f" (from the {grid_run.role} search)" if grid_run is not None else ""
    parts = [
        "# stockscale report", "",
        f"Generated {now} from `{results.results_dir}`. Every figure below comes from a results file there "
        "(formats: docs/results.md); a comparison side that was not run is said to be missing.", "",
        "## The comparison", "", "```text", format_comparison(results).rstrip("\n"), "```", "",
        "## Dataset scale: peak memory per worker", "",
        "The largest worker's peak RSS at each multiplier (one process dashed with hollow markers, the workers "
        "solid and filled; a colour per loader); the memory limit as a thick grey line; runs that "
        "ran out of memory or time are marked. RSS includes shared library pages (torch) that a cgroup charges "
        "to the process that loaded them first, so a worker can show an RSS above its limit and still run.",
        "", _figure("memory.png", "peak memory per worker", notes), "",
        "## Hyperparameter search: timeline", "",
        "Each trial as a bar from its start to its end, time counted from the start of its search; one row "
        "per lane (trials that ran one after another share a lane). The shade says the model size, a hatch "
        "a failed trial, a thick outline an outlier (over 3x its config's time in the other searches).", "",
        _figure("timeline.png", "search timeline", notes), "",
        f"## Validation loss over the grid{grid_from}", "",
        "Grey cells: configs that were not run or did not finish.", "", _figure("grid.png", "grid", notes), "",
        "## Best model: predicted against actual prices (test period)", "",
        _figure("predictions.png", "predictions", notes), "",
        "## Projection for a real cluster", "",
        "**A projection, not a measurement**: what the measured numbers suggest under the assumptions "
        "printed with it.", "", "```text", format_projection(projection), "```", "",
    ]
    return "\n".join(parts)
