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

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from stockscale.errors import InputError
from stockscale.files import disk_full
from stockscale.space import Parameter, Space

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "asha", "median")
JOURNAL = "study.journal"
STUDY_NAME = "stockscale-search"
_SETTINGS_ATTR = "stockscale_settings_hash"
DUPLICATE_ATTR = "stockscale_duplicate"  # a sampled trial never run: its config had run already
MAX_REDRAWS = 100


def make_sampler(strategy: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler behind a strategy; grid's points are enqueued, so any sampler would do: random, seeded."""
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if strategy in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown strategy {strategy!r}")


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a study resumed after `trials_so_far` trials: a different stream for every
    point a study can be resumed at, the same one for the same point (a resumed search stays reproducible)."""
    return (seed + 1_000_003 * trials_so_far) % 2**32


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
        check_journal(path)
        try:
            storage = JournalStorage(JournalFileBackend(str(path)))
            found = STUDY_NAME in optuna.get_all_study_names(storage)
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                      pruner=chosen_pruner) if found else None
        except Exception as error:  # noqa: BLE001 - Optuna replays operations; a damaged one raises anything
            raise InputError(f"--resume: {path} is a damaged study journal ({error.__class__.__name__}); "
                             "remove it, or run without --resume") from None
        if study is not None and study.user_attrs.get(_SETTINGS_ATTR) == settings_hash:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            # The same seed would replay the same draws: trials 4-6 of a resumed random search would be
            # trials 1-3 again. The sampler continues from (seed, trials already in the study) instead.
            study.sampler = make_sampler(strategy, resumed_seed(seed, len(study.trials)))
            return study, True
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    with journal_writes(path):
        storage = JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                    pruner=chosen_pruner, direction="minimize")
        study.set_user_attr(_SETTINGS_ATTR, settings_hash)
    return study, False


@contextlib.contextmanager
def journal_writes(path: Path | None) -> Iterator[None]:
    """Optuna appends every operation to the journal: a full disk there is one line naming it."""
    try:
        yield
    except OSError as error:
        if path is not None and disk_full(error, path.parent):
            raise InputError(f"cannot write {path}: no space left on device") from None
        raise


def check_journal(path: Path) -> None:
    """Recover a journal whose last operation was cut off, or refuse one that is damaged, in one line.

    Optuna's journal is one JSON operation per line, each appended whole with its newline. A crash while
    appending leaves a last line without one: Optuna's reader skips it (the operation never happened), but
    the next append would glue a new operation onto it, and that line would then fail every later read. So
    the torn tail is cut off here, as Optuna reads it. Any other line that is not a JSON operation is damage
    that cannot be recovered: InputError naming the file and the line."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise InputError(f"--resume: {path} cannot be read ({error.strerror})") from None
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        os.truncate(path, complete)  # the operation being appended when the writer died
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        try:
            operation = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            operation = None
        if not (isinstance(operation, dict) and isinstance(operation.get("op_code"), int)):
            raise InputError(f"--resume: {path} line {number} is not a study journal operation (a damaged "
                             "journal); remove it, or run without --resume")


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

    def __init__(self, study: optuna.Study, space: Space, pruning: bool, journal: Path | None = None) -> None:
        self.study, self.space, self.pruning, self.journal = study, space, pruning, journal
        self._lock = threading.Lock()
        self._reported: dict[int, set[int]] = {}

    def ask(self, fixed: dict[str, Any] | None = None) -> tuple[optuna.Trial, dict[str, Any]]:
        """A new trial and its config: `fixed` (a grid point) or the sampler's choice.

        A sampled config equal to one the study already ran (or is running) is told failed, marked a
        duplicate, and the sampler asked again (at most MAX_REDRAWS times: a space smaller than the trials
        asked for must repeat in the end): a trial trains with the search's seed, so a repeat would be an
        exact duplicate, budget spent for nothing."""
        with self._lock, journal_writes(self.journal):
            if fixed is not None:
                self.study.enqueue_trial(fixed, skip_if_exists=False)
            taken = [] if fixed is not None else self._configs_so_far()
            for _ in range(MAX_REDRAWS):
                trial = self.study.ask()
                config = {name: suggest(trial, name, parameter) for name, parameter in self.space.items()}
                if config not in taken:
                    break
                trial.set_user_attr(DUPLICATE_ATTR, True)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return trial, config

    def _configs_so_far(self) -> list[dict[str, Any]]:
        states = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
        return [{name: trial.params.get(name) for name in self.space} for trial in trials]

    def report(self, trial: optuna.Trial, epoch: int, val_loss: float, last_epoch: int) -> bool:
        """Record an epoch's validation loss; True when the pruner stops the trial here (never after its
        last epoch: a finished trial is a result, not a pruned one)."""
        with self._lock, journal_writes(self.journal):
            reported = self._reported.setdefault(trial.number, set())
            if epoch in reported:
                return False  # a trial resumed from its checkpoint reports an epoch again
            reported.add(epoch)
            trial.report(val_loss, epoch)
            return self.pruning and epoch < last_epoch and trial.should_prune()

    def tell(self, trial: optuna.Trial, status: str, val_loss: float | None) -> None:
        """A trial's end: its loss when it succeeded, pruned, or failed (any other status)."""
        states = optuna.trial.TrialState
        with self._lock, journal_writes(self.journal):
            if status == "success" and val_loss is not None and val_loss == val_loss:
                self.study.tell(trial, val_loss)
            elif status == "pruned":
                self.study.tell(trial, state=states.PRUNED)
            else:
                self.study.tell(trial, state=states.FAIL)
