"""Kubeflow Trainer v2 through the emulator: a TrainJob run and an OptimizationJob search, from submission to
the JobResult and the search's summary.json. The fake cluster side plays the Trainer controller the way its
source describes it: JobSet pods named `<trainjob>-node-0-<index>-<suffix>` with the runtime patch's labels,
TrainJob conditions Complete/Failed, and for an OptimizationJob one TrainJob per trial with the upstream
controller's name, label, annotation and env (k8s_trainer_fake.py cites the source of each rule); and the
search end to end, each trial a real `stockscale train` reporting its objective over TLS on loopback."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from conftest import assert_clean_error
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
from k8s_trainer_fake import OPT_LABEL, PARAMS_ANNOTATION, env_name, kubelet, status_endpoint, trial_trainjob
from k8s_trainer_fake import optimization_controller as fake_optimization_controller

from stockscale.config import TrainConfig
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes.controllers import OPTIMIZATION_PARAMETERS, opt_env_name, optimization_parameters
from stockscale.launch.runner import TrainJob
from stockscale.search.optimization_job import GATE_WARNING, OptimizationJobSearcher
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


def grid_choice(points: list[tuple[str, ...]]):
    """The trials' assignments as a grid: trial i (from 1) takes point i-1 of the lists' product. NOT what the
    controller commit k8s_trainer_fake cites does (it takes choice (i-1) % len of each list, whatever the
    searchAlgorithm): this stands for the KEP's grid, so a test can see every point of a grid read back."""

    def choose(opt: dict, index: int) -> list[dict[str, str]]:
        return [{"name": p["name"], "value": value}
                for p, value in zip(opt["spec"]["parameters"], points[index - 1], strict=True)]

    return choose


def optimization_controller(fail_index: int | None = None, drop_annotation: int | None = None,
                            log_gone: int | None = None):
    """Plays the OptimizationJob controller with fake trials: one TrainJob per point of the categorical
    parameters, named, labelled, annotated and given the env as upstream's controller does
    (k8s_trainer_fake.trial_trainjob), each ending with a pod whose log says the config it trained (trial
    `fail_index` is OOM-killed; trial `drop_annotation` lost its annotation: its env still says the point;
    trial `log_gone`'s pod log is empty, its objective only in the TrainJob's status.trainerStatus, as the
    status endpoint applied it); then the OptimizationJob is Complete."""

    def handle(cluster: Cluster, opt: dict) -> None:
        spec = opt["spec"]
        params = spec["parameters"]
        points = list(itertools.product(*[p["searchSpace"]["categorical"]["choices"] for p in params]))
        assert len(points) == spec["numTrials"]
        for number, point in enumerate(points):
            trial = trial_trainjob(opt, number + 1, grid_choice(points))
            if number == drop_annotation:
                del trial["metadata"]["annotations"][PARAMS_ANNOTATION]
            assert OPT_LABEL in trial["metadata"]["labels"] and "stockscale/run" not in trial["metadata"]["labels"]
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
            status: dict = {"conditions": trainjob_conditions("Complete")}
            if number == log_gone:
                log = ""
                status["trainerStatus"] = {"progressPercentage": 100,
                                           "metrics": [{"name": "val_loss", "value": "0.75"}]}
            cluster.create_pod(node_pod(pod_name, labels, notes, "Succeeded", container()), log=log)
            cluster.set_status("trainjobs", trial["metadata"]["name"], status)
        cluster.set_status("optimizationjobs", opt["metadata"]["name"], {"conditions": [
            {"type": "Complete", "status": "True", "reason": "OptimizationJobCompleted", "message": "done",
             "lastTransitionTime": "2026-11-28T17:45:07Z"}]})

    return handle


def test_an_optimizationjob_search_reads_every_trial_back_by_its_parameters(k8s):
    space = parse_space({"lr": [0.001, 0.002], "hidden_size": [8, 16]}, "space")
    template = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1)
    spec = ClusterSpec(image="stockscale:test")
    runner = KubernetesRunner(spec, api=k8s.api(), run_id="opt-test-0001", kind="optimizationjob", poll=0.02,
                              watch_window=0.5)
    told: list[TrialResult] = []
    with Cluster(k8s, on_optimizationjob=optimization_controller(fail_index=2, drop_annotation=1)):
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
    # The trials carry the controller's label, not our run's: stockscale asks for them by that label (a real
    # API server answers a selector with only what matches it; the emulator answers with everything).
    selectors = {query["labelSelector"] for method, path, query in k8s.all_requests()
                 if path == TRAINJOBS and "labelSelector" in query}
    assert selectors == {f"{OPT_LABEL}=opt-test-0001"}


def test_a_trial_whose_log_is_gone_is_read_from_the_objective_it_reported(k8s):
    space = parse_space({"lr": [0.001, 0.002]}, "space")
    template = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1)
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="opt-test-0002",
                              kind="optimizationjob", poll=0.02, watch_window=0.5)
    with Cluster(k8s, on_optimizationjob=optimization_controller(log_gone=0)):
        trials = OptimizationJobSearcher(runner).search(space, strategy("grid"), pruner("none"), template, 1,
                                                        trials=2, on_trial=lambda trial: None)
    assert [trial.result.status for trial in trials] == ["success", "success"]
    by_lr = {trial.params["lr"]: trial.result.metrics["val"]["loss"] for trial in trials}
    assert by_lr == {0.001: 0.75, 0.002: pytest.approx(1.1)}


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



def test_k8s_status_lists_an_optimizationjobs_trial_trainjobs_by_the_controllers_label(cli, tmp_path, k8s):
    """The trials carry only the controller's label (not the run's): `stockscale k8s status RUN` finds them by
    it, under their OptimizationJob, and not another OptimizationJob's trials (the emulator answers a label
    selector with every object, so stockscale checks the label itself)."""
    space = parse_space({"lr": [0.001, 0.002]}, "space")
    template = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1)
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="opt-status-0001",
                              kind="optimizationjob", poll=0.02, watch_window=0.5, keep=True)
    with Cluster(k8s, on_optimizationjob=optimization_controller()) as cluster:
        OptimizationJobSearcher(runner).search(space, strategy("grid"), pruner("none"), template, 1, trials=2,
                                               on_trial=lambda trial: None)
        other = trial_trainjob({**objects(k8s, "optimizationjobs")["opt-status-0001"],
                                "metadata": {"name": "someone-else", "uid": "u"}}, 1)
        cluster.create_trainjob(other)
    ran = cli("k8s", "status", "opt-status-0001", "--kubeconfig", _kubeconfig(tmp_path, k8s))
    assert ran.code == 0, ran.err
    rows = [line.split() for line in ran.out.splitlines() + ran.err.splitlines() if line.strip()]
    trials = [row for row in rows if row[0] == "TrainJob"]
    assert [(row[1], row[2], " ".join(row[3:])) for row in trials] == [
        ("opt-status-0001-trial-1", "Complete", "trial of opt-status-0001"),
        ("opt-status-0001-trial-2", "Complete", "trial of opt-status-0001")], rows
    kinds = [row[0] for row in rows]
    assert kinds.index("OptimizationJob") < kinds.index("TrainJob")


def _kubeconfig(tmp_path: Path, k8s: Emulator) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": k8s.url}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "me"}}],
    }))
    return kubeconfig


TINY = ("--epochs", "1", "--max-steps", "2", "--hidden-size", "8", "--num-layers", "1", "--threads", "1",
        "--baselines", "cheap")


@pytest.mark.slow
def test_an_optimizationjob_search_end_to_end_every_trial_ends_with_its_objective(cli, tmp_path, k8s):
    """The fake controller makes the trials as upstream's does (three trials of a two-value list: the third
    repeats the first, choice (index-1) % len); the kubelet runs each as a real `stockscale train` with the
    controller's KUBEFLOW_TRAINER_OPT_* and the TrainJobStatus endpoint's variables; each trial POSTs its
    objective over TLS, the TrainJob ends Complete with it, and summary.json has every trial's."""
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\n")
    out = tmp_path / "results" / "hp_search_cloud"
    mounts = {"/results": tmp_path / "pvc", "/tmp": tmp_path / "scratch"}
    for folder in mounts.values():
        folder.mkdir()
    trainjobs: list[dict] = []
    with status_endpoint(k8s, tmp_path / "tls") as endpoint:
        run_trial = kubelet(endpoint, mounts)

        def on_trainjob(cluster: Cluster, obj: dict) -> None:
            trainjobs.append(obj)
            run_trial(cluster, obj)

        with Cluster(k8s, on_optimizationjob=fake_optimization_controller(), on_trainjob=on_trainjob):
            ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--kubeconfig",
                      _kubeconfig(tmp_path, k8s), "--space", space, "--strategy", "random", "--trials", "3",
                      "--parallel", "2", *TINY, "--out", out)
        assert ran.code == 0, ran.err
        assert GATE_WARNING in ran.err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["successes"] == 3 and [t["status"] for t in summary["results"]] == ["success"] * 3
        (post,) = k8s.requests("post", TRAINJOBS.replace("trainjobs", "optimizationjobs"))
        names = sorted(obj["metadata"]["name"] for obj in trainjobs)
        assert names == [f"{post.data['metadata']['name']}-trial-{index}" for index in (1, 2, 3)]
        by_name = {obj["metadata"]["name"]: obj for obj in trainjobs}
        assigned = {name: json.loads(obj["metadata"]["annotations"][PARAMS_ANNOTATION])[0]["value"]
                    for name, obj in by_name.items()}
        assert [assigned[name] for name in names] == ["0.001", "0.002", "0.001"]  # (index-1) % len
        for name in names:
            env = {var["name"]: var.get("value") for var in by_name[name]["spec"]["trainer"]["env"]}
            assert env["KUBEFLOW_TRAINER_OPT_LR"] == assigned[name]
        pushed = sorted(float(endpoint.objective(name)) for name in names)
        assert endpoint.refused == 0 and all(endpoint.pushed[name][-1]["progressPercentage"] == 100
                                             for name in names)
        objectives = sorted(t["val_loss"] for t in summary["results"])
        assert objectives == pytest.approx(pushed)  # each trial's objective, as it reported it
        assert sorted(t["config"]["lr"] for t in summary["results"]) == [0.001, 0.001, 0.002]
        trained = sorted(json.loads(path.read_text())["config"]["lr"]
                         for path in (tmp_path / "pvc").glob("*/trials/*/metrics.json"))
        assert trained == [0.001, 0.001, 0.002]  # each trial trained the point the controller gave it
        assert objects(k8s, "optimizationjobs") == {}


def test_without_the_trainjobstatus_gate_a_trial_ends_metrics_unavailable(tmp_path, k8s):
    """No KUBEFLOW_TRAINER_SERVER_* (the gate off): the trial trains but reports nothing, so (KEP-3744's
    rule) its TrainJob ends Failed/MetricsUnavailable, which stockscale records as an error naming the gate."""
    space = parse_space({"lr": [0.001, 0.002]}, "space")
    config = TrainConfig(epochs=1, max_steps=2, hidden_size=8, num_layers=1, baselines="cheap")
    template = TrialTemplate(config=config, trials_dir=Path("t"), threads=1)
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="opt-gate-0001",
                              kind="optimizationjob", poll=0.02, watch_window=0.5)
    mounts = {"/results": tmp_path / "pvc", "/tmp": tmp_path / "scratch"}
    for folder in mounts.values():
        folder.mkdir()
    with status_endpoint(k8s, tmp_path / "tls") as endpoint, \
            Cluster(k8s, on_optimizationjob=fake_optimization_controller(),
                    on_trainjob=kubelet(endpoint, mounts, gate=False)):
        trials = OptimizationJobSearcher(runner).search(space, strategy("grid"), pruner("none"), template, 2,
                                                        trials=2, on_trial=lambda trial: None)
    assert [trial.result.status for trial in trials] == ["error", "error"]
    assert all("MetricsUnavailable" in trial.result.detail and "TrainJobStatus feature gate" in trial.result.detail
               for trial in trials)
    assert sorted(trial.params["lr"] for trial in trials) == [0.001, 0.002]
    assert endpoint.pushed == {}


def test_a_dry_run_warns_that_trials_need_the_trainjobstatus_gate(cli, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\n")
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--space", space,
              "--max-steps", "2", "--dry-run", "--out", tmp_path / "dry")
    assert ran.code == 0, ran.err
    assert ran.err.count(GATE_WARNING) == 1
    assert "TrainJobStatus feature gate" in GATE_WARNING and "v2.2.0" in GATE_WARNING
    (rendered,) = (tmp_path / "dry").glob("*ptimization*")
    obj = yaml.safe_load(rendered.read_text())
    args = obj["spec"]["trainJobTemplate"]["spec"]["trainer"]["args"]
    assert "--lr" not in args and not any("$(" in arg and "POD_NAME" not in arg for arg in args)


def test_a_config_that_still_sets_the_env_prefix_is_told_the_prefix_is_fixed(cli, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("optimization_env_prefix: HP_\n")
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\n")
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--k8s-config", config,
              "--space", space, "--dry-run", "--out", tmp_path / "dry")
    assert_clean_error(ran, "optimization_env_prefix", "prefix is fixed", "KUBEFLOW_TRAINER_OPT_")


def test_a_trials_parameters_come_from_its_annotation_else_its_env():
    keys = ["lr", "hidden-size"]
    trial = {"metadata": {"annotations": {OPTIMIZATION_PARAMETERS: json.dumps(
        [{"name": "lr", "value": "0.01"}, {"name": "hidden-size", "value": "16"}])}},
        "spec": {"trainer": {"env": [{"name": "KUBEFLOW_TRAINER_OPT_LR", "value": "0.5"}]}}}
    assert optimization_parameters(trial, keys) == {"lr": "0.01", "hidden-size": "16"}  # the record wins
    trial["metadata"]["annotations"] = {}
    trial["spec"]["trainer"]["env"].append({"name": "KUBEFLOW_TRAINER_OPT_HIDDEN_SIZE", "value": "8"})
    assert optimization_parameters(trial, keys) == {"lr": "0.5", "hidden-size": "8"}
    assert opt_env_name("hidden-size") == env_name("hidden-size") == "KUBEFLOW_TRAINER_OPT_HIDDEN_SIZE"
