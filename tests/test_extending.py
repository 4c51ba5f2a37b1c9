"""docs/design.md's two recipes, followed to the letter: a new backend is one Runner subclass plus one registry
line, a new strategy is one registry entry, and a search then runs through both from the command line, and
`compare` reads what it wrote."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from stockscale.launch.registry import BACKENDS, RunnerOptions, register_backend
from stockscale.launch.runner import JobResult, LineCallback, ResultCallback, Runner, TrainJob, run_many_with_threads
from stockscale.search.registry import PRUNERS, STRATEGIES, Strategy, register_strategy


class InProcessRunner(Runner):
    """The recipe's backend: each job trains in this very process, one after another (stockscale.train.train,
    the same loop every other backend's workers run), with no memory limit and nothing to clean up."""

    name: ClassVar[str] = "inprocess"
    made: ClassVar[list[RunnerOptions]] = []
    trained: ClassVar[list[str]] = []

    def run(self, job: TrainJob) -> JobResult:
        from stockscale.train import train

        started = time.time()
        metrics = train(job.config, job.run_dir)
        InProcessRunner.trained.append(job.name)
        return JobResult(name=job.name, status="success", metrics=metrics,  # type: ignore[arg-type]
                         start_time=started, end_time=time.time(), run_dir=str(job.run_dir))

    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        return run_many_with_threads(self.run, jobs, 1, on_result)

    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        return {f"{job.name}.yaml": yaml.safe_dump(job.config.overrides()) for job in jobs}

    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
        return []

    def delete(self, run_id: str) -> list[str]:
        return []


def _in_process(options: RunnerOptions) -> Runner:
    InProcessRunner.made.append(options)
    return InProcessRunner()


def _sobol(seed: int):  # noqa: ANN202 - an Optuna sampler
    import optuna

    return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)


@pytest.fixture
def toy_backend_and_strategy() -> Iterator[None]:
    register_backend("inprocess", _in_process)
    register_strategy(Strategy("sobol", "--trials points of a scrambled Sobol sequence (Optuna's QMCSampler)",
                               _sobol))
    try:
        yield
    finally:
        del BACKENDS["inprocess"], STRATEGIES["sobol"]
        InProcessRunner.made.clear()
        InProcessRunner.trained.clear()


def test_a_search_runs_through_a_toy_backend_and_a_toy_strategy_from_the_command_line(
        cli, tmp_path: Path, toy_backend_and_strategy: None) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: double, min: 0.0001, max: 0.1, log: true}\nhidden_size: [8]\n")
    out = tmp_path / "results" / "hp_search_sequential"
    ran = cli("search", "--backend", "inprocess", "--strategy", "sobol", "--trials", "2", "--space", space,
              "--out", out, "--epochs", "1", "--max-steps", "2", "--num-layers", "1", "--threads", "1")
    assert ran.code == 0, ran.err
    assert InProcessRunner.made and InProcessRunner.trained == ["trial-00", "trial-01"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["strategy"] == "sobol" and summary["settings"]["launcher"] == "inprocess"
    assert summary["successes"] == 2 and summary["complete"] is True
    rates = [entry["config"]["lr"] for entry in summary["results"]]
    assert len(set(rates)) == 2 and all(1e-4 <= rate <= 0.1 for rate in rates)  # two points of the range
    assert all((out / "trials" / entry["name"] / "metrics.json").is_file() for entry in summary["results"])
    # Its dry run (the search's --dry-run is a cluster's flag; the interface has one for every runner).
    from stockscale.experiments.search import SearchSettings, search_dry_run
    from stockscale.launch.registry import make_runner

    settings = SearchSettings(backend="inprocess", space={"lr": [0.001, 0.01]}, strategy="sobol", trials=2,
                              train={"epochs": 1, "hidden_size": 8})
    written = search_dry_run(settings, make_runner("inprocess"), tmp_path / "dry")
    assert sorted(path.name for path in written) == ["trial-00.yaml", "trial-01.yaml"]
    assert yaml.safe_load(written[0].read_text())["hidden_size"] == 8
    report = cli("compare", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert report.code == 0, report.err
    assert "sobol" in report.out


def test_the_toy_strategy_and_backend_are_offered_only_while_registered(cli, tmp_path: Path) -> None:
    assert "sobol" not in STRATEGIES and "inprocess" not in BACKENDS and "none" in PRUNERS
    ran = cli("search", "--backend", "inprocess", "--out", tmp_path / "x")
    assert ran.code == 2 and "invalid choice: 'inprocess'" in ran.err
