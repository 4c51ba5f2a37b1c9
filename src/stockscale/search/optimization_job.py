"""The search as one Kubeflow Trainer v2 OptimizationJob: its controller chooses each trial from the space's
lists (grid or random: `Strategy.optimization_job`) and runs it as a TrainJob. It has no early stopping, so it
takes no pruner. Rendering and following it is the optimizationjob kind's (launch/kubernetes/), which reads
each trial's parameters from its TrainJob (the controller's annotation, else its env), never by matching values
against configs.

A trial reports its objective only where the Trainer's `TrainJobStatus` feature gate is on (Trainer >= v2.2.0):
then the controller gives its pods KUBEFLOW_TRAINER_SERVER_URL, _CA_CERT and _TOKEN and `stockscale train` posts
there (kubeflow_trial.py; kubeflow/trainer v2.3.0 docs/user-guides/trainjob-progress.md). Without the gate the
controller never learns an objective, so a dry run and a search say so in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stockscale.console import log
from stockscale.launch.kubernetes.controllers import OptimizationJobKind
from stockscale.search.controller import ControllerSearcher
from stockscale.search.registry import Pruner, Strategy
from stockscale.search.searcher import TrialCallback, TrialResult, TrialTemplate, check_cluster_pruner
from stockscale.space import Space

GATE_WARNING = ("warning: OptimizationJob trials report their objective only when the Kubeflow Trainer's "
                "TrainJobStatus feature gate is on (Trainer >= v2.2.0); without it no trial gets an objective")


class OptimizationJobSearcher(ControllerSearcher):
    name = "optimizationjob"
    kind = OptimizationJobKind()

    @staticmethod
    def algorithm(strategy: Strategy) -> str | None:
        return strategy.optimization_job

    def check(self, strategy: Strategy, pruner: Pruner) -> None:
        self._refuse_strategy(strategy, "an OptimizationJob")
        check_cluster_pruner(self.runner, pruner)

    def dry_run(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
                parallel: int, *, trials: int, out_dir: Path) -> list[Path]:
        written = super().dry_run(space, strategy, pruner, trial_template, parallel, trials=trials, out_dir=out_dir)
        log(GATE_WARNING, sys.stderr)
        return written

    def search(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int, on_trial: TrialCallback) -> list[TrialResult]:
        self.manifest(space, strategy, pruner, trial_template, parallel, trials=trials)  # refused before the line
        log(GATE_WARNING, sys.stderr)
        return super().search(space, strategy, pruner, trial_template, parallel, trials=trials, on_trial=on_trial)
