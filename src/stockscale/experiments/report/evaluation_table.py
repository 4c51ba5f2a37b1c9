"""The walk-forward evaluation as the report prints it: each model's mean and spread over folds and seeds, the
Diebold-Mariano tests against persistence, and a reading computed from those numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockscale.experiments.evaluation_stats import SIGNIFICANCE, spread
from stockscale.experiments.report.reading import moves_sentence
from stockscale.experiments.report.text import wrap

LABELS = {"lstm": "LSTM", "persistence": "persistence", "drift": "drift", "ridge": "ridge",
          "always_up": "always up", "training_majority": "majority"}


def _stat(entry: Mapping[str, Any] | None, form: str, scale: float = 1.0) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    text = format(entry["mean"] * scale, form)
    if entry.get("std") is not None:
        text += " ± " + format(entry["std"] * scale, form.lstrip("+"))
    return text


def _dm_text(name: str, test: Mapping[str, Any]) -> str:
    label = LABELS.get(name, name)
    if test.get("p_value") is None:
        return f"{label}: no test (identical losses or too few days)"
    better = test.get("better")
    verdict = (f"{label} is significantly better" if better == "model" else
               "persistence is significantly better" if better == "baseline" else "not significant")
    return (f"{label}: mean squared-error difference {test['mean_loss_difference']:+.4f} $^2/day, DM "
            f"{test['statistic']:+.2f}, p = {test['p_value']:.3f} ({verdict} at {SIGNIFICANCE:g})")


def evaluation_reading(record: Mapping[str, Any]) -> str:
    """What the folds and seeds say, from the numbers: the LSTM's moves against the drift, its "up" share,
    and which models beat persistence significantly."""
    models, tests = record.get("models") or {}, record.get("diebold_mariano") or {}
    lstm = models.get("lstm") or {}
    parts = []
    move, up = (lstm.get("mean_predicted_move") or {}).get("mean"), (lstm.get("up_share") or {}).get("mean")
    drift = ((models.get("drift") or {}).get("daily_log_return") or {}).get("mean")
    if move is not None and up is not None:
        parts.append(moves_sentence("across the runs the LSTM", move, up, drift, "the training drifts average",
                                    " (a one-way, drift-like forecast)"))
    better = [LABELS.get(n, n) for n, t in tests.items() if t.get("better") == "model"]
    worse = [LABELS.get(n, n) for n, t in tests.items() if t.get("better") == "baseline"]
    if tests:
        parts.append((f"{' and '.join(better)} beat{'s' if len(better) == 1 else ''} persistence significantly"
                      if better else "no model beats persistence significantly")
                     + (f"; persistence beats {' and '.join(worse)} significantly" if worse else ""))
    return "; ".join(parts) + "." if parts else ""


def _last_fold_seeds(folds: list[Mapping[str, Any]]) -> list[str]:
    """The configured span itself (the last fold: a search's own split) over its seeds: how much one trial at
    one seed moves."""
    if not folds:
        return []
    runs = [run for run in folds[-1].get("runs", []) if run.get("status") == "success" and run.get("test")]
    if not runs:
        return []
    rmse = spread([run["test"].get("rmse") for run in runs])
    base = (runs[0].get("baselines_test") or {}).get("persistence", {}).get("rmse")
    last = folds[-1]
    text = (f"On the configured span alone (fold {last.get('fold')}, test days to {last.get('test_last_date')}): "
            f"the LSTM's test RMSE over {rmse['n']} seed(s) is ${_stat(rmse, '.3f')} (from ${rmse['min']:.3f} to "
            f"${rmse['max']:.3f})")
    if base is not None:
        beats = sum(run["test"].get("rmse", float("inf")) < base for run in runs)
        text += f"; persistence ${base:.3f}; {beats} of {len(runs)} seed(s) beat it"
    return wrap("  ", text + ".", indent=2)


def format_evaluation_record(record: Mapping[str, Any], path: str | None = None) -> list[str]:
    """Fixed-width lines for one evaluation.json (as a dict)."""
    settings, folds = record.get("settings") or {}, record.get("folds") or []
    runs = [run for fold in folds for run in fold.get("runs", [])]
    ok = sum(run.get("status") == "success" for run in runs)
    seeds = settings.get("seeds") or []
    first = next((f.get("test_first_date") for f in folds if f.get("test_first_date")), None)
    last = next((f.get("test_last_date") for f in reversed(folds) if f.get("test_last_date")), None)
    days = folds[0].get("predicted_days") if folds else None
    train = ", ".join(f"{k} {v}" for k, v in (settings.get("train") or {}).items()) or "default training"
    lines = ["WALK-FORWARD EVALUATION", "=" * 23]
    if not folds:
        return lines + wrap("  ", f"{settings.get('origins')} rolling origins x {len(seeds)} seeds: no results "
                            "(interrupted before its runs ended)" + (f"; file {path}" if path else ""), indent=4)
    lines += wrap("  ", f"{settings.get('origins')} rolling origins x {len(seeds)} seeds = {len(runs)} runs, "
                  f"{ok} succeeded; {train}; predicted test days end to end from {first} to {last}, {days} per fold"
                  + (f"; file {path}" if path else "")
                  + ("" if record.get("complete", True) else "; INCOMPLETE (interrupted, or some runs failed)"),
                  indent=4)
    models = record.get("models") or {}
    head = (f"  {'model':<12} {'test RMSE':>17}  {'MAE':>17}  {'direction':>15}  {'mean move':>18}  "
            f"{'up share':>11}")
    lines += ["", head, "  " + "-" * (len(head) - 2)]
    for name, label in LABELS.items():
        m = models.get(name)
        if not m:
            continue
        lines.append(f"  {label:<12} {_stat(m.get('rmse'), '.3f'):>17}  {_stat(m.get('mae'), '.3f'):>17}  "
                     f"{_stat(m.get('directional_accuracy'), '.1f', 100):>15}  "
                     f"{_stat(m.get('mean_predicted_move'), '+.3f', 100):>18}  {_stat(m.get('up_share'), '.2f'):>11}")
    lines += wrap("  ", "mean ± sample standard deviation over the runs (folds x seeds); RMSE and MAE in dollars, "
                  "direction and mean move (per day) in %.", indent=2)
    lines += _last_fold_seeds(folds)
    tests = record.get("diebold_mariano") or {}
    if tests:
        any_test = next(iter(tests.values()))
        lines += [""] + wrap("  ", f"Diebold-Mariano against persistence (squared error, HAC with "
                             f"{any_test.get('hac_maxlags')} lags, {any_test.get('days')} predicted days; the LSTM's "
                             "loss on a day is the mean over its seeds):", indent=2)
        for name, test in tests.items():
            lines += wrap("    ", _dm_text(name, test), indent=6)
    said = evaluation_reading(record)
    if said:
        lines += [""] + wrap("  ", f"Reading: {said}", indent=2)
    return lines
