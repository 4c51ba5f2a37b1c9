"""The Searcher: who chooses a search's trials, over which Runner.

Modelled on the Kubeflow SDK's OptimizerClient (`optimize(trial_template, search_space, algorithm)`): a
searcher receives the space whole, a strategy and a pruner from the registry (search/registry.py), the
template every trial is made from and how many trials run at once. Here and in containers the searcher is
the Optuna driver over any Runner (search/optuna_searcher.py); on a cluster, Katib and the Trainer's
OptimizationJob search themselves (search/katib.py, search/optimization_job.py): they get the same space,
never a list of configs to take apart again, and report each trial with the parameters they chose.

Like a Runner, a searcher can show what it would start without starting it (`render`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stockscale.config import TrainConfig, TrainOverrides
from stockscale.errors import InputError
from stockscale.launch.runner import EpochJudge, JobResult, Runner, TrainJob
from stockscale.search.registry import PRUNERS, Pruner, Strategy
from stockscale.space import Space


def trial_name(number: int) -> str:
    return f"trial-{number:02d}"


@dataclass(frozen=True)
class TrialTemplate:
    """What every trial shares: the search's common settings (validated once) and how each trial runs.
    A trial is this with its point of the space on top (`job`)."""

    config: TrainConfig
    trials_dir: Path  # a trial's run folder is trials_dir / trial_name(number)
    workers: int = 1
    memory_limit: int | None = None
    threads: int | None = None
    timeout: float | None = None

    def job(self, number: int, params: TrainOverrides, judge: EpochJudge | None = None) -> TrainJob:
        """Trial `number` at `params` as a TrainJob: its config validated here, once."""
        name = trial_name(number)
        return TrainJob(name=name, config=self.config.updated(params, f"trial {number} {params}"),
                        run_dir=self.trials_dir / name, workers=self.workers, memory_limit=self.memory_limit,
                        threads=self.threads, timeout=self.timeout, judge=judge)


@dataclass
class TrialResult:
    """One finished trial: its number, the point it trained at (what the searcher, or the controller, chose)
    and how its job ended. `study_trial` is the Optuna trial's number when a study of ours asked for it."""

    number: int
    params: TrainOverrides
    result: JobResult
    study_trial: int | None = None


TrialCallback = Callable[[TrialResult], None]


def check_cluster_pruner(runner: Runner, pruner: Pruner) -> None:
    """A runner that cannot stop a job after an epoch (`Runner.prunes` False: a cluster kind whose trials run
    to their end) takes no pruner of ours; Katib's early stopping is that cluster's own. Every searcher over
    such a runner asks this."""
    if pruner.prunes and not runner.prunes:
        katib = ", ".join(name for name, known in PRUNERS.items() if known.katib)
        raise InputError(f"pruner {pruner.name} cannot stop this cluster kind's trials: use kind job or pytorchjob "
                         f"(stockscale's own pruners), or kind katib with pruner {katib} (Katib's early stopping)")


class Searcher(ABC):
    """Runs a whole search: chooses the trials (or lets a controller choose), runs them, reports each."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def runner(self) -> Runner:
        """The runner the trials run on (the CLI asks it what is left behind after Ctrl-C)."""

    @abstractmethod
    def check(self, strategy: Strategy, pruner: Pruner) -> None:
        """Refuse, in one line naming the setting, a strategy or pruner this searcher cannot run (Katib has
        no ASHA). The one place that rule lives."""

    @abstractmethod
    def search(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int, on_trial: TrialCallback) -> list[TrialResult]:
        """Run `trials` trials (a grid: every point) `parallel` at a time; each to on_trial as it ends;
        returns them in trial order."""

    @abstractmethod
    def render(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int) -> dict[str, str]:
        """The dry run: what `search` would start, as files (name -> text); nothing runs."""

    def dry_run(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
                parallel: int, *, trials: int, out_dir: Path) -> list[Path]:
        """Write `render(...)` into `out_dir` (each file whole, then renamed); returns the paths. A searcher
        whose runner adds files of its own (a kustomization) hands the dry run to `runner.dry_run`."""
        from stockscale.files import write_text_atomic

        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.render(space, strategy, pruner, trial_template, parallel, trials=trials).items():
            write_text_atomic(out_dir / name, text)
            written.append(out_dir / name)
        return written
