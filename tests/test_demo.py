"""`stockscale demo --quick` and `stockscale compare`: the whole demonstration, end to end, from real runs."""

import json
import re

import pytest

from tests.conftest import assert_clean_error


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One real quick demo (about 1.5 minutes on 2 cores), shared by the tests below."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo") / "results"
    done = subprocess.run([sys.executable, "-m", "stockscale", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_demo_runs_both_comparisons_and_writes_the_report(demo):
    out, stdout = demo
    for folder in ("scale_test_local", "scale_test_cluster", "scale_test_local_lazy", "scale_test_cluster_lazy"):
        assert json.loads((out / folder / "results.json").read_text())["complete"]
    for folder in ("hp_search_local", "hp_search_parallel"):
        assert json.loads((out / folder / "summary.json").read_text())["complete"]
    assert "[1/8]" in stdout and "[8/8] report" in stdout  # overall progress
    assert "COMPARISON 1: Dataset Scale" in stdout and "COMPARISON 2: Hyperparameter Search" in stdout
    assert stdout.strip().endswith("report.md")
    assert "PROJECTION FOR A REAL CLUSTER" in stdout  # printed as compare prints it
    report = (out / "report" / "report.md").read_text()
    for png in re.findall(r"\(([\w-]+\.png)\)", report):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "projection" in report.lower()
    page = (out / "report" / "report.html").read_text()  # the same report as one page (tests/test_report_html.py)
    assert page.count("<img src=\"data:image/png;base64,") == len(re.findall(r"\(([\w-]+\.png)\)", report))


@pytest.mark.slow
def test_demo_rechecks_the_best_config_over_origins_and_seeds(demo):
    out, stdout = demo
    record = json.loads((out / "evaluate" / "evaluation.json").read_text())
    assert record["complete"] and len(record["folds"]) == 2 and len(record["settings"]["seeds"]) == 2
    best = json.loads((out / "hp_search_local" / "summary.json").read_text())["best"]["config"]
    assert all(record["settings"]["train"][key] == value for key, value in best.items())
    assert "WALK-FORWARD EVALUATION" in stdout and "Diebold-Mariano" in stdout
    assert "On the configured span alone" in stdout and "Reading:" in stdout
    assert "WALK-FORWARD EVALUATION" in (out / "report" / "report.md").read_text()


@pytest.mark.slow
def test_demo_shows_the_memory_boundary_of_one_process(demo):
    out, _ = demo
    local = json.loads((out / "scale_test_local" / "results.json").read_text())
    cluster = json.loads((out / "scale_test_cluster" / "results.json").read_text())
    assert local["results"][-1]["status"] == "oom"  # one process hit its limit inside the grid
    reached = {doc["settings"]["mode"]: max(r["multiplier"] for r in doc["results"] if r["status"] == "success")
               for doc in (local, cluster)}
    assert reached["cluster"] > reached["local"]
    assert cluster["settings"]["emulated"] is True
    assert local["settings"]["memory_limit_bytes"] == cluster["settings"]["memory_limit_bytes"]


@pytest.mark.slow
def test_compare_prints_the_same_comparison_from_the_files(demo, cli, tmp_path):
    out, stdout = demo
    ran = cli("compare", "--results", out, "--out", tmp_path / "report")
    assert ran.code == 0, ran.err
    assert "EMULATED" in ran.out and "not run" in ran.out  # the cloud search was not run, and says so
    assert "projection, not a measurement" in ran.out
    assert (tmp_path / "report" / "report.md").is_file()


def test_compare_on_a_missing_results_folder(cli, tmp_path):
    assert_clean_error(cli("compare", "--results", tmp_path / "nope"), "nope")


@pytest.mark.slow
def test_compare_names_a_corrupt_file_and_still_reports_the_rest(demo, cli, tmp_path):
    import shutil

    out, _ = demo
    copy = tmp_path / "results"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("trials", "runs", "logs", "report"))
    (copy / "scale_test_cluster" / "results.json").write_text("{not json")
    ran = cli("compare", "--results", copy, "--out", tmp_path / "report")
    assert ran.code == 0, ran.err
    assert "scale_test_cluster/results.json" in ran.out
    assert "COMPARISON 2" in ran.out and "sequential" in ran.out
