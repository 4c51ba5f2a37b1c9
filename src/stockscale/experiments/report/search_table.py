"""Comparison 2's table: the searches side by side, their speed-ups over sequential, and the best config."""

from __future__ import annotations

import json

from stockscale.experiments.report.reading import reading
from stockscale.experiments.report.text import STATUS_WORDS, machine_text, seconds_text, wrap
from stockscale.experiments.results import LoadedResults, SearchRun, config_text
from stockscale.experiments.timings import OUTLIER_FACTOR, find_outliers, median_speedup


def _grid_size(run: SearchRun) -> int:
    """How many trials the search meant to run: --trials for a sampled search, else the grid's size."""
    settings = run.data.settings
    if settings.strategy != "grid" and settings.trials:
        return settings.trials
    size = 1
    for values in settings.space.values():
        size *= len(values) if isinstance(values, list) else 1
    return size


def _strategy(run: SearchRun) -> str:
    s = run.data.settings
    if s.strategy == "grid" and s.pruner == "none":
        return ""
    pruner = "" if s.pruner == "none" else f", pruner {s.pruner}"
    return f"{s.strategy}{pruner}, {s.trials} trials, seed {s.seed}; "


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
    timeout = f", trial timeout {seconds_text(s.trial_timeout_seconds)}" if s.trial_timeout_seconds else ""
    partial = "; PARTIAL (stopped before the end)" if not run.data.complete else ""
    return (f"{_strategy(run)}{where}{threads}{timeout}; {train}; {machine_text(s.machine)}{partial}; "
            f"file {run.path}")


def _same_work(a: SearchRun, b: SearchRun) -> bool:
    """Whether two searches trained the same configs with the same training settings."""
    configs = [sorted(json.dumps(t.config, sort_keys=True) for t in run.data.results) for run in (a, b)]
    return configs[0] == configs[1] and a.data.settings.train == b.data.settings.train


def format_search(results: LoadedResults) -> list[str]:
    lines = ["COMPARISON 2: Hyperparameter Search", "=" * 35]
    runs = results.searches
    roles = [run.role for run in runs]
    hints = {"sequential": "--backend sequential", "parallel": "--backend parallel --workers 2",
             "cloud": "--backend kubernetes"}
    extra = [role for role in [*roles, *results.dry_runs] if role not in hints]
    for role in list(hints) + list(dict.fromkeys(extra)):
        for run in (run for run in runs if run.role == role):
            lines += wrap(f"  {role + ':':<12}", _search_settings(run))
        if role in roles:
            continue
        if (dry_run := results.dry_runs.get(role)) is not None:
            when = f", written {dry_run.written_at[:16].replace('T', ' ')} UTC" if dry_run.written_at else ""
            lines += wrap(f"  {role + ':':<12}", f"dry run: manifests in {dry_run.manifest_dir}, nothing ran "
                           f"({len(dry_run.files)} files from `stockscale {dry_run.command} --backend "
                           f"{dry_run.backend} --dry-run`{when})")
        else:
            lines.append(f"  {role + ':':<12}not run — run `stockscale search {hints[role]}`")
    if not runs:
        return lines
    base = results.search("sequential")
    lines.append("")
    head = (f"  {'search':<12} {'configs':>7}  {'ok/failed':>9}  {'total time':>10}  "
            f"{'sum of trials':>13}  {'speedup':>7}  {'ideal':>9}  {'time saved':>13}  {'pruned':>6}")
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
            saved = f"{seconds_text(delta)} ({share:.0f}%)"
            if not (_same_work(base, run) and base.data.complete and d.complete):
                notes += wrap("  ", f"Note: {run.role} did not run the same complete work as sequential "
                               "(configs, training settings or completeness differ): its speedup is not "
                               "like-for-like.", indent=4)
        lines.append(f"  {run.role:<12} {configs:>7}  {f'{d.successes}/{d.failures}':>9}  "
                     f"{seconds_text(d.total_wall_seconds):>10}  {seconds_text(d.sum_trial_seconds):>13}  "
                     f"{speedup:>7}  {medians:>9}  {saved:>13}  {d.pruned:>6}")
    if base is None:
        notes.append("  Speedups need the sequential search: run `stockscale search --backend sequential`.")
    else:
        notes += wrap("  ", "speedup: the sequential total time over this search's (measured); ideal: the median "
                       "over configs of sequential / this search's trial time, times the trials it ran at once — "
                       "what full lanes of typical trials would give, an ideal computed from the trials, not a "
                       "measured speed-up (one slow trial does not move it).", indent=2)
    for outlier in find_outliers(runs):
        notes += wrap("  ", f"Outlier: {outlier.role} {outlier.name} took {seconds_text(outlier.seconds)}, "
                       f"{outlier.ratio:.1f}x the {seconds_text(outlier.peer_seconds)} the same config took in the "
                       f"other search(es) (flagged above {OUTLIER_FACTOR:g}x): noise on the machine? Totals "
                       "and the plain speedup carry its delay; the medians do not.", indent=4)
    lines += notes
    lines += ["", "  Best config (lowest validation loss); its test RMSE beside the persistence baseline's",
              "  (persistence: tomorrow's close = today's, the model to beat):"]
    for run in runs:
        lines += _format_best(run)
    failed = [(run.role, t) for run in runs for t in run.data.results if t.status not in ("success", "pruned")]
    for role, trial in failed[:8]:
        lines += wrap("  ", f"failed: {role} {trial.name} {STATUS_WORDS[trial.status]}"
                             f"{': ' + trial.detail if trial.detail else ''}", indent=4)
    if len(failed) > 8:
        lines.append(f"  ... and {len(failed) - 8} more failed trials")
    return lines


def _format_best(run: SearchRun) -> list[str]:
    best = run.data.best
    if best is None:
        return [f"  {run.role:<12}no trial succeeded"]
    lines = wrap(f"  {run.role:<12}", f"{best.name}: {config_text(best.config)}")
    rmse = best.test.rmse if best.test is not None else None
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
    lines += wrap(f"  {'':<12}", text)
    said = reading(best.test.model_dump(), best.baselines_test) if best.baselines_test and best.test else ""
    return lines + (wrap(f"  {'':<12}", f"Reading: {said}") if said else [])


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


