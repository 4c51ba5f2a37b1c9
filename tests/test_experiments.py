"""The two comparisons on one machine: scale-test (one process vs workers under one limit) and search."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import assert_clean_error

TINY_TRAIN = ["--hidden-size", "8", "--num-layers", "1"]


def read(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_scale_test_local_writes_the_documented_results(cli, tmp_path):
    ran = cli("scale-test", "--multipliers", "1,3", "--max-steps", "2", *TINY_TRAIN, "--out", tmp_path / "st")
    assert ran.code == 0, ran.err
    doc = read(tmp_path / "st" / "results.json")
    assert doc["kind"] == "scale_test" and doc["complete"]
    settings = doc["settings"]
    assert settings["mode"] == "local" and settings["workers"] == 1 and settings["loader"] == "memory"
    assert settings["memory_limit_bytes"] == 2**30 and settings["limit_mechanism"] in ("cgroup-v1", "cgroup-v2",
                                                                                          "watchdog")
    assert settings["machine"]["cpus"] == os.cpu_count()
    first, second = doc["results"]
    assert [first["multiplier"], second["multiplier"]] == [1, 3]
    assert first["status"] == "success" and first["steps"] == 2
    assert second["train_windows"] == 3 * first["train_windows"]
    assert second["dataset_bytes"] == second["train_windows"] * 60 * 5 * 4
    assert len(first["peak_rss_bytes"]) == 1 and first["peak_rss_bytes"][0] > 100 * 2**20
    assert "multiplier" in ran.out and "success" in ran.out  # the printed table


@pytest.mark.slow
def test_one_process_runs_out_of_memory_where_four_workers_do_not(cli, tmp_path):
    # 1000x is 821,000 windows: 985 MB materialized. One process under 700 MiB cannot hold them; four workers
    # hold a quarter each.
    common = ["--multipliers", "1,1000,1200", "--max-steps", "2", "--memory-limit", "700MiB", *TINY_TRAIN]
    local = cli("scale-test", *common, "--out", tmp_path / "local")
    assert local.code == 0, local.err
    runs = read(tmp_path / "local" / "results.json")["results"]
    assert [r["status"] for r in runs] == ["success", "oom"]  # stops after the first oom
    assert runs[1]["detail"]
    cluster = cli("scale-test", "--mode", "cluster", "--workers", "4", *common, "--out", tmp_path / "cluster")
    assert cluster.code == 0, cluster.err
    doc = read(tmp_path / "cluster" / "results.json")
    assert doc["settings"]["emulated"] is True
    statuses = [r["status"] for r in doc["results"]]
    assert statuses[:2] == ["success", "success"]
    assert len(doc["results"][1]["peak_rss_bytes"]) == 4


def space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_search_records_every_trial_and_the_best(cli, tmp_path):
    grid = space(tmp_path, "hidden_size: [4, 8]\nlearning_rate: [0.01]\n")
    ran = cli("search", "--space", grid, "--max-steps", "2", "--num-layers", "1", "--out", tmp_path / "s")
    assert ran.code == 0, ran.err
    summary = read(tmp_path / "s" / "summary.json")
    assert summary["kind"] == "hp_search" and summary["complete"]
    assert summary["settings"]["backend"] == "sequential" and summary["settings"]["workers"] == 1
    assert summary["settings"]["threads_per_trial"] == os.cpu_count()
    assert summary["successes"] == 2 and summary["failures"] == 0
    trials = summary["results"]
    assert [t["config"] for t in trials] == [{"hidden_size": 4, "lr": 0.01}, {"hidden_size": 8, "lr": 0.01}]
    for trial in trials:
        assert trial["end_time"] > trial["start_time"] and trial["val_loss"] is not None
        assert trial["test_rmse"] == trial["test"]["rmse"] and trial["baseline_test"]["rmse"] > 0
        assert (tmp_path / "s" / "trials" / trial["name"] / "metrics.json").is_file()
    best = min(trials, key=lambda t: t["val_loss"])
    assert summary["best"]["trial"] == best["trial"]
    assert summary["sum_trial_seconds"] == pytest.approx(sum(t["wall_seconds"] for t in trials))


@pytest.mark.slow
def test_parallel_search_runs_longest_first_and_a_failing_trial_does_not_stop_the_rest(cli, tmp_path):
    grid = space(tmp_path, "hidden_size: [4, 32]\nsource: ['bundled:AAPL', 'csv:/nonexistent.csv']\n")
    ran = cli("search", "--backend", "parallel", "--workers", "2", "--space", grid, "--max-steps", "2",
              "--num-layers", "1", "--out", tmp_path / "p")
    assert ran.code == 0, ran.err
    summary = read(tmp_path / "p" / "summary.json")
    assert summary["settings"]["threads_per_trial"] == max(1, os.cpu_count() // 2)
    by_status = {t["config"]["source"]: t["status"] for t in summary["results"]}
    assert by_status == {"bundled:AAPL": "success", "csv:/nonexistent.csv": "error"}
    failed = [t for t in summary["results"] if t["status"] == "error"]
    assert all("nonexistent" in t["detail"] or "exit code 2" in t["detail"] for t in failed)
    assert summary["failures"] == 2 and summary["best"]["config"]["source"] == "bundled:AAPL"
    # hidden 32 was started first: it is expected to take longest
    starts = {t["config"]["hidden_size"]: t["start_time"] for t in summary["results"]
              if t["config"]["source"] == "bundled:AAPL"}
    assert starts[32] <= starts[4]


@pytest.mark.slow
def test_resume_skips_finished_trials(cli, tmp_path):
    grid = space(tmp_path, "hidden_size: [4, 8]\n")
    args = ["search", "--space", grid, "--max-steps", "2", "--num-layers", "1", "--out", tmp_path / "s"]
    assert cli(*args).code == 0
    first = read(tmp_path / "s" / "summary.json")
    assert cli(*args, "--resume").code == 0
    again = read(tmp_path / "s" / "summary.json")
    assert [t["start_time"] for t in again["results"]] == [t["start_time"] for t in first["results"]]


def test_trial_timeout_is_recorded(cli, tmp_path):
    grid = space(tmp_path, "hidden_size: [4]\n")
    # 500 epochs: far over half a second even on a warm worker, whose start does not count in a trial's time.
    ran = cli("search", "--space", grid, "--trial-timeout", "0.5", "--epochs", "500", "--out", tmp_path / "s")
    assert ran.code == 0, ran.err
    (trial,) = read(tmp_path / "s" / "summary.json")["results"]
    assert trial["status"] == "timeout" and trial["run_dir"] is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hidden_size: [4, 8\n", ["not valid YAML"]),
        ("colour: [red]\n", ["colour", "not a training parameter"]),
        ("hidden_size: []\n", ["hidden_size", "empty"]),
        ("hidden_size: 64\n", ["hidden_size", "list"]),
        ("hidden_size: [sixty]\n", ["hidden_size", "integer"]),
        ("lr: [-1]\n", ["lr"]),
    ],
)
def test_bad_space_files(cli, tmp_path, text, words):
    ran = cli("search", "--space", space(tmp_path, text), "--out", tmp_path / "s")
    assert_clean_error(ran, *words)
    assert not (tmp_path / "s").exists()


def test_bad_experiment_flags(cli, tmp_path):
    assert_clean_error(cli("search", "--backend", "parallel", "--workers", "0"), "--workers")
    assert_clean_error(cli("search", "--backend", "sequential", "--workers", "2"), "sequential")  # alone: parallel
    assert_clean_error(cli("scale-test", "--workers", "3"), "--mode cluster")
    assert_clean_error(cli("scale-test", "--multipliers", "1,x"), "--multipliers")
    assert_clean_error(cli("scale-test", "--memory-limit", "1MiB"), "MiB")
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_old_search_spellings_still_work_with_one_notice_each(cli, tmp_path):
    grid = space(tmp_path, "hidden_size: [4]\n")
    tiny = ["--space", grid, "--max-steps", "1", "--epochs", "1", "--num-layers", "1"]
    ran = cli("search", "--backend", "parallel", "--workers", "1", *tiny, "--out", tmp_path / "old")
    assert ran.code == 0, ran.err
    assert [line for line in ran.err.splitlines() if "deprecated" in line] == [
        "warning: search --workers 1 is deprecated; use --parallel 1",
        "warning: --backend parallel is deprecated; use --backend local --parallel N"]
    summary = read(tmp_path / "old" / "summary.json")
    assert summary["settings"]["backend"] == "parallel" and summary["settings"]["workers"] == 1
    ran = cli("search", "--backend", "local", "--parallel", "2", *tiny, "--out", tmp_path / "new")
    assert ran.code == 0 and "deprecated" not in ran.err, ran.err
    summary = read(tmp_path / "new" / "summary.json")
    assert summary["settings"]["backend"] == "parallel" and summary["settings"]["workers"] == 2
    assert_clean_error(cli("search", "--workers", "2", "--parallel", "3", "--out", tmp_path / "x"), "disagree")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_trial_and_leaves_a_valid_partial_summary(tmp_path):
    grid = space(tmp_path, "hidden_size: [4, 8, 16, 32]\n")
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "stockscale", "search", "--space", str(grid), "--epochs", "50",
                             "--num-layers", "1", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "summary.json").is_file():
        time.sleep(0.2)
    time.sleep(3)  # a trial is training now
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "a trial process should be running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    summary = read(out / "summary.json")
    assert summary["complete"] is False and summary["kind"] == "hp_search"
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
