"""`stockscale plan`: the memory model's arithmetic against the loaders' real layouts, the calibration's
staleness keys, and the bad-input lines through the real command line."""

from __future__ import annotations

import json

import pytest

from stockscale.bounds import MAX_MULTIPLIER
from stockscale.config import build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.replicas import ReplicaSpec
from stockscale.data.shards import read_manifest, source_record, write_dataset
from stockscale.errors import InputError
from stockscale.experiments.plan import layout
from stockscale.experiments.plan.calibration import (
    CalibrationFile,
    CalibrationKey,
    LoaderCalibration,
    calibration_key,
    default_folder,
    read_calibration,
)
from stockscale.experiments.plan.memory_model import MemoryModel
from stockscale.experiments.plan.startup import Startup
from stockscale.experiments.plan.time_model import TimeModel
from tests.conftest import assert_clean_error

MiB = 2**20


@pytest.fixture(scope="module")
def prepared():
    return prepare_from_config(build_train_config({}))


def _loader(kind, prepared, multiplier, world=1, source=None):
    spec = ReplicaSpec(prepared.train_series, multiplier, 0.01, 42)
    return TrainLoader(kind, source or ReplicaSource.generated(spec), prepared.stats, 0, world, 64, 1)


def test_memory_layout_is_what_the_memory_loader_materializes(prepared):
    share = _loader("memory", prepared, 6, world=2)
    assert share.windows == layout.windows_held(6, prepared.train_windows, 2)
    assert share.data_resident_bytes == share.windows * layout.window_bytes()
    per_window = layout.bytes_per_window("memory", prepared.train_end, prepared.train_windows)
    series = layout.series_bytes_per_window(prepared.train_end, prepared.train_windows)
    assert per_window == pytest.approx(layout.window_bytes() + series)


def test_lazy_layout_is_the_replica_series_the_lazy_loader_holds(prepared):
    share = _loader("lazy", prepared, 4)  # one worker: whole replicas, no partial block
    per_window = layout.bytes_per_window("lazy", prepared.train_end, prepared.train_windows)
    assert share.data_resident_bytes == pytest.approx(per_window * share.windows)


def test_a_pooled_source_is_planned_on_the_days_and_windows_its_loaders_hold(tmp_path):
    """Several tickers: the planner's inputs (dataset_size: windows and training days summed over tickers) give
    the bytes per window the lazy and memory loaders really hold for that source."""
    from stockscale.data.dataset import dataset_size, open_training_data
    from stockscale.data.synthetic import write_synthetic_csv

    path = write_synthetic_csv(tmp_path / "three.csv", tickers=3, days=500)
    cfg = build_train_config({"source": f"csv:{path}", "multiplier": 2})
    size = dataset_size(cfg)
    assert size.tickers == 3 and size.windows == prepare_from_config(cfg).train_windows
    lazy = open_training_data(cfg.model_copy(update={"loader": "lazy"})).loader
    per_window = layout.bytes_per_window("lazy", size.train_days, size.windows)
    assert lazy.windows == 2 * size.windows
    assert lazy.data_resident_bytes == pytest.approx(per_window * lazy.windows, rel=0.01)
    memory = open_training_data(cfg.model_copy(update={"loader": "memory"})).loader
    assert memory.data_resident_bytes == memory.windows * layout.window_bytes()  # the series go once windows exist


def test_stream_holds_nothing_per_window_and_its_disk_is_the_shards(prepared, tmp_path):
    cfg = build_train_config({"multiplier": 5})
    spec = ReplicaSpec(prepared.train_series, 5, 0.01, 42)
    write_dataset(prepared, spec, source_record(cfg, prepared), tmp_path / "ds")
    on_disk = ReplicaSource.on_disk(tmp_path / "ds", read_manifest(tmp_path / "ds"))
    small = _loader("stream", prepared, 5, source=on_disk)
    assert layout.bytes_per_window("stream", prepared.train_end, prepared.train_windows) == 0
    assert small.data_resident_bytes < layout.batch_bytes(64)
    shards = sum(path.stat().st_size for path in (tmp_path / "ds").glob("shard-*.npy"))
    assert layout.disk_bytes(5, prepared.train_end) <= shards < layout.disk_bytes(5, prepared.train_end) + 4096


def model(**changes):
    values = {"loader": "memory", "bytes_per_window": 1200.0, "windows_per_replica": 1000,
              "fixed_bytes": {1: 300 * MiB, 2: 350 * MiB}, "shared_bytes": 0.0}
    return MemoryModel(**{**values, **changes})


def test_peak_is_fixed_plus_bytes_per_window_times_windows_held():
    memory = model()
    assert memory.peak(10, 1).value == 300 * MiB + 1200 * 10_000
    assert memory.peak(10, 2).value == 350 * MiB + 1200 * 5_000
    peak = memory.peak(10, 2)
    assert peak.low < peak.value < peak.high


def test_largest_multiplier_is_the_last_that_fits_and_the_limit_counts_less_the_shared_pages():
    memory = model()
    limit = 500 * MiB
    largest = memory.largest_multiplier(2, limit)
    assert memory.fits(largest, 2, limit) and not memory.fits(largest + 1, 2, limit)
    assert largest == (limit - 350 * MiB) * 2 // (1200 * 1000)
    shared = model(shared_bytes=100 * MiB)
    assert shared.largest_multiplier(2, limit) > largest
    low, high = memory.largest_multiplier(2, limit, "high"), memory.largest_multiplier(2, limit, "low")
    assert low < largest < high


def test_a_world_size_not_calibrated_is_modelled_and_says_so():
    memory = model(fixed_bytes={1: 300 * MiB, 2: 350 * MiB, 4: 360 * MiB})
    value, margin, how = memory.fixed_for(8)
    assert value == pytest.approx(360 * MiB + 5 * MiB * 4) and "modelled" in how
    assert memory.fixed_for(3)[2].startswith("interpolated") and memory.fixed_for(2)[2].startswith("measured")
    assert margin > memory.fixed_for(4)[1]


def test_fewest_workers_and_the_bounds():
    memory = model()
    needed = memory.workers_needed(100, 400 * MiB)
    assert memory.fits(100, needed, 400 * MiB) and not memory.fits(100, needed - 1, 400 * MiB)
    assert memory.workers_needed(MAX_MULTIPLIER, 351 * MiB) is None
    with pytest.raises(InputError, match="one worker needs 300.0 MiB"):
        memory.check_fits_at_all(200 * MiB)


def test_stream_fits_any_multiplier_once_one_worker_fits():
    memory = model(loader="stream", bytes_per_window=0.0)
    assert memory.largest_multiplier(4, 400 * MiB) == MAX_MULTIPLIER
    assert memory.workers_needed(MAX_MULTIPLIER, 301 * MiB) == 1


def test_time_model_measured_interpolated_and_modelled():
    timing = TimeModel(cores=2, windows_per_replica=1000, batch_size=100, step_seconds={1: 0.01, 2: 0.02},
                       overhead_seconds={1: 2.0, 2: 3.0})
    assert timing.steps_per_epoch(10, 2) == 50
    assert timing.epoch(10, 2).value == pytest.approx(50 * 0.02)
    step, margin, how = timing.step_for(8)
    assert step == pytest.approx(0.02 * 4) and "modelled" in how


# ------------------------------------------------------------------------------------- calibration key


def loader_entry(fixed1=290 * MiB, fixed2=365 * MiB):
    return LoaderCalibration(loader="memory", runs=[], fixed_bytes={1: fixed1, 2: fixed2},
                             step_seconds={1: 0.01, 2: 0.02}, overhead_seconds={1: 3.0, 2: 5.0},
                             layout_bytes_per_window=1225.46, measured_bytes_per_window=1221.0,
                             layout_residual_bytes=-MiB, largest_windows_per_worker=137_000, seconds=40.0,
                             made_at="2026-12-04T03:40:00Z")


def write_calibration(folder, key: CalibrationKey, prepared) -> None:
    """A calibration file as `plan` writes it, with figures like a real calibration's (for the bad-input tests,
    which must not spend 40 s calibrating)."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = CalibrationFile(key=key, windows_per_replica=prepared.train_windows, train_days=prepared.train_end,
                          shared_file_bytes=95 * MiB, limit_mechanism="cgroup-v1", loaders={"memory": loader_entry()},
                          startup=MEASURED_STARTUP)
    (folder / "calibration.json").write_text(json.dumps(doc.model_dump(mode="json")))


# The start-ups as a calibration records them (the bad-input tests must not start a worker or a container).
MEASURED_STARTUP = {"warm_worker": Startup(seconds=0.4, source="measured: median of 2 tiny trials", samples=[0.4, 0.4]),
                    "container": Startup(seconds=None, source="not measured: no engine (none here)")}


def test_calibration_key_names_the_model_machine_and_versions():
    key = calibration_key(build_train_config({}))
    assert key.model["hidden_size"] == 64 and "cpu_model" in key.machine and "torch" in key.versions
    other = calibration_key(build_train_config({"hidden_size": 128}))
    assert default_folder(key) != default_folder(other)
    assert default_folder(key) == default_folder(calibration_key(build_train_config({"lr": 0.5})))


def test_a_folder_of_another_model_is_refused_when_named_and_remade_when_default(tmp_path, prepared):
    key = calibration_key(build_train_config({}))
    write_calibration(tmp_path, key, prepared)
    assert read_calibration(tmp_path, key, explicit=True)[1] == "valid"
    other = calibration_key(build_train_config({"hidden_size": 128}))
    with pytest.raises(InputError, match="another model .*hidden_size"):
        read_calibration(tmp_path, other, explicit=True)
    assert read_calibration(tmp_path, other, explicit=False)[0] is None
    stale = key.model_copy(update={"versions": {**key.versions, "torch": "0.0"}})
    assert read_calibration(tmp_path, stale, explicit=True) == (None, "stale: another versions")
    machine = key.model_copy(update={"machine": {**key.machine, "cores": 999}})
    assert read_calibration(tmp_path, machine, explicit=False) == (None, "stale: another machine")


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def calibrated(tmp_path, prepared):
    folder = tmp_path / "cal"
    write_calibration(folder, calibration_key(build_train_config({"loader": "memory"})), prepared)
    return folder


def test_plan_json_answers_with_every_documented_key(cli, calibrated):
    ran = cli("plan", "--memory-limit", "700MiB", "--workers", "3", "--json", "--calibration", calibrated)
    assert ran.code == 0, ran.err
    plan = json.loads(ran.out)
    for key in ("largest_multiplier", "largest_multiplier_interval", "peak_bytes_per_worker",
                "peak_bytes_per_worker_interval", "epoch_seconds", "epoch_seconds_interval", "extrapolation",
                "cost", "buy", "startup", "assumptions"):
        assert key in plan
    low, high = plan["largest_multiplier_interval"]
    assert low <= plan["largest_multiplier"] <= high
    assert plan["limit_counts_bytes"] <= 700 * MiB
    assert plan["startup"]["pod"]["source"].startswith("assumption")
    assert plan["bytes_per_window_source"].startswith("the layout's")  # 1221 measured against 1225.5: agrees
    ran = cli("plan", "--memory-limit", "700MiB", "--multiplier", str(plan["largest_multiplier"] * 3), "--json",
              "--calibration", calibrated)
    assert json.loads(ran.out)["workers_needed"] > 3


@pytest.mark.parametrize(("flags", "words"), [
    (["--memory-limit", "150MiB", "--workers", "2"], ["does not fit with any number of workers", "one worker needs"]),
    (["--memory-limit", "300MiB", "--multiplier", "1000000"], ["1024 workers"]),
    (["--memory-limit", "700MiB", "--workers", "2", "--price-vcpu-hour", "inf"], ["--price-vcpu-hour", "finite"]),
    (["--memory-limit", "700MiB", "--workers", "2", "--price-gib", "nan"], ["--price-gib"]),
    (["--memory-limit", "700MiB", "--workers", "2", "--hidden-size", "128"], ["another model", "hidden_size"]),
    (["--memory-limit", "700MiB", "--workers", "2", "--multiplier", "10"], ["not both"]),
    (["--memory-limit", "700MiB", "--workers", "0"], ["--workers"]),
])
def test_bad_input_is_one_line_and_exit_2(cli, calibrated, flags, words):
    assert_clean_error(cli("plan", *flags, "--calibration", calibrated), *words)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_the_planned_boundary_is_what_the_scale_test_finds(cli, tmp_path):
    """A real calibration of a tiny model, `plan --workers 2 --json`, then the real scale test's boundary search
    from the prediction: the measured bracket lies within one sqrt-2 step of it (about a minute here)."""
    model = ["--hidden-size", "8", "--num-layers", "1"]
    ran = cli("plan", "--memory-limit", "600MiB", "--workers", "2", "--json", "--calibration", tmp_path / "cal",
              *model)
    assert ran.code == 0, ran.err
    plan = json.loads(ran.out)
    predicted = plan["largest_multiplier"]
    assert plan["calibration"]["ran"] and (tmp_path / "cal" / "calibration.json").is_file()
    ran = cli("scale-test", "--mode", "cluster", "--workers", "2", "--memory-limit", "600MiB", "--search",
              f"{predicted}:{4 * predicted}", "--max-steps", "2", "--out", tmp_path / "st", *model)
    assert ran.code == 0, ran.err
    boundary = json.loads((tmp_path / "st" / "results.json").read_text())["boundary"]
    step = 2**0.5
    assert boundary["largest_success"] is not None and boundary["largest_success"] >= predicted / step - 1
    assert boundary["smallest_failure"] is not None and boundary["smallest_failure"] <= predicted * step + 1


# ------------------------------------------------------------------------------------------ the report


def test_the_report_sets_the_demo_predictions_beside_the_measured_boundaries(tmp_path, prepared):
    from stockscale.experiments.plan.report import predict_cases, write_predictions
    from stockscale.experiments.report import write_report
    from stockscale.experiments.results import load_results
    from tests.test_report import scale_row, write_scale

    results = tmp_path / "results"
    key = calibration_key(build_train_config({"loader": "memory"}))
    doc = CalibrationFile(key=key, windows_per_replica=prepared.train_windows, train_days=prepared.train_end,
                          shared_file_bytes=95 * MiB, limit_mechanism="cgroup-v1", loaders={"memory": loader_entry()})
    predictions = predict_cases(doc, [("local", "memory", 1), ("cluster", "memory", 4)], 560 * MiB)
    local = predictions.predictions[0].largest_multiplier
    write_predictions(results, predictions)
    # one process: measured exactly around the prediction; the cluster side was not run
    write_scale(results, "scale_test_local", "local", [scale_row(local, "success", [650 * MiB]),
                                                       scale_row(round(local * 1.41), "oom", [700 * MiB])])
    report = write_report(load_results(results), tmp_path / "report")
    text = report.read_text()
    assert "## The planner: predicted boundaries against measured ones" in text
    assert f"{local}..{round(local * 1.41)}  yes" in text and "not run" in text
    assert "](plan.png)" in text and (tmp_path / "report" / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert "straight" not in text.split("## Projection for a real cluster")[1]
