"""Hostile CSVs: every one is refused with one line naming the file, the line and the problem (exit 2 from the
CLI), or read correctly; nothing that is not a regular file is ever read."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stockscale.data.csv_prices import read_regular_file
from stockscale.data.series_cache import load_series
from stockscale.data.sources import load_csv
from stockscale.errors import InputError
from tests.conftest import write_csv


def _edited(tmp_path: Path, edit, name: str = "hostile.csv") -> Path:
    """A good 200-row CSV, its lines passed through `edit` (a list of lines -> a list of lines)."""
    lines = write_csv(tmp_path / "good.csv").read_text().splitlines()
    path = tmp_path / name
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def _cell(index: int, column: int, value: str):
    """An edit for _edited: line `index` (0 is the header) with cell `column` replaced by `value`."""
    def edit(lines):
        cells = lines[index].split(",")
        cells[column] = value
        lines[index] = ",".join(cells)
        return lines
    return edit


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(InputError) as error:
        load_csv(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_two_columns_that_differ_only_in_case_are_refused(tmp_path):
    path = _edited(tmp_path, lambda lines: [lines[0] + ",close"] + [line + ",1.0" for line in lines[1:]])
    _refused(path, "line 1", "'Close' and 'close'", "ambiguous")


def test_a_date_with_trailing_garbage_is_refused(tmp_path):
    def edit(lines):
        lines[5] = lines[5].replace(",", "xyz,", 1)
        return lines
    _refused(_edited(tmp_path, edit), "line 6", "is not a date", "ISO 8601")


def test_iso_dates_with_a_time_are_read(tmp_path):
    path = _edited(tmp_path, lambda lines: [lines[0]] + [line.replace(",", "T00:00:00,", 1) for line in lines[1:]])
    series = load_csv(path)
    assert len(series) == 200 and str(series.dates[0]) == "2010-01-04"


def test_an_impossible_calendar_date_is_refused(tmp_path):
    def edit(lines):
        lines[3] = "2010-02-30" + lines[3][10:]
        return lines
    _refused(_edited(tmp_path, edit), "line 4", "'2010-02-30'")


def test_prices_near_the_float_limit_are_refused_before_training(tmp_path):
    _refused(_edited(tmp_path, _cell(10, 4, "1e308")), "line 11", "above 1e+12")


def test_a_non_finite_value_names_its_line(tmp_path):
    _refused(_edited(tmp_path, _cell(7, 5, "inf")), "line 8", "Volume", "finite")


def test_a_huge_field_is_one_line_not_the_csv_modules_traceback(tmp_path):
    def edit(lines):
        lines[2] = lines[2] + "," + '"' + "x" * 200_000 + '"'
        return lines
    message = _refused(_edited(tmp_path, edit), "line 3", "longer than")
    assert len(message) < 300


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = write_csv(tmp_path / "bom.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_csv(path)) == 200


def test_a_row_with_another_delimiter_is_refused(tmp_path):
    def edit(lines):
        lines[4] = lines[4].replace(",", ";")
        return lines
    _refused(_edited(tmp_path, edit), "line 5", "1 fields where the header has 6", "mixed delimiters")


def test_a_semicolon_separated_file_is_named_as_such(tmp_path):
    path = _edited(tmp_path, lambda lines: [line.replace(",", ";") for line in lines])
    _refused(path, "line 1", "semicolons")


def test_a_long_cell_under_the_csv_limit_is_refused_before_it_is_converted(tmp_path):
    message = _refused(_edited(tmp_path, _cell(9, 2, "y" * 5000)), "line 10",
                       "a High cell of 5000 characters (at most 64)")
    assert len(message) < 300


def test_bad_cells_are_quoted_short(tmp_path):
    message = _refused(_edited(tmp_path, _cell(9, 2, "y" * 60)), "line 10", "is not a number")
    assert "y" * 40 + "..." in message and "y" * 41 not in message


def test_quoted_cells_crlf_and_blank_lines_take_the_csv_modules_path(tmp_path):
    def edit(lines):
        cells = lines[3].split(",")
        cells[1] = f'"{cells[1]}"'
        lines[3] = ",".join(cells)
        return [lines[0], "", *lines[1:]]
    path = _edited(tmp_path, edit)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    series = load_csv(path)
    assert len(series) == 200 and str(series.dates[0]) == "2010-01-04"


def _address_space(gib: int):
    """A child's preexec: at most `gib` GiB of address space, so a regression that reads a device whole
    fails in that child instead of filling the shared machine's memory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
    return limit


def _run_bounded(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_address_space(2))


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_source_that_is_not_a_regular_file_is_refused_before_a_byte_is_read(tmp_path, kind):
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "prices.csv", "folder": tmp_path / "dir.csv"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    # The series cache hashes a source's bytes before parsing it: it must refuse first (a FIFO blocked here,
    # /dev/zero filled the machine's memory).
    code = ("from pathlib import Path; from stockscale.data.series_cache import load_series\n"
            "from stockscale.errors import InputError\n"
            f"try:\n    load_series('csv:{path}', None, None, Path({str(tmp_path / 'cache')!r}))\n"
            "except InputError as error:\n    print(error)\n")
    done = _run_bounded(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "is not a regular file" in done.stdout and str(path) in done.stdout
    with pytest.raises(InputError, match="not a regular file"):
        read_regular_file(path)


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_the_cli_refuses_a_device_or_fifo_with_one_line_and_exit_2(tmp_path, kind):
    path = Path("/dev/zero") if kind == "device" else tmp_path / "prices.csv"
    if kind == "fifo":
        os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "stockscale", "train", "--source", f"csv:{path}",
                           "--epochs", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120, preexec_fn=_address_space(8))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and f"{path} is not a regular file" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(InputError, match="2048 bytes; at most 1024"):
        read_regular_file(path, limit=1024)


def test_the_series_cache_still_serves_a_regular_csv(tmp_path):
    path = write_csv(tmp_path / "p.csv")
    first = load_series(f"csv:{path}", None, None, tmp_path / "cache")
    again = load_series(f"csv:{path}", None, None, tmp_path / "cache")
    assert len(first) == len(again) == 200


def test_the_fast_reader_and_the_csv_modules_reader_give_the_same_table(tmp_path, monkeypatch):
    from stockscale.data import csv_prices
    from stockscale.data.synthetic import write_synthetic_csv

    path = write_synthetic_csv(tmp_path / "syn.csv", tickers=5, days=300)
    fast = csv_prices.read_price_table(path)
    monkeypatch.setattr(csv_prices, "_read_plain", lambda *args: None)
    slow = csv_prices.read_price_table(path)
    for name in ("lines", "dates", "values", "tickers", "ticker_codes"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert fast.ticker_names == slow.ticker_names == tuple(f"SYN000{i}" for i in range(1, 6))
