"""The search as one Kubeflow Trainer v2 OptimizationJob: its controller chooses each trial from the space's
lists (grid or random: `Strategy.optimization_job`) and runs it as a TrainJob. It has no early stopping, so it
takes no pruner. Rendering and following it is the optimizationjob kind's (launch/kubernetes/).
"""

from __future__ import annotations

from stockscale.launch.kubernetes.controllers import OptimizationJobKind
from stockscale.search.controller import ControllerSearcher
from stockscale.search.registry import Pruner, Strategy
from stockscale.search.searcher import check_cluster_pruner


class OptimizationJobSearcher(ControllerSearcher):
    name = "optimizationjob"
    kind = OptimizationJobKind()

    @staticmethod
    def algorithm(strategy: Strategy) -> str | None:
        return strategy.optimization_job

    def check(self, strategy: Strategy, pruner: Pruner) -> None:
        self._refuse_strategy(strategy, "an OptimizationJob")
        check_cluster_pruner(self.runner, pruner)
