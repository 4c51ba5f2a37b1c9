"""Where daily prices come from: the bundled sample data, a CSV file, or Yahoo Finance (optional extra).

Every source yields a `PriceSeries`: sorted unique dates and float64 OHLCV, validated, so the rest of the
pipeline never sees a gap, a duplicate or a non-number. Nothing is downloaded unless `yahoo:` is asked for.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import stat
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np

from stockscale.config import SEQ_LEN
from stockscale.data.csv_prices import TICKER_COLUMNS, read_price_table
from stockscale.errors import InputError

BUNDLED_TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")
DEFAULT_YEARS = 5


@dataclass(frozen=True)
class PriceSeries:
    """Daily OHLCV of one instrument: `dates` (datetime64[D], strictly increasing), `values` float64 [T, 5]."""

    name: str
    dates: np.ndarray
    values: np.ndarray
    ticker: str = ""  # set for one ticker of a several-ticker source (data.sources.load_panel)

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def close(self) -> np.ndarray:
        return self.values[:, 3]

    def between(self, start: date | None, end: date | None) -> PriceSeries:
        if start is None and end is None:
            return self
        keep = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            keep &= self.dates >= np.datetime64(start, "D")
        if end is not None:
            keep &= self.dates <= np.datetime64(end, "D")
        return PriceSeries(self.name, self.dates[keep], self.values[keep], self.ticker)


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
        raise InputError(f"source {spec!r} is not bundled:TICKER, csv:PATH or yahoo:TICKER (several tickers: "
                         "bundled:A,B, bundled:all, a long-format csv:PATH, csv-dir:DIR)")
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
    """A CSV with columns Date, Open, High, Low, Close, Volume (any order and case; others ignored), read
    strictly (data.csv_prices). A long-format file (a ticker column) is accepted when it holds one ticker."""
    table = read_price_table(path)
    if table.tickers is not None and len(held := np.unique(table.tickers)) > 1:
        raise InputError(f"{table.where} holds {len(held)} tickers ({_listed(held)}); pick one with --tickers")
    _check_order(table.dates, table.lines, table.where)
    return _checked_series(f"csv:{path}", table.dates, table.values, where=table.where)


def _listed(tickers: np.ndarray | list[str], most: int = 5) -> str:
    names = [str(t) for t in tickers]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_order(dates: np.ndarray, lines: np.ndarray, where: str) -> None:
    """A one-ticker file's dates strictly increase: a repeated or earlier date is named with its line."""
    steps = np.diff(dates).astype(np.int64)
    for bad, problem in ((steps == 0, "duplicate date"), (steps < 0, "dates are not sorted (at")):
        rows = np.flatnonzero(bad)
        if len(rows):
            closing = ")" if problem.endswith("(at") else ""
            raise InputError(f"{where}, line {lines[rows[0] + 1]}: {problem} {dates[rows[0] + 1]}{closing}")


def _checked_series(name: str, dates: list[str] | np.ndarray, rows: list[list[float]] | np.ndarray,
                    where: str) -> PriceSeries:
    if not len(rows):
        raise InputError(f"{where}: no rows of data")
    parsed = _parsed_dates(dates, where)
    steps = np.diff(parsed).astype(np.int64)
    if (steps == 0).any():
        raise InputError(f"{where}: duplicate date {parsed[1:][steps == 0][0]}")
    if (steps < 0).any():
        raise InputError(f"{where}: dates are not sorted (at {parsed[1:][steps < 0][0]})")
    values = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{where}: values must be finite numbers")
    if (values[:, :4] <= 0).any():
        raise InputError(f"{where}: prices must be positive")
    if (values[:, 4] < 0).any():
        raise InputError(f"{where}: volume must not be negative")
    if len(values) < SEQ_LEN + 1:
        raise InputError(f"{where}: {len(values)} rows; need at least {SEQ_LEN + 1} (one window and its next day)")
    return PriceSeries(name, parsed, values)


def _parsed_dates(dates: list[str] | np.ndarray, where: str) -> np.ndarray:
    if isinstance(dates, np.ndarray) and np.issubdtype(dates.dtype, np.datetime64):
        return dates.astype("datetime64[D]")
    try:
        return np.array([np.datetime64(d[:10], "D") for d in dates])
    except ValueError:
        bad = next(d for d in dates if not _is_date(d))
        raise InputError(f"{where}: {bad!r} is not a date (YYYY-MM-DD)") from None


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


# ------------------------------------------------------------------------------------ several tickers


# What --tickers picks: these tickers, in this order; the first N of the source's (sorted); or all (None).
TickerPick = tuple[str, ...] | int | None


def parse_tickers(text: str | None) -> TickerPick:
    """`A,B,...` -> ("A", "B", ...), upper case, each once; a number N alone -> N (the source's first N
    tickers, the size `scale-test --tickers 500` asks for); None stays None (every ticker of the source)."""
    if text is None:
        return None
    if text.strip().isdigit():
        count = int(text)
        if count < 1:
            raise InputError(f"tickers {text!r}: a ticker count must be at least 1")
        return count
    tickers = tuple(dict.fromkeys(t.strip().upper() for t in text.split(",")))
    if not tickers or any(not t for t in tickers):
        raise InputError(f"tickers {text!r}: give comma-separated ticker names, e.g. AAPL,MSFT")
    return tickers


def is_pooled(spec: str, tickers: TickerPick) -> bool:
    """Whether `spec` (with `--tickers`) means one pooled model over tickers rather than today's single series:
    bundled:A,B or bundled:all, csv-dir:DIR, a CSV with a ticker column, or any source with --tickers."""
    kind, _, rest = spec.partition(":")
    if tickers is not None or kind == "csv-dir":
        return True
    if kind == "bundled":
        return "," in rest or rest.lower() == "all"
    if kind == "csv":
        return has_ticker_column(Path(rest))
    return False


def load_panel(spec: str, tickers: TickerPick = None, start: date | None = None,
               end: date | None = None) -> list[PriceSeries]:
    """Every ticker of a source (or those in `tickers`, in that order), each checked and narrowed to
    [start, end] (bundled data: its last five years unless a range is given). A ticker asked for that the
    source lacks is an error; tickers too short for a window are kept here (data.windows skips and names them).
    """
    kind, _, rest = spec.partition(":")
    if kind == "bundled":
        held = BUNDLED_TICKERS if rest.lower() == "all" else \
            tuple(dict.fromkeys(t.strip().upper() for t in rest.split(",")))
        series = [load_bundled(t) for t in _picked(tickers, held, "bundled data")]
        if start is None and end is None:
            start = _years_before(max(s.dates[-1] for s in series), DEFAULT_YEARS)
        panel = [PriceSeries(s.name, s.dates, s.values, s.name.partition(":")[2]) for s in series]
    elif kind == "csv":
        panel = _csv_panel(Path(rest), tickers)
    elif kind == "csv-dir":
        panel = _csv_dir_panel(Path(rest), tickers)
    elif kind == "yahoo":
        _picked(tickers, (rest.upper(),), f"source {spec}")
        one = load_yahoo(rest, start, end)
        panel = [PriceSeries(one.name, one.dates, one.values, rest.upper())]
    else:
        raise InputError(f"source {spec!r} is not bundled:TICKER, csv:PATH, csv-dir:DIR or yahoo:TICKER")
    return [s.between(start, end) for s in panel]


def _picked(wanted: TickerPick, held: tuple[str, ...] | list[str], where: str) -> list[str]:
    """The tickers `wanted` names among those a source holds; one asked for that it lacks is an error."""
    if wanted is None:
        return list(held)
    if isinstance(wanted, int):
        if wanted > len(held):
            raise InputError(f"{where} holds {len(held)} ticker(s); {wanted} were asked for")
        return sorted(held)[:wanted]
    missing = [t for t in wanted if t not in set(held)]
    if missing:
        raise InputError(f"{where} has no ticker {_listed(missing)} (it holds {_listed(list(held))})")
    return list(wanted)


def is_synthetic(spec: str) -> bool:
    """Whether a CSV source was written by `stockscale data synth` (its marker file lies beside it), so that
    everything reporting on it says "synthetic" and it is never shown as real data."""
    kind, _, rest = spec.partition(":")
    return kind == "csv" and synthetic_marker(Path(rest)).is_file()


def synthetic_marker(path: Path) -> Path:
    return path.with_name(path.name + ".synthetic.json")


def has_ticker_column(path: Path) -> bool:
    """Whether a CSV's header names a ticker column (read from its first line; a missing file says no)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # never opened (a FIFO would block the open): read_price_table refuses it in one line
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return False
            first = handle.readline(1 << 16)
    except OSError:
        return False
    names = {name.strip().lower() for name in first.decode("utf-8-sig", "replace").split(",")}
    return bool(names & set(TICKER_COLUMNS))


def _csv_panel(path: Path, tickers: TickerPick) -> list[PriceSeries]:
    """A long-format CSV (a ticker column, rows in any order) split into one checked series per ticker."""
    table = read_price_table(path)
    if table.tickers is None:
        ticker = path.stem.upper()
        _picked(tickers, (ticker,), table.where)
        _check_order(table.dates, table.lines, table.where)
        return [PriceSeries(f"csv:{path}", table.dates, table.values, ticker)]
    assert table.ticker_codes is not None
    order = np.lexsort((table.dates.astype(np.int64), table.ticker_codes))
    starts = np.searchsorted(table.ticker_codes[order], np.arange(len(table.ticker_names) + 1))
    held = list(table.ticker_names)
    bounds = {ticker: (starts[i], starts[i + 1]) for i, ticker in enumerate(held)}
    panel = []
    for ticker in _picked(tickers, held, table.where):
        rows = order[bounds[ticker][0] : bounds[ticker][1]]
        dates = table.dates[rows]
        same = np.flatnonzero(np.diff(dates).astype(np.int64) == 0)
        if len(same):
            first, second = sorted((table.line(rows[same[0]]), table.line(rows[same[0] + 1])))
            raise InputError(f"{table.where}, line {second}: duplicate row for {ticker} on {dates[same[0]]} "
                             f"(also line {first})")
        panel.append(PriceSeries(f"csv:{path}", dates, table.values[rows], ticker))
    return panel


def _csv_dir_panel(folder: Path, tickers: TickerPick) -> list[PriceSeries]:
    """One CSV per ticker in a folder, the ticker from the file name (aapl.csv -> AAPL)."""
    if not folder.is_dir():
        raise InputError(f"CSV folder {folder} does not exist or is not a folder")
    files = {path.stem.upper(): path for path in sorted(folder.iterdir()) if path.suffix.lower() == ".csv"}
    if not files:
        raise InputError(f"CSV folder {folder} holds no .csv files")
    panel = []
    for ticker in _picked(tickers, sorted(files), f"CSV folder {folder}"):
        table = read_price_table(files[ticker])
        _check_order(table.dates, table.lines, table.where)
        panel.append(PriceSeries(f"csv-dir:{folder}", table.dates, table.values, ticker))
    return panel
