"""What a real cluster does to a run, played by the emulator (tests/k8s_cluster.py), and what the launcher
makes of it: evictions and preemptions are "preempted" (not "error"), a disrupted Indexed Job index runs
again, a disrupted training job is resubmitted once, a pod that cannot be scheduled ends the run with the
scheduler's message, image pulls are retried until the start-up deadline, and an API-server outage shorter
than the retry budget is ridden out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import (
    NS,
    PYTORCHJOBS,
    TRAINJOBS,
    UNSCHEDULABLE,
    Cluster,
    Emulator,
    conditions,
    container,
    disrupted,
    metrics_line,
    node_pod,
    objects,
    pod,
    pulling_status,
    replicas,
    succeed,
    trainjob_conditions,
    trainjob_pods,
    trainjob_succeeds,
    unschedulable_status,
)

from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes.outcome import pod_failure
from stockscale.launch.runner import TrainJob


@pytest.fixture
def k8s():
    emulator = Emulator()
    yield emulator
    emulator.stop()


def make_launcher(k8s: Emulator, **kwargs: Any) -> KubernetesRunner:
    api = kwargs.pop("api", None) or k8s.api()
    defaults = {"run_id": "dis-test-0001", "poll": 0.02, "watch_window": 0.5, "startup_timeout": 30.0}
    return KubernetesRunner(ClusterSpec(image="stockscale:test"), api=api, **{**defaults, **kwargs})


def train_job(**kwargs: Any) -> TrainJob:
    return TrainJob(**{"name": "train", "config": {"epochs": 1, "max_steps": 2}, "run_dir": Path("r"),
                       "workers": 2, "timeout": 20.0, **kwargs})


# ---------------------------------------------------------------------------------------- the status itself


@pytest.mark.parametrize("how", ["evicted", "preempted"])
def test_a_pod_the_cluster_took_away_is_preempted_not_an_error(how):
    status = disrupted({}, how)
    failed = pod("p", {}, status["phase"], status["containerStatuses"][0])
    failed["status"] = status
    kind, detail = pod_failure(failed)
    assert kind == "preempted"
    assert ("evicted" if how == "evicted" else "PreemptionByScheduler") in detail
    crashed = pod("p", {}, "Failed", container(exit_code=143, reason="Error"))  # SIGTERM, no disruption
    assert pod_failure(crashed)[0] == "error"


# ------------------------------------------------------------------------------------ Indexed Job search


def test_an_evicted_trial_runs_again_and_its_second_pod_counts(k8s):
    def controller(cluster: Cluster, job: dict) -> None:
        name = job["metadata"]["name"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": name}
        index = {"batch.kubernetes.io/job-completion-index": "0"}
        first = pod(f"{name}-0-aaaaa", labels, "Failed", container(exit_code=137, reason="Error"), index)
        first["status"] = disrupted({}, "evicted")
        cluster.create_pod(first, log="epoch 1/2\n")
        time.sleep(0.3)  # the Job controller notices, and (podFailurePolicy Ignore) makes a new pod
        cluster.create_pod(pod(f"{name}-0-bbbbb", labels, "Succeeded", container(), index),
                           log=f"{metrics_line()}\n")
        cluster.set_status("jobs", name, {"conditions": [{"type": "Complete", "status": "True"}]})

    events: list[str] = []
    launcher = make_launcher(k8s, run_id="search-dis-0001", on_event=events.append)
    jobs = [TrainJob(name="trial-00", config={"lr": 0.001, "max_steps": 2}, run_dir=Path("t"))]
    with Cluster(k8s, on_job=controller):
        (result,) = launcher.run_many(jobs, parallel=1)
    assert result.status == "success"
    assert any("search-dis-0001-0-aaaaa was evicted" in e and "runs it again" in e for e in events)


def test_a_job_whose_api_server_dropped_backoff_limit_per_index_is_refused(k8s):
    """Kubernetes < 1.29 stores the Job without the field; the launcher sees that in the create's answer."""

    async def old_server(request: Any) -> dict:
        body = dict(request.data)
        body["spec"] = {key: value for key, value in body["spec"].items() if key != "backoffLimitPerIndex"}
        return body

    k8s.do(lambda k: k[f"post /apis/batch/v1/namespaces/{NS}/jobs"] << old_server)
    launcher = make_launcher(k8s, run_id="search-dis-0002")
    jobs = [TrainJob(name="trial-00", config={"max_steps": 2}, run_dir=Path("t"))]
    with pytest.raises(InputError, match="dropped backoffLimitPerIndex.*1.29"):
        launcher.run_many(jobs, parallel=1)
    assert objects(k8s, "configmaps") == {} and launcher.left_behind() == []


# --------------------------------------------------------------------------------- training jobs, resubmitted


def test_a_preempted_pytorchjob_is_resubmitted_once_with_the_same_output(k8s):
    submitted: list[dict] = []

    def operator(cluster: Cluster, obj: dict) -> None:
        submitted.append(obj)
        name = obj["metadata"]["name"]
        if len(submitted) == 1:
            for pod_name, labels in replicas(obj):
                status = disrupted({}, "preempted")
                body = pod(pod_name, labels, "Failed", status["containerStatuses"][0])
                body["status"] = status
                cluster.create_pod(body, log="epoch 1/2\n")
            cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Failed")})
        else:
            succeed(cluster, obj, follow=False)

    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s).run(train_job())
    assert result.status == "success"
    first, second = (obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
                     for obj in submitted)
    assert first == second  # same --out and --checkpoint-dir: the retry resumes there
    out, checkpoints = first[first.index("--out") + 1], first[first.index("--checkpoint-dir") + 1]
    assert checkpoints == f"{out}.checkpoints"  # beside the run directory, which appears only at the end
    assert [obj["metadata"]["name"] for obj in submitted] == ["dis-test-0001-train", "dis-test-0001-train-retry"]
    assert objects(k8s, "pytorchjobs") == {}


def test_a_job_preempted_twice_ends_preempted(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        for pod_name, labels in replicas(obj):
            status = disrupted({}, "evicted")
            body = pod(pod_name, labels, "Failed", status["containerStatuses"][0])
            body["status"] = status
            cluster.create_pod(body, log="")
        cluster.set_status("pytorchjobs", obj["metadata"]["name"], {"conditions": conditions("Failed")})

    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s).run(train_job())
    assert result.status == "preempted" and "evicted" in result.detail
    assert len(k8s.requests("post", PYTORCHJOBS)) == 2


def test_an_evicted_trainjob_is_resubmitted_and_then_succeeds(k8s):
    seen: list[str] = []

    def trainer(cluster: Cluster, obj: dict) -> None:
        seen.append(obj["metadata"]["name"])
        if len(seen) > 1:
            trainjob_succeeds(cluster, obj)
            return
        for pod_name, labels, notes in trainjob_pods(obj):
            status = disrupted({}, "evicted")
            body = node_pod(pod_name, labels, notes, "Failed", status["containerStatuses"][0])
            body["status"] = {**status, "containerStatuses": body["status"]["containerStatuses"]}
            cluster.create_pod(body, log="")
        cluster.set_status("trainjobs", obj["metadata"]["name"], {"conditions": trainjob_conditions("Failed")})

    with Cluster(k8s, on_trainjob=trainer):
        result = make_launcher(k8s, kind="trainjob").run(train_job())
    assert result.status == "success", result.detail
    assert seen == ["dis-test-0001-train", "dis-test-0001-train-retry"]
    assert len(k8s.requests("post", TRAINJOBS)) == 2


# ---------------------------------------------------------------------------------------- start-up deadline


def test_an_unschedulable_pod_ends_the_run_with_the_schedulers_message(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        for pod_name, labels in replicas(obj):
            body = pod(pod_name, labels, "Pending", container("waiting", reason="ContainerCreating"))
            body["status"] = unschedulable_status()
            cluster.create_pod(body)

    launcher = make_launcher(k8s, startup_timeout=60.0)
    began = time.monotonic()
    with Cluster(k8s, on_pytorchjob=operator), pytest.raises(InputError) as caught:
        launcher.run(train_job(timeout=None))  # no --timeout: before, this waited forever
    assert UNSCHEDULABLE in str(caught.value) and "cannot be scheduled" in str(caught.value)
    assert time.monotonic() - began < 30
    assert objects(k8s, "pytorchjobs") == {} and launcher.left_behind() == []


def test_an_image_pull_that_fails_at_first_is_retried_until_it_works(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        name = obj["metadata"]["name"]
        (pod_name, labels), = replicas(obj)
        cluster.create_pod(pod(pod_name, labels, "Pending", container("waiting", reason="ErrImagePull")))
        time.sleep(1.2)  # a registry hiccup: the kubelet's next pull works
        cluster.update_pod(pod_name, {"phase": "Running", "containerStatuses": [container("running")]})
        cluster.emulator.do(lambda k: k[f"get /api/v1/namespaces/{NS}/pods/{pod_name}/log"]
                            << f"{metrics_line()}\n".encode())
        cluster.update_pod(pod_name, {"phase": "Succeeded", "containerStatuses": [container()]})
        cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Succeeded")})

    events: list[str] = []
    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s, on_event=events.append).run(train_job(workers=1))
    assert result.status == "success", result.detail
    assert any("ErrImagePull" in e and "retrying until the start-up deadline" in e for e in events)


def test_an_image_that_never_pulls_ends_at_the_start_up_deadline(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        for pod_name, labels in replicas(obj):
            body = pod(pod_name, labels, "Pending", container("waiting", reason="ImagePullBackOff"))
            body["status"] = pulling_status("ImagePullBackOff")
            cluster.create_pod(body)

    launcher = make_launcher(k8s, startup_timeout=1.0)
    with Cluster(k8s, on_pytorchjob=operator), pytest.raises(InputError) as caught:
        launcher.run(train_job(timeout=None))
    assert "ImagePullBackOff" in str(caught.value) and "still after 1s" in str(caught.value)
    assert "stockscale:test" in str(caught.value)  # the hint names the image
    assert objects(k8s, "pytorchjobs") == {}


def test_a_pod_pending_past_the_start_up_deadline_ends_the_run(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        for pod_name, labels in replicas(obj):
            body = pod(pod_name, labels, "Pending", container("waiting", reason="ContainerCreating"))
            body["status"] = {"phase": "Pending"}
            cluster.create_pod(body)

    with Cluster(k8s, on_pytorchjob=operator), pytest.raises(InputError, match="still Pending after the "
                                                                               "start-up deadline of 1s"):
        make_launcher(k8s, startup_timeout=1.0).run(train_job(timeout=None))


# ------------------------------------------------------------------------------------------- API outage


def ride_out_outage(k8s: Emulator, seconds: float) -> None:
    def operator(cluster: Cluster, obj: dict) -> None:
        time.sleep(0.3)
        k8s.outage(seconds)
        time.sleep(seconds + 0.5)  # the operator's own client would fail during the outage as well
        succeed(cluster, obj, follow=False)

    api = k8s.api(attempts=2, retry_for=seconds + 30, max_backoff=1.0, backoff=0.05)
    with Cluster(k8s, on_pytorchjob=operator):
        result = make_launcher(k8s, api=api).run(train_job(workers=1, timeout=seconds + 30))
    assert result.status == "success", result.detail


def test_a_short_api_outage_is_ridden_out(k8s):
    ride_out_outage(k8s, 2.0)


@pytest.mark.slow
def test_a_thirty_second_api_outage_is_ridden_out(k8s):
    ride_out_outage(k8s, 30.0)


def test_an_outage_longer_than_the_retry_budget_ends_with_what_is_left(k8s):
    def operator(cluster: Cluster, obj: dict) -> None:
        k8s.outage(60.0)

    api = k8s.api(attempts=2, retry_for=1.0, max_backoff=0.2, backoff=0.05)
    launcher = make_launcher(k8s, api=api)
    with Cluster(k8s, on_pytorchjob=operator), pytest.raises(Exception, match="kept failing.*503"):
        launcher.run(train_job(workers=1, timeout=None))
    assert launcher.left_behind() == ["PyTorchJob/dis-test-0001-train"]
