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


def disrupt_first_trainjob(seen: list[str], reason: str):  # noqa: ANN201 - a Cluster handler
    """A Trainer that ends the first TrainJob it sees with every node disrupted (`reason`), then lets the
    resubmitted one succeed; `seen` collects the names it was given."""

    def trainer(cluster: Cluster, obj: dict) -> None:
        seen.append(obj["metadata"]["name"])
        if len(seen) > 1:
            trainjob_succeeds(cluster, obj)
            return
        for pod_name, labels, notes in trainjob_pods(obj):
            status = disrupted({}, reason)
            body = node_pod(pod_name, labels, notes, "Failed", status["containerStatuses"][0])
            body["status"] = {**status, "containerStatuses": body["status"]["containerStatuses"]}
            cluster.create_pod(body, log="")
        cluster.set_status("trainjobs", obj["metadata"]["name"], {"conditions": trainjob_conditions("Failed")})

    return trainer


def test_an_evicted_trainjob_is_resubmitted_and_then_succeeds(k8s):
    seen: list[str] = []

    trainer = disrupt_first_trainjob(seen, "evicted")

    with Cluster(k8s, on_trainjob=trainer):
        result = make_launcher(k8s, kind="trainjob").run(train_job())
    assert result.status == "success", result.detail
    assert seen == ["dis-test-0001-train", "dis-test-0001-train-retry"]
    assert len(k8s.requests("post", TRAINJOBS)) == 2


@pytest.mark.parametrize("access", ["ReadWriteOnce", "ReadWriteMany"])
def test_a_resubmitted_trainjob_says_whether_it_resumes(k8s, access):
    """Two nodes on a ReadWriteOnce PVC keep no checkpoints (manifests/training.py): the runner says so when it
    submits, and that the resubmitted job starts over; on ReadWriteMany it resumes from rank 0's folder."""
    seen: list[str] = []

    trainer = disrupt_first_trainjob(seen, "preempted")

    events: list[str] = []
    launcher = KubernetesRunner(ClusterSpec(image="stockscale:test", pvc_access_mode=access), api=k8s.api(),
                                run_id="dis-test-0001", kind="trainjob", poll=0.02, watch_window=0.5,
                                on_event=events.append)
    with Cluster(k8s, on_trainjob=trainer):
        result = launcher.run(train_job())
    assert result.status == "success", result.detail
    again = next(event for event in events if "resubmitting once" in event)
    if access == "ReadWriteOnce":
        assert any("TrainJob dis-test-0001-train keeps no checkpoints" in event for event in events), events
        assert again.endswith("resubmitting once (it starts over, without checkpoints)")
    else:
        assert not any("keeps no checkpoints" in event for event in events), events
        assert again.endswith("resubmitting once (it resumes from /results/dis-test-0001/train.checkpoints)")


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


def test_one_deadline_rule_every_wave_pays_its_start_up():
    """ClusterRun.deadline, the rule of every kind: waves * (timeout + startup_timeout)."""
    from stockscale.launch.kubernetes.run import ClusterRun

    run = ClusterRun(startup_timeout=60.0)
    for trials, parallel, waves in ((1, 1, 1), (5, 2, 3), (4, 4, 1), (7, 1, 7), (3, 0, 3)):
        now = time.monotonic()
        deadline = run.deadline(100.0, trials, parallel)
        assert deadline is not None
        assert deadline - now == pytest.approx(waves * 160.0, abs=0.5)
    assert run.deadline(None, 9, 3) is None


def test_the_indexed_job_search_waits_a_start_up_for_every_wave(k8s):
    """Three trials, one at a time, each with 0.5 s and a start-up deadline of 1.5 s: the search waits
    3 * (0.5 + 1.5) = 6 s (before, 3 * 0.5 + 1.5 = 3 s gave up on a trial of the second wave whose pod had to
    start anew). Trial 1 ends at 4 s and counts; trial 2 never comes and is given up at the deadline."""

    def controller(cluster: Cluster, job: dict) -> None:
        name = job["metadata"]["name"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": name}
        for index, delay in ((0, 0.0), (1, 4.0)):
            time.sleep(delay)
            cluster.create_pod(pod(f"{name}-{index}-aaaaa", labels, "Succeeded", container(),
                                   {"batch.kubernetes.io/job-completion-index": str(index)}),
                               log=f"{metrics_line()}\n")

    launcher = make_launcher(k8s, run_id="search-dis-0003", startup_timeout=1.5)
    jobs = [TrainJob(name=f"trial-{i:02d}", config={"max_steps": 2}, run_dir=Path("t"), timeout=0.5)
            for i in range(3)]
    began = time.monotonic()
    with Cluster(k8s, on_job=controller):
        results = launcher.run_many(jobs, parallel=1)
    waited = time.monotonic() - began
    assert [result.status for result in results] == ["success", "success", "timeout"], \
        [(result.status, result.detail) for result in results]
    assert "deadline" in results[2].detail
    assert 5.5 <= waited < 20, waited


def test_no_kind_computes_its_own_deadline():
    """The rule lives in ClusterRun.deadline only: no kind adds the start-up deadline itself."""
    from tests.conftest import REPO

    folder = REPO / "src" / "stockscale" / "launch" / "kubernetes"
    for module in ("training.py", "search_jobs.py", "controllers.py"):
        assert "startup_timeout" not in (folder / module).read_text(), module


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


# ------------------------------------------------ a 2-worker PyTorchJob preempted after epoch 1, resumed for real
#
# The fake kubelet below runs every replica of a PyTorchJob as a real `stockscale train` process (this tree's
# code), so what resumes is stockscale's own training, not a log the test wrote. What it plays, and from where:
# - The Training Operator's environment for each replica (kubeflow/trainer v1.9.3,
#   pkg/controller.v1/pytorch/envvar.go setPodEnv and master.go): PYTHONUNBUFFERED=1, MASTER_ADDR/PET_MASTER_ADDR
#   (upstream `<job>-master-0`; here 127.0.0.1: the emulator has no cluster DNS), MASTER_PORT/PET_MASTER_PORT
#   (upstream the container port named pytorchjob-port; here a free loopback port, so tests can run side by
#   side), WORLD_SIZE = replicas * nprocPerNode, RANK = the replica index (+1 for a Worker), PET_NODE_RANK =
#   RANK, PET_NPROC_PER_NODE = nprocPerNode.
# - The kubelet's volumes (Kubernetes' documented semantics): a persistentVolumeClaim is the claim's one
#   folder, whatever pod mounts it, and survives pods; an emptyDir is a new empty folder for each pod. Each
#   volumeMount's mountPath is that folder for the process: the fake rewrites the paths in the container's
#   args and env that lie under a mountPath (the pod's processes run on this machine, so this is the mount).
# - A container's log is its stdout and stderr together (the kubelet keeps both streams).
# - Preemption (Kubernetes' pod disruption conditions): the pods are killed and end Failed with a
#   DisruptionTarget condition; the operator then marks the PyTorchJob Failed (backoffLimit 0).
# Not played: the rendezvous over pod IPs and the NetworkPolicy, a PVC's attachment (RWO: one node), the
# grace period before SIGKILL (the fake kills at once, the harder case).

RESUME_CONFIG = {"epochs": 3, "multiplier": 10, "hidden_size": 8, "num_layers": 1, "threads": 1, "seed": 11,
                 "device": "cpu", "loader": "memory"}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Kubelet:
    """Runs each replica of a PyTorchJob as a real process with its volumes as folders under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.empty_dirs: dict[str, Path] = {}  # "<pod>/<volume>" -> its folder, for every emptyDir made

    def volume(self, pod_name: str, volume: dict) -> Path:
        if "persistentVolumeClaim" in volume:
            folder = self.root / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        else:
            assert "emptyDir" in volume, volume
            folder = self.root / "emptydir" / pod_name / volume["name"]
            assert not folder.exists()  # a new pod's emptyDir starts empty
            self.empty_dirs[f"{pod_name}/{volume['name']}"] = folder
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def start(self, obj: dict, port: int) -> list[tuple[str, dict, Any, Path]]:
        """Start every replica: (pod name, labels, process, log file), the master first."""
        import os
        import subprocess
        import sys

        from tests.conftest import REPO

        specs = obj["spec"]["pytorchReplicaSpecs"]
        nproc = int(obj["spec"].get("nprocPerNode") or 1)
        world = sum(spec["replicas"] for spec in specs.values()) * nproc
        started = []
        for pod_name, labels in replicas(obj):
            kind = labels["training.kubeflow.org/replica-type"]
            index = int(labels["training.kubeflow.org/replica-index"])
            template = specs[kind.capitalize()]["template"]["spec"]
            (box,) = template["containers"]
            volumes = {v["name"]: self.volume(pod_name, v) for v in template["volumes"]}
            mounts = sorted(((mount["mountPath"], volumes[mount["name"]]) for mount in box["volumeMounts"]),
                            key=lambda pair: -len(pair[0]))

            def mounted(text: str, mounts: list = mounts) -> str:
                for path, folder in mounts:
                    if text == path or text.startswith(path + "/"):
                        return str(folder) + text[len(path):]
                return text

            rank = index + 1 if kind == "worker" else index
            env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "src"), "STOCKSCALE_DIST_TIMEOUT": "60",
                   **{var["name"]: mounted(var["value"]) for var in box["env"] if "value" in var},
                   "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1", "PET_MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port), "PET_MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                   "RANK": str(rank), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": str(nproc)}
            assert box["command"] == ["stockscale"]
            log = self.root / "logs" / f"{pod_name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as sink:
                process = subprocess.Popen([sys.executable, "-m", "stockscale", *map(mounted, box["args"])],
                                           env=env, cwd=volumes["tmp"], stdout=sink, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            started.append((pod_name, labels, process, log))
        return started


def serve_log(cluster: Cluster, pod_name: str, text: bytes) -> None:
    path = f"get /api/v1/namespaces/{NS}/pods/{pod_name}/log"
    cluster.emulator.do(lambda k: k[path] << text)


def real_operator(kubelet: Kubelet, preempt: set[str]) -> Any:
    """The Training Operator over the Kubelet: a PyTorchJob named in `preempt` is preempted once rank 0's first
    checkpoint is on its volume; any other runs to its end."""
    import signal

    def operate(cluster: Cluster, obj: dict) -> None:
        name = obj["metadata"]["name"]
        running = kubelet.start(obj, free_port())
        for pod_name, labels, _, _ in running:
            cluster.create_pod(pod(pod_name, labels, "Running", container("running")))
        cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running")})
        master = running[0][2]
        if name in preempt:
            args = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
            on_pvc = args[args.index("--checkpoint-dir") + 1].removeprefix("/results/")
            saved = kubelet.root / "pvc" / "stockscale-results" / on_pvc / "checkpoint.pt"
            deadline = time.monotonic() + 240
            while not saved.exists():
                assert master.poll() is None, running[0][3].read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after epoch 1"
                time.sleep(0.005)
            for _, _, process, _ in running:
                process.send_signal(signal.SIGKILL)
        for _, _, process, _ in running:
            process.wait(timeout=300)
        for pod_name, _, process, log in running:
            serve_log(cluster, pod_name, log.read_bytes())
            if name in preempt:
                cluster.update_pod(pod_name, disrupted({}, "preempted"))
            else:
                code = process.returncode
                cluster.update_pod(pod_name, {"phase": "Succeeded" if code == 0 else "Failed",
                                              "containerStatuses": [container(exit_code=code)]})
        ended = "Failed" if name in preempt or master.returncode else "Succeeded"
        cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running", ended)})

    return operate


@pytest.mark.slow
def test_a_two_worker_pytorchjob_preempted_after_epoch_1_resumes_from_rank_0s_checkpoint(k8s, tmp_path):
    """Issue 22, item 3 on the emulator: the master mounts the ReadWriteOnce PVC and each worker an emptyDir;
    preempted after epoch 1 and resubmitted, the job resumes from rank 0's checkpoint (the resubmitted
    master's log, which the runner streams, says so), the workers' volumes stay empty, and it ends with the
    weights of the same job never preempted."""
    import torch

    kubelet = Kubelet(tmp_path)
    lines: list[str] = []
    events: list[str] = []
    job = train_job(config=RESUME_CONFIG, timeout=300.0)
    with Cluster(k8s, on_pytorchjob=real_operator(kubelet, preempt={"dis-ckpt-0001-train"})):
        resumed = make_launcher(k8s, run_id="dis-ckpt-0001", on_line=lines.append,
                                on_event=events.append).run(job)
        whole = make_launcher(k8s, run_id="dis-ckpt-0002").run(job)
    assert resumed.status == "success", resumed.detail
    assert whole.status == "success", whole.detail
    assert any("resubmitting once (it resumes from /results/dis-ckpt-0001/train.checkpoints)" in event
               for event in events), events
    on_pvc = tmp_path / "pvc" / "stockscale-results" / "dis-ckpt-0001" / "train.checkpoints"  # the claim's folder
    saved = torch.load(on_pvc / "checkpoint.pt", weights_only=True)
    assert len(saved["workers"]) == 1  # rank 1's own RNG states, handed to rank 0
    resuming = [line for line in lines if f"resuming from {on_pvc}:" in line]  # the mount's path, as the pod sees it
    assert len(resuming) == 1 and "epoch(s)" in resuming[0], lines[-40:]  # once: the resubmitted master
    done = int(resuming[0].split(": ")[1].split()[0])
    assert 1 <= done < 3  # preempted before its last epoch
    # Every worker ran with an emptyDir at /results, and not one file ever appeared in it.
    workers = {key: folder for key, folder in kubelet.empty_dirs.items() if "-worker-" in key and
               key.endswith("/results")}
    assert sorted(workers) == ["dis-ckpt-0001-train-retry-worker-0/results", "dis-ckpt-0001-train-worker-0/results",
                               "dis-ckpt-0002-train-worker-0/results"]
    assert all(not any(folder.rglob("*")) for folder in workers.values()), workers
    assert resumed.metrics["world_size"] == whole.metrics["world_size"] == 2
    assert resumed.metrics["epochs_completed"] == whole.metrics["epochs_completed"] == 3
    assert resumed.metrics["steps"] == whole.metrics["steps"]
    runs = tmp_path / "pvc" / "stockscale-results"
    a, b = (torch.load(runs / run / "train" / "model.pt", weights_only=True) for run in ("dis-ckpt-0001",
                                                                                            "dis-ckpt-0002"))
    assert a.keys() == b.keys()
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    for split in ("val", "test"):
        assert resumed.metrics[split]["loss"] == pytest.approx(whole.metrics[split]["loss"], abs=1e-6)
