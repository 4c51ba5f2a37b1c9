"""Step 0 of the data path: price CSV files read strictly, before anything downstream sees a number.

Why so strict: a CSV is the one input a user hands stockscale whole, and every silent guess here trains a
model on the wrong prices and reports it as a result. So:

- only a regular file is opened, checked before any byte is read (a device such as /dev/zero would be read
  without end, a FIFO would block forever), and at most MAX_SOURCE_BYTES are read;
- column names match case-insensitively, and two columns that differ only in case (`Close`, `close`) are
  refused rather than one of them chosen;
- every row has the header's number of fields (a row with another delimiter is refused, not half-read);
- dates are ISO 8601 read whole (YYYY-MM-DD, optionally with a time): trailing garbage is an error;
- a field longer than the csv module's limit is one line, not its traceback;
- prices must be positive and at most MAX_PRICE, volumes non-negative and at most MAX_VOLUME: within these,
  log, log1p, the normalization and the dollar metrics (which square price errors) stay finite.

Every problem is one InputError naming the file, the line and what is wrong. The parsing is vectorized
(the csv module splits, numpy converts), so a 619,000-row long-format file loads in about a second.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stockscale.config import FEATURES
from stockscale.errors import InputError

# A source file larger than this is refused before it is read (the full S&P 500 history is about 250 MB).
MAX_SOURCE_BYTES = 512 * 1024 * 1024
# Prices above this (and volumes above MAX_VOLUME) are refused: squared dollar errors must stay finite.
MAX_PRICE = 1e12
MAX_VOLUME = 1e18
# Names a long-format file's ticker column may have (any case); exactly one of them may be present.
TICKER_COLUMNS = ("ticker", "symbol", "name")
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?)?"
_DATES = re.compile(rf"(?:{_DATE}\n)*{_DATE}")
_ONE_DATE = re.compile(_DATE)
_SHOWN = 40  # characters of a bad cell quoted in a message


def read_regular_file(path: Path, what: str = "CSV file", limit: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes: checked before any byte
    is read (stat, then fstat of the opened descriptor, opened non-blocking so a FIFO cannot hang the open)."""
    try:
        info = os.stat(path)
    except OSError:
        raise InputError(f"{what} {path} does not exist or is not a file") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path} is not a regular file (a folder, device or FIFO is never read)")
    if info.st_size > limit:
        raise InputError(f"{what} {path} is {info.st_size} bytes; at most {limit} are read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the stat and the open
            raise InputError(f"{what} {path} is not a regular file (a folder, device or FIFO is never read)")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} {path} grew past {limit} bytes while it was read")
    return data


@dataclass(frozen=True)
class PriceTable:
    """The rows of a price CSV, converted and checked: one entry per data row, in file order."""

    where: str  # "CSV file PATH", for messages
    lines: np.ndarray  # int64 line number of each row in the file
    dates: np.ndarray  # datetime64[D]
    values: np.ndarray  # float64 [N, 5] open, high, low, close, volume
    tickers: np.ndarray | None  # str per row, from the ticker column; None when the file has none

    def line(self, row: int) -> int:
        return int(self.lines[row])


def read_price_table(path: Path) -> PriceTable:
    """Read and check a price CSV (one ticker, or long format with a ticker column). See the module doc."""
    where = f"CSV file {path}"
    text = _decoded(read_regular_file(path), where)
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, [])
        columns = _columns(header, where)
        width = len(header)
        rows: list[list[str]] = []
        lines: list[int] = []
        for record in reader:
            if len(record) != width:
                if not any(cell.strip() for cell in record):
                    continue  # a blank line
                raise InputError(f"{where}, line {reader.line_num}: {len(record)} fields where the header has "
                                 f"{width} (mixed delimiters, or a broken row)")
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        problem = (f"a field is longer than {csv.field_size_limit()} characters" if "field limit" in str(error)
                   else f"not valid CSV ({error})")
        raise InputError(f"{where}, line {reader.line_num}: {problem}") from None
    if not rows:
        raise InputError(f"{where}: no rows of data")
    line_numbers = np.asarray(lines, dtype=np.int64)
    cells = list(zip(*rows, strict=True))
    dates = _dates(cells[columns["date"]], line_numbers, where)
    values = np.empty((len(rows), len(FEATURES)), dtype=np.float64)
    for index, name in enumerate(FEATURES):
        values[:, index] = _numbers(cells[columns[name]], name, line_numbers, where)
    _check_bounds(values, line_numbers, where)
    tickers = None
    if "ticker" in columns:
        tickers = np.char.upper(np.char.strip(np.asarray(cells[columns["ticker"]], dtype=str)))
        empty = np.flatnonzero(np.char.str_len(tickers) == 0)
        if len(empty):
            raise InputError(f"{where}, line {line_numbers[empty[0]]}: empty ticker")
    return PriceTable(where, line_numbers, dates, values, tickers)


def _decoded(raw: bytes, where: str) -> str:
    if not raw.strip():
        raise InputError(f"{where} is empty")
    if b"\x00" in raw[:4096]:
        raise InputError(f"{where} is a binary file, not CSV text")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark is accepted
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InputError(f"{where}, line {line}: not UTF-8 text") from None


def _columns(header: list[str], where: str) -> dict[str, int]:
    """Column index of date, the features and (when present) the ticker; names in any case, no duplicates."""
    names = [name.strip().lower() for name in header]
    if len(names) == 1:
        for delimiter, called in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if delimiter in names[0]:
                raise InputError(f"{where}, line 1: the columns are separated by {called}; stockscale reads "
                                 "comma-separated files")
    wanted = ("date", *FEATURES, *TICKER_COLUMNS)
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in wanted:
            if name in found:
                raise InputError(f"{where}, line 1: columns {header[found[name]].strip()!r} and "
                                 f"{header[index].strip()!r} differ only in case; which one to use is ambiguous")
            found[name] = index
    missing = [name.capitalize() for name in ("date", *FEATURES) if name not in found]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)}")
    ticker_names = [name for name in TICKER_COLUMNS if name in found]
    if len(ticker_names) > 1:
        raise InputError(f"{where}, line 1: both {' and '.join(n.capitalize() for n in ticker_names)} columns; "
                         "which one names the ticker is ambiguous")
    columns = {name: found[name] for name in ("date", *FEATURES)}
    if ticker_names:
        columns["ticker"] = found[ticker_names[0]]
    return columns


def _shown(cell: str) -> str:
    return repr(cell if len(cell) <= _SHOWN else cell[:_SHOWN] + "...")


def _dates(cells: tuple[str, ...], lines: np.ndarray, where: str) -> np.ndarray:
    """ISO 8601 dates, read whole: one regular expression over all of them, then numpy's strict parser."""
    stripped = [cell.strip() for cell in cells]
    if _DATES.fullmatch("\n".join(stripped)) is None:
        row = next(i for i, cell in enumerate(stripped) if _ONE_DATE.fullmatch(cell) is None)
        problem = "empty Date" if not stripped[row] else f"{_shown(stripped[row])} is not a date"
        raise InputError(f"{where}, line {lines[row]}: {problem} (ISO 8601: YYYY-MM-DD, optionally with a time)")
    try:
        return np.array(stripped, dtype="datetime64[s]").astype("datetime64[D]")
    except ValueError:
        for row, cell in enumerate(stripped):
            try:
                np.datetime64(cell, "s")
            except ValueError:
                raise InputError(f"{where}, line {lines[row]}: {_shown(cell)} is not a calendar date") from None
        raise


def _numbers(cells: tuple[str, ...], name: str, lines: np.ndarray, where: str) -> np.ndarray:
    """A column as float64, finite; the first bad cell is named with its line."""
    try:
        numbers = np.asarray(cells, dtype=str).astype(np.float64)
    except ValueError:
        numbers = np.empty(len(cells), dtype=np.float64)
        for row, cell in enumerate(cells):
            if not cell.strip():
                raise InputError(f"{where}, line {lines[row]}: empty {name.capitalize()}") from None
            try:
                numbers[row] = float(cell)
            except ValueError:
                raise InputError(f"{where}, line {lines[row]}: {_shown(cell.strip())} is not a number "
                                 f"({name.capitalize()})") from None
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        raise InputError(f"{where}, line {lines[bad[0]]}: {name.capitalize()} {cells[bad[0]].strip()!r} is not "
                         "a finite number; values must be finite numbers")
    return numbers


def _check_bounds(values: np.ndarray, lines: np.ndarray, where: str) -> None:
    """Prices in (0, MAX_PRICE], volumes in [0, MAX_VOLUME]: the first row outside is named."""
    for bad, problem in (
        ((values[:, :4] <= 0).any(axis=1), "prices must be positive"),
        ((values[:, :4] > MAX_PRICE).any(axis=1), f"a price above {MAX_PRICE:g} (its squared errors overflow)"),
        (values[:, 4] < 0, "volume must not be negative"),
        (values[:, 4] > MAX_VOLUME, f"a volume above {MAX_VOLUME:g}"),
    ):
        rows = np.flatnonzero(bad)
        if len(rows):
            raise InputError(f"{where}, line {lines[rows[0]]}: {problem}")
