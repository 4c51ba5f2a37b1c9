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
# A cell of a column that is read (date, prices, volume, ticker) is at most this long; lines longer than
# MAX_PLAIN_LINE are left to the csv module, which bounds a field at its field_size_limit.
MAX_CELL = 64
MAX_PLAIN_LINE = 4096


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
    ticker_names: tuple[str, ...] = ()  # the distinct tickers, sorted
    ticker_codes: np.ndarray | None = None  # int64 per row: its ticker's index in ticker_names

    def line(self, row: int) -> int:
        return int(self.lines[row])


def read_price_table(path: Path) -> PriceTable:
    """Read and check a price CSV (one ticker, or long format with a ticker column). See the module doc."""
    where = f"CSV file {path}"
    raw = read_regular_file(path)
    header_line = _decoded(raw.partition(b"\n")[0], where).rstrip("\r")  # the rest: by the path that reads it
    try:
        header = next(csv.reader([header_line], strict=True), [])
    except csv.Error as error:
        raise InputError(f"{where}, line 1: {_csv_problem(error)}") from None
    columns = _columns(header, where)
    table = _read_plain(raw, columns, len(header)) or _read_any(_decoded(raw, where), columns, len(header), where)
    if not len(table.lines):
        raise InputError(f"{where}: no rows of data")
    for name, (distinct, codes) in table.strings.items():
        _check_cell_lengths(distinct, codes, name, table.lines, where)
    dates = _dates(*table.strings["date"], table.lines, where)
    values = np.empty((len(table.lines), len(FEATURES)), dtype=np.float64)
    for index, name in enumerate(FEATURES):
        values[:, index] = _numbers(table.numbers[name], name, table.lines, where)
    _check_bounds(values, table.lines, where)
    if "ticker" not in columns:
        return PriceTable(where, table.lines, dates, values, None)
    names, codes = _tickers(*table.strings["ticker"], table.lines, where)
    return PriceTable(where, table.lines, dates, values, np.asarray(names)[codes], names, codes)


@dataclass
class _Split:
    """A file's columns that are read: text columns as (distinct values, each row's index into them), number
    columns as float64 (the fast path) or their cells (the csv module's path, converted with messages)."""

    lines: np.ndarray
    strings: dict[str, tuple[list[str], np.ndarray]]
    numbers: dict[str, np.ndarray | list[str]]


def _csv_problem(error: csv.Error) -> str:
    if "field limit" in str(error):
        return f"a field is longer than {csv.field_size_limit()} characters"
    return f"not valid CSV ({error})"


def _read_plain(raw: bytes, columns: dict[str, int], width: int) -> _Split | None:
    """A plain file's columns, parsed by pandas' C reader (pandas comes with bokeh-sampledata), or None when
    the file is anything but plain or pandas refuses or doubts a cell: then the csv module's path reads it and
    names the problem. Plain: no quotes or carriage returns, no blank or over-long line, every line `width`
    fields (counted here, because pandas silently pads a short row and drops a first row's extra field)."""
    if b'"' in raw or b"\r" in raw:
        return None
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if not len(ends) or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    starts = np.concatenate([[0], ends[:-1] + 1])
    if len(ends) < 2 or (ends - starts == 0).any() or (ends - starts).max() > MAX_PLAIN_LINE:
        return None
    commas = np.diff(np.searchsorted(np.flatnonzero(data == ord(",")), np.concatenate([[0], ends])))
    if (commas != width - 1).any():
        return None
    try:
        import pandas  # noqa: PLC0415 - a large import, needed only here

        wanted = {index: ("category" if name in ("date", "ticker") else np.float64)
                  for name, index in columns.items()}
        frame = pandas.read_csv(io.BytesIO(raw), header=None, skiprows=1, names=list(range(width)),
                                usecols=sorted(wanted), dtype=wanted, na_filter=False, skip_blank_lines=False,
                                index_col=False, engine="c")
    except Exception:  # noqa: BLE001 - pandas raises many kinds; every one means "let the csv module say why"
        return None
    if len(frame) != len(ends) - 1:
        return None
    strings: dict[str, tuple[list[str], np.ndarray]] = {}
    for name in ("date", "ticker"):
        if name in columns:
            column = frame[columns[name]]
            distinct = [str(value) for value in column.cat.categories]
            strings[name] = distinct, column.cat.codes.to_numpy(dtype=np.int64)
    numbers = {name: frame[columns[name]].to_numpy(dtype=np.float64) for name in FEATURES}
    return _Split(np.arange(2, len(frame) + 2, dtype=np.int64), strings, numbers)


def _read_any(text: str, columns: dict[str, int], width: int, where: str) -> _Split:
    """Any CSV, read by the csv module: blank lines skipped, every other row `width` fields."""
    reader = csv.reader(io.StringIO(text), strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        next(reader)
        for record in reader:
            if len(record) != width:
                if not any(cell.strip() for cell in record):
                    continue  # a blank line
                raise InputError(f"{where}, line {reader.line_num}: {len(record)} fields where the header has "
                                 f"{width} (mixed delimiters, or a broken row)")
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise InputError(f"{where}, line {reader.line_num}: {_csv_problem(error)}") from None
    cells = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
    line_numbers = np.asarray(lines, dtype=np.int64)
    for name in FEATURES:
        _check_cell_lengths(cells[columns[name]], None, name, line_numbers, where)
    strings: dict[str, tuple[list[str], np.ndarray]] = {}
    for name in ("date", "ticker"):
        if name in columns:
            column = cells[columns[name]]
            position = {cell: index for index, cell in enumerate(dict.fromkeys(column))}
            strings[name] = list(position), np.fromiter(map(position.__getitem__, column), dtype=np.int64,
                                                        count=len(column))
    return _Split(line_numbers, strings, {name: cells[columns[name]] for name in FEATURES})


def _check_cell_lengths(values: list[str], codes: np.ndarray | None, name: str, lines: np.ndarray,
                        where: str) -> None:
    """No cell of a column that is read longer than MAX_CELL: a long cell is never a date, number or ticker,
    and converting a column holds every cell at the longest one's size. `codes` maps rows to `values`."""
    if values and max(map(len, values)) > MAX_CELL:
        bad = next(i for i, cell in enumerate(values) if len(cell) > MAX_CELL)
        row = bad if codes is None else int(np.flatnonzero(codes == bad)[0])
        raise InputError(f"{where}, line {lines[row]}: a {name.capitalize()} cell of {len(values[bad])} "
                         f"characters (at most {MAX_CELL})")


def _first_row(codes: np.ndarray, value: int) -> int:
    return int(np.flatnonzero(codes == value)[0])


def _tickers(distinct: list[str], codes: np.ndarray, lines: np.ndarray,
             where: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The ticker column, stripped and upper case (each distinct value cleaned once): the sorted distinct
    tickers and each row's index into them."""
    cleaned = [value.strip().upper() for value in distinct]
    if "" in cleaned:
        raise InputError(f"{where}, line {lines[_first_row(codes, cleaned.index(''))]}: empty ticker")
    names = tuple(sorted(set(cleaned)))
    index = {name: position for position, name in enumerate(names)}
    return names, np.asarray([index[name] for name in cleaned], dtype=np.int64)[codes]


def _decoded(raw: bytes, where: str) -> str:
    if not raw or raw.isspace():
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


def _dates(distinct: list[str], codes: np.ndarray, lines: np.ndarray, where: str) -> np.ndarray:
    """ISO 8601 dates, read whole: each distinct value checked by one regular expression, then parsed by numpy's
    strict parser (a long-format file repeats each date once per ticker, so this parses each once)."""
    stripped = [cell.strip() for cell in distinct]
    if _DATES.fullmatch("\n".join(stripped)) is None:
        bad = next(i for i, cell in enumerate(stripped) if _ONE_DATE.fullmatch(cell) is None)
        problem = "empty Date" if not stripped[bad] else f"{_shown(stripped[bad])} is not a date"
        raise InputError(f"{where}, line {lines[_first_row(codes, bad)]}: {problem} (ISO 8601: YYYY-MM-DD, "
                         "optionally with a time)")
    try:
        parsed = np.array(stripped, dtype="datetime64[s]").astype("datetime64[D]")
    except ValueError:
        for index, cell in enumerate(stripped):
            try:
                np.datetime64(cell, "s")
            except ValueError:
                raise InputError(f"{where}, line {lines[_first_row(codes, index)]}: {_shown(cell)} is not a "
                                 "calendar date") from None
        raise
    return parsed[codes]


def _numbers(cells: np.ndarray | list[str], name: str, lines: np.ndarray, where: str) -> np.ndarray:
    """A column as float64, finite; the first bad cell is named with its line."""
    if isinstance(cells, np.ndarray):
        numbers = cells
    else:
        try:
            numbers = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
        except ValueError:
            for row, cell in enumerate(cells):
                if not cell.strip():
                    raise InputError(f"{where}, line {lines[row]}: empty {name.capitalize()}") from None
                try:
                    float(cell)
                except ValueError:
                    raise InputError(f"{where}, line {lines[row]}: {_shown(cell.strip())} is not a number "
                                     f"({name.capitalize()})") from None
            raise
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        raise InputError(f"{where}, line {lines[bad[0]]}: {name.capitalize()} {numbers[bad[0]]!r} is not "
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
