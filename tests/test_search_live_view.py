"""A running search can be watched: `stockscale search` prints the optuna-dashboard command over its study
journal, and that journal can be read, as the dashboard reads it, while the search is still writing it."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from stockscale.search.study import JOURNAL, STUDY_NAME

TINY = ["--hidden-size", "8", "--num-layers", "1", "--threads", "1"]


@pytest.mark.slow
def test_the_journal_reads_while_the_search_writes_it(tmp_path) -> None:
    out = tmp_path / "results" / "hp_search_local"
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02]\n")
    search = subprocess.Popen([sys.executable, "-m", "stockscale", "search", "--space", str(space), "--epochs", "3",
                               *TINY, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    journal = out / JOURNAL
    seen_while_running: list[tuple[int, int]] = []  # (trials finished, epochs reported)
    try:
        deadline = time.monotonic() + 240
        while search.poll() is None and time.monotonic() < deadline:
            if journal.is_file():
                try:
                    study = optuna.load_study(study_name=STUDY_NAME,
                                              storage=JournalStorage(JournalFileBackend(str(journal))))
                except KeyError:  # the study is not created yet
                    study = None
                if study is not None and search.poll() is None:
                    trials = study.get_trials(deepcopy=False)
                    finished = sum(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
                    reported = sum(len(trial.intermediate_values) for trial in trials)
                    seen_while_running.append((finished, reported))
            time.sleep(0.2)
        stdout, stderr = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
            search.communicate()

    assert search.returncode == 0, stderr[-2000:]
    assert f"watch it live: optuna-dashboard {out / JOURNAL}" in stdout
    # Read mid-search: some trials finished and more to come, each epoch's validation loss as reported.
    assert any(0 < finished < 6 for finished, _ in seen_while_running), seen_while_running
    assert any(reported > 0 for _, reported in seen_while_running), seen_while_running
    before = journal.read_bytes()
    study = optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [trial.state for trial in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 6
    assert journal.read_bytes() == before  # reading wrote nothing
