"""The Optuna searcher: our own study chooses the trials, any Runner trains them.

This is the searcher on this machine (local processes, warm workers), in containers and for the Kubernetes
kinds that only run what they are given (one Indexed Job, a PyTorchJob per trial). It owns the study
(search/study.py: the journal `--resume` continues, duplicates, the seeds), asks it for each trial, gives
each job a judge that reports every epoch's validation loss to the pruner, and tells the study how each
trial ended.

How trials reach the runner is the runner's declared nature, nothing else: a runner that streams jobs
(`Runner.streams_jobs`) pulls the next trial when a slot frees and after the last result was told, so TPE
samples knowing every finished trial; a batch runner (an Indexed Job) gets the whole batch at once, or, when
the strategy is adaptive (TPE), waves of `parallel`. A grid runs longest-expected trial first, so the makespan
stays near its lower bound max(sum / parallel, longest).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from stockscale.config import TrainConfig, TrainOverrides
from stockscale.launch.runner import JobResult, Runner, TrainJob
from stockscale.search.registry import Pruner, Strategy
from stockscale.search.searcher import Searcher, TrialCallback, TrialResult, TrialTemplate, check_cluster_pruner
from stockscale.space import Space, grid

if TYPE_CHECKING:
    import optuna

    from stockscale.search.study import StudyDriver


@dataclass(frozen=True)
class StudyFile:
    """Where a search keeps its study and what an earlier run of it left (`--resume`).

    `journal` None: an in-memory study (nothing to resume). `kept`: trials an earlier run finished with the
    same settings, by number, with their points: a grid does not run those points again, a sampled search
    counts them among its trials (their numbers are in the continued study already)."""

    journal: Path | None = None
    settings_hash: str = ""
    resume: bool = False
    kept: Mapping[int, TrainOverrides] = field(default_factory=dict)


def expected_cost(config: TrainConfig) -> float:
    """Relative cost of a trial, for ordering only: LSTM work per sample grows with
    layers x hidden x (hidden + input), times the samples it will see (capped by max_steps)."""
    hidden, layers = config.hidden_size, config.num_layers
    per_sample = 4 * hidden * (hidden + 5) + (layers - 1) * 4 * hidden * 2 * hidden
    samples = config.epochs * config.multiplier * 1000  # about 1,000 windows per replica by default
    if config.max_steps is not None:
        samples = min(samples, config.max_steps * config.batch_size)
    return float(per_sample * samples)


GridTrial = tuple[int, TrainOverrides, TrainJob]  # (number in the grid's order, point, its job)


def grid_jobs(space: Space, template: TrialTemplate) -> list[GridTrial]:
    """Every grid point with its job (validated once, here), listed longest-expected first."""
    trials = [(number, point, template.job(number, point)) for number, point in enumerate(grid(space))]
    return sorted(trials, key=lambda trial: expected_cost(trial[2].config), reverse=True)


def known_jobs(space: Space, strategy: Strategy, template: TrialTemplate, *, trials: int) -> list[TrainJob]:
    """The trials known before any result: the grid's points, longest-expected first, or the first `trials`
    points the seeded sampler chooses with no results yet (what a dry run shows)."""
    if strategy.lists_grid:
        return [job for _, _, job in grid_jobs(space, template)]
    from stockscale.search.registry import pruner
    from stockscale.search.study import open_study, suggest

    study, _ = open_study(None, strategy, pruner("none"), template.config.seed, "", resume=False)
    jobs = []
    for _ in range(trials):
        trial = study.ask()
        params = {name: suggest(trial, name, parameter) for name, parameter in space.items()}
        jobs.append(template.job(trial.number, params))
    return jobs


def val_loss(result: JobResult) -> float | None:
    """What a trial scored: its validation loss, or for a pruned trial the last loss it reported."""
    if result.status == "pruned" and result.epochs:
        return result.epochs[-1].val_loss
    loss = (result.metrics or {}).get("val", {}).get("loss")
    return float(loss) if isinstance(loss, int | float) else None


class OptunaSearcher(Searcher):
    """Our Optuna study over any Runner."""

    name: ClassVar[str] = "optuna"

    def __init__(self, runner: Runner, study: StudyFile | None = None) -> None:
        self._runner = runner
        self.study = study or StudyFile()

    @property
    def runner(self) -> Runner:
        return self._runner

    def check(self, strategy: Strategy, pruner: Pruner) -> None:
        """Optuna runs every registered strategy and pruner (each entry builds Optuna's own); a pruner needs a
        runner that can stop a trial after an epoch (`Runner.prunes`: every runner but a cluster kind whose
        trials run to their end)."""
        check_cluster_pruner(self.runner, pruner)

    def render(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int) -> dict[str, str]:
        return self.runner.render(known_jobs(space, strategy, trial_template, trials=trials), parallel)

    def dry_run(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
                parallel: int, *, trials: int, out_dir: Path) -> list[Path]:
        """The runner's own dry run of the known trials (it may add files, a kustomization listing them)."""
        return self.runner.dry_run(known_jobs(space, strategy, trial_template, trials=trials), parallel,
                                   out_dir)

    def search(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int, on_trial: TrialCallback) -> list[TrialResult]:
        from stockscale.search.study import StudyDriver, open_study

        place = self.study
        study, _ = open_study(place.journal, strategy, pruner, trial_template.config.seed, place.settings_hash,
                              place.resume)
        driver = StudyDriver(study, space, pruning=pruner.prunes, journal=place.journal)
        run = _Run(driver, on_trial)
        if strategy.lists_grid:
            jobs = run.grid(grid_jobs(space, trial_template), place.kept)
        else:
            jobs = run.sampled(trial_template, max(0, trials - len(place.kept)))
        if self.runner.streams_jobs:
            self.runner.run_many(jobs, parallel, run.told)
        else:
            wave = parallel if strategy.adaptive else trials
            while batch := list(itertools.islice(jobs, max(1, wave))):
                self.runner.run_many(batch, parallel, run.told)
        return sorted(run.results, key=lambda trial: trial.number)


class _Run:
    """One search's bookkeeping: which Optuna trial each running job is, and telling the study its end.
    Thread-safe: a runner's slot threads start jobs and report results."""

    def __init__(self, driver: StudyDriver, on_trial: TrialCallback) -> None:
        self.driver, self.on_trial = driver, on_trial
        self.lock = threading.Lock()
        self.running: dict[str, tuple[int, TrainOverrides, optuna.Trial]] = {}
        self.results: list[TrialResult] = []

    def start(self, number: int, params: TrainOverrides, job: TrainJob, trial: optuna.Trial) -> TrainJob:
        """`job` with its judge: each epoch's validation loss to the study, and the pruner's answer (never
        after its last epoch: a finished trial is a result, not a pruned one)."""
        last_epoch, driver = job.config.epochs, self.driver
        with self.lock:
            self.running[job.name] = (number, params, trial)
        return replace(job, judge=lambda report: driver.report(trial, report.epoch, report.val_loss, last_epoch))

    def grid(self, trials: Sequence[GridTrial], kept: Mapping[int, TrainOverrides]) -> Iterator[TrainJob]:
        for number, params, job in trials:
            if number not in kept:
                trial, _ = self.driver.ask(fixed=params)
                yield self.start(number, params, job, trial)

    def sampled(self, template: TrialTemplate, count: int) -> Iterator[TrainJob]:
        for _ in range(count):
            trial, params = self.driver.ask()
            yield self.start(trial.number, params, template.job(trial.number, params), trial)

    def told(self, result: JobResult) -> None:
        with self.lock:
            number, params, trial = self.running.pop(result.name)
        self.driver.tell(trial, result.status, val_loss(result))
        finished = TrialResult(number=number, params=params, result=result, study_trial=trial.number)
        with self.lock:
            self.results.append(finished)
        self.on_trial(finished)
