"""A loopback Kubernetes API (kmock's emulator) and a fake cluster side that plays the Training Operator,
Kubeflow Trainer v2, the Job controller, the scheduler and the kubelet through the official client: it sees
what a launcher submitted, creates pods with the labels, statuses and logs a real cluster would give them,
and sets job conditions. It also plays what goes wrong on a real cluster: eviction, preemption (a
DisruptionTarget condition), a pod that cannot be scheduled, an image pull that fails before it works, and
an API-server outage. Shared by the launcher's tests and the command line's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kmock
import yaml
from kubernetes import client as k8s_client

from stockscale.launch.kubernetes import KubeApi

NS = "stock-training"
PYTORCHJOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
TRAINJOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
TRAINER = ("trainer.kubeflow.org", "v1alpha1")
KATIB = ("kubeflow.org", "v1beta1")
T0 = "2026-11-28T17:45:00Z"
T1 = "2026-11-28T17:45:07Z"
UNIX_T0 = 1795887900.0


# ---------------------------------------------------------------------------------------------- the emulator


class Emulator:
    """kmock's KubernetesEmulator on a loopback port, served from its own event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._timers: list[threading.Timer] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "kmock did not start"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            for resource in ("v1/pods", "v1/configmaps", "batch/v1/jobs", "kubeflow.org/v1/pytorchjobs",
                             "networking.k8s.io/v1/networkpolicies", "trainer.kubeflow.org/v1alpha1/trainjobs",
                             "trainer.kubeflow.org/v1alpha1/optimizationjobs", "kubeflow.org/v1beta1/experiments",
                             "kubeflow.org/v1beta1/trials"):
                handler.resources[resource] = {}
            self.kmock = handler
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def do(self, fn: Callable[[Any], Any]) -> Any:
        """Run fn(kmock) on the emulator's loop (reactions are registered there)."""

        async def call() -> Any:
            return fn(self.kmock)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def requests(self, method: str, path: str) -> list[Any]:
        return self.do(lambda k: [r for r in list(k) if r.method == method.upper() and r.url.path == path])

    def all_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, query) of every request the emulator answered, oldest first."""
        return self.do(lambda k: [(str(r.method.value), r.url.path, dict(r.params)) for r in list(k)])

    def outage(self, seconds: float) -> None:
        """The API server answers every request with 503 for `seconds` from now (an etcd or control-plane
        restart), then serves again."""
        body = status_body(503, "the server is currently unable to handle the request", "ServiceUnavailable")
        reactions = self.do(lambda k: [k[method] << 503 << body for method in ("get", "post", "delete", "patch")])

        def end() -> None:
            self.do(lambda k: [reaction._disabled.set() for reaction in reactions])  # kmock has no public off

        timer = threading.Timer(seconds, end)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def configuration(self) -> Any:
        return k8s_client.Configuration(host=self.url)

    def api(self, **kwargs: Any) -> KubeApi:
        kwargs = {"backoff": 0.001, "attempts": 3, "retry_for": 0.0, "timeout": 5.0, "watch_grace": 0.3, **kwargs}
        return KubeApi(self.configuration(), **kwargs)


def status_body(code: int, message: str, reason: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code}


# ------------------------------------------------------------------------------------- the cluster side


def container(state: str = "terminated", exit_code: int = 0, reason: str = "Completed") -> dict:
    if state == "terminated":
        body = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": T0, "finishedAt": T1}}
    elif state == "running":
        body = {"running": {"startedAt": T0}}
    else:
        body = {"waiting": {"reason": reason, "message": f"{reason}: image not found"}}
    return {"name": "pytorch", "ready": False, "restartCount": 0, "image": "x", "imageID": "", "state": body}


def pod(name: str, labels: dict, phase: str, status: dict, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "pytorch", "image": "stockscale:test"}]},
            "status": {"phase": phase, "startTime": T0, "containerStatuses": [status]}}


def metrics_line(**extra: Any) -> str:
    return json.dumps({"kind": "train_run", "format_version": 1, "status": "success", "world_size": 1,
                       "workers": [{"rank": 0, "peak_rss_bytes": 300_000_000, "samples_per_second": 900.0}],
                       "val": {"loss": 0.9}, "run_dir": "/results/x",
                       "test": {"loss": 1.0, "rmse": 1.61, "mae": 1.17, "mape": 1.64, "directional_accuracy": 0.42,
                                "windows": 129},
                       "baseline": {"name": "persistence", "test": {"rmse": 1.59, "mae": 1.14, "mape": 1.60,
                                                                    "directional_accuracy": None, "windows": 129}},
                       **extra})


class Cluster(threading.Thread):
    """Plays the operator, the Job controller and the kubelet: calls `on_pytorchjob(cluster, obj)` and
    `on_job(cluster, obj)` once for every PyTorchJob and Job that appears, each in its own thread."""

    def __init__(self, emulator: Emulator, on_pytorchjob: Callable | None = None,
                 on_job: Callable | None = None, on_trainjob: Callable | None = None,
                 on_optimizationjob: Callable | None = None, on_experiment: Callable | None = None) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        api = k8s_client.ApiClient(emulator.configuration())
        self.core = k8s_client.CoreV1Api(api)
        self.batch = k8s_client.BatchV1Api(api)
        self.custom = k8s_client.CustomObjectsApi(api)
        self.handlers = {"pytorchjobs": on_pytorchjob, "jobs": on_job, "trainjobs": on_trainjob,
                         "optimizationjobs": on_optimizationjob, "experiments": on_experiment}
        self.seen: set[str] = set()
        self.halt = threading.Event()
        self.errors: list[BaseException] = []
        self.active_max = 0

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.halt.set()
        self.join(5)
        if self.errors:
            raise self.errors[0]

    def list(self, plural: str) -> list[dict]:
        if plural == "pytorchjobs":
            body = self.custom.list_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs",
                                                             _preload_content=False)
        elif plural in ("trainjobs", "optimizationjobs"):
            body = self.custom.list_namespaced_custom_object(*TRAINER, NS, plural, _preload_content=False)
        elif plural in ("experiments", "trials"):
            body = self.custom.list_namespaced_custom_object(*KATIB, NS, plural, _preload_content=False)
        elif plural == "jobs":
            body = self.batch.list_namespaced_job(NS, _preload_content=False)
        elif plural == "configmaps":
            body = self.core.list_namespaced_config_map(NS, _preload_content=False)
        elif plural == "networkpolicies":
            body = k8s_client.NetworkingV1Api(self.core.api_client).list_namespaced_network_policy(
                NS, _preload_content=False)
        else:
            body = self.core.list_namespaced_pod(NS, _preload_content=False)
        return json.loads(body.data)["items"]

    def run(self) -> None:
        while not self.halt.is_set():
            for plural, handler in self.handlers.items():
                if handler is None:
                    continue
                try:
                    objs = self.list(plural)
                except k8s_client.ApiException as error:
                    if error.status != 503:  # an emulated outage: the controllers wait for it to end too
                        raise
                    break
                unfinished = [o for o in objs if not any(c.get("type") in ("Succeeded", "Failed", "Complete")
                                                         for c in (o.get("status") or {}).get("conditions", []))]
                self.active_max = max(self.active_max, len(unfinished))
                for obj in objs:
                    key = f"{plural}/{obj['metadata']['name']}"
                    if key not in self.seen:
                        self.seen.add(key)
                        threading.Thread(target=self._handle, args=(handler, obj), daemon=True).start()
            time.sleep(0.02)

    def _handle(self, handler: Callable, obj: dict) -> None:
        try:
            handler(self, obj)
        except BaseException as error:  # reported when the test leaves the `with` block
            self.errors.append(error)

    def create_pod(self, body: dict, log: str | None = None) -> None:
        if log is not None:
            path = f"get /api/v1/namespaces/{NS}/pods/{body['metadata']['name']}/log"
            self.emulator.do(lambda k: k[path] << log.encode())
        self.core.create_namespaced_pod(NS, body)

    def set_status(self, plural: str, name: str, status: dict) -> None:
        if plural == "pytorchjobs":
            self.custom.patch_namespaced_custom_object_status("kubeflow.org", "v1", NS, plural, name,
                                                              {"status": status})
        elif plural in ("trainjobs", "optimizationjobs"):
            self.custom.patch_namespaced_custom_object_status(*TRAINER, NS, plural, name, {"status": status})
        elif plural in ("experiments", "trials"):
            self.custom.patch_namespaced_custom_object_status(*KATIB, NS, plural, name, {"status": status})
        else:
            self.batch.patch_namespaced_job_status(name, NS, {"status": status})

    def wait_for_log_read(self, pod_name: str, timeout: float = 5.0) -> None:
        path = f"/api/v1/namespaces/{NS}/pods/{pod_name}/log"
        end = time.monotonic() + timeout
        while not self.emulator.requests("get", path) and time.monotonic() < end:
            time.sleep(0.02)


    def update_pod(self, name: str, status: dict) -> None:
        """The kubelet or the scheduler reports a new pod status."""
        self.core.patch_namespaced_pod_status(name, NS, {"status": status})

    def create_trainjob(self, body: dict) -> None:
        self.custom.create_namespaced_custom_object(*TRAINER, NS, "trainjobs", body)

    def create_trial(self, body: dict) -> None:
        self.custom.create_namespaced_custom_object(*KATIB, NS, "trials", body)


def conditions(*types: str, message: str = "", reason: str = "") -> list[dict]:
    return [{"type": t, "status": "True", "reason": reason or f"PyTorchJob{t}", "message": message,
             "lastTransitionTime": T0} for t in types]


def replicas(obj: dict) -> list[tuple[str, dict]]:
    """(pod name, labels) for every replica, the way the Training Operator names and labels them."""
    name = obj["metadata"]["name"]
    out = []
    for kind, spec in obj["spec"]["pytorchReplicaSpecs"].items():
        for index in range(spec["replicas"]):
            labels = {**spec["template"]["metadata"]["labels"], "training.kubeflow.org/job-name": name,
                      "training.kubeflow.org/replica-type": kind.lower(),
                      "training.kubeflow.org/replica-index": str(index)}
            out.append((f"{name}-{kind.lower()}-{index}", labels))
    return out


def succeed(cluster: Cluster, obj: dict, log: str | None = None, follow: bool = True) -> None:
    """Every replica exits 0; with `follow`, the job succeeds only after the launcher started reading the
    master's log (as when a real training runs for a while)."""
    name = obj["metadata"]["name"]
    master_log = log or f"epoch 1/1 loss 0.93\nsaved {name}\n{metrics_line(world_size=len(replicas(obj)))}\n" \
                        "Warning: a library said something at exit\n"
    for pod_name, labels in replicas(obj):
        is_master = pod_name.endswith("-master-0")
        cluster.create_pod(pod(pod_name, labels, "Succeeded", container()),
                           log=master_log if is_master else '{"rank": 1}\n')
    cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running")})
    if follow:
        cluster.wait_for_log_read(f"{name}-master-0")
    cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running", "Succeeded"),
                                             "startTime": T0, "completionTime": T1})


def objects(cluster_or_k8s: Any, plural: str) -> dict[str, dict]:
    cluster = cluster_or_k8s if isinstance(cluster_or_k8s, Cluster) else Cluster(cluster_or_k8s)
    return {o["metadata"]["name"]: o for o in cluster.list(plural)}


def job_controller(oom_index: int | None = None) -> Callable:
    """Plays the Job controller and the kubelet for an Indexed Job: pod i trains entry i of the ConfigMap."""

    def handle(cluster: Cluster, job: dict) -> None:
        name = job["metadata"]["name"]
        configmap = objects(cluster, "configmaps")[f"{name}-trials"]
        entries = yaml.safe_load(configmap["data"]["trials.yaml"])
        assert len(entries) == job["spec"]["completions"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": name}
        for index, entry in enumerate(entries):
            annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
            if index == oom_index:
                cluster.create_pod(pod(f"{name}-{index}-x7k2p", labels, "Failed",
                                       container(exit_code=137, reason="OOMKilled"), annotations), log="")
            else:
                log = f"trial {index}\n{metrics_line(config=entry)}\n"
                cluster.create_pod(pod(f"{name}-{index}-x7k2p", labels, "Succeeded", container(), annotations),
                                   log=log)
        failed = oom_index is not None
        cluster.set_status("jobs", name, {"conditions": [{"type": "Failed" if failed else "Complete",
                                                           "status": "True", "reason": "FailedIndexes"}]})

    return handle


# ------------------------------------------------------------------------------------- what goes wrong


def disrupted(status: dict, kind: str) -> dict:
    """A pod status after the cluster took the pod away. "evicted": the kubelet evicted it under node
    pressure (exit 137, reason Evicted); "preempted": the scheduler preempted it for a higher-priority pod
    (SIGTERM, exit 143, a DisruptionTarget condition)."""
    if kind == "evicted":
        return {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
                "startTime": T0, "containerStatuses": [container(exit_code=137, reason="Error")]}
    return {"phase": "Failed", "startTime": T0, "containerStatuses": [container(exit_code=143, reason="Error")],
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                            "message": "Preempted in order to admit critical pod", "lastTransitionTime": T0}]}


UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available."


def unschedulable_status() -> dict:
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                "reason": "Unschedulable", "message": UNSCHEDULABLE}]}


def pulling_status(reason: str = "ErrImagePull") -> dict:
    return {"phase": "Pending", "startTime": T0, "containerStatuses": [container("waiting", reason=reason)]}


# --------------------------------------------------------------------------------------- Trainer v2


def trainjob_pods(obj: dict, attempt: str = "x7k2p") -> list[tuple[str, dict, dict]]:
    """(pod name, labels, annotations) for every node of a TrainJob, as JobSet names and labels them: the
    runtime patch's pod labels plus JobSet's, one Indexed Job `node` with numNodes completions."""
    name = obj["metadata"]["name"]
    (patch,) = obj["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    labels = {**node["template"]["spec"]["template"]["metadata"]["labels"],
              "jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
              "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    return [(f"{name}-node-0-{index}-{attempt}", labels, {"batch.kubernetes.io/job-completion-index": str(index)})
            for index in range(obj["spec"]["trainer"]["numNodes"])]


def node_pod(name: str, labels: dict, annotations: dict, phase: str, status: dict) -> dict:
    body = pod(name, labels, phase, status, annotations)
    body["spec"]["containers"][0]["name"] = "node"
    body["status"]["containerStatuses"][0]["name"] = "node"
    return body


def trainjob_succeeds(cluster: Cluster, obj: dict, log: str | None = None) -> None:
    """Every node exits 0; node 0 prints the metrics line; the TrainJob becomes Complete. (Trials of an
    OptimizationJob are played by its own controller, see test_k8s_trainer.optimization_controller.)"""
    name = obj["metadata"]["name"]
    if "trainer.kubeflow.org/optimization-job" in (obj["metadata"].get("labels") or {}):  # a trial (k8s_trainer_fake)
        return
    nodes = trainjob_pods(obj)
    for pod_name, labels, notes in nodes:
        text = log or f"epoch 1/1 loss 0.93\n{metrics_line(world_size=len(nodes))}\n"
        cluster.create_pod(node_pod(pod_name, labels, notes, "Succeeded", container()),
                           log=text if notes["batch.kubernetes.io/job-completion-index"] == "0" else "{}\n")
    cluster.set_status("trainjobs", name, {"conditions": trainjob_conditions("Complete")})


def trainjob_conditions(kind: str, message: str = "") -> list[dict]:
    return [{"type": kind, "status": "True", "reason": "JobsCompleted" if kind == "Complete" else "JobsFailed",
             "message": message, "lastTransitionTime": T1}]
