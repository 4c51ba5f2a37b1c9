"""`stockscale evaluate`: rolling origins, the statistics over folds and seeds, the Diebold-Mariano test, and
the results file that `compare` shows."""

import json

import numpy as np
import pytest

from stockscale.config import build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.experiments.evaluate import plan_folds
from stockscale.experiments.evaluation_stats import diebold_mariano, newey_west_lags, spread
from tests.conftest import TINY, assert_clean_error


def test_dm_finds_the_clearly_better_forecast():
    rng = np.random.default_rng(0)
    actual = rng.normal(0, 1, 400)
    good = actual + rng.normal(0, 0.3, 400)  # errors a third the size of the other forecast's
    bad = actual + rng.normal(0, 1.0, 400)
    test = diebold_mariano((good - actual) ** 2, (bad - actual) ** 2)
    assert test["p_value"] < 1e-6 and test["statistic"] < 0 and test["better"] == "model"
    assert diebold_mariano((bad - actual) ** 2, (good - actual) ** 2)["better"] == "baseline"
    assert test["hac_maxlags"] == newey_west_lags(400) == 5


def test_dm_of_equally_good_forecasts_is_not_significant_and_identical_ones_are_not_tested():
    rng = np.random.default_rng(1)
    one, two = rng.normal(0, 1, 300) ** 2, rng.normal(0, 1, 300) ** 2
    test = diebold_mariano(one, two)
    assert test["p_value"] > 0.05 and test["better"] is None
    same = diebold_mariano(one, one)
    assert same["p_value"] is None and same["statistic"] is None and same["mean_loss_difference"] == 0.0


def test_spread_is_mean_and_sample_deviation_of_what_was_measured():
    assert spread([1.0, 2.0, 3.0, None]) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([5.0])["std"] is None and spread([])["mean"] is None


def test_folds_are_as_long_as_the_configured_span_and_their_predicted_days_lie_end_to_end():
    folds, predicted = plan_folds({}, 3)
    base = prepare_from_config(build_train_config({}))
    assert predicted == len(base.eval_set("test"))
    assert folds[-1].start == base.series.dates[0].astype(object)
    assert folds[-1].end == base.series.dates[-1].astype(object)
    tests = [prepare_from_config(build_train_config({"start": f.start, "end": f.end})) for f in folds]
    assert {len(p.series) for p in tests} == {len(base.series)}
    for earlier, later in zip(tests, tests[1:], strict=False):
        last = earlier.eval_set("test").dates[-1]
        first = later.eval_set("test").dates[0]
        days = later.series.dates
        assert np.searchsorted(days, first) == np.searchsorted(days, last) + 1  # the next trading day


def test_too_many_origins_for_the_history_is_one_line(cli):
    ran = cli("evaluate", "--origins", "100", *TINY, "--out", "unused")
    assert ran.code == 2 and "origins need" in ran.err and "Traceback" not in ran.err


def test_several_tickers_are_refused_in_one_line_before_anything_runs(cli, tmp_path):
    ran = cli("evaluate", "--source", "bundled:all", *TINY, "--out", tmp_path / "ev")
    assert_clean_error(ran, "several tickers", "not built yet")
    assert not (tmp_path / "ev").exists()


@pytest.mark.slow
def test_evaluate_end_to_end_writes_the_file_that_compare_shows(cli, tmp_path):
    out = tmp_path / "results" / "evaluate"
    ran = cli("evaluate", "--origins", "2", "--seeds", "2", *TINY, "--out", out)
    assert ran.code == 0, ran.err
    record = json.loads((out / "evaluation.json").read_text())
    assert record["kind"] == "evaluation" and record["complete"]
    assert record["settings"]["seeds"] == [42, 43] and len(record["folds"]) == 2
    assert all(len(fold["runs"]) == 2 for fold in record["folds"])
    assert record["models"]["lstm"]["rmse"]["n"] == 4
    rmses = [run["test"]["rmse"] for fold in record["folds"] for run in fold["runs"]]
    assert record["models"]["lstm"]["rmse"]["mean"] == pytest.approx(np.mean(rmses))
    # persistence does not depend on the seed: the spread over seeds within a fold is zero
    persistence = [run["baselines_test"]["persistence"]["rmse"] for run in record["folds"][0]["runs"]]
    assert persistence[0] == persistence[1]
    dm = record["diebold_mariano"]
    assert set(dm) == {"lstm", "drift", "ridge"}
    assert dm["lstm"]["days"] == 2 * record["folds"][0]["predicted_days"]
    assert 0 <= dm["lstm"]["p_value"] <= 1
    shown = cli("compare", "--results", tmp_path / "results")
    assert shown.code == 0, shown.err
    assert "WALK-FORWARD EVALUATION" in shown.out and "Diebold-Mariano" in shown.out
    assert f"p = {dm['lstm']['p_value']:.3f}" in shown.out
