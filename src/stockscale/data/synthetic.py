"""A synthetic many-ticker fixture: N tickers of geometric Brownian motion in the all_stocks_5yr layout.

Why: tests and benchmarks need a 505-ticker, 619,000-row long-format CSV shaped like the widely shared
all_stocks_5yr file (`date,open,high,low,close,volume,Name`, sorted by ticker then date), and that file cannot
be shipped or downloaded here. Each ticker gets its own drift and volatility (seeded, so the same call writes
the same bytes). The fixture is never to be taken for real data: its tickers are named SYN0001, SYN0002, ...,
and a marker file `FILE.synthetic.json` beside it makes every metrics.json and report built on it say
"synthetic" (data.sources.is_synthetic).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stockscale.data.sources import synthetic_marker
from stockscale.files import replace_with

HEADER = "date,open,high,low,close,volume,Name"
FIRST_DAY = "2013-02-08"  # all_stocks_5yr's first trading day


def synthetic_prices(tickers: int, days: int, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(business dates [D], ticker names [N], OHLCV float64 [N, D, 5]) of N GBM paths.

    Annual drift ~ N(6%, 10%) and volatility ~ U(15%, 50%) per ticker; open/high/low around the close with an
    intraday spread proportional to the volatility; volume log-normal around a per-ticker level.
    """
    rng = np.random.default_rng(seed)
    dates = np.busday_offset(FIRST_DAY, np.arange(days), roll="forward")
    drift = rng.normal(0.06, 0.10, tickers)[:, None] / 252
    vol = rng.uniform(0.15, 0.50, tickers)[:, None] / np.sqrt(252)
    start = np.exp(rng.uniform(np.log(5), np.log(500), tickers))[:, None]
    steps = (drift - vol**2 / 2) + vol * rng.standard_normal((tickers, days))
    close = start * np.exp(np.cumsum(steps, axis=1))
    gap = np.exp(vol * 0.3 * rng.standard_normal((tickers, days)))
    open_ = np.concatenate([start, close[:, :-1]], axis=1) * gap
    high = np.maximum(open_, close) * np.exp(np.abs(vol * 0.5 * rng.standard_normal((tickers, days))))
    low = np.minimum(open_, close) * np.exp(-np.abs(vol * 0.5 * rng.standard_normal((tickers, days))))
    level = rng.uniform(np.log(2e5), np.log(2e7), tickers)[:, None]
    volume = np.round(np.exp(level + 0.4 * rng.standard_normal((tickers, days))))
    names = [f"SYN{index + 1:04d}" for index in range(tickers)]
    return dates, names, np.stack([open_, high, low, close, volume], axis=-1)


def write_synthetic_csv(out: Path, tickers: int, days: int, seed: int = 0) -> Path:
    """Write the fixture to `out` (write-then-rename) and its marker beside it; returns `out`."""
    dates, names, values = synthetic_prices(tickers, days, seed)
    day_text = [str(day) for day in dates]
    lines = [HEADER]
    for name, rows in zip(names, values, strict=True):
        lines.extend(f"{day},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{int(v)},{name}"
                     for day, (o, h, lo, c, v) in zip(day_text, rows.tolist(), strict=True))
    text = "\n".join(lines) + "\n"
    marker = {"generator": "stockscale data synth", "synthetic": True, "tickers": tickers, "days": days,
              "seed": seed, "model": "geometric Brownian motion, per-ticker drift and volatility"}
    replace_with(synthetic_marker(out), lambda handle: handle.write(json.dumps(marker, indent=1).encode()))
    replace_with(out, lambda handle: handle.write(text.encode()))
    return out
