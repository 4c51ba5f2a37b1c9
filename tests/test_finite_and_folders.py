"""Inputs that used to get through: non-finite and out-of-range numbers, NaN losses and NaN in JSON, output
folders that are files or hold something else, `search --resume` across changed settings, file modes."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from stockscale.config import TrainConfig
from stockscale.errors import TrainingDiverged
from stockscale.experiments.search import SearchSettings, run_search
from stockscale.files import write_json_atomic
from stockscale.launch.runner import JobResult, Runner, TrainJob, run_many_with_threads
from stockscale.train import train
from tests.conftest import TINY, assert_clean_error


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--lr", "inf"], ["--lr", "finite"]),
        (["train", "--lr", "nan"], ["--lr", "finite"]),
        (["train", "--dropout", "nan"], ["--dropout"]),
        (["train", "--timeout", "inf"], ["--timeout", "finite"]),
        (["train", "--timeout", "1e30"], ["--timeout", "at most"]),
        (["train", "--seed", str(2**64)], ["--seed", "4294967296"]),
        (["train", "--hidden-size", "1000000"], ["--hidden-size", "4096"]),
        (["train", "--workers", "100000"], ["--workers", "at most"]),
        (["train", "--memory-limit", "2000000TiB"], ["--memory-limit", "maximum"]),
        (["data", "scale", "--multiplier", "2", "--noise", "inf"], ["--noise", "finite"]),
        (["data", "scale", "--multiplier", "2", "--seed", str(2**40)], ["--seed", "at most"]),
        (["search", "--trial-timeout", "nan"], ["--trial-timeout", "finite"]),
        (["scale-test", "--timeout", "inf"], ["--timeout", "finite"]),
        (["scale-test", "--multipliers", "1,100000000"], ["--multipliers", "at most"]),
        (["compare", "--pod-startup", "inf"], ["pod_startup_seconds", "finite"]),
        (["k8s", "render", "--out", "x", "--workers", "1000000"], ["--workers", "at most"]),
    ],
)
def test_non_finite_and_out_of_range_numbers_get_one_line(cli, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(cli(*args), *words)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "cache"])


def test_a_config_file_with_infinity_is_refused(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: .inf\n")
    assert_clean_error(cli("train", "--config", config, "--out", tmp_path / "r"), "lr", "finite")


def test_a_run_whose_loss_becomes_nan_fails_and_writes_nothing(tmp_path):
    # lr=inf cannot come from a flag or a file any more; set past validation to make the loss diverge for real.
    cfg = TrainConfig(epochs=1, max_steps=5, hidden_size=8, num_layers=1, threads=1).model_copy(
        update={"lr": math.inf})
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 2"):
        train(cfg, tmp_path / "run")
    assert list(tmp_path.glob("*run*")) == []


def test_json_results_refuse_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"loss": math.nan})
    assert list(tmp_path.iterdir()) == []


class _ReportedLosses(Runner):
    """A runner that reports given validation losses: what run_search sees from real trials."""

    name = "reported"

    def __init__(self, losses: dict[str, float]) -> None:
        self.losses = losses

    def run(self, job: TrainJob) -> JobResult:
        loss = self.losses[job.name]
        return JobResult(job.name, "success", metrics={"val": {"loss": loss}, "test": {"rmse": 1.0}},
                         start_time=1.0, end_time=2.0)

    def run_many(self, jobs, parallel, on_result=None):
        return run_many_with_threads(self.run, jobs, parallel, on_result)

    def render(self, jobs, parallel):
        return {}

    def logs(self, run_id, on_line, *, follow=False):
        return []

    def delete(self, run_id):
        return []


def test_the_best_trial_is_chosen_among_finite_losses(tmp_path):
    settings = SearchSettings(backend="local", parallel=1, space={"hidden_size": [4, 8, 16]})
    launcher = _ReportedLosses({"trial-00": math.nan, "trial-01": 0.5, "trial-02": math.inf})
    with pytest.raises(ValueError):  # NaN cannot reach summary.json ...
        run_search(settings, launcher, tmp_path / "s")
    launcher.losses = {"trial-00": 0.9, "trial-01": 0.5, "trial-02": 0.7}
    summary = run_search(settings, launcher, tmp_path / "s").document()
    assert summary["best"]["name"] == "trial-01"


def test_the_best_trial_ignores_a_nan_loss_in_an_earlier_summary(tmp_path):
    from stockscale.experiments.results import SearchSummary
    from stockscale.experiments.search import _write

    entries = [{"trial": i, "name": f"trial-0{i}", "config": {}, "status": "success", "val_loss": loss,
                "test": None, "baseline_test": None, "run_dir": None, "start_time": 0.0, "end_time": 1.0,
                "wall_seconds": 1.0} for i, loss in enumerate([math.nan, 0.4, None])]
    written = SearchSummary.model_validate({
        "kind": "hp_search", "format_version": 1, "complete": False, "total_wall_seconds": 0.0, "successes": 0,
        "failures": 0, "best": None, "settings": {"backend": "sequential", "workers": 1, "space": {}},
        "results": entries})
    with pytest.raises(ValueError):
        _write(tmp_path, written)
    summary = written.model_dump()
    assert summary["best"]["trial"] == 1


def test_resume_retrains_trials_whose_settings_changed(cli, tmp_path):
    grid = tmp_path / "space.yaml"
    grid.write_text("hidden_size: [4]\n")
    common = ["search", "--space", grid, "--num-layers", "1", "--threads", "1", "--epochs", "1",
              "--out", tmp_path / "s"]
    assert cli(*common, "--max-steps", "2").code == 0
    first = json.loads((tmp_path / "s" / "summary.json").read_text())["results"][0]
    assert cli(*common, "--max-steps", "2", "--resume").code == 0
    same = json.loads((tmp_path / "s" / "summary.json").read_text())["results"][0]
    assert same["start_time"] == first["start_time"] and same["settings_hash"] == first["settings_hash"]
    assert cli(*common, "--max-steps", "3", "--resume").code == 0
    changed = json.loads((tmp_path / "s" / "summary.json").read_text())["results"][0]
    assert changed["start_time"] != first["start_time"] and changed["settings_hash"] != first["settings_hash"]
    metrics = json.loads((tmp_path / "s" / "trials" / "trial-00" / "metrics.json").read_text())
    assert metrics["steps"] == 3


@pytest.mark.parametrize("command", [["search"], ["scale-test"]])
def test_an_out_that_is_a_file_or_cannot_be_written_gets_one_line(cli, tmp_path, command):
    target = tmp_path / "file"
    target.write_text("mine\n")
    assert_clean_error(cli(*command, "--out", target), "is a file")
    assert_clean_error(cli(*command, "--out", target / "below"), "cannot be written")
    assert target.read_text() == "mine\n"


def test_a_rerun_never_clears_a_folder_that_holds_something_else(cli, tmp_path, monkeypatch):
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "notes.txt").write_text("keep me\n")
    (tmp_path / "runs").mkdir()
    grid = tmp_path / "space.yaml"
    grid.write_text("hidden_size: [4]\n")
    monkeypatch.chdir(tmp_path)
    assert_clean_error(cli("search", "--space", grid, *TINY, "--out", "."), "trials", "hp_search")
    assert_clean_error(cli("scale-test", "--multipliers", "1", *TINY[4:], "--out", "."), "runs", "scale_test")
    assert (tmp_path / "trials" / "notes.txt").read_text() == "keep me\n"
    assert (tmp_path / "runs").is_dir()


def test_a_rerun_clears_its_own_earlier_results(cli, tmp_path):
    grid = tmp_path / "space.yaml"
    grid.write_text("hidden_size: [4]\n")
    args = ["search", "--space", grid, *TINY, "--out", tmp_path / "s"]
    assert cli(*args).code == 0
    (tmp_path / "s" / "trials" / "trial-99").mkdir()
    assert cli(*args).code == 0
    assert not (tmp_path / "s" / "trials" / "trial-99").exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_results_and_run_folders_are_readable_by_group_and_others(cli, tmp_path):
    old = os.umask(0o022)
    try:
        assert cli("train", *TINY, "--out", tmp_path / "run").code == 0
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        assert cli("k8s", "render", "--out", tmp_path / "k8s").code == 0
    finally:
        os.umask(old)
    assert _mode(tmp_path / "run") == 0o755
    assert {_mode(p) for p in (tmp_path / "run").iterdir()} == {0o644}
    assert _mode(tmp_path / "r.json") == 0o644
    assert {_mode(p) for p in (tmp_path / "k8s").iterdir()} == {0o644}


def test_the_umask_still_decides(tmp_path):
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "r.json") == 0o600


def test_resume_in_a_folder_of_something_else_is_refused(cli, tmp_path, monkeypatch):
    (tmp_path / "trials" / "trial-00").mkdir(parents=True)
    (tmp_path / "trials" / "trial-00" / "mine.txt").write_text("keep me\n")
    grid = tmp_path / "space.yaml"
    grid.write_text("hidden_size: [4]\n")
    monkeypatch.chdir(tmp_path)
    assert_clean_error(cli("search", "--space", grid, *TINY, "--out", ".", "--resume"), "trials", "hp_search")
    assert (tmp_path / "trials" / "trial-00" / "mine.txt").is_file()
