"""Which Searcher runs a search: the one small function that knows the kinds.

`optuna` (our study over any Runner) unless a cluster controller searches itself: `katib` (a Katib
Experiment) or `optimizationjob` (the Trainer's OptimizationJob). Those are imported only when chosen, so a
search here never imports the Kubernetes code. Everything after this goes through the Searcher interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stockscale.errors import InputError

if TYPE_CHECKING:
    from stockscale.launch.runner import Runner
    from stockscale.search.optuna_searcher import StudyFile
    from stockscale.search.searcher import Searcher

# Who chooses the trials; the controllers' names are --k8s-kind's.
SEARCHERS = ("optuna", "katib", "optimizationjob")


def choose_searcher(kind: str, runner: Runner, study: StudyFile | None = None) -> Searcher:
    """The searcher of `kind` over `runner`. `study` is where our own study is kept (a controller keeps its
    own, on the cluster)."""
    if kind in ("katib", "optimizationjob"):
        from stockscale.launch.kubernetes.runner import KubernetesRunner

        if not isinstance(runner, KubernetesRunner):
            raise InputError(f"searcher {kind} is a cluster's controller: it needs backend kubernetes")
        if kind == "katib":
            from stockscale.search.katib import KatibSearcher

            return KatibSearcher(runner)
        from stockscale.search.optimization_job import OptimizationJobSearcher

        return OptimizationJobSearcher(runner)
    if kind != "optuna":
        raise ValueError(f"unknown searcher {kind!r}: choose {', '.join(SEARCHERS)}")
    from stockscale.search.optuna_searcher import OptunaSearcher

    return OptunaSearcher(runner, study)
