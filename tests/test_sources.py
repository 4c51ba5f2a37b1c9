"""Price sources: the bundled AAPL data is split-adjusted and offline; CSVs are read strictly."""

from datetime import date

import numpy as np
import pytest

from stockscale.data.sources import load_bundled, load_csv, load_source
from stockscale.errors import InputError
from tests.conftest import write_csv


def test_bundled_aapl_is_adjusted_for_its_splits():
    series = load_bundled("AAPL")
    assert str(series.dates[0]) == "2000-03-01" and str(series.dates[-1]) == "2013-03-01"
    # Unadjusted, the 2:1 splits (June 2000, February 2005) are overnight drops of log(2) = 0.69.
    for first, last in (("2000-06-19", "2000-06-23"), ("2005-02-24", "2005-03-02")):
        days = (series.dates >= np.datetime64(first)) & (series.dates <= np.datetime64(last))
        assert np.abs(np.diff(np.log(series.values[days, :4]), axis=0)).max() < 0.1
    # Volume is scaled by the inverse ratio: dollar volume is what it was (first row: 130.31 x 9,616,100).
    assert series.values[0, 3] * series.values[0, 4] == pytest.approx(130.31 * 9616100)
    assert series.values[0, 3] == pytest.approx(4.186662803811)


def test_default_range_is_the_last_five_years():
    series = load_source("bundled:AAPL")
    assert str(series.dates[0]) >= "2008-03-01"
    assert str(series.dates[-1]) == "2013-03-01"
    assert 1240 <= len(series) <= 1270


@pytest.mark.parametrize("ticker", ["MSFT", "IBM", "GOOG"])
def test_other_bundled_tickers(ticker):
    assert len(load_source(f"bundled:{ticker}")) > 1000


def test_start_and_end_narrow_a_source():
    series = load_source("bundled:IBM", date(2010, 1, 1), date(2010, 12, 31))
    assert str(series.dates[0]).startswith("2010-01") and str(series.dates[-1]).startswith("2010-12")


def test_csv_columns_in_any_order_and_case_with_extras(tmp_path):
    path = write_csv(tmp_path / "p.csv", header="volume,CLOSE,Ticker,date,Low,high,Adj Close,OPEN")
    series = load_csv(path)
    assert len(series) == 200
    assert np.all(series.values[:, 1] >= series.values[:, 2])  # high >= low: columns were matched by name


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("Date,Open,High,Low,Close\n2010-01-04,1,1,1,1\n", ["missing column", "Volume"]),
        ("Date,Open,High,Low,Close,Volume\n2010-01-04,1,1,abc,1,5\n", ["line 2", "abc", "not a number"]),
        ("Date,Open,High,Low,Close,Volume\n2010-01-04,1,1,,1,5\n", ["line 2", "empty Low"]),
        ("", ["empty"]),
    ],
)
def test_bad_csv_is_refused_with_the_problem_named(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError) as error:
        load_csv(path)
    for word in words:
        assert word.lower() in str(error.value).lower()


def test_duplicate_unsorted_and_short_csvs(tmp_path):
    good = write_csv(tmp_path / "g.csv", rows=70).read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([good[0], good[1], good[1], *good[2:]]) + "\n")
    (tmp_path / "unsorted.csv").write_text("\n".join([good[0], good[2], good[1], *good[3:]]) + "\n")
    (tmp_path / "short.csv").write_text("\n".join(good[:40]) + "\n")
    for name, word in (("dup.csv", "duplicate date"), ("unsorted.csv", "not sorted"), ("short.csv", "need at least")):
        with pytest.raises(InputError, match=word):
            load_csv(tmp_path / name)


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02PK\x03")
    with pytest.raises(InputError, match="binary"):
        load_csv(tmp_path / "bin.csv")
    with pytest.raises(InputError, match="does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_yahoo_without_the_extra_is_a_clear_error():
    pytest.importorskip("pytest")
    try:
        import yfinance  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="stockscale\\[yahoo\\]"):
            load_source("yahoo:AAPL")
    else:
        pytest.skip("yfinance is installed; the offline failure is covered by its own message")
