"""The report's data section for a model pooled over tickers: the pooled figures, the best and worst tickers,
and "SYNTHETIC" when the data came from `stockscale data synth` (it is never to be read as real data).

Read from the best trial's metrics.json (docs/results.md, its "tickers" section), checked through a model;
a single-ticker run has no section, and a file that cannot be read is one line saying so.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, ValidationError

from stockscale.experiments.results import LoadedResults, _resolve_run_dir, best_search

MAX_METRICS_BYTES = 64 * 1024 * 1024


class _Pick(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    ticker: str
    test_mape: float
    persistence_test_mape: float


class _Tickers(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    count: int
    skipped: list[str]
    best: _Pick
    worst: _Pick


def ticker_section(results: LoadedResults) -> list[str]:
    """Markdown lines for the report (empty when the best trial trained on one ticker or there is none)."""
    search = best_search(results)
    best = search.data.best if search is not None else None
    if search is None or best is None or not best.run_dir:
        return []
    folder = _resolve_run_dir(best.run_dir, search, results.results_dir)
    if folder is None:
        return []
    path = folder / "metrics.json"
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            return ["## Data: tickers", "", f"_{path} is over {MAX_METRICS_BYTES} bytes; not read._", ""]
        metrics = json.loads(path.read_text(encoding="utf-8"))
        raw = metrics.get("tickers") if isinstance(metrics, dict) else None
        if raw is None:
            return []
        tickers = _Tickers.model_validate(raw)
        data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
    except (OSError, UnicodeDecodeError, ValueError, ValidationError):
        return ["## Data: tickers", "", f"_{path}: its tickers section is unreadable._", ""]
    synthetic = data.get("synthetic") is True
    test, base = metrics.get("test", {}), metrics.get("baseline", {}).get("test", {})
    label = "**SYNTHETIC** tickers (geometric Brownian motion from `stockscale data synth`, not real data)" \
        if synthetic else "tickers"
    lines = ["## Data: tickers", "",
             f"The best model ({search.role} {best.name}) is one model pooled over {tickers.count} {label} "
             f"from `{data.get('source', '?')}`."]
    if tickers.skipped:
        lines.append(f"Skipped for too few days: {', '.join(tickers.skipped)}.")
    if isinstance(test.get("mape"), float) and isinstance(base.get("mape"), float):
        lines.append(f"Pooled test MAPE {test['mape']:.2f}% (persistence {base['mape']:.2f}%).")
    for name, pick in (("Best", tickers.best), ("Worst", tickers.worst)):
        lines.append(f"{name} ticker by test MAPE: {pick.ticker}, {pick.test_mape:.2f}% (persistence "
                     f"{pick.persistence_test_mape:.2f}%).")
    return [lines[0], "", " ".join(lines[2:]), ""]
