"""The Kubernetes launcher over real HTTP against kmock, a loopback Kubernetes API emulator.

The launcher talks to kmock through the official client, configured only with kmock's URL (or a kubeconfig
that points there); nothing in the client is patched. A small fake "cluster side" plays the Training
Operator, the Job controller and the kubelet through its own client: it sees what the launcher submitted,
creates pods with the labels, statuses and logs a real cluster would give them, and sets job conditions.
API failures are kmock reactions that answer with the Status objects a real API server sends.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_cluster import (
    NS,
    PYTORCHJOBS,
    UNIX_T0,
    Cluster,
    Emulator,
    conditions,
    container,
    job_controller,
    metrics_line,
    objects,
    pod,
    replicas,
    status_body,
    succeed,
)
from k8s_schema import validate_manifest
from kubernetes import client as k8s_client

from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubeApi, KubernetesApiError, KubernetesRunner
from stockscale.launch.kubernetes.api import load_configuration
from stockscale.launch.runner import TrainJob

# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def k8s():
    emulator = Emulator()
    yield emulator
    emulator.stop()


def make_launcher(k8s: Emulator, **kwargs: Any) -> KubernetesRunner:
    api = kwargs.pop("api", None) or k8s.api()
    defaults = {"run_id": "train-test-0001", "poll": 0.02, "watch_window": 0.5, "startup_timeout": 30.0}
    return KubernetesRunner(ClusterSpec(image="stockscale:test"), api=api, **{**defaults, **kwargs})


def train_job(**kwargs: Any) -> TrainJob:
    """A training job; its timeout bounds how long a test can wait for a cluster that never answers."""
    return TrainJob(**{"name": "train", "config": {"epochs": 1, "max_steps": 2}, "run_dir": Path("r"),
                       "workers": 4, "timeout": 20.0, **kwargs})


# ------------------------------------------------------------------------------------------- one training run


def test_train_run_submits_streams_the_master_log_and_collects_the_final_json(k8s):
    lines: list[str] = []
    launcher = make_launcher(k8s, on_line=lines.append)
    submitted: dict = {}

    def operator(cluster: Cluster, obj: dict) -> None:
        submitted.update(obj)
        succeed(cluster, obj)

    with Cluster(k8s, on_pytorchjob=operator):
        result = launcher.run(train_job())

    assert result.status == "success", result.detail
    assert result.metrics["kind"] == "train_run" and result.metrics["world_size"] == 4
    assert (result.start_time, result.end_time) == (UNIX_T0, UNIX_T0 + 7)  # the kubelet's own timings
    assert result.peak_rss_bytes == [300_000_000]
    assert result.limit_mechanism == "kubernetes"
    assert result.run_dir == "pvc://stockscale-results/train-test-0001/train"
    assert lines[:2] == ["epoch 1/1 loss 0.93", "saved train-test-0001-train"]
    validate_manifest({k: v for k, v in submitted.items() if k != "status"})  # what went over the wire
    assert submitted["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert objects(k8s, "pytorchjobs") == {}  # deleted when done
    (delete,) = k8s.requests("delete", f"{PYTORCHJOBS}/train-test-0001-train")
    assert delete.params.get("propagationPolicy") == "Background"


def test_keep_leaves_the_job_for_status_logs_and_delete(k8s):
    launcher = make_launcher(k8s, keep=True)
    with Cluster(k8s, on_pytorchjob=succeed):
        assert launcher.run(train_job(workers=2)).status == "success"
    rows = {(row.kind, row.name): row for row in launcher.session.status("train-test-0001")}
    assert rows[("PyTorchJob", "train-test-0001-train")].state == "Succeeded"
    assert rows[("Pod", "train-test-0001-train-master-0")].state == "Succeeded"
    assert rows[("Pod", "train-test-0001-train-master-0")].started == UNIX_T0
    assert launcher.session.list_runs() == ["train-test-0001"]
    seen: list[tuple[str, str]] = []
    assert launcher.logs("train-test-0001", lambda pod, line: seen.append((pod, line))) == [
        "train-test-0001-train-master-0", "train-test-0001-train-worker-0"]
    assert ("train-test-0001-train-worker-0", '{"rank": 1}') in seen
    assert sorted(launcher.delete(launcher.run_id)) == ["NetworkPolicy/train-test-0001-rendezvous",
                                             "Pod/train-test-0001-train-master-0",
                                             "Pod/train-test-0001-train-worker-0",
                                             "PyTorchJob/train-test-0001-train"]
    assert objects(k8s, "pytorchjobs") == {} and launcher.session.status(launcher.run_id) == []


def test_delete_touches_only_the_runs_own_objects(k8s):
    Cluster(k8s).custom.create_namespaced_custom_object(
        "kubeflow.org", "v1", NS, "pytorchjobs",
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
         "metadata": {"name": "someone-elses", "labels": {"app.kubernetes.io/name": "stockscale",
                                                          "stockscale/run": "other-run"}}})
    launcher = make_launcher(k8s, keep=True)
    with Cluster(k8s, on_pytorchjob=lambda c, o: succeed(c, o) if o["metadata"]["name"] != "someone-elses"
                 else None):
        launcher.run(train_job(workers=1))
    launcher.delete(launcher.run_id)
    assert list(objects(k8s, "pytorchjobs")) == ["someone-elses"]


def test_oom_killed_worker_makes_the_run_oom(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        name = obj["metadata"]["name"]
        for pod_name, labels in replicas(obj):
            failed = pod_name.endswith("worker-1")
            state = container(exit_code=137, reason="OOMKilled") if failed else container(exit_code=1, reason="Error")
            cluster.create_pod(pod(pod_name, labels, "Failed", state), log="training...\n")
        cluster.set_status("pytorchjobs", name, {"conditions": conditions(
            "Created", "Running", "Failed", message=f"PyTorchJob {name} is failed because 1 Worker replica(s) "
                                                    "failed.")})

    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s).run(train_job())
    assert result.status == "oom"
    assert result.detail == "OOMKilled (pod train-test-0001-train-worker-1)"
    assert result.metrics is None and result.run_dir is None


def test_job_past_its_deadline_is_a_timeout(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        assert obj["spec"]["runPolicy"]["activeDeadlineSeconds"] == 30
        cluster.set_status("pytorchjobs", obj["metadata"]["name"], {"conditions": conditions(
            "Created", "Running", "Failed",
            message="Job train-test-0001-train has failed because it was active longer than specified deadline")})

    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s).run(train_job(timeout=30))
    assert result.status == "timeout" and "deadline" in result.detail


def test_a_job_that_never_finishes_is_given_up_as_a_timeout(k8s):
    with Cluster(k8s, on_pytorchjob=lambda c, o: c.set_status("pytorchjobs", o["metadata"]["name"],
                                                              {"conditions": conditions("Created", "Running")})):
        result = make_launcher(k8s, startup_timeout=0.5).run(train_job(timeout=0.5))
    assert result.status == "timeout" and "still Running" in result.detail
    assert objects(k8s, "pytorchjobs") == {}


def test_an_image_that_cannot_be_pulled_stops_the_run_with_a_hint(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        for pod_name, labels in replicas(obj):
            cluster.create_pod(pod(pod_name, labels, "Pending", container("waiting", reason="ErrImagePull")))

    with Cluster(k8s, on_pytorchjob=operator), pytest.raises(InputError, match="ErrImagePull.*stockscale:test"):
        make_launcher(k8s, startup_timeout=2.0).run(train_job(workers=2))
    assert objects(k8s, "pytorchjobs") == {} and objects(k8s, "pods") == {}  # nothing left behind


def test_ctrl_c_reraises_and_leaves_what_was_submitted_for_delete_run(k8s):
    def interrupt(event: str) -> None:
        if event.startswith("created PyTorchJob"):
            raise KeyboardInterrupt

    launcher = make_launcher(k8s, on_event=interrupt)
    with pytest.raises(KeyboardInterrupt):
        launcher.run(train_job())
    assert launcher.interrupted and launcher.submitted == ["PyTorchJob/train-test-0001-train"]
    assert list(objects(k8s, "pytorchjobs")) == ["train-test-0001-train"]
    assert launcher.delete("train-test-0001") == ["PyTorchJob/train-test-0001-train"]
    assert objects(k8s, "pytorchjobs") == {}


# -------------------------------------------------------------------------------------------------- search


def trials(count: int) -> list[TrainJob]:
    return [TrainJob(name=f"trial-{i:02d}", config={"lr": 0.001 * (i + 1), "max_steps": 2},
                     run_dir=Path(f"t{i}"), threads=1) for i in range(count)]


def test_indexed_job_search_collects_every_trial_from_its_pod_log(k8s):
    reported: list[str] = []
    launcher = make_launcher(k8s, run_id="search-test-0001")
    with Cluster(k8s, on_job=job_controller(oom_index=1)):
        results = launcher.run_many(trials(3), parallel=2, on_result=lambda r: reported.append(r.name))

    assert [r.name for r in results] == ["trial-00", "trial-01", "trial-02"]
    assert [r.status for r in results] == ["success", "oom", "success"]
    assert results[2].metrics["config"] == {"lr": 0.003, "max_steps": 2, "threads": 1}  # entry 2 for pod 2
    assert results[1].detail == "OOMKilled (pod search-test-0001-1-x7k2p)"
    assert results[0].wall_seconds == 7.0 and results[0].limit_mechanism == "kubernetes"
    assert sorted(reported) == ["trial-00", "trial-01", "trial-02"]
    (job_post,) = k8s.requests("post", f"/apis/batch/v1/namespaces/{NS}/jobs")
    assert job_post.data["spec"]["parallelism"] == 2 and job_post.data["spec"]["completions"] == 3
    validate_manifest(job_post.data)
    assert objects(k8s, "jobs") == {} and objects(k8s, "configmaps") == {}  # deleted when done


def test_pytorchjob_search_keeps_at_most_parallel_jobs_running(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        time.sleep(0.2)
        succeed(cluster, obj, log=metrics_line(trial=obj["metadata"]["labels"]["stockscale/trial"]) + "\n",
                follow=False)

    launcher = make_launcher(k8s, run_id="search-test-0002", kind="pytorchjob")
    with Cluster(k8s, on_pytorchjob=operator) as cluster:
        results = launcher.run_many(trials(4), parallel=2)
    assert [r.status for r in results] == ["success"] * 4
    assert [r.metrics["trial"] for r in results] == ["0", "1", "2", "3"]
    assert cluster.active_max <= 2
    assert len(k8s.requests("post", PYTORCHJOBS)) == 4 and objects(k8s, "pytorchjobs") == {}


# ----------------------------------------------------------------------------------------------- API errors


def refuse_create(k8s: Emulator, code: int, body: dict, path: str = PYTORCHJOBS) -> None:
    k8s.do(lambda k: k[f"post {path}"] << code << body)


def test_unreachable_cluster_is_a_one_line_input_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = KubeApi(k8s_client.Configuration(host=f"http://127.0.0.1:{port}"), backoff=0.001)
    launcher = KubernetesRunner(api=api, run_id="train-test-0001")
    with pytest.raises(InputError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:\d+ \(connection "
                                         r"refused\)") as caught:
        launcher.run(train_job())
    assert "\n" not in str(caught.value) and launcher.submitted == []


def test_missing_kubeconfig_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InputError, match="no Kubernetes configuration"):
        load_configuration()
    with pytest.raises(InputError, match="does not exist"):
        load_configuration(tmp_path / "missing-kubeconfig")


def test_kubeconfig_and_context_reach_the_cluster_with_its_credentials(k8s, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "kmock", "cluster": {"server": k8s.url}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "me", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "me"}},
                     {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "me"}}],
    }))
    launcher = KubernetesRunner(kubeconfig=kubeconfig, context="kmock", run_id="train-test-0001")
    assert launcher.session.list_runs() == []
    (listing, *_) = k8s.requests("get", PYTORCHJOBS)
    assert listing.headers["Authorization"] == "Bearer s3cret"
    with pytest.raises(InputError, match="cannot load the Kubernetes configuration.*no-such-context"):
        KubernetesRunner(kubeconfig=kubeconfig, context="no-such-context").session.list_runs()


@pytest.mark.parametrize(("code", "body", "words"), [
    (401, status_body(401, "Unauthorized", "Unauthorized"), "refused the credentials (401 Unauthorized)"),
    (403, status_body(403, 'pytorchjobs.kubeflow.org is forbidden: User "ana" cannot create resource '
                           '"pytorchjobs" in API group "kubeflow.org" in the namespace "stock-training"',
                      "Forbidden", {"group": "kubeflow.org", "kind": "pytorchjobs"}),
     'not allowed to create PyTorchJob train-test-0001-train in namespace stock-training (403 Forbidden): '
     'pytorchjobs.kubeflow.org is forbidden: User "ana"'),
    (404, status_body(404, "the server could not find the requested resource", "NotFound"),
     "the PyTorchJob resource (kubeflow.org/v1 pytorchjobs) is not installed"),
    (404, status_body(404, 'namespaces "stock-training" not found', "NotFound",
                      {"name": "stock-training", "kind": "namespaces"}),
     "namespace stock-training does not exist"),
])
def test_api_refusals_are_one_line_input_errors(k8s, code, body, words):
    refuse_create(k8s, code, body)
    launcher = make_launcher(k8s)
    with pytest.raises(InputError) as caught:
        launcher.run(train_job())
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert len(k8s.requests("post", PYTORCHJOBS)) == 1  # not retried
    assert launcher.submitted == []


def test_a_name_taken_by_an_earlier_run_is_refused(k8s):
    launcher = make_launcher(k8s, startup_timeout=1.0)  # a launcher that wrongly waited would give up soon
    earlier = launcher.manifests([train_job()], 1)[0]
    Cluster(k8s).custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", earlier)
    with pytest.raises(InputError, match="train-test-0001-train.*already taken.*stockscale k8s delete"):
        launcher.run(train_job(timeout=1.0))
    assert launcher.submitted == []


def test_server_errors_are_retried_with_backoff_then_succeed(k8s):
    k8s.do(lambda k: k[f"get /api/v1/namespaces/{NS}/pods"][:2] << 503 << status_body(503, "etcd", "Unavailable"))
    pauses: list[float] = []
    launcher = make_launcher(k8s, api=k8s.api(sleep=pauses.append, backoff=0.5, attempts=4))
    assert launcher.session.status("train-test-0001") == []
    assert len(k8s.requests("get", f"/api/v1/namespaces/{NS}/pods")) == 3
    assert pauses == [0.5, 1.0]  # exponential


def test_a_create_whose_answer_was_lost_is_not_submitted_twice(k8s):
    """503 after the server stored the object: the retry meets our own object (409) and accepts it."""
    k8s.do(lambda k: k[f"post {PYTORCHJOBS}"][:1] << 503 << status_body(503, "timeout", "ServiceUnavailable"))
    launcher = make_launcher(k8s)
    with Cluster(k8s, on_pytorchjob=succeed):
        result = launcher.run(train_job(workers=1))
    assert result.status == "success"
    assert len(k8s.requests("post", PYTORCHJOBS)) == 2
    assert launcher.submitted == ["PyTorchJob/train-test-0001-train"]


def test_server_errors_that_persist_end_in_one_line_after_bounded_attempts(k8s):
    k8s.do(lambda k: k[f"get /api/v1/namespaces/{NS}/pods"] << 500 << status_body(500, "boom", "InternalError"))
    launcher = make_launcher(k8s, api=k8s.api(attempts=3))
    with pytest.raises(KubernetesApiError, match="kept failing to list Pods.*500 boom.*after 3 attempts"):
        launcher.session.status("train-test-0001")
    assert len(k8s.requests("get", f"/api/v1/namespaces/{NS}/pods")) == 3


def test_a_request_that_times_out_is_retried(k8s):
    async def slow() -> dict:
        await asyncio.sleep(2)
        return {"items": []}

    k8s.do(lambda k: k[f"get /api/v1/namespaces/{NS}/configmaps"][:1] << slow)
    launcher = make_launcher(k8s, api=k8s.api(timeout=0.3))
    assert launcher.session.status("train-test-0001") == []
    assert len(k8s.requests("get", f"/api/v1/namespaces/{NS}/configmaps")) == 2


def test_without_the_client_package_the_error_names_the_extra():
    """In an interpreter where `import kubernetes` fails, a launcher that needs the cluster says what to install."""
    code = ("import sys; sys.modules['kubernetes'] = None\n"
            "from stockscale.errors import InputError\n"
            "from stockscale.launch.kubernetes import KubernetesRunner\n"
            "try:\n    KubernetesRunner().session.list_runs()\nexcept InputError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "the Kubernetes backend needs the official client: pip install 'stockscale[k8s]'"
