"""Many tickers: bundled lists, long-format CSVs and CSV folders, --tickers, and one pooled model over them
(windows never cross tickers or the calendar's split dates; each ticker normalized on its own training days)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stockscale.config import SEQ_LEN, TrainConfig
from stockscale.data.dataset import open_training_data, prepare_from_config
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.replicas import ReplicaSpec
from stockscale.data.sources import load_panel, parse_tickers
from stockscale.data.synthetic import synthetic_prices, write_synthetic_csv
from stockscale.data.windows import UNIT_STATS, make_features, prepare_pooled, sliding
from stockscale.errors import InputError
from stockscale.train import train


def _long_csv(path: Path, tickers: int = 3, days: int = 500, header: str = "date,open,high,low,close,volume,Name",
              by_date: bool = False) -> Path:
    """A long-format CSV of synthetic prices with the given header order; rows by ticker, or by date."""
    dates, names, values = synthetic_prices(tickers, days, seed=1)
    columns = [c.strip().lower() for c in header.split(",")]
    rows = [(t, d) for d in range(days) for t in range(tickers)] if by_date else \
        [(t, d) for t in range(tickers) for d in range(days)]
    lines = [header]
    for t, d in rows:
        cell = dict(zip(("open", "high", "low", "close", "volume"), values[t, d].tolist(), strict=True))
        cell.update(date=str(dates[d]), name=names[t], symbol=names[t], ticker=names[t])
        lines.append(",".join(str(cell[c]) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ sources


def test_bundled_lists_and_all():
    two = load_panel("bundled:AAPL,msft,aapl")
    assert [s.ticker for s in two] == ["AAPL", "MSFT"]
    assert [s.ticker for s in load_panel("bundled:all")] == ["AAPL", "GOOG", "IBM", "MSFT"]
    assert all(str(s.dates[-1]) <= "2013-03-01" and len(s) > 1000 for s in two)


@pytest.mark.parametrize("header", ["date,open,high,low,close,volume,Name", "SYMBOL,Close,Date,volume,LOW,high,open",
                                    "Ticker,date,open,high,low,close,volume"])
def test_long_csv_with_any_ticker_column_name_and_order(tmp_path, header):
    panel = load_panel(f"csv:{_long_csv(tmp_path / 'long.csv', header=header, by_date=True)}")
    _, names, values = synthetic_prices(3, 500, seed=1)
    assert [s.ticker for s in panel] == names
    for series, expected in zip(panel, values, strict=True):
        assert np.allclose(series.values, expected) and (np.diff(series.dates.astype(np.int64)) > 0).all()


def test_csv_folder_one_file_per_ticker(tmp_path):
    folder = tmp_path / "prices"
    folder.mkdir()
    for name in ("aapl", "MSFT"):
        lines = _long_csv(tmp_path / "one.csv", tickers=1).read_text().splitlines()
        (folder / f"{name}.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert [s.ticker for s in load_panel(f"csv-dir:{folder}")] == ["AAPL", "MSFT"]
    assert [s.ticker for s in load_panel(f"csv-dir:{folder}", ("MSFT",))] == ["MSFT"]


def test_tickers_pick_by_name_or_count(tmp_path):
    path = _long_csv(tmp_path / "long.csv", tickers=4)
    assert [s.ticker for s in load_panel(f"csv:{path}", parse_tickers("syn0003, SYN0001"))] == ["SYN0003", "SYN0001"]
    assert [s.ticker for s in load_panel(f"csv:{path}", parse_tickers("2"))] == ["SYN0001", "SYN0002"]


def _refused(spec: str, *words: str, tickers=None) -> None:
    with pytest.raises(InputError) as error:
        load_panel(spec, tickers)
    assert "\n" not in str(error.value)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_bad_many_ticker_input_is_one_line_naming_file_row_and_problem(tmp_path):
    path = _long_csv(tmp_path / "long.csv")
    _refused(f"csv:{path}", "has no ticker NOPE", tickers=("NOPE",))
    _refused(f"csv:{path}", "holds 3 ticker(s); 9 were asked for", tickers=9)
    lines = path.read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([*lines, lines[5]]) + "\n")
    _refused(f"csv:{tmp_path / 'dup.csv'}", "line 1502", "duplicate row for SYN0001", "also line 6")
    bad = lines.copy()
    bad[7] = bad[7].replace(bad[7].split(",")[4], "-3", 1)
    (tmp_path / "neg.csv").write_text("\n".join(bad) + "\n")
    _refused(f"csv:{tmp_path / 'neg.csv'}", "neg.csv, line 8", "prices must be positive")
    (tmp_path / "nocol.csv").write_text("\n".join(line.rsplit(",", 3)[0] + "," + line.rsplit(",", 1)[1]
                                                  for line in lines) + "\n")
    _refused(f"csv:{tmp_path / 'nocol.csv'}", "missing column(s)", "Volume")
    (tmp_path / "both.csv").write_text("\n".join(line + ",x" for line in lines[:1]) .replace(",x", ",Symbol")
                                       + "\n" + "\n".join(line + ",S" for line in lines[1:]) + "\n")
    _refused(f"csv:{tmp_path / 'both.csv'}", "both Symbol and Name", "ambiguous")
    (tmp_path / "empty").mkdir()
    _refused(f"csv-dir:{tmp_path / 'empty'}", "holds no .csv files")
    _refused("bundled:AAPL,XYZ", "XYZ")


# ------------------------------------------------------------------------------------------------- pooled


def test_the_calendar_split_is_one_set_of_dates_and_short_tickers_are_skipped_by_name():
    dates, names, values = synthetic_prices(3, 500, seed=2)
    from stockscale.data.sources import PriceSeries

    panel = [PriceSeries("s", dates, values[0], "FULL"), PriceSeries("s", dates[100:], values[1, 100:], "LATE"),
             PriceSeries("s", dates[-100:], values[2, -100:], "SHORT")]
    pooled = prepare_pooled("s", panel, 0.7, 0.15)
    assert pooled.tickers == ("FULL", "LATE") and pooled.skipped == ["SHORT"]
    assert pooled.warnings() == ["skipped 1 ticker(s) with too few days for a 60-day window in every split: SHORT"]
    last_train = max(p.series.dates[p.train_end - 1] for p in pooled.parts)
    first_test = min(p.series.dates[p.val_end] for p in pooled.parts)
    assert last_train < pooled.first_val_day <= pooled.first_test_day <= first_test
    full, late = pooled.parts
    assert full.train_end == 350 and late.train_end == 250  # the same calendar date cuts both
    assert not np.isclose(full.stats.price_mean, late.stats.price_mean)  # each on its own training days


def test_pooled_windows_come_from_every_ticker_and_never_cross_one(tmp_path):
    pooled = prepare_pooled("s", load_panel(f"csv:{_long_csv(tmp_path / 'l.csv', tickers=3)}"), 0.7, 0.15)
    bases = pooled.train_bases()
    specs = [ReplicaSpec(base, 2, 0.0, 0, key=(i + 1,)) for i, base in enumerate(bases)]
    loader = TrainLoader("lazy", ReplicaSource.generated_pooled(specs), UNIT_STATS, 0, 1, 10_000, 0)
    assert loader.windows == 2 * sum(len(b) - SEQ_LEN for b in bases)
    x, y = next(loader.epoch(0))
    order = loader.order(0)
    # Each window's features equal the ones its own ticker's series and statistics give.
    expected_x, expected_y = [], []
    for part in pooled.parts:
        one_x, one_y = make_features(sliding(part.train_series), part.train_series[SEQ_LEN:, 3], part.stats)
        expected_x += [one_x, one_x]  # two replicas, no noise
        expected_y += [one_y, one_y]
    assert np.allclose(x, np.concatenate(expected_x)[order], atol=1e-5)
    assert np.allclose(y, np.concatenate(expected_y)[order], atol=1e-5)


def test_each_rank_holds_a_contiguous_block_of_tickers_and_the_same_steps(tmp_path):
    path = _long_csv(tmp_path / "l.csv", tickers=4)
    cfg = TrainConfig(source=f"csv:{path}", batch_size=16)
    shares = [open_training_data(cfg, rank, 2).loader for rank in (0, 1)]
    assert shares[0].windows == shares[1].windows and shares[0].steps_per_epoch == shares[1].steps_per_epoch
    assert shares[0].ticker_span == (0, 1) and shares[1].ticker_span == (2, 3)
    one = tmp_path / "one.csv"  # the first ticker alone, without a ticker column: today's single-series path
    one.write_text("\n".join(line.rsplit(",", 1)[0] for line in path.read_text().splitlines()[:501]) + "\n")
    for kind in ("memory", "lazy"):
        pooled = open_training_data(TrainConfig(source=f"csv:{path}", loader=kind), 0, 2).loader
        single = open_training_data(TrainConfig(source=f"csv:{one}", loader=kind), 0, 1).loader
        per_window = [loader.data_resident_bytes / loader.windows for loader in (pooled, single)]
        assert max(per_window) / min(per_window) < 1.1, kind  # the same bytes per window as one ticker


def test_a_pooled_run_reports_pooled_and_per_ticker_figures_and_says_synthetic(tmp_path):
    path = write_synthetic_csv(tmp_path / "syn.csv", tickers=3, days=500)
    cfg = TrainConfig(source=f"csv:{path}", epochs=1, max_steps=3, hidden_size=4, num_layers=1, batch_size=32)
    metrics = train(cfg, tmp_path / "run")
    assert metrics["data"]["synthetic"] is True and metrics["data"]["tickers"] == ["SYN0001", "SYN0002", "SYN0003"]
    tickers = metrics["tickers"]
    assert tickers["count"] == 3 and set(tickers["per_ticker"]) == {"SYN0001", "SYN0002", "SYN0003"}
    assert sum(t["test"]["windows"] for t in tickers["per_ticker"].values()) == metrics["test"]["windows"]
    mapes = [t["test"]["mape"] for t in tickers["per_ticker"].values()]
    assert tickers["best"]["test_mape"] == min(mapes) and tickers["worst"]["test_mape"] == max(mapes)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["tickers"]["best"] == tickers["best"]


def test_one_ticker_runs_keep_their_output():
    assert not hasattr(prepare_from_config(TrainConfig(source="bundled:AAPL")), "tickers")


def test_the_stream_loader_over_several_tickers_gives_the_lazy_loaders_batches(tmp_path):
    path = _long_csv(tmp_path / "l.csv")
    cfg = TrainConfig(source=f"csv:{path}", multiplier=2, noise=0.01, batch_size=64)
    stream = open_training_data(cfg.model_copy(update={"loader": "stream"}), 1, 2)
    lazy = open_training_data(cfg.model_copy(update={"loader": "lazy"}), 1, 2)
    assert stream.dataset is not None and lazy.loader.ticker_span == stream.loader.ticker_span == (1, 2)
    for (x, y), (lx, ly) in zip(stream.loader.epoch(3), lazy.loader.epoch(3), strict=True):
        assert np.array_equal(x, lx) and np.array_equal(y, ly)


@pytest.mark.slow
def test_ddp_over_a_long_csv_gives_each_worker_its_own_tickers(tmp_path):
    path = write_synthetic_csv(tmp_path / "syn.csv", tickers=4, days=500)
    done = subprocess.run([sys.executable, "-m", "stockscale", "train", "--source", f"csv:{path}", "--workers", "2",
                           "--loader", "lazy", "--epochs", "1", "--max-steps", "3", "--hidden-size", "4",
                           "--num-layers", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    workers = sorted(metrics["workers"], key=lambda w: w["rank"])
    assert [w["tickers"] for w in workers] == [[0, 1], [2, 3]]
    assert workers[0]["windows"] == workers[1]["windows"] == metrics["train_samples"] // 2
    assert metrics["tickers"]["count"] == 4 and metrics["data"]["synthetic"] is True


def test_the_dataset_size_for_a_ticker_count_is_tickers_times_their_windows(tmp_path):
    from stockscale.data.dataset import dataset_size

    path = _long_csv(tmp_path / "l.csv", tickers=4)
    cfg = TrainConfig(source=f"csv:{path}")
    one, three = dataset_size(cfg, 1), dataset_size(cfg, 3)
    assert (one.tickers, three.tickers) == (1, 3)
    assert three.windows == 3 * one.windows == 3 * (350 - SEQ_LEN)  # 500 days, the same calendar: 350 train days
    assert three.materialized_bytes == three.windows * SEQ_LEN * 5 * 4
    with pytest.raises(InputError, match="holds 4 ticker"):
        dataset_size(cfg, 5)


def test_demo_refuses_a_bad_source_in_one_line_before_running(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stockscale", "demo", "--quick", "--source", "csv-dir:" +
                           str(tmp_path / "none"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_report_shows_pooled_figures_best_and_worst_tickers_and_says_synthetic(tmp_path):
    from stockscale.experiments.report import write_report
    from stockscale.experiments.results import load_results
    from tests.test_report import write_search

    results = tmp_path / "results"
    write_search(results, "hp_search_local", "sequential", 1, dict.fromkeys(range(18), 5.0))
    best = json.loads((results / "hp_search_local" / "summary.json").read_text())["best"]
    path = write_synthetic_csv(tmp_path / "syn.csv", tickers=3, days=500)
    metrics = train(TrainConfig(source=f"csv:{path}", epochs=1, max_steps=2, hidden_size=4, num_layers=1),
                    tmp_path / best["run_dir"])  # the best trial's run directory holds a real pooled run
    report = write_report(load_results(results), tmp_path / "report").read_text()
    picks = metrics["tickers"]
    assert "## Data: tickers" in report and "pooled over 3 **SYNTHETIC** tickers" in report
    assert f"Best ticker by test MAPE: {picks['best']['ticker']}, {picks['best']['test_mape']:.2f}%" in report
    assert f"Worst ticker by test MAPE: {picks['worst']['ticker']}" in report
    assert f"Pooled test MAPE {metrics['test']['mape']:.2f}%" in report
    predictions = json.loads((tmp_path / best["run_dir"] / "predictions.json").read_text())
    assert predictions["ticker"] == "SYN0001" and len(predictions["dates"]) == picks["per_ticker"]["SYN0001"][
        "test"]["windows"]


@pytest.mark.slow
def test_scale_test_takes_a_ticker_count_as_the_size(tmp_path):
    from stockscale.data.dataset import dataset_size

    path = write_synthetic_csv(tmp_path / "syn.csv", tickers=4, days=500)
    done = subprocess.run([sys.executable, "-m", "stockscale", "scale-test", "--source", f"csv:{path}", "--tickers",
                           "3", "--multipliers", "1,2", "--max-steps", "2", "--hidden-size", "4", "--num-layers",
                           "1", "--memory-limit", "2G", "--out", str(tmp_path / "scale")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "scale" / "results.json").read_text())["results"]
    natural = dataset_size(TrainConfig(source=f"csv:{path}"), 3).windows
    assert [(row["status"], row["train_windows"]) for row in rows] == [("success", natural), ("success", 2 * natural)]
    trained = json.loads((tmp_path / "scale" / "runs" / "m2" / "metrics.json").read_text())
    assert trained["train_samples"] == 2 * natural and trained["tickers"]["count"] == 3
