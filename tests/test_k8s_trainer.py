"""Kubeflow Trainer v2 through the emulator: a TrainJob run and an OptimizationJob search, from submission to
the JobResult and the search's summary.json. The fake cluster side plays the Trainer controller the way its
source describes it: JobSet pods named `<trainjob>-node-0-<index>-<suffix>` with the runtime patch's labels,
TrainJob conditions Complete/Failed, and for an OptimizationJob one TrainJob per trial carrying the template's
labels, with the trial's parameters appended to the trainer's env as `<prefix><name>`."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import yaml
from k8s_cluster import (
    TRAINJOBS,
    Cluster,
    Emulator,
    container,
    metrics_line,
    node_pod,
    objects,
    trainjob_conditions,
    trainjob_pods,
    trainjob_succeeds,
)
from k8s_schema import validate_manifest

from stockscale.config import TrainConfig
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.runner import TrainJob
from stockscale.search.optimization_job import OptimizationJobSearcher
from stockscale.search.registry import pruner, strategy
from stockscale.search.searcher import TrialResult, TrialTemplate
from stockscale.space import parse_space


@pytest.fixture
def k8s():
    emulator = Emulator()
    yield emulator
    emulator.stop()


def test_a_trainjob_runs_streams_node_0s_log_and_collects_its_result(k8s):
    submitted: list[dict] = []

    def trainer(cluster: Cluster, obj: dict) -> None:
        submitted.append(obj)
        trainjob_succeeds(cluster, obj)

    launcher = KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="tj-test-0001",
                                  kind="trainjob", poll=0.02, watch_window=0.5)
    job = TrainJob(name="train", config={"epochs": 1, "max_steps": 2}, run_dir=Path("r"), workers=3, timeout=20)
    with Cluster(k8s, on_trainjob=trainer):
        result = launcher.run(job)
    assert result.status == "success", result.detail
    assert result.metrics["world_size"] == 3
    assert result.run_dir is None  # three nodes, a ReadWriteOnce PVC: rank 0 wrote to its emptyDir
    (obj,) = submitted
    validate_manifest({k: v for k, v in obj.items() if k != "status"})
    assert obj["spec"]["trainer"]["numNodes"] == 3
    assert objects(k8s, "trainjobs") == {} and objects(k8s, "networkpolicies") == {}  # deleted when done


def optimization_controller(prefix: str = "", fail_index: int | None = None):
    """Plays the OptimizationJob controller (grid): one TrainJob per point of the categorical parameters,
    `parallelTrials` at a time, each with the template's labels and the point in its env; then Complete."""

    def handle(cluster: Cluster, opt: dict) -> None:
        spec = opt["spec"]
        params = spec["parameters"]
        points = list(itertools.product(*[p["searchSpace"]["categorical"]["choices"] for p in params]))
        assert len(points) == spec["numTrials"]
        for number, point in enumerate(points):
            trial = {"apiVersion": opt["apiVersion"], "kind": "TrainJob",
                     "metadata": {"name": f"{opt['metadata']['name']}-trial-{number:08d}",
                                  "labels": {**spec["trainJobTemplate"]["metadata"]["labels"],
                                             "trainer.kubeflow.org/optimizationjob-name": opt["metadata"]["name"]}},
                     "spec": copy.deepcopy(spec["trainJobTemplate"]["spec"])}
            trial["spec"]["trainer"]["env"] += [{"name": f"{prefix}{p['name']}", "value": value}
                                                for p, value in zip(params, point, strict=True)]
            cluster.create_trainjob(trial)
            config = {p["name"]: value for p, value in zip(params, point, strict=True)}
            (pod_name, labels, notes), = trainjob_pods(trial)
            if number == fail_index:
                cluster.create_pod(node_pod(pod_name, labels, notes, "Failed",
                                            container(exit_code=137, reason="OOMKilled")), log="")
                cluster.set_status("trainjobs", trial["metadata"]["name"],
                                   {"conditions": trainjob_conditions("Failed")})
                continue
            log = f"{metrics_line(config=config, val={'loss': 1.0 + number / 10})}\n"
            cluster.create_pod(node_pod(pod_name, labels, notes, "Succeeded", container()), log=log)
            cluster.set_status("trainjobs", trial["metadata"]["name"], {"conditions": trainjob_conditions("Complete")})
        cluster.set_status("optimizationjobs", opt["metadata"]["name"], {"conditions": [
            {"type": "Complete", "status": "True", "reason": "OptimizationJobCompleted", "message": "done",
             "lastTransitionTime": "2026-11-28T17:45:07Z"}]})

    return handle


def test_an_optimizationjob_search_reads_every_trial_back_by_its_parameters(k8s):
    space = parse_space({"lr": [0.001, 0.002], "hidden_size": [8, 16]}, "space")
    template = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1)
    spec = ClusterSpec(image="stockscale:test", optimization_env_prefix="HP_")
    runner = KubernetesRunner(spec, api=k8s.api(), run_id="opt-test-0001", kind="optimizationjob", poll=0.02,
                              watch_window=0.5)
    told: list[TrialResult] = []
    with Cluster(k8s, on_optimizationjob=optimization_controller("HP_", fail_index=2)):
        trials = OptimizationJobSearcher(runner).search(space, strategy("grid"), pruner("none"), template, 2,
                                                        trials=4, on_trial=told.append)
    assert told == trials  # each told as it ended
    results = [trial.result for trial in trials]
    assert [r.name for r in results] == ["trial-00", "trial-01", "trial-02", "trial-03"]
    assert [r.status for r in results] == ["success", "success", "oom", "success"]
    assert sorted((t.params["lr"], t.params["hidden_size"]) for t in trials) == \
        sorted(itertools.product((0.001, 0.002), (8, 16)))  # the space's own values, read from each TrainJob
    for trial, result in zip(trials, results, strict=True):
        if result.status == "success":  # each trial's own log said which config it trained
            assert result.metrics["config"] == {"lr": repr(trial.params["lr"]),
                                                "hidden_size": repr(trial.params["hidden_size"])}
    assert objects(k8s, "optimizationjobs") == {}


@pytest.mark.slow
def test_search_as_an_optimizationjob_writes_the_same_summary(cli, tmp_path, k8s):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": k8s.url}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "me"}}],
    }))
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\nhidden_size: [8, 16]\n")
    out = tmp_path / "results" / "hp_search_cloud"
    with Cluster(k8s, on_optimizationjob=optimization_controller()):
        ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--kubeconfig", kubeconfig,
                  "--space", space, "--max-steps", "2", "--out", out)
    assert ran.code == 0, ran.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["backend"] == "kubernetes" and summary["successes"] == 4
    assert sorted(t["status"] for t in summary["results"]) == ["success"] * 4
    assert summary["best"] is not None
    (post,) = k8s.requests("post", TRAINJOBS.replace("trainjobs", "optimizationjobs"))
    validate_manifest(post.data)

