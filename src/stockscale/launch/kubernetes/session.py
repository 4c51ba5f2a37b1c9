"""ClusterSession: one namespace of one cluster, for what needs no run of its own (`stockscale k8s
status|logs|delete`): the runs there, a run's objects and their state, its pods' logs, deleting it.

It owns the API connection, made on first use, so building a session (or a launcher, which holds one) needs no
cluster; rendering and dry runs never make one. What a run left behind is found by its labels (runs.py), so a
session can look at any run, not only one it started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stockscale.launch.kubernetes import runs
from stockscale.launch.kubernetes.api import KubeApi, load_configuration


class ClusterSession:
    """The runs in one namespace: list them, show one's objects, read its logs, delete it."""

    def __init__(self, namespace: str, *, api: KubeApi | None = None, kubeconfig: Path | None = None,
                 context: str | None = None) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self._api = api

    @property
    def api(self) -> KubeApi:
        """The API connection, made on first use from the kubeconfig (or the pod's service account)."""
        if self._api is None:
            self._api = KubeApi(load_configuration(self.kubeconfig, self.context))
        return self._api

    def list_runs(self) -> list[str]:
        """The run ids with objects in the namespace."""
        return runs.list_runs(self.api, self.namespace)

    def status(self, run_id: str) -> list[runs.RunObject]:
        """Every object of the run, with its state (`stockscale k8s status RUN`)."""
        return runs.run_status(self.api, self.namespace, run_id)

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False,
             pod: str | None = None, trial: int | None = None) -> list[str]:
        """Each line of the run's pods (or of one pod, or one trial's) to `on_line(pod, line)`; the pods read."""
        return runs.run_logs(self.api, self.namespace, run_id, on_line, follow=follow, pod=pod, trial=trial)

    def delete_run(self, run_id: str) -> list[str]:
        """Delete everything labelled with the run; returns "Kind/name"s."""
        return runs.delete_run(self.api, self.namespace, run_id)
