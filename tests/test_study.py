"""The study's bookkeeping of sampled configs: a repeat is redrawn, and a space that has run out repeats."""

import optuna
import pytest

from stockscale.search.registry import pruner, strategy
from stockscale.search.study import DUPLICATE_ATTR, StudyDriver, open_study
from stockscale.space import parse_space


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_a_space_that_has_run_out_repeats_a_config_and_the_repeat_still_trains(name):
    # Two points and three trials (as 18 TPE trials over the 18-point grid end): the third draw can only
    # repeat. It must come back as a running trial that takes epoch reports, not one already told failed.
    space = parse_space({"lr": [0.001, 0.01]}, "space")
    study, _ = open_study(None, strategy(name), pruner("asha"), 0, "", resume=False)
    driver = StudyDriver(study, space, pruning=True)
    seen = []
    for loss in (0.5, 0.4, 0.3):
        trial, config = driver.ask()
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        assert [t.number for t in running] == [trial.number]
        for epoch in (1, 2):
            driver.report(trial, epoch, loss + 0.01 * epoch, last_epoch=3)
        driver.tell(trial, "success", loss)
        seen.append(config["lr"])
    assert sorted(set(seen)) == [0.001, 0.01] and len(seen) == 3  # the third is a repeat
    redrawn = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DUPLICATE_ATTR)]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in redrawn)  # the draws given up, marked
    assert len([t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]) == 3
