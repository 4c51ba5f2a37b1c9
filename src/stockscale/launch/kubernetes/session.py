"""ClusterSession: one namespace of one cluster, and every object request stockscale makes there by kind:
create, list, delete (and annotating a pod: a pruned trial's stop request), and what
`stockscale k8s status|logs|delete RUN` shows of any run.

It owns the API connection, made on first use, so building a session (or a runner, which holds one) needs no
cluster; rendering and dry runs never make one. Every object stockscale creates carries
`app.kubernetes.io/name=stockscale` and `stockscale/run=<run id>`; pods inherit the labels from their templates.
Listing asks the API server for that label selector and checks the labels again here, so a server that ignores
the selector cannot widen what gets deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.api import KubeApi, load_configuration
from stockscale.launch.kubernetes.logs import TAIL_LINES, iter_lines
from stockscale.launch.kubernetes.outcome import container_times, name_of, parse_time, pod_index, state
from stockscale.launch.pods import CONTAINER

JOB_KINDS = ("Experiment", "OptimizationJob", "TrainJob", "PyTorchJob", "Job")
KINDS = (*JOB_KINDS, "ConfigMap", "NetworkPolicy", "Pod")


@dataclass
class RunObject:
    """One object of a run, as `stockscale k8s status` shows it."""

    kind: str
    name: str
    state: str
    detail: str = ""
    started: float | None = None
    finished: float | None = None


def belongs(obj: Mapping[str, Any], run_id: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(m.LABEL_APP) == m.APP and (run_id is None or labels.get(m.LABEL_RUN) == run_id)


def container_of(pod: Mapping[str, Any]) -> str:
    """The training container: `pytorch` in stockscale's own templates, `node` under a Trainer v2 runtime."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    return m.TRAINER_NODE if m.TRAINER_NODE in names and CONTAINER not in names else CONTAINER


def _row(kind: str, obj: Mapping[str, Any], detail: str = "") -> RunObject:
    """One object as `stockscale k8s status` shows it: a one-word state and, for pods, the container's times."""
    status = obj.get("status") or {}
    if kind == "Pod":
        started, finished = container_times(obj)
        index = pod_index(obj)
        detail = f"trial {index}" if index is not None else detail
    else:
        started, finished = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
        if kind == "Job":
            detail = ", ".join(f"{status.get(key, 0) or 0} {key}" for key in ("active", "succeeded", "failed"))
    shown = state(obj) if kind not in ("ConfigMap", "NetworkPolicy") else "-"
    return RunObject(kind, name_of(obj), shown, detail, started, finished)


class ClusterSession:
    """The runs in one namespace: create, list and delete their objects, show a run, read its logs."""

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

    def _request(self, verb: str, of: str, name: str = "", body: Mapping[str, Any] | None = None,
                 **common: Any) -> Any:
        """`verb` ("create", "list", "delete") of one kind through the client method that serves it."""
        api, ns = self.api, self.namespace
        if of in m.CUSTOM_KINDS:
            group, version, plural = m.CUSTOM_KINDS[of]
            custom = {"create": (api.custom.create_namespaced_custom_object, (body,)),
                      "list": (api.custom.list_namespaced_custom_object, ()),
                      "delete": (api.custom.delete_namespaced_custom_object, (name,))}
            fn, more = custom[verb]
            return api.call(fn, group, version, ns, plural, *more, **common)
        methods = {
            "Job": (api.batch.create_namespaced_job, api.batch.list_namespaced_job, api.batch.delete_namespaced_job),
            "ConfigMap": (api.core.create_namespaced_config_map, api.core.list_namespaced_config_map,
                          api.core.delete_namespaced_config_map),
            "NetworkPolicy": (api.networking.create_namespaced_network_policy,
                              api.networking.list_namespaced_network_policy,
                              api.networking.delete_namespaced_network_policy),
            "Pod": (None, api.core.list_namespaced_pod, api.core.delete_namespaced_pod),
        }
        if of not in methods:
            raise ValueError(f"unknown kind {of}")
        create, list_, delete = methods[of]
        if verb == "create" and create is not None:
            return api.call(create, ns, body, **common)
        if verb == "list":
            return api.call(list_, ns, **common)
        if verb == "delete":
            return api.call(delete, name, ns, **common)
        raise ValueError(f"cannot {verb} {of}")  # pragma: no cover - stockscale creates no pods itself

    def create(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        kind = body["kind"]
        return self._request("create", kind, body=body, what=f"create {kind} {name_of(body)} in namespace "
                             f"{self.namespace}", kind=kind, namespace=self.namespace)

    def list_kind(self, kind: str, run_id: str | None) -> list[dict[str, Any]]:
        """Objects of one kind with stockscale's labels (of one run, or of every run when run_id is None)."""
        selector = m.run_selector(run_id) if run_id is not None else f"{m.LABEL_APP}={m.APP}"
        # A cluster without a CRD simply has none of its objects.
        body = self._request("list", kind, what=f"list {kind}s in namespace {self.namespace}", kind=kind,
                             namespace=self.namespace, label_selector=selector,
                             ok_statuses=(404,) if kind in m.CUSTOM_KINDS else ())
        items = [item for item in (body or {}).get("items") or [] if belongs(item, run_id)]
        for item in items:
            item["kind"] = kind  # list items come without their kind
        return sorted(items, key=name_of)

    def delete_object(self, kind: str, name: str) -> bool:
        """Delete one object (dependents in the background); False if it was already gone."""
        body = self._request("delete", kind, name, what=f"delete {kind} {name}", kind=kind,
                             namespace=self.namespace, missing_ok=True, propagation_policy="Background")
        return body is not None

    def annotate_pod(self, name: str, annotations: Mapping[str, str]) -> bool:
        """Set annotations on one pod (a JSON merge patch); False if the pod is gone."""
        body = self.api.call(self.api.core.patch_namespaced_pod, name, self.namespace,
                             {"metadata": {"annotations": dict(annotations)}}, what=f"annotate pod {name}",
                             kind="Pod", namespace=self.namespace, missing_ok=True,
                             _content_type="application/merge-patch+json")
        return body is not None

    def list_runs(self) -> list[str]:
        """Run ids that still have a job of some kind in the namespace."""
        return sorted({obj["metadata"]["labels"][m.LABEL_RUN] for kind in JOB_KINDS
                       for obj in self.list_kind(kind, None)})

    def optimization_trials(self, optimization_job: str) -> list[dict[str, Any]]:
        """The trial TrainJobs an OptimizationJob's controller made. They carry its label alone
        (m.OPTIMIZATION_JOB_LABEL), not the run's, so they are found by it, checked again here."""
        body = self._request("list", "TrainJob", what=f"list the TrainJobs of OptimizationJob {optimization_job}",
                             kind="TrainJob", namespace=self.namespace, ok_statuses=(404,),
                             label_selector=f"{m.OPTIMIZATION_JOB_LABEL}={optimization_job}")
        items = [item for item in (body or {}).get("items") or []
                 if (item.get("metadata", {}).get("labels") or {}).get(m.OPTIMIZATION_JOB_LABEL) == optimization_job]
        for item in items:
            item["kind"] = "TrainJob"
        return sorted(items, key=name_of)

    def status(self, run_id: str) -> list[RunObject]:
        """Every object of a run with a one-word state and, for pods, the container's times; an
        OptimizationJob's trial TrainJobs follow it."""
        rows = []
        for kind in KINDS:
            for obj in self.list_kind(kind, run_id):
                rows.append(_row(kind, obj))
                if kind == "OptimizationJob":
                    rows += [_row("TrainJob", trial, f"trial of {name_of(obj)}")
                             for trial in self.optimization_trials(name_of(obj))]
        return rows

    def delete_run(self, run_id: str) -> list[str]:
        """Delete a run's jobs (their pods go with them), ConfigMaps and any pod left; returns "Kind/name"s."""
        return [f"{kind}/{name_of(obj)}" for kind in KINDS for obj in self.list_kind(kind, run_id)
                if self.delete_object(kind, name_of(obj))]

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False,
             pod: str | None = None, trial: int | None = None) -> list[str]:
        """Pass every log line of a run's pods (or of one pod or trial) to `on_line(pod, line)`, pod by pod;
        with `follow`, each pod's log is followed until its container ends. Returns the pods read."""
        pods = self.list_kind("Pod", run_id)
        if pod is not None:
            pods = [obj for obj in pods if name_of(obj) == pod]
        if trial is not None:
            pods = [obj for obj in pods if pod_index(obj) == trial
                    or (obj["metadata"].get("labels") or {}).get(m.LABEL_TRIAL) == str(trial)]
        shown = []
        for obj in pods:
            name = name_of(obj)
            response = self.api.open_log(name, self.namespace, container=container_of(obj), follow=follow,
                                         read_timeout=3600.0 if follow else self.api.timeout,
                                         tail_lines=None if follow else TAIL_LINES)
            if response is None:
                continue
            for line in iter_lines(response):
                on_line(name, line)
            shown.append(name)
        return shown
