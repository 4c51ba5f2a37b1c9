"""The cluster's own searchers by the kind whose controller chooses the trials: the one place a KubernetesRunner's
kind becomes a Searcher (katib: KatibSearcher, optimizationjob: OptimizationJobSearcher). Every other runner,
and every other kind, is searched by the Optuna driver.
"""

from __future__ import annotations

from stockscale.launch.kubernetes.runner import KubernetesRunner
from stockscale.launch.runner import Runner
from stockscale.search.controller import ControllerSearcher
from stockscale.search.katib import KatibSearcher
from stockscale.search.optimization_job import OptimizationJobSearcher

CLUSTER_SEARCHERS: dict[str, type[ControllerSearcher]] = {
    searcher.kind.name: searcher for searcher in (KatibSearcher, OptimizationJobSearcher)}


def cluster_searcher(runner: Runner) -> ControllerSearcher | None:
    """The searcher of a cluster runner whose kind's controller chooses the trials; None for any other."""
    if not isinstance(runner, KubernetesRunner) or runner.kind.name not in CLUSTER_SEARCHERS:
        return None
    return CLUSTER_SEARCHERS[runner.kind.name](runner)
