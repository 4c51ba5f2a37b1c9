"""Kubernetes' Job controller for an Indexed Job and a kubelet that runs each of its pods as a real `stockscale
train` process (this tree's code), played on the emulator (k8s_cluster.py). What each plays, and from where:

- JOB: https://kubernetes.io/docs/concepts/workloads/controllers/job/ ("Completion mode", "Backoff limit per
  index", "Pod failure policy"), batch/v1 as of Kubernetes 1.33 (backoffLimitPerIndex GA):
  - Indexed completion: one index per completion, the pod's `batch.kubernetes.io/job-completion-index`
    annotation and label; an index is complete when a pod of it succeeds (exit 0);
  - `parallelism`: at most that many pods at once;
  - `backoffLimitPerIndex`: a pod that failed counts against its index; past the limit the index is failed
    (status.failedIndexes) and the other indexes go on; when every index is complete or failed, a Job with a
    failed index ends Failed with reason FailedIndexes, else Complete;
  - `podFailurePolicy`: a failed pod matching an `Ignore` rule (here onPodConditions DisruptionTarget) does
    not count, and a replacement pod is created for its index (it trains the trial again).
- KUBELET: the pod's volumes as folders (emptyDir: a new empty folder per pod; configMap: its data as files),
  and a downwardAPI volume of `metadata.annotations` written as the kubelet writes it (one `key="value"`
  line per annotation, sorted, the value quoted like Go's %q: kubernetes pkg/fieldpath/fieldpath.go
  FormatMap) and rewritten when the pod's annotations change ("Expose Pod Information to Containers Through
  Files": the kubelet updates it eventually, on its periodic sync, about a minute on a real node; here
  within 50 ms). Each volumeMount's path is its folder for the process (the paths in the args and env under
  a mountPath are rewritten), `$(VAR)` in args is expanded from the env, an env var from a fieldRef gets the
  pod's value. The container's log is its stdout and stderr together, served as it grows to a reader that
  follows it (`follow=true`), whole to one that does not.
Not played: activeDeadlineSeconds, the node's resources, the grace period before a kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from k8s_cluster import NS, Cluster, container, objects, pod
from k8s_trainer_fake import expand
from kubernetes import client as k8s_client

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
TICK = 0.05


def annotations_file(annotations: dict[str, str]) -> str:
    """KUBELET: FormatMap's text, `key="value"\\n` per annotation in key order (json.dumps quotes an ASCII
    value as Go's %q does)."""
    return "".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(annotations.items()))


def serve_growing_log(cluster: Cluster, pod_name: str, path: Path, finished: Callable[[], bool]) -> None:
    """KUBELET: the log of `pod_name` is the file `path`; a follower gets what is there and then every byte
    as it is written, until `finished()` and all was sent."""

    def respond(request: Any) -> Any:
        if str(request.params.get("follow", "")).lower() not in ("true", "1"):
            return path.read_bytes() if path.exists() else b""
        return tail()

    async def tail() -> AsyncIterator[bytes]:
        sent = 0
        yield b""  # the headers now: the reader is connected while nothing is written yet
        while True:
            done = finished()
            data = path.read_bytes()[sent:] if path.exists() else b""
            if data:
                sent += len(data)
                yield data
            elif done:
                return
            else:
                await asyncio.sleep(0.02)

    cluster.emulator.do(lambda k: k[f"get /api/v1/namespaces/{NS}/pods/{pod_name}/log"] << respond)


class Running:
    """One pod of the Job on this machine: its process, its log and its annotations file."""

    def __init__(self, name: str, index: int, process: subprocess.Popen, log: Path, podinfo: Path | None) -> None:
        self.name, self.index, self.process, self.log, self.podinfo = name, index, process, log, podinfo
        self.written: dict[str, str] | None = None


class IndexedJobController:
    """Plays JOB and KUBELET (module docstring) for every Indexed Job that appears: `handle` is a Cluster's
    on_job. What it did is kept for the test: the pods of each index (`pods`), how each exited (`exit_codes`),
    the annotations each pod ended with (`annotations`), the Job's final condition (`ended`)."""

    def __init__(self, root: Path, timeout: float = 300.0) -> None:
        self.root = root
        self.timeout = timeout
        self.pods: dict[int, list[str]] = {}
        self.exit_codes: dict[str, int] = {}
        self.annotations: dict[str, dict[str, str]] = {}
        self.ended: dict[str, Any] = {}

    def logs(self, pod_name: str) -> str:
        return (self.root / "logs" / f"{pod_name}.log").read_text()

    def handle(self, cluster: Cluster, job: dict) -> None:
        name, spec = job["metadata"]["name"], job["spec"]
        assert spec["completionMode"] == "Indexed"
        limit = spec.get("backoffLimitPerIndex")
        failures: dict[int, int] = {}
        pending = list(range(spec["completions"]))
        complete: set[int] = set()
        failed: set[int] = set()
        running: list[Running] = []
        end = time.monotonic() + self.timeout
        while pending or running:
            assert time.monotonic() < end, f"Job {name} did not finish in {self.timeout}s"
            while pending and len(running) < spec["parallelism"]:
                running.append(self._start(cluster, job, pending.pop(0)))
            for pod_now in list(running):
                self._sync_annotations(cluster, pod_now)
                code = pod_now.process.poll()
                if code is None:
                    continue
                running.remove(pod_now)
                self._sync_annotations(cluster, pod_now)
                self.exit_codes[pod_now.name] = code
                cluster.update_pod(pod_now.name, {"phase": "Succeeded" if code == 0 else "Failed",
                                                  "containerStatuses": [container(exit_code=code,
                                                                                  reason="Completed" if code == 0
                                                                                  else "Error")]})
                if code == 0:
                    complete.add(pod_now.index)
                    continue
                # JOB: no DisruptionTarget here (the kubelet played no disruption), so no Ignore rule matches:
                # the failure counts against its index.
                failures[pod_now.index] = failures.get(pod_now.index, 0) + 1
                if limit is not None and failures[pod_now.index] > limit:
                    failed.add(pod_now.index)
                else:
                    pending.append(pod_now.index)
            time.sleep(TICK)
        condition = {"type": "Failed", "status": "True", "reason": "FailedIndexes",
                     "message": "Job has failed indexes"} if failed else \
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
        self.ended[name] = condition
        try:
            cluster.set_status("jobs", name, {"conditions": [condition], "succeeded": len(complete),
                                              "failed": sum(failures.values()),
                                              "completedIndexes": ",".join(map(str, sorted(complete))),
                                              **({"failedIndexes": ",".join(map(str, sorted(failed)))}
                                                 if failed else {})})
        except k8s_client.ApiException as error:  # the driver had every result and deleted the Job already
            if error.status != 404:
                raise

    def _start(self, cluster: Cluster, job: dict, index: int) -> Running:
        name = job["metadata"]["name"]
        pod_name = f"{name}-{index}-{len(self.pods.get(index, [])):05d}"
        self.pods.setdefault(index, []).append(pod_name)
        template = job["spec"]["template"]
        (box,) = template["spec"]["containers"]
        folders: dict[str, Path] = {}
        podinfo = None
        for volume in template["spec"]["volumes"]:
            folder = self.root / "pods" / pod_name / volume["name"]
            folder.mkdir(parents=True)
            folders[volume["name"]] = folder
            if "configMap" in volume:
                configmap = objects(cluster, "configmaps")[volume["configMap"]["name"]]
                for key, text in configmap["data"].items():
                    (folder / key).write_text(text)
            elif "downwardAPI" in volume:
                (item,) = volume["downwardAPI"]["items"]
                assert item["fieldRef"]["fieldPath"] == "metadata.annotations", item
                podinfo = folder / item["path"]
            else:
                assert "emptyDir" in volume, volume
        mounts = sorted(((mount["mountPath"], folders[mount["name"]]) for mount in box["volumeMounts"]),
                        key=lambda pair: -len(pair[0]))
        assert not any("subPath" in mount for mount in box["volumeMounts"])  # KUBELET: no updates under subPath

        def local(text: str) -> str:
            for path, folder in mounts:
                if text == path or text.startswith(path + "/"):
                    return str(folder) + text[len(path):]
            return text

        annotations = {COMPLETION_INDEX: str(index)}
        env: dict[str, str] = {}
        for var in box["env"]:
            if "value" in var:
                env[var["name"]] = local(var["value"])
            else:
                field = var["valueFrom"]["fieldRef"]["fieldPath"]
                assert field == f"metadata.annotations['{COMPLETION_INDEX}']", field
                env[var["name"]] = str(index)
        labels = {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": name, COMPLETION_INDEX: str(index)}
        body = pod(pod_name, labels, "Running", container("running"), annotations)
        if podinfo is not None:
            podinfo.write_text(annotations_file(annotations))
        log = self.root / "logs" / f"{pod_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        from tests.conftest import REPO

        assert box["command"] == ["stockscale"]
        args = [local(expand(arg, env)) for arg in box["args"]]
        inherited = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "src")}
        with log.open("wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "stockscale", *args], env={**inherited, **env},
                                       cwd=folders["tmp"], stdout=sink, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        running = Running(pod_name, index, process, log, podinfo)
        serve_growing_log(cluster, pod_name, log, lambda: process.poll() is not None)
        cluster.create_pod(body)
        return running

    def _sync_annotations(self, cluster: Cluster, running: Running) -> None:
        """KUBELET: the pod's annotations, read from the API server, into its downwardAPI file when they
        changed (written whole, then renamed, as the kubelet's atomic writer swaps the file)."""
        try:
            body = cluster.core.read_namespaced_pod(running.name, NS, _preload_content=False)
        except k8s_client.ApiException:
            return
        annotations = json.loads(body.data)["metadata"].get("annotations") or {}
        self.annotations[running.name] = annotations
        if running.podinfo is None or annotations == running.written:
            return
        fresh = running.podinfo.with_name(running.podinfo.name + ".new")
        fresh.write_text(annotations_file(annotations))
        os.replace(fresh, running.podinfo)
        running.written = dict(annotations)


def last_json(text: str) -> dict:
    """The last line of a log that is a JSON object (a worker's result line)."""
    return next(json.loads(line) for line in reversed(text.splitlines()) if line.startswith("{"))
