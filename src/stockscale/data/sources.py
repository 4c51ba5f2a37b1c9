"""Where daily prices come from: the bundled sample data, a CSV file, or Yahoo Finance (optional extra).

Every source yields a `PriceSeries`: sorted unique dates and float64 OHLCV, validated, so the rest of the
pipeline never sees a gap, a duplicate or a non-number. Nothing is downloaded unless `yahoo:` is asked for.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np

from stockscale.config import FEATURES, SEQ_LEN
from stockscale.errors import InputError

BUNDLED_TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")
DEFAULT_YEARS = 5


@dataclass(frozen=True)
class PriceSeries:
    """Daily OHLCV of one instrument: `dates` (datetime64[D], strictly increasing), `values` float64 [T, 5]."""

    name: str
    dates: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def close(self) -> np.ndarray:
        return self.values[:, 3]

    def between(self, start: date | None, end: date | None) -> PriceSeries:
        keep = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            keep &= self.dates >= np.datetime64(start, "D")
        if end is not None:
            keep &= self.dates <= np.datetime64(end, "D")
        return PriceSeries(self.name, self.dates[keep], self.values[keep])


def load_source(spec: str, start: date | None = None, end: date | None = None) -> PriceSeries:
    """Load `bundled:TICKER`, `csv:PATH` or `yahoo:TICKER`, narrowed to [start, end].

    With neither start nor end, bundled data defaults to its last five years (the original demonstration's
    size); CSV and Yahoo data keep their whole range.
    """
    kind, _, rest = spec.partition(":")
    if kind == "bundled":
        series = load_bundled(rest)
        if start is None and end is None:
            start = _years_before(series.dates[-1], DEFAULT_YEARS)
    elif kind == "csv":
        series = load_csv(Path(rest))
    elif kind == "yahoo":
        series = load_yahoo(rest, start, end)
    else:
        raise InputError(f"source {spec!r} is not bundled:TICKER, csv:PATH or yahoo:TICKER")
    narrowed = series.between(start, end)
    if len(narrowed) < SEQ_LEN + 1:
        held = (f"; the {'bundled series' if kind == 'bundled' else 'data'} runs from {series.dates[0]} to "
                f"{series.dates[-1]}" if len(series) else "")
        raise InputError(
            f"source {spec}: {len(narrowed)} trading days between {start or 'start'} and {end or 'end'}{held}; "
            f"need at least {SEQ_LEN + 1} (one {SEQ_LEN}-day window and its next day)"
        )
    return narrowed


def _years_before(day: np.datetime64, years: int) -> date:
    last = day.astype(date)
    try:
        return last.replace(year=last.year - years)
    except ValueError:  # 29 February
        return last.replace(year=last.year - years, day=28)


def load_bundled(ticker: str) -> PriceSeries:
    """Daily OHLCV from the bokeh-sampledata package, split-adjusted with its adj_close/close ratio.

    The source's open/high/low/close are unadjusted (AAPL split 2:1 in 2000 and 2005), so prices jump at each
    split. Multiplying OHLC by adj_close/close (and dividing volume by it) puts the whole series on one scale.
    """
    ticker = ticker.upper()
    if ticker not in BUNDLED_TICKERS:
        raise InputError(f"bundled ticker {ticker!r} is not one of {', '.join(BUNDLED_TICKERS)}")
    try:
        data_file = resources.files("bokeh_sampledata").joinpath("_data", "stocks.csv.gz")
        raw = data_file.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise InputError("the bundled data needs the bokeh-sampledata package (pip install bokeh-sampledata)") from None
    dates, rows = [], []
    with gzip.open(io.BytesIO(raw), "rt", newline="") as handle:
        for record in csv.DictReader(handle):
            if record["Ticker"] != ticker:
                continue
            close, adj = float(record["Close"]), float(record["Adj Close"])
            ratio = adj / close
            dates.append(record["Date"])
            rows.append([float(record["Open"]) * ratio, float(record["High"]) * ratio,
                         float(record["Low"]) * ratio, adj, float(record["Volume"]) / ratio])
    return _checked_series(f"bundled:{ticker}", dates, rows, where=f"bundled {ticker}")


def load_csv(path: Path) -> PriceSeries:
    """A CSV with columns Date, Open, High, Low, Close, Volume (any order and case; others ignored)."""
    if not path.is_file():
        raise InputError(f"CSV file {path} does not exist or is not a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"CSV file {path} is empty")
    if b"\x00" in raw[:4096]:
        raise InputError(f"CSV file {path} is a binary file, not CSV text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"CSV file {path} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    needed = ("date", *FEATURES)
    missing = [name for name in needed if name not in columns]
    if missing:
        raise InputError(f"CSV file {path}: missing column(s) {', '.join(m.capitalize() for m in missing)}")
    dates, rows = [], []
    for line_number, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        cells = []
        for name in needed:
            index = columns[name]
            cell = record[index].strip() if index < len(record) else ""
            if not cell:
                raise InputError(f"CSV file {path}, line {line_number}: empty {name.capitalize()}")
            cells.append(cell)
        try:
            values = [float(cell) for cell in cells[1:]]
        except ValueError:
            bad = next(c for c in cells[1:] if not _is_number(c))
            raise InputError(f"CSV file {path}, line {line_number}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"CSV file {path}, line {line_number}: values must be finite numbers")
        dates.append(cells[0])
        rows.append(values)
    return _checked_series(f"csv:{path}", dates, rows, where=f"CSV file {path}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _checked_series(name: str, dates: list[str], rows: list[list[float]], where: str) -> PriceSeries:
    if not rows:
        raise InputError(f"{where}: no rows of data")
    try:
        parsed = np.array([np.datetime64(d[:10], "D") for d in dates])
    except ValueError:
        bad = next(d for d in dates if not _is_date(d))
        raise InputError(f"{where}: {bad!r} is not a date (YYYY-MM-DD)") from None
    steps = np.diff(parsed).astype(np.int64)
    if (steps == 0).any():
        raise InputError(f"{where}: duplicate date {parsed[1:][steps == 0][0]}")
    if (steps < 0).any():
        raise InputError(f"{where}: dates are not sorted (at {parsed[1:][steps < 0][0]})")
    values = np.asarray(rows, dtype=np.float64)
    if (values[:, :4] <= 0).any():
        raise InputError(f"{where}: prices must be positive")
    if (values[:, 4] < 0).any():
        raise InputError(f"{where}: volume must not be negative")
    if len(values) < SEQ_LEN + 1:
        raise InputError(f"{where}: {len(values)} rows; need at least {SEQ_LEN + 1} (one window and its next day)")
    return PriceSeries(name, parsed, values)


def _is_date(text: str) -> bool:
    try:
        np.datetime64(text[:10], "D")
    except ValueError:
        return False
    return True


def load_yahoo(ticker: str, start: date | None, end: date | None) -> PriceSeries:
    """Daily OHLCV from Yahoo Finance through yfinance (the optional `yahoo` extra; needs the network)."""
    try:
        import yfinance  # noqa: PLC0415 - optional extra, imported only when asked for
    except ImportError:
        raise InputError("source yahoo: needs the optional extra: pip install 'stockscale[yahoo]'") from None
    try:
        frame = yfinance.download(ticker, start=start, end=end, auto_adjust=True, progress=False)
    except Exception as error:  # yfinance raises many kinds; all mean "no data from Yahoo"
        raise InputError(f"source yahoo:{ticker}: download failed ({error.__class__.__name__})") from None
    if frame is None or frame.empty:
        raise InputError(f"source yahoo:{ticker}: no data (offline, or an unknown ticker)")
    if hasattr(frame.columns, "levels"):
        frame.columns = frame.columns.get_level_values(0)
    frame = frame.dropna()
    dates = [str(d)[:10] for d in frame.index]
    rows = frame[["Open", "High", "Low", "Close", "Volume"]].astype(float).values.tolist()
    return _checked_series(f"yahoo:{ticker}", dates, rows, where=f"yahoo:{ticker}")
