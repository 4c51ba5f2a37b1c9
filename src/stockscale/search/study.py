"""The search's Optuna study: the journal file that lets `--resume` continue a study, asking and telling it.

The samplers and pruners are the registry's (search/registry.py: each Strategy and Pruner builds Optuna's);
this module keeps the study they work in. `grid` enqueues the grid's points (the searcher orders them longest
first). Epochs are the pruners' steps.

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
from stockscale.search.registry import Pruner, Strategy
from stockscale.space import Parameter, Space

JOURNAL = "study.journal"
STUDY_NAME = "stockscale-search"
_SETTINGS_ATTR = "stockscale_settings_hash"
DUPLICATE_ATTR = "stockscale_duplicate"  # a sampled trial never run: its config had run already
MAX_REDRAWS = 100


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a study resumed after `trials_so_far` trials: a different stream for every
    point a study can be resumed at, the same one for the same point (a resumed search stays reproducible)."""
    return (seed + 1_000_003 * trials_so_far) % 2**32


def open_study(path: Path | None, strategy: Strategy, pruner: Pruner, seed: int, settings_hash: str,
               resume: bool) -> tuple[optuna.Study, bool]:
    """The study in the journal at `path`: the earlier one when resuming with the same settings (its trials
    left running by an interrupted run are marked failed), else a fresh one (in memory when `path` is None).
    Returns (study, continued)."""
    optuna.logging.set_verbosity(logging.WARNING)  # the CLI reports trials itself
    sampler, chosen_pruner = strategy.make_sampler(seed), pruner.make_pruner()
    if path is None:
        return optuna.create_study(sampler=sampler, pruner=chosen_pruner, direction="minimize"), False
    study = _same_study(path, settings_hash, sampler, chosen_pruner) if resume else None
    if study is not None:
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        # The same seed would replay the same draws: trials 4-6 of a resumed random search would be
        # trials 1-3 again. The sampler continues from (seed, trials already in the study) instead.
        study.sampler = strategy.make_sampler(resumed_seed(seed, len(study.trials)))
        return study, True
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    with journal_writes(path):
        storage = JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                    pruner=chosen_pruner, direction="minimize")
        study.set_user_attr(_SETTINGS_ATTR, settings_hash)
    return study, False


def study_continues(path: Path, settings_hash: str) -> bool:
    """Whether `--resume` continues the study in the journal at `path` (it exists and was made with the same
    settings): the driver keeps a sampled search's finished trials only then. A damaged journal is one line."""
    optuna.logging.set_verbosity(logging.WARNING)
    return _same_study(path, settings_hash, None, None) is not None


def _same_study(path: Path, settings_hash: str, sampler: optuna.samplers.BaseSampler | None,
                pruner: optuna.pruners.BasePruner | None) -> optuna.Study | None:
    """The journal's study when it holds one made with `settings_hash`, else None."""
    if not path.is_file():
        return None
    check_journal(path)
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        found = STUDY_NAME in optuna.get_all_study_names(storage)
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                  pruner=pruner) if found else None
    except Exception as error:  # noqa: BLE001 - Optuna replays operations; a damaged one raises anything
        raise InputError(f"--resume: {path} is a damaged study journal ({error.__class__.__name__}); "
                         "remove it, or run without --resume") from None
    if study is None or study.user_attrs.get(_SETTINGS_ATTR) != settings_hash:
        return None
    return study


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
            for attempt in range(MAX_REDRAWS):
                trial = self.study.ask()
                config = {name: suggest(trial, name, parameter) for name, parameter in self.space.items()}
                if config not in taken or attempt == MAX_REDRAWS - 1:
                    break  # new, or the last draw: it runs again rather than leave a trial already told
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
