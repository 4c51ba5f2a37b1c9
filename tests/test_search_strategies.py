"""`stockscale search --strategy grid|random|tpe --pruner none|asha|median`: Optuna's samplers and pruners
driven through the launcher interface, spaces with ranges in Katib's terms, and a study that --resume
continues."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from stockscale.config import TrainConfig
from stockscale.experiments.search import SearchSettings, run_search, trial_jobs
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import JobResult, Runner, run_many_with_threads
from stockscale.space import parse_space

QUICK = {"epochs": 1, "max_steps": 2, "num_layers": 1, "threads": 1}
RANGES = {"hidden_size": {"type": "int", "min": 4, "max": 12},
          "lr": {"type": "double", "min": 1e-4, "max": 1e-1, "log": True},
          "dropout": {"type": "categorical", "choices": [0.0, 0.1]}}


def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("space", "flags", "message"), [
    ("lr: [0.001]\n", ["--strategy", "annealing"], "invalid choice: 'annealing'"),
    ("lr: [0.001]\n", ["--pruner", "hyperband"], "invalid choice: 'hyperband'"),
    ("lr: [0.001]\n", ["--trials", "5"], "--trials is for --strategy random or tpe"),
    ("lr: {type: double, min: 0.1, max: 0.01}\n", ["--strategy", "random", "--trials", "2"],
     "min 0.1 is greater than max 0.01"),
    ("lr: {type: double, min: 0, max: 0.01, log: true}\n", ["--strategy", "random", "--trials", "2"],
     "log scale needs min > 0, not 0"),
    ("num_layers: {type: categorical, choices: []}\n", ["--strategy", "tpe", "--trials", "2"], "choices is empty"),
    ("optimizer: [adam, sgd]\n", ["--strategy", "tpe", "--trials", "2"],
     "'optimizer' is not a training parameter that can be searched"),
    ("lr: {type: double, min: 0.0001, max: 0.01}\n", [], "--strategy grid needs a list of values for every "
                                                         "parameter; lr is a range"),
    ("lr: [0.001]\n", ["--strategy", "tpe"], "--strategy tpe needs --trials N"),
    ("hidden_size: {type: int, min: 4, max: 9000}\n", ["--strategy", "random", "--trials", "2"], "hidden_size"),
])
def test_bad_search_input_gets_one_line_and_writes_nothing(cli, tmp_path, space, flags, message):
    out = tmp_path / "out"
    ran = cli("search", "--space", write_space(tmp_path, space), *flags, "--out", out)
    assert ran.code == 2, ran.err
    assert message in ran.err and len(ran.err.strip().splitlines()) == 1, ran.err
    assert "Traceback" not in ran.err
    assert not out.exists()


def test_a_space_keeps_lists_and_adds_ranges_in_katib_terms():
    space = parse_space({"num_layers": [1, 2], **RANGES}, "space")
    assert space["num_layers"].choices == [1, 2] and space["num_layers"].is_list
    assert space["lr"].log and space["lr"].describe() == "double 0.0001..0.1, log"
    assert space["hidden_size"].record() == {"type": "int", "min": 4.0, "max": 12.0}


def test_random_and_tpe_sample_within_the_ranges_and_the_seed_decides_the_points(tmp_path):
    def points(strategy, seed):
        settings = SearchSettings(backend="local", parallel=1, space=dict(RANGES), strategy=strategy, trials=6,
                                  train=TrainConfig(**QUICK, seed=seed))
        return [job.config.overrides() for job in trial_jobs(settings, tmp_path)]

    for strategy in ("random", "tpe"):
        chosen = points(strategy, 7)
        assert chosen == points(strategy, 7) and chosen != points(strategy, 8)
        assert len({json.dumps(config, sort_keys=True) for config in chosen}) == 6
        for config in chosen:
            assert 4 <= config["hidden_size"] <= 12 and isinstance(config["hidden_size"], int)
            assert 1e-4 <= config["lr"] <= 1e-1 and config["dropout"] in (0.0, 0.1)


@pytest.mark.slow
def test_a_tpe_search_runs_its_trials_and_resume_continues_the_study(tmp_path):
    import optuna

    out = tmp_path / "tpe"
    settings = SearchSettings(backend="local", parallel=2, space=dict(RANGES), strategy="tpe", trials=3,
                              train=TrainConfig(**QUICK))
    first = run_search(settings, LocalRunner(), out).document()
    assert first["complete"] and first["successes"] == 3 and first["settings"]["strategy"] == "tpe"
    assert all(entry["train_seconds"] > 0 and entry["wall_seconds"] >= entry["train_seconds"]
               for entry in first["results"])
    study = optuna.load_study(study_name="stockscale-search", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 3

    settings.trials, settings.resume = 5, True
    resumed = run_search(settings, LocalRunner(), out).document()
    assert [entry["trial"] for entry in resumed["results"]] == [0, 1, 2, 3, 4]
    kept = {entry["trial"]: entry["start_time"] for entry in first["results"]}
    assert all(entry["start_time"] == kept[entry["trial"]] for entry in resumed["results"][:3])
    study = optuna.load_study(study_name="stockscale-search", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    assert len(study.trials) == 5

    settings.pruner = "median"  # other settings: a new study, nothing kept
    fresh = run_search(settings, LocalRunner(), out).document()
    assert all(entry["start_time"] > max(kept.values()) for entry in fresh["results"])


class _CannedTrials(Runner):
    """A runner standing in for training (not under test here): each trial ends as `outcomes` says, with
    epochs reported, so the search's summary and the report see real shapes."""

    name = "canned"
    streams_jobs = True

    def __init__(self, outcomes):
        self.outcomes, self.clock = list(outcomes), 1000.0

    def run(self, job):
        from stockscale.worker import EpochReport

        status, loss = self.outcomes.pop(0)
        start, self.clock = self.clock, self.clock + 2.0
        epochs = [EpochReport(1, loss)]
        metrics = None if status != "success" else {"val": {"loss": loss}, "test": {"rmse": 1.0, "mae": 1.0,
                                                                                    "mape": 1.0},
                                                    "train_seconds": 1.5, "epochs_completed": 1}
        return JobResult(job.name, status, metrics=metrics, start_time=start, end_time=self.clock, epochs=epochs)

    def run_many(self, jobs, parallel, on_result=None):
        return run_many_with_threads(self.run, jobs, 1, on_result)

    def render(self, jobs, parallel):
        return {}

    def logs(self, run_id, on_line, *, follow=False):
        return []

    def delete(self, run_id):
        return []


def test_the_report_gains_pruned_and_a_best_so_far_line_per_search(tmp_path):
    from stockscale.experiments.report import format_comparison, write_report
    from stockscale.experiments.results import load_results

    results = tmp_path / "results"
    grid = SearchSettings(backend="local", parallel=1, space={"hidden_size": [4, 8, 16]}, train=TrainConfig(**QUICK))
    run_search(grid, _CannedTrials([("success", 0.5), ("success", 0.4), ("success", 0.3)]),
               results / "hp_search_local")
    tpe = SearchSettings(backend="parallel", parallel=1, space=dict(RANGES), strategy="tpe", trials=3,
                         pruner="asha", train=TrainConfig(**QUICK))
    summary = run_search(tpe, _CannedTrials([("success", 0.35), ("pruned", 0.9), ("pruned", 0.8)]),
                         results / "hp_search_tpe_asha").document()
    assert summary["pruned"] == 2 and summary["failures"] == 0 and summary["successes"] == 1
    pruned = [entry for entry in summary["results"] if entry["status"] == "pruned"]
    assert [entry["val_loss"] for entry in pruned] == [0.9, 0.8] and pruned[0]["epochs_done"] == 1

    loaded = load_results(results)
    text = format_comparison(loaded)
    assert "pruned" in text.splitlines()[[i for i, line in enumerate(text.splitlines()) if "ok/failed" in line][0]]
    row = next(line.split() for line in text.splitlines() if line.startswith("  hp_search_tpe_asha "))
    assert row[1:3] == ["3", "1/0"] and row[-1] == "2"
    assert "tpe, pruner asha, 3 trials" in text
    write_report(loaded, tmp_path / "report")
    assert (tmp_path / "report" / "best_so_far.png").stat().st_size > 10_000
    assert "best_so_far.png" in (tmp_path / "report" / "report.md").read_text()


def test_a_config_files_learning_rate_gives_way_to_a_searched_lr(cli, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("learning_rate: 0.05\nnum_layers: 1\n")
    ran = cli("search", "--config", config, "--space", write_space(tmp_path, "lr: [0.001, 0.002]\n"),
              "--max-steps", "1", "--epochs", "1", "--hidden-size", "4", "--threads", "1", "--dry-run",
              "--backend", "kubernetes", "--out", tmp_path / "out")
    assert ran.code == 0, ran.err
    trials = yaml.safe_load(next((tmp_path / "out").glob("configmap-*.yaml")).read_text())
    listed = yaml.safe_load(trials["data"]["trials.yaml"])
    assert sorted(entry["lr"] for entry in listed) == [0.001, 0.002]
    assert all("learning_rate" not in entry for entry in listed)


def test_workers_alone_means_a_parallel_search_here(cli, tmp_path):
    ran = cli("search", "--space", write_space(tmp_path, "hidden_size: [4, 8]\n"), "--workers", "2",
              "--max-steps", "1", "--epochs", "1", "--num-layers", "1", "--out", tmp_path / "out")
    assert ran.code == 0, ran.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["backend"] == "parallel" and summary["settings"]["workers"] == 2
    assert summary["successes"] == 2
    ran = cli("search", "--backend", "sequential", "--workers", "2", "--out", tmp_path / "other")
    assert ran.code == 2 and "--backend sequential runs one trial at a time" in ran.err


def test_compare_draws_a_search_over_ranges_without_a_grid(tmp_path):
    from stockscale.experiments.report import write_report
    from stockscale.experiments.results import load_results

    results = tmp_path / "results"
    sampled = SearchSettings(backend="parallel", parallel=1, space=dict(RANGES), strategy="random", trials=14,
                             train=TrainConfig(**QUICK))
    run_search(sampled, _CannedTrials([("success", 0.5 + i / 100) for i in range(14)]), results / "hp_search_random")
    report = write_report(load_results(results), tmp_path / "report")
    text = report.read_text()
    assert "the hp_search_random search samples ranges: it has no grid to draw" in text
    assert (tmp_path / "report" / "best_so_far.png").is_file() and (tmp_path / "report" / "timeline.png").is_file()


@pytest.fixture
def toy_strategy():
    """A strategy that is one registry entry and nothing else: Optuna's quasi-random (Sobol) sampler."""
    import optuna

    from stockscale.search.registry import STRATEGIES, Strategy, register_strategy

    def sobol(seed: int) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)

    toy = register_strategy(Strategy("toy", "--trials points from Optuna's QMC sampler", sobol))
    yield toy
    del STRATEGIES[toy.name]


def test_a_strategy_is_one_registry_entry_the_cli_the_search_and_the_reader_take(cli, tmp_path, toy_strategy):
    from stockscale.experiments.report import format_comparison
    from stockscale.experiments.results import load_results

    ran = cli("search", "--strategy", "toy", "--space", write_space(tmp_path, "lr: [0.001]\n"), "--out", tmp_path / "x")
    assert ran.code == 2 and "needs --trials N" in ran.err and "invalid choice" not in ran.err
    results = tmp_path / "results"
    settings = SearchSettings(backend="local", parallel=1, space=dict(RANGES), strategy="toy", trials=3,
                              train=TrainConfig(**QUICK))
    summary = run_search(settings, _CannedTrials([("success", 0.5), ("success", 0.4), ("success", 0.6)]),
                         results / "hp_search_toy").document()
    assert summary["settings"]["strategy"] == "toy" and summary["successes"] == 3
    assert len({json.dumps(entry["config"], sort_keys=True) for entry in summary["results"]}) == 3
    loaded = load_results(results)
    assert loaded.warnings == [] and "toy, 3 trials, seed 42" in format_comparison(loaded)


class _Batches(_CannedTrials):
    """A runner that needs its jobs at once (an Indexed Job's shape): it records each batch it was given."""

    streams_jobs = False

    def __init__(self, outcomes):
        super().__init__(outcomes)
        self.batches = []

    def run_many(self, jobs, parallel, on_result=None):
        jobs = list(jobs)
        self.batches.append(len(jobs))
        return run_many_with_threads(self.run, jobs, 1, on_result)


@pytest.mark.parametrize(("strategy", "batches"), [("tpe", [2, 2, 1]), ("random", [5])])
def test_a_batch_runner_gets_the_whole_batch_or_waves_when_the_strategy_learns(tmp_path, strategy, batches):
    runner = _Batches([("success", 0.5 + i / 10) for i in range(5)])
    settings = SearchSettings(backend="local", parallel=2, space=dict(RANGES), strategy=strategy, trials=5,
                              train=TrainConfig(**QUICK))
    summary = run_search(settings, runner, tmp_path / "s").document()
    assert runner.batches == batches and summary["successes"] == 5
    assert [entry["study_trial"] for entry in summary["results"]] == [0, 1, 2, 3, 4]


def test_a_refusal_names_the_strategy_as_the_user_spelled_it():
    from stockscale.cli.experiments import _spelled
    from stockscale.errors import InputError

    def refuse():
        raise InputError("strategy tpe: an OptimizationJob searches by grid or random")

    with pytest.raises(InputError, match=r"^--k8s-algorithm tpe: an OptimizationJob searches by grid or random$"):
        _spelled(refuse, "--k8s-algorithm", "tpe")
    with pytest.raises(InputError, match=r"^strategy tpe: "):
        _spelled(refuse, "--strategy", "tpe")
    assert _spelled(lambda: 3, "--k8s-algorithm", "tpe") == 3
