"""The search's Optuna study: samplers, pruners and the journal file that lets `--resume` continue a study.

stockscale does not hand-write search strategies or early stopping: `grid` enqueues the grid's points (the
driver orders them longest first), `random` and `tpe` are Optuna's RandomSampler and TPESampler (with the
constant liar, so trials asked while others run are spread out), `asha` is Optuna's SuccessiveHalvingPruner
(its asynchronous successive halving) and `median` its MedianPruner. Epochs are the pruners' steps.

The study lives in `<out>/study.journal` (Optuna's JournalStorage, a file of JSON operations: no pickle, no
database). It records a digest of the search's settings; a resumed search continues the study only when
they match (the like-with-like rule of trial_settings_hash, applied to the whole study).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from stockscale.space import Parameter, Space

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "asha", "median")
JOURNAL = "study.journal"
STUDY_NAME = "stockscale-search"
_SETTINGS_ATTR = "stockscale_settings_hash"


def make_sampler(strategy: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler behind a strategy; grid's points are enqueued, so any sampler would do: random, seeded."""
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if strategy in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown strategy {strategy!r}")


def make_pruner(pruner: str) -> optuna.pruners.BasePruner:
    """`asha`: successive halving from 1 epoch, keeping a third at each rung (rungs at epochs 1, 3, 9, ...);
    `median`: stop a trial whose loss is worse than the median of earlier trials at the same epoch, once five
    trials have finished."""
    if pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {pruner!r}")


def open_study(out: Path, strategy: str, pruner: str, seed: int, settings_hash: str, resume: bool
               ) -> tuple[optuna.Study, bool]:
    """The study in `<out>/study.journal`: the earlier one when resuming with the same settings (its trials
    left running by an interrupted run are marked failed), else a fresh one. Returns (study, continued)."""
    optuna.logging.set_verbosity(logging.WARNING)  # the CLI reports trials itself
    path = out / JOURNAL
    sampler, chosen_pruner = make_sampler(strategy, seed), make_pruner(pruner)
    if resume and path.is_file():
        storage = JournalStorage(JournalFileBackend(str(path)))
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                      pruner=chosen_pruner)
        except KeyError:
            study = None
        if study is not None and study.user_attrs.get(_SETTINGS_ATTR) == settings_hash:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            return study, True
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=chosen_pruner,
                                direction="minimize")
    study.set_user_attr(_SETTINGS_ATTR, settings_hash)
    return study, False


def suggest(trial: optuna.Trial, name: str, parameter: Parameter) -> Any:
    """One parameter's value for `trial`, from the sampler (or the enqueued grid point)."""
    if parameter.choices is not None:
        return trial.suggest_categorical(name, parameter.choices)
    assert parameter.min is not None and parameter.max is not None
    if parameter.type == "int":
        step = int(parameter.step) if parameter.step is not None else 1
        return trial.suggest_int(name, int(parameter.min), int(parameter.max), step=step, log=parameter.log)
    return trial.suggest_float(name, parameter.min, parameter.max, step=parameter.step, log=parameter.log)


class StudyDriver:
    """Asks the study for trials and tells it their epochs and ends; thread-safe (the launcher's reader and
    slot threads call it)."""

    def __init__(self, study: optuna.Study, space: Space, pruning: bool) -> None:
        self.study, self.space, self.pruning = study, space, pruning
        self._lock = threading.Lock()
        self._reported: dict[int, set[int]] = {}

    def ask(self, fixed: dict[str, Any] | None = None) -> tuple[optuna.Trial, dict[str, Any]]:
        """A new trial and its config: `fixed` (a grid point) or the sampler's choice."""
        with self._lock:
            if fixed is not None:
                self.study.enqueue_trial(fixed, skip_if_exists=False)
            trial = self.study.ask()
            return trial, {name: suggest(trial, name, parameter) for name, parameter in self.space.items()}

    def report(self, trial: optuna.Trial, epoch: int, val_loss: float, last_epoch: int) -> bool:
        """Record an epoch's validation loss; True when the pruner stops the trial here (never after its
        last epoch: a finished trial is a result, not a pruned one)."""
        with self._lock:
            reported = self._reported.setdefault(trial.number, set())
            if epoch in reported:
                return False  # a trial resumed from its checkpoint reports an epoch again
            reported.add(epoch)
            trial.report(val_loss, epoch)
            return self.pruning and epoch < last_epoch and trial.should_prune()

    def tell(self, trial: optuna.Trial, status: str, val_loss: float | None) -> None:
        """A trial's end: its loss when it succeeded, pruned, or failed (any other status)."""
        states = optuna.trial.TrialState
        with self._lock:
            if status == "success" and val_loss is not None and val_loss == val_loss:
                self.study.tell(trial, val_loss)
            elif status == "pruned":
                self.study.tell(trial, state=states.PRUNED)
            else:
                self.study.tell(trial, state=states.FAIL)
