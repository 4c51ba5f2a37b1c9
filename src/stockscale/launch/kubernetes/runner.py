"""KubernetesRunner: the Runner on a cluster with the Kubeflow Training Operator (or Trainer v2, or Katib).

It renders what a job or a search submits through the kind it was made with (KINDS: one small class per kind,
render then follow), and is the ClusterRun (run.py) the kind follows it through: what the run put on the
cluster, its start-up deadline, its progress messages.

`run(job)` trains one job: a PyTorchJob (Master 1 + Worker job.workers - 1), or with kind "trainjob" a Trainer
v2 TrainJob. `run_many(jobs, parallel)` runs a search stockscale schedules: one Indexed Job (kind "job"), or
one single-replica PyTorchJob per trial (kind "pytorchjob"); both stop a trial its judge prunes (`prunes`).
Katib and an OptimizationJob choose their own trials: they are Searchers (search/katib.py,
search/optimization_job.py) over this runner. Finished objects are deleted unless keep=True.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from stockscale.errors import InputError
from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.controllers import KatibKind, OptimizationJobKind
from stockscale.launch.kubernetes.run import ClusterRun
from stockscale.launch.kubernetes.search_jobs import IndexedJobKind, PyTorchJobKind
from stockscale.launch.kubernetes.training import Kind, TrainJobKind
from stockscale.launch.runner import JobResult, LineCallback, ResultCallback, Runner, TrainJob

# The kinds by their name (the `--k8s-kind` choices): one class each, no if-chains on a kind's name.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (IndexedJobKind(), PyTorchJobKind(), TrainJobKind(),
                                                       OptimizationJobKind(), KatibKind())}


class KubernetesRunner(ClusterRun, Runner):
    """Runs TrainJobs on a cluster as the kind says. See the module docstring."""

    name: ClassVar[str] = "kubernetes"
    streams_jobs: ClassVar[bool] = False  # a search is one object (an Indexed Job): all jobs first

    def __init__(self, spec: ClusterSpec | None = None, *, kind: str = "job", **settings: Any) -> None:
        """`spec` (a ClusterSpec) and `settings` are the ClusterRun's (run.py)."""
        if kind not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.kind = KINDS[kind]
        super().__init__(spec, **settings)

    @property
    def prunes(self) -> bool:
        """The kind's answer: its search stops a pruned trial (kinds job and pytorchjob), or it cannot."""
        return self.kind.prunes

    # ------------------------------------------------------------------------------------------- rendering

    def manifests(self, jobs: Sequence[TrainJob], parallel: int) -> list[dict[str, Any]]:
        """The objects themselves, for a caller that reads them: `run(job)`'s for one job at parallel 1,
        else `run_many(jobs, parallel)`'s."""
        if len(jobs) == 1 and parallel <= 1:
            return self.kind.run_manifests(self, jobs[0])
        return self.kind.search_manifests(self, list(jobs), parallel)

    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        """What `run_many(jobs, parallel)` submits (a search's objects), as YAML files."""
        return {m.file_name(obj): m.to_yaml(obj) for obj in self.kind.search_manifests(self, list(jobs), parallel)}

    def render_run(self, job: TrainJob) -> dict[str, str]:
        """What `run(job)` submits (the training job, and its NetworkPolicy with several workers)."""
        return {m.file_name(obj): m.to_yaml(obj) for obj in self.kind.run_manifests(self, job)}

    def write_rendered(self, files: dict[str, str], out_dir: Path) -> list[Path]:
        """The manifests and a kustomization.yaml listing them (`kubectl apply -k DIR`)."""
        return m.write_manifests(out_dir, {name: yaml.safe_load(text) for name, text in files.items()})

    # ------------------------------------------------------------------------------------------- running

    def run(self, job: TrainJob) -> JobResult:
        """Submit one training job, stream rank 0's log to on_line, wait for it, return its result; a job the
        cluster disrupted is resubmitted once (same output folder, so it resumes from its checkpoints)."""
        return self.interruptible(lambda: self.kind.run(self, job))

    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        """Run every job on the cluster, `parallel` at a time; results in the jobs' order."""
        batch = list(jobs)
        manifests = self.kind.search_manifests(self, batch, parallel)
        results = self.interruptible(lambda: self.kind.search(self, batch, manifests, max(1, parallel), on_result))
        return [results[index] for index in sorted(results)]

    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
        return self.session.logs(run_id, on_line, follow=follow)
