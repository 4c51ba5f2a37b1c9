"""The Kubeflow Trainer's OptimizationJob controller, its TrainJobStatus endpoint and a kubelet, played on the
emulator (k8s_cluster.py) the way upstream's sources say they work. Each rule cites where it was read:

- CONTROLLER: kubeflow/trainer pkg/controller/optimizationjob_controller.go at commit
  c4c5e1bf57d96460ea7b71fead104737a4afaf27 ("add Kueue suspend and managedBy fields", 2026-08-18), the
  newest version of that file in our mirror (the v2.3.0 release has no OptimizationJob controller; the brief
  named commit 785bc570ba00ea86ecd6ed7fb792cc3e1c3d752e, which our mirror does not hold).
- STATUS_SERVER: kubeflow/trainer v2.3.0 pkg/statusserver/server.go and utils.go (the endpoint, its URL, 403
  to a wrong token, Status().Apply of `trainerStatus`), pkg/runtime/framework/plugins/trainjobstatus/
  trainjobstatus.go (the three KUBEFLOW_TRAINER_SERVER_* variables), docs/user-guides/trainjob-progress.md.
- KEP-3744: a trial that reports no objective ends Failed/MetricsUnavailable. That is the KEP's rule (as
  issue 22 reads it); the controller commit above does not implement it yet.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k8s_cluster import NS, T1, Cluster, container, node_pod, trainjob_pods
from kubernetes import client as k8s_client

# CONTROLLER: EnvOptParamPrefix, AnnotationOptParams, the trial's label (constructTrialTrainJob)
OPT_PREFIX = "KUBEFLOW_TRAINER_OPT_"
PARAMS_ANNOTATION = "trainer.kubeflow.org/optimization-parameters"
OPT_LABEL = "trainer.kubeflow.org/optimization-job"
# STATUS_SERVER: utils.go StatusUrl; trainjobstatus.go's env names
STATUS_PATH = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs/([^/]+)/status$")
ENV_URL, ENV_CA, ENV_TOKEN = ("KUBEFLOW_TRAINER_SERVER_URL", "KUBEFLOW_TRAINER_SERVER_CA_CERT",
                              "KUBEFLOW_TRAINER_SERVER_TOKEN")
OBJECTIVE = "val_loss"


def env_name(parameter: str) -> str:
    """CONTROLLER: EnvOptParamPrefix + strings.ToUpper(strings.ReplaceAll(param.Name, "-", "_"))."""
    return OPT_PREFIX + parameter.replace("-", "_").upper()


def sample_parameter_value(parameter: dict, index: int) -> str:
    """CONTROLLER sampleParameterValue: a categorical parameter's choice (index-1) % len(choices), whatever
    the searchAlgorithm; a range's midpoint ("%.4f")."""
    space = parameter.get("searchSpace") or {}
    choices = (space.get("categorical") or {}).get("choices") or []
    if choices:
        return choices[(index - 1) % len(choices)]
    for kind in ("uniform", "logUniform"):
        bounds = space.get(kind) or {}
        if bounds.get("min") and bounds.get("max"):
            low, high = float(bounds["min"]), float(bounds["max"])
            return f"{low + (high - low) * 0.5:.4f}"
    return "0"


Choose = Callable[[dict, int], list[dict[str, str]]]  # (OptimizationJob, trial index) -> assignments


def upstream_choice(opt: dict, index: int) -> list[dict[str, str]]:
    return [{"name": p["name"], "value": sample_parameter_value(p, index)} for p in opt["spec"]["parameters"]]


def trial_trainjob(opt: dict, index: int, choose: Choose = upstream_choice) -> dict:
    """CONTROLLER constructTrialTrainJob: `<opt>-trial-<index>`, the template's *spec* only (its metadata, our
    labels included, is not copied), the assignments as a JSON annotation and appended to trainer.env, the
    optimization-job label and a controller owner reference."""
    assignments = choose(opt, index)
    spec = json.loads(json.dumps(opt["spec"]["trainJobTemplate"]["spec"]))
    if spec.get("trainer") is not None:
        spec["trainer"]["env"] = [*(spec["trainer"].get("env") or []),
                                  *({"name": env_name(a["name"]), "value": a["value"]} for a in assignments)]
    meta = opt["metadata"]
    return {"apiVersion": opt["apiVersion"], "kind": "TrainJob",
            "metadata": {"name": f"{meta['name']}-trial-{index}", "namespace": NS,
                         "annotations": {PARAMS_ANNOTATION: json.dumps(assignments)},
                         "labels": {OPT_LABEL: meta["name"]},
                         "ownerReferences": [{"apiVersion": opt["apiVersion"], "kind": "OptimizationJob",
                                              "name": meta["name"], "uid": meta.get("uid") or f"uid-{meta['name']}",
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec}


def ended(trainjob: dict) -> str | None:
    for condition in (trainjob.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def optimization_controller(choose: Choose = upstream_choice, timeout: float = 180) -> Callable[[Cluster, dict], None]:
    """CONTROLLER Reconcile, one pass every 50 ms: count the TrainJobs it controls (Complete, Failed, active);
    once Complete + Failed >= numTrials, the OptimizationJob is Complete (reason MaxTrialsReached, failures
    or not); otherwise, while active < parallelTrials and fewer than numTrials exist, create the next trial
    (one per pass). numTrials and parallelTrials default to 1. Stops when the OptimizationJob is deleted."""

    def handle(cluster: Cluster, opt: dict) -> None:
        name = opt["metadata"]["name"]
        total = opt["spec"].get("numTrials") or 1
        parallel = opt["spec"].get("parallelTrials") or 1
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if name not in {o["metadata"]["name"] for o in cluster.list("optimizationjobs")}:
                return  # deleted: its trials go with it (owner references)
            children = [tj for tj in cluster.list("trainjobs")
                        if any(ref.get("kind") == "OptimizationJob" and ref.get("name") == name
                               for ref in tj["metadata"].get("ownerReferences") or [])]
            states = [ended(tj) for tj in children]
            complete, failed = states.count("Complete"), states.count("Failed")
            if complete + failed >= total:
                cluster.set_status("optimizationjobs", name, {"conditions": [
                    {"type": "Complete", "status": "True", "reason": "MaxTrialsReached",
                     "message": f"Completed {complete} of {total} trials", "lastTransitionTime": T1}]})
                return
            if states.count(None) < parallel and len(children) < total:
                cluster.create_trainjob(trial_trainjob(opt, len(children) + 1, choose))
            time.sleep(0.05)
        raise AssertionError(f"OptimizationJob {name} did not finish in {timeout}s")

    return handle


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class StatusEndpoint:
    """STATUS_SERVER: the TrainJobStatus endpoint over TLS on 127.0.0.1, with a CA made here. POST
    /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status with that TrainJob's bearer
    token (anything else: 403) applies the body's `trainerStatus` to the TrainJob's status."""

    def __init__(self, emulator: Any, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        ca_key, self.ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt"))
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(self.ca),
                 "-days", "1", "-subj", "/CN=trainer-ca")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj",
                 "/CN=127.0.0.1")
        (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(ca_key), "-CAcreateserial",
                 "-out", str(cert), "-days", "1", "-extfile", str(folder / "ext.cnf"))
        self.folder = folder
        self.tokens: dict[str, str] = {}
        self.pushed: dict[str, list[dict]] = {}
        self.refused = 0
        custom = k8s_client.CustomObjectsApi(k8s_client.ApiClient(emulator.configuration()))
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = STATUS_PATH.match(self.path)
                name = match.group(2) if match else ""
                if not match or match.group(1) != NS or name not in endpoint.tokens or \
                        self.headers.get("Authorization") != f"Bearer {endpoint.tokens[name]}":
                    endpoint.refused += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                request = json.loads(body)
                status = request.get("trainerStatus")
                if status is not None:
                    endpoint.pushed.setdefault(name, []).append(status)
                    custom.patch_namespaced_custom_object_status("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs",
                                                                 name, {"status": {"trainerStatus": status}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(request).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env_for(self, trainjob: str) -> dict[str, str]:
        """trainjobstatus.go: what the controller gives a TrainJob's pods with the feature gate on (the token
        is a projected file; here one per TrainJob)."""
        self.tokens[trainjob] = f"token-{trainjob}"
        token = self.folder / f"{trainjob}.token"
        token.write_text(self.tokens[trainjob] + "\n")
        url = f"https://127.0.0.1:{self.server.server_address[1]}/apis/trainer.kubeflow.org/v1alpha1/namespaces/" \
              f"{NS}/trainjobs/{trainjob}/status"
        return {ENV_URL: url, ENV_CA: str(self.ca), ENV_TOKEN: str(token)}

    def objective(self, trainjob: str) -> str | None:
        """The newest objective the TrainJob pushed."""
        for status in reversed(self.pushed.get(trainjob, [])):
            for metric in status.get("metrics") or []:
                if metric.get("name") == OBJECTIVE:
                    return str(metric["value"])
        return None

    def stop(self) -> None:
        self.server.shutdown()


@contextmanager
def status_endpoint(emulator: Any, folder: Path) -> Iterator[StatusEndpoint]:
    endpoint = StatusEndpoint(emulator, folder)
    try:
        yield endpoint
    finally:
        endpoint.stop()


VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values (an unknown variable stays as written)."""
    return VAR.sub(lambda match: env.get(match.group(1), match.group(0)), text)


def kubelet(endpoint: StatusEndpoint, mounts: dict[str, Path], gate: bool = True,
            timeout: float = 240) -> Callable[[Cluster, dict], None]:
    """Runs each trial TrainJob's single node as a local `stockscale train` process, as a kubelet would: the
    trainer's args and env (the controller's KUBEFLOW_TRAINER_OPT_* included, $(VAR) and the pod's own name
    filled in), plus the status endpoint's variables when the feature gate is on (STATUS_SERVER), with the
    pod's volumes (`mounts`: a mount path -> a local folder). Node 0's pod is Running while it trains, then
    Succeeded or Failed with its output as its log. The TrainJob then ends Complete with status.trainerStatus
    as the trial pushed it, or, when the trial pushed no objective, Failed with reason MetricsUnavailable
    (KEP-3744's rule, not in the controller commit); a process that failed ends it Failed (JobsFailed)."""

    def handle(cluster: Cluster, trainjob: dict) -> None:
        if OPT_LABEL not in (trainjob["metadata"].get("labels") or {}):
            return
        name = trainjob["metadata"]["name"]
        (pod_name, labels, notes), = trainjob_pods(trainjob)
        trainer = trainjob["spec"]["trainer"]
        env: dict[str, str] = {}
        for var in trainer.get("env") or []:
            if "value" in var:
                env[var["name"]] = expand(str(var["value"]), env)
            elif (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = pod_name

        def local(text: str) -> str:
            for mount, folder in mounts.items():
                if text == mount or text.startswith(mount + "/"):
                    return str(folder) + text[len(mount):]
            return text

        env = {key: local(value) for key, value in env.items()}
        args = [local(expand(arg, env)) for arg in trainer.get("args") or []]
        if gate:
            env.update(endpoint.env_for(name))  # files outside the pod's volumes (a projected token, the CA)
        assert trainer["command"] == ["stockscale"], trainer["command"]
        cluster.create_pod(node_pod(pod_name, labels, notes, "Running", container("running")))
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("KUBEFLOW_TRAINER_")}
        done = subprocess.run([sys.executable, "-m", "stockscale", *args], env={**inherited, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              cwd=str(next(iter(mounts.values()))))
        (next(iter(mounts.values())) / f"{pod_name}.log").write_text(done.stdout)  # for a test that fails
        path = f"get /api/v1/namespaces/{NS}/pods/{pod_name}/log"
        cluster.emulator.do(lambda k: k[path] << done.stdout.encode())
        finished = container(exit_code=done.returncode, reason="Completed" if done.returncode == 0 else "Error")
        finished["name"] = "node"
        cluster.update_pod(pod_name, {"phase": "Succeeded" if done.returncode == 0 else "Failed",
                                      "containerStatuses": [finished]})
        objective = endpoint.objective(name)
        status: dict[str, Any] = {}
        if endpoint.pushed.get(name):
            status["trainerStatus"] = endpoint.pushed[name][-1]
        if done.returncode != 0:
            condition = {"type": "Failed", "reason": "JobsFailed", "message": done.stdout[-300:]}
        elif objective is None:
            condition = {"type": "Failed", "reason": "MetricsUnavailable",
                         "message": f"trial reported no {OBJECTIVE}"}
        else:
            condition = {"type": "Complete", "reason": "JobsCompleted", "message": "jobs completed"}
        status["conditions"] = [{**condition, "status": "True", "lastTransitionTime": T1}]
        cluster.set_status("trainjobs", name, status)

    return handle
