"""A search as a Katib Experiment: what is rendered is a valid Experiment by the kubeflow-katib SDK's models
and by the rules Katib's admission webhook applies (its CRD accepts any fields, so the schema proves nothing);
its metrics regex matches the epoch line a real `stockscale train` prints; and a search round-trips through the
emulated API with a fake Katib controller that creates Trials and their pods the way Katib does (Trial labels
copied from the Experiment, parameters substituted for `${trialParameters.<name>}`, a batch Job's pod labelled
`job-name=<trial>`), so the searcher reads every trial back with the parameters Katib assigned it. Katib's
metrics collection and median stopping are played as kubeflow/katib v0.19.0's sources do them
(tests/katib_fake.py): the rendered collector spec parses a real training run's output with its timestamps,
and a search with medianstop stops the trial upstream's rule says, from real training output."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import katib_fake
import pytest
import yaml
from conftest import TINY, assert_clean_error
from k8s_cluster import NS, Cluster, Emulator, container, metrics_line, objects, pod
from k8s_schema import CRDS, check_meta, validate_manifest

from stockscale.config import TrainConfig
from stockscale.console import epoch_line
from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.manifests.katib import KATIB_INJECTION, METRICS_FORMAT
from stockscale.launch.pods import CONTAINER
from stockscale.search.katib import KatibSearcher
from stockscale.search.optimization_job import OptimizationJobSearcher
from stockscale.search.registry import pruner, strategy
from stockscale.search.searcher import TrialResult, TrialTemplate, check_cluster_pruner, trial_name
from stockscale.space import Space, grid_size, parse_space
from stockscale.worker import parse_result_line

KATIB_ALGORITHMS = {"random", "grid", "hyperband", "bayesianoptimization", "tpe", "multivariate-tpe", "cmaes",
                    "sobol", "enas", "darts", "pbt"}  # the suggestion services Katib ships
PARAMETER_TYPES = {"int", "double", "categorical", "discrete"}
PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")


@pytest.fixture
def k8s():
    emulator = Emulator()
    yield emulator
    emulator.stop()


TEMPLATE = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1, timeout=60)


def space(lrs=(0.001, 0.002), loaders=("lazy", "memory")) -> Space:
    return parse_space({"lr": list(lrs), "loader": list(loaders)}, "space")


def searcher(k8s: Emulator | None = None, run_id: str = "katib-test-0001") -> KatibSearcher:
    return KatibSearcher(KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api() if k8s else None,
                                          run_id=run_id, kind="katib", poll=0.02, watch_window=0.5))


def render(algorithm: str = "grid", trials: int | None = None, parallel: int = 2) -> dict:
    return searcher().manifest(space(), strategy(algorithm), pruner("none"), TEMPLATE, parallel,
                               trials=trials or grid_size(space()))


def search(k8s: Emulator, run_id: str, points: Space, parallel: int) -> list[TrialResult]:
    told: list[TrialResult] = []
    trials = searcher(k8s, run_id).search(points, strategy("grid"), pruner("none"), TEMPLATE, parallel,
                                          trials=grid_size(points), on_trial=told.append)
    assert sorted(told, key=lambda trial: trial.number) == trials  # each told as it ended
    return trials


def check_with_katib_sdk(experiment: dict) -> None:
    """The SDK's models know every field (a deserialise and serialise round trip loses nothing). The SDK's
    V1ObjectMeta comes from the kubernetes client, whose newer type names the SDK cannot deserialise, so
    metadata is checked as the API server does (check_meta) and the spec by the SDK."""
    from kubeflow.katib import ApiClient, V1beta1ExperimentSpec

    class Response:
        data = json.dumps(experiment["spec"])

    client = ApiClient()
    spec = client.deserialize(Response(), "V1beta1ExperimentSpec")
    assert isinstance(spec, V1beta1ExperimentSpec)
    assert client.sanitize_for_serialization(spec) == experiment["spec"], "fields the Katib SDK does not know"
    check_meta(experiment["metadata"])
    assert experiment["apiVersion"] == "kubeflow.org/v1beta1" and experiment["kind"] == "Experiment"


def check_as_katib_webhook(experiment: dict) -> None:
    """What Katib's experiment validator refuses: objective, algorithm, counts, parameters and their feasible
    spaces, trial parameters and their references, the trial template's placeholders, the metrics collector."""
    spec = experiment["spec"]
    objective = spec["objective"]
    assert objective["type"] in ("minimize", "maximize") and objective["objectiveMetricName"]
    assert objective["objectiveMetricName"] not in objective.get("additionalMetricNames", [])
    assert spec["algorithm"]["algorithmName"] in KATIB_ALGORITHMS
    assert 0 < spec["parallelTrialCount"] <= spec["maxTrialCount"]
    assert spec["maxFailedTrialCount"] <= spec["maxTrialCount"]
    names = [param["name"] for param in spec["parameters"]]
    assert names and len(set(names)) == len(names)
    for param in spec["parameters"]:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", param["name"]), param["name"]
        assert param["parameterType"] in PARAMETER_TYPES
        space = param["feasibleSpace"]
        assert space.get("list"), f"empty feasible space for {param['name']}"
        assert "min" not in space and "max" not in space  # a list is all they give
        assert all(isinstance(value, str) for value in space["list"])
        if param["parameterType"] == "discrete":
            [float(value) for value in space["list"]]
    if spec["algorithm"]["algorithmName"] == "grid":
        points = 1
        for param in spec["parameters"]:
            points *= len(param["feasibleSpace"]["list"])
        assert spec["maxTrialCount"] <= points, "Katib's grid refuses more trials than grid points"
    template = spec["trialTemplate"]
    trial_params = template["trialParameters"]
    assert len({p["name"] for p in trial_params}) == len(trial_params)
    assert len({p["reference"] for p in trial_params}) == len(trial_params)
    assert all(p["reference"] in names for p in trial_params), "a trial parameter references no parameter"
    text = json.dumps(template["trialSpec"])
    assert set(PLACEHOLDER.findall(text)) == {p["name"] for p in trial_params}, "placeholders and trialParameters"
    assert template["trialSpec"]["kind"] == "Job" and template["trialSpec"]["apiVersion"] == "batch/v1"
    pod_spec = template["trialSpec"]["spec"]["template"]["spec"]
    assert template["primaryContainerName"] in [c["name"] for c in pod_spec["containers"]]
    assert pod_spec["restartPolicy"] == "Never"
    collector = spec["metricsCollectorSpec"]
    assert collector["collector"]["kind"] == "StdOut" and "fileSystemPath" not in collector.get("source", {})
    for regex in collector["source"]["filter"]["metricsFormat"]:
        assert re.compile(regex).groups == 2, "Katib needs exactly two groups: the metric's name and value"
    # The CRD the cluster installs (vendored) accepts it too.
    crd = yaml.safe_load((CRDS / "katib.kubeflow.org_experiments.v1beta1.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"]).validate(experiment)


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe"])
def test_every_rendered_experiment_loads_into_the_katib_sdk_and_passes_its_webhook_rules(algorithm):
    experiment = render(algorithm)
    check_with_katib_sdk(experiment)
    check_as_katib_webhook(experiment)
    spec = experiment["spec"]
    assert spec["objective"] == {"type": "minimize", "objectiveMetricName": "val_loss",
                                 "additionalMetricNames": ["train_loss"]}
    assert spec["algorithm"] == {"algorithmName": algorithm}
    assert (spec["parallelTrialCount"], spec["maxTrialCount"]) == (2, 4)
    assert spec["parameters"] == [
        {"name": "lr", "parameterType": "discrete", "feasibleSpace": {"list": ["0.001", "0.002"]}},
        {"name": "loader", "parameterType": "categorical", "feasibleSpace": {"list": ["lazy", "memory"]}}]


def test_the_trial_job_runs_stockscale_train_with_every_searched_flag_in_a_pod_like_our_others():
    template = render()["spec"]["trialTemplate"]
    job = {**template["trialSpec"], "metadata": {"name": "a-trial"}}
    validate_manifest(job)  # a valid batch/v1 Job, its pod template a valid Pod
    (trial_container,) = job["spec"]["template"]["spec"]["containers"]
    args = trial_container["args"]
    assert args[0] == "train"
    assert args[args.index("--lr") + 1] == "${trialParameters.lr}"
    assert args[args.index("--loader") + 1] == "${trialParameters.loader}"
    assert args[args.index("--max-steps") + 1] == "2" and args[args.index("--threads") + 1] == "1"
    indexed = m.indexed_job_manifest(ClusterSpec(image="stockscale:test"), run_id="x", completions=1, parallelism=1)
    (ours,) = indexed["spec"]["template"]["spec"]["containers"]
    assert trial_container["securityContext"] == ours["securityContext"]
    assert trial_container["resources"] == ours["resources"]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"] == indexed["spec"]["template"]["spec"]["securityContext"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["activeDeadlineSeconds"] == 60 and job["spec"]["backoffLimit"] == 0


def test_the_metrics_regex_matches_the_epoch_line_a_real_training_run_prints(cli_process, tmp_path):
    ran = cli_process("train", *TINY, "--epochs", "2", "--max-steps", "1000", "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    # an epoch line is its timestamp, a space, then the JSON progress object (console.epoch_line)
    epochs = [json.loads(line.partition(" ")[2]) for line in lines if ' {"event": "epoch"' in line]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert ran.last_json["status"] == "success"  # the result line still comes last
    assert ran.last_json["val"]["loss"] == pytest.approx(epochs[-1]["val_loss"])
    (regex,) = render()["spec"]["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"]
    seen = [match for line in lines for match in re.findall(regex, line)]  # as Katib's collector reads them
    assert [(name, float(value)) for name, value in seen if name == "val_loss"] == \
        [("val_loss", pytest.approx(e["val_loss"])) for e in epochs]
    assert {name for name, _ in seen} == {"val_loss", "train_loss"}  # nothing else in the log matches


def test_a_search_that_is_not_a_full_grid_is_refused_for_katibs_grid_but_not_random():
    with pytest.raises(InputError, match="not a full grid"):
        render("grid", trials=3)
    assert render("random", trials=3)["spec"]["maxTrialCount"] == 3


def test_tpe_is_for_katib_only():
    with pytest.raises(InputError, match="tpe is for katib"):
        OptimizationJobSearcher(KubernetesRunner(ClusterSpec(), kind="optimizationjob")).check(strategy("tpe"),
                                                                                               pruner("none"))


# ------------------------------------------------------------------------------ round trip, fake controller


def katib_trial(experiment: dict, number: int, assignments: list[dict], rules: list[dict] | None = None) -> dict:
    """One Trial as Katib's controller makes it (kubeflow/katib v0.19.0, pkg/controller.v1beta1/experiment/
    experiment_controller_util.go createTrialInstance: the Experiment's labels, its objective and metrics
    collector, the early stopping rules of its assignment, its assignments substituted into the template)."""
    spec, name = experiment["spec"], experiment["metadata"]["name"]
    template = spec["trialTemplate"]
    run_spec = json.dumps(template["trialSpec"])
    for item in assignments:
        run_spec = run_spec.replace(f"${{trialParameters.{item['name']}}}", item["value"])
    trial_spec = {"parameterAssignments": assignments, "runSpec": json.loads(run_spec),
                  "objective": spec["objective"], "primaryContainerName": template["primaryContainerName"],
                  "metricsCollector": spec["metricsCollectorSpec"]}
    if rules:
        trial_spec["earlyStoppingRules"] = rules
    return {"apiVersion": experiment["apiVersion"], "kind": "Trial",
            "metadata": {"name": f"{name}-{number:08d}",
                         "labels": {**experiment["metadata"]["labels"], m.EXPERIMENT_LABEL: name}},
            "spec": trial_spec}


def create_katib_trial(cluster: Cluster, experiment: dict, number: int, assignments: list[dict],
                       rules: list[dict] | None = None) -> tuple[str, dict]:
    """Creates katib_trial's Trial; returns its name and the labels of its trial Job's pod."""
    trial = katib_trial(experiment, number, assignments, rules)
    cluster.create_trial(trial)
    trial_name = trial["metadata"]["name"]
    template = experiment["spec"]["trialTemplate"]
    return trial_name, {**template["trialSpec"]["spec"]["template"]["metadata"]["labels"], "job-name": trial_name}


def trial_succeeded(cluster: Cluster, trial_name: str, loss: float) -> None:
    cluster.set_status("trials", trial_name, {
        "observation": {"metrics": [{"name": "val_loss", "latest": str(loss), "min": str(loss),
                                     "max": str(loss + 0.5)}]},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "TrialSucceeded"}]})


def experiment_succeeded(cluster: Cluster, name: str) -> None:
    cluster.set_status("experiments", name, {"conditions": [
        {"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached", "message": "done"}]})


def create_trial_pod(cluster: Cluster, trial: dict, pod_labels: dict, phase: str, status: dict, lines: list[str],
                     stopped: bool = False, injected: bool = True) -> str:
    """The pod of a Trial's Job, as Katib's pod webhook makes it for the StdOut collector (kubeflow/katib
    v0.19.0, pkg/webhook/v1beta1/pod/inject_webhook.go Mutate and utils.go): the Trial's labels added, the
    training container wrapped (wrap_command), the sidecar injected with collector_args, the process namespace
    shared. What the training process printed (`lines`) went to the metrics file, so the training container's
    log holds only the wrapper's echo after an early stop, and the sidecar's log has every line through klog.
    Not `injected` (the namespace lacks the webhook's label): the Job's own pod, logging to its container."""
    trial_name = trial["metadata"]["name"]
    pod_name = f"{trial_name}-x7k2p"
    job_pod = trial["spec"]["runSpec"]["spec"]["template"]
    (primary,) = job_pod["spec"]["containers"]
    assert primary["name"] == trial["spec"]["primaryContainerName"]
    body = pod(pod_name, {**pod_labels, **trial["metadata"]["labels"], "katib.kubeflow.org/trial": trial_name},
               phase, status)
    path = f"get /api/v1/namespaces/{NS}/pods/{pod_name}/log"
    if injected:
        body["spec"] = {**job_pod["spec"], "shareProcessNamespace": True, "containers": [
            katib_fake.wrap_command(primary, bool(trial["spec"].get("earlyStoppingRules"))),
            {"name": katib_fake.COLLECTOR, "image": "katib-file-metricscollector",
             "args": katib_fake.collector_args(trial)}]}
        body["status"]["containerStatuses"].append({**container(), "name": katib_fake.COLLECTOR})
        now = datetime.now(UTC)
        klog = [katib_fake.klog_line(f"Trial Name: {trial_name}", now)]
        klog += [katib_fake.klog_line(line, now) for line in lines]
        if stopped:
            klog.append(katib_fake.klog_line("Training container is early stopped", now))
        klog.append(katib_fake.klog_line("Metrics reported. :", now))
        own = "Training Container was Early Stopped\n" if stopped else ""
    else:
        body["spec"] = job_pod["spec"]
        own, klog = "".join(line + "\n" for line in lines), []
    cluster.emulator.do(lambda k: [k[path][{"container": CONTAINER}] << own.encode(),
                                   k[path][{"container": katib_fake.COLLECTOR}] << "".join(
                                       line + "\n" for line in klog).encode()])
    cluster.create_pod(body)
    return pod_name


def katib_controller(fail_index: int | None = None, pod_gone_index: int | None = None):
    """Plays Katib's controller (grid): one Trial per point, labelled like the Experiment plus
    katib.kubeflow.org/experiment, with its parameter assignments; the trial Job's pod (our template's labels
    and job-name) with a log of epoch lines and the final JSON result line; the Trial's observation and
    conditions; then the Experiment Succeeded. `pod_gone_index`'s pod is already gone (Katib only observed
    its metrics). A trial that ran has the pod Katib's webhook makes (create_trial_pod: its output, timestamped
    epoch lines and the result line, in the collector sidecar's log)."""

    def handle(cluster: Cluster, experiment: dict) -> None:
        spec = experiment["spec"]
        name = experiment["metadata"]["name"]
        params = spec["parameters"]
        points = list(itertools.product(*[p["feasibleSpace"]["list"] for p in params]))
        assert len(points) == spec["maxTrialCount"]
        for number, point in enumerate(points):
            assignments = [{"name": p["name"], "value": value} for p, value in zip(params, point, strict=True)]
            trial_name, pod_labels = create_katib_trial(cluster, experiment, number, assignments)
            pod_name = f"{trial_name}-x7k2p"
            if number == fail_index:
                cluster.create_pod(pod(pod_name, pod_labels, "Failed",
                                       container(exit_code=137, reason="OOMKilled")), log="")
                cluster.set_status("trials", trial_name, {"conditions": [
                    {"type": "Failed", "status": "True", "reason": "TrialFailed"}]})
                continue
            loss = 1.0 + number / 10
            config = {item["name"]: item["value"] for item in assignments}
            lines = [epoch_line(1, 2.0, loss + 0.5, 0.1), epoch_line(2, 1.5, loss, 0.1),
                     metrics_line(config=config, val={"loss": loss})]
            if number != pod_gone_index:
                create_trial_pod(cluster, katib_trial(experiment, number, assignments), pod_labels, "Succeeded",
                                 container(), lines)
            trial_succeeded(cluster, trial_name, loss)
        experiment_succeeded(cluster, name)

    return handle


def test_a_katib_search_reads_every_trial_back_by_its_parameter_assignments(k8s):
    with Cluster(k8s, on_experiment=katib_controller(fail_index=2)):
        trials = search(k8s, "katib-test-0002", space(), parallel=2)
    results = [trial.result for trial in trials]
    assert [r.name for r in results] == [trial_name(number) for number in range(4)]
    assert [r.status for r in results] == ["success", "success", "oom", "success"]
    assert sorted((t.params["lr"], t.params["loader"]) for t in trials) == \
        sorted(itertools.product((0.001, 0.002), ("lazy", "memory")))  # the space's own values, as Katib assigned
    for trial, result in zip(trials, results, strict=True):
        if result.status == "success":  # each trial's own log (its last JSON line) said which config it trained
            assert result.metrics["config"] == {"lr": repr(trial.params["lr"]), "loader": trial.params["loader"]}
    assert objects(k8s, "experiments") == {}  # deleted when done
    (post,) = k8s.requests("post", f"/apis/kubeflow.org/v1beta1/namespaces/{ClusterSpec().namespace}/experiments")
    check_with_katib_sdk(post.data)
    check_as_katib_webhook(post.data)


def test_a_trial_whose_pod_is_gone_is_read_from_what_katib_observed(k8s):
    with Cluster(k8s, on_experiment=katib_controller(pod_gone_index=1)):
        first, second = (trial.result for trial in search(k8s, "katib-test-0003", space(loaders=("lazy",)), 1))
    assert first.metrics["config"] == {"lr": "0.001"}  # from its pod's log (only lr varies)
    assert second.status == "success" and second.metrics == {"val": {"loss": pytest.approx(1.1)}}


def test_the_result_of_a_log_is_its_last_json_line_that_is_not_a_progress_line():
    result = metrics_line(val={"loss": 0.5})
    epoch = json.dumps({"event": "epoch", "epoch": 3, "val_loss": 0.4, "train_loss": 0.6})
    assert parse_result_line(["epoch 1/3", result, epoch])["val"] == {"loss": 0.5}  # a line printed after the result
    assert parse_result_line(["epoch 1/3", epoch]) is None  # killed after an epoch: no result, not the epoch line


def kubeconfig(tmp_path: Path, k8s: Emulator) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": k8s.url}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "me"}}],
    }))
    return path


@pytest.mark.slow
def test_search_as_a_katib_experiment_writes_the_same_summary(cli, tmp_path, k8s):
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\nhidden_size: [8, 16]\n")
    out = tmp_path / "results" / "hp_search_cloud"
    with Cluster(k8s, on_experiment=katib_controller()):
        ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "katib", "--k8s-algorithm", "tpe",
                  "--kubeconfig", kubeconfig(tmp_path, k8s), "--space", space, "--max-steps", "2", "--out", out)
    assert ran.code == 0, ran.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["backend"] == "kubernetes" and summary["successes"] == 4
    assert sorted((t["config"]["lr"], t["config"]["hidden_size"]) for t in summary["results"]) == \
        sorted(itertools.product((0.001, 0.002), (8, 16)))
    assert summary["best"]["val_loss"] == pytest.approx(1.0)


def test_dry_run_writes_the_experiment_and_the_marker(cli, tmp_path):
    out = tmp_path / "dry"
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "katib", "--dry-run", "--max-steps", "2",
              "--workers", "3", "--out", out)
    assert ran.code == 0, ran.err
    (path,) = out.glob("experiment-*.yaml")
    experiment = yaml.safe_load(path.read_text())
    check_with_katib_sdk(experiment)
    check_as_katib_webhook(experiment)
    assert experiment["spec"]["maxTrialCount"] == 18 and experiment["spec"]["parallelTrialCount"] == 3
    marker = json.loads((out / "dry_run.json").read_text())
    assert (marker["kind"], marker["command"], marker["backend"]) == ("dry_run", "search", "kubernetes")
    assert path.name in marker["files"] and not (out / "summary.json").exists()
    assert "experiment-" in (out / "kustomization.yaml").read_text()


def test_tpe_with_an_optimizationjob_is_refused_in_one_line_with_nothing_written(cli, tmp_path):
    out = tmp_path / "out"
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--k8s-algorithm", "tpe",
              "--dry-run", "--out", out)
    assert ran.code == 2
    assert len(ran.err.strip().splitlines()) == 1 and "--k8s-algorithm tpe" in ran.err
    assert "Traceback" not in ran.err and not out.exists()


# ------------------------------------------------------------------ ranges, --strategy and --pruner median

RANGES = {"lr": {"type": "double", "min": 1e-4, "max": 1e-2, "log": True},
          "hidden_size": {"type": "int", "min": 16, "max": 64, "step": 16},
          "num_layers": [1, 2]}


def ranged_runner(k8s: Emulator) -> KubernetesRunner:
    return KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="katib-range-0001",
                            kind="katib", poll=0.02, watch_window=0.5)


def ranged_experiment(stopping: str = "median") -> dict:
    return searcher(run_id="katib-range-0001").manifest(parse_space(RANGES, "space"), strategy("tpe"),
                                                        pruner(stopping), TEMPLATE, 2, trials=4)


def check_feasible_spaces_as_katib_webhook(experiment: dict) -> None:
    """Katib's validator for ranges: int and double give min and max (min <= max), a list gives only a list."""
    for param in experiment["spec"]["parameters"]:
        space = param["feasibleSpace"]
        if param["parameterType"] in ("int", "double"):
            assert "list" not in space and float(space["min"]) <= float(space["max"])
            if param["parameterType"] == "int":
                int(space["min"]), int(space["max"]), int(space.get("step", "1"))
            assert space.get("distribution", "uniform") in ("uniform", "logUniform", "normal", "logNormal")
        else:
            assert space["list"] and "min" not in space and "max" not in space


def test_a_space_with_ranges_renders_katibs_feasible_spaces_and_median_stopping():
    experiment = ranged_experiment()
    check_with_katib_sdk(experiment)
    check_feasible_spaces_as_katib_webhook(experiment)
    spec = experiment["spec"]
    assert spec["algorithm"]["algorithmName"] == "tpe" and spec["maxTrialCount"] == 4
    assert spec["parameters"][:2] == [
        {"name": "lr", "parameterType": "double",
         "feasibleSpace": {"min": "0.0001", "max": "0.01", "distribution": "logUniform"}},
        {"name": "hidden_size", "parameterType": "int", "feasibleSpace": {"min": "16", "max": "64", "step": "16"}}]
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    args = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"]
    for name in ("lr", "hidden_size", "num_layers"):
        assert f"${{trialParameters.{name}}}" in args
    assert "earlyStopping" not in ranged_experiment("none")["spec"]


@pytest.mark.parametrize(("kind", "stopping"), [("katib", "asha"), ("trainjob", "median"),
                                                ("optimizationjob", "median")])
def test_a_pruner_a_cluster_kind_cannot_run_is_refused(kind, stopping):
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test"), kind=kind)
    searchers = {"katib": KatibSearcher, "optimizationjob": OptimizationJobSearcher}
    with pytest.raises(InputError, match="Katib's early stopping"):
        if kind in searchers:
            searchers[kind](runner).check(strategy("grid"), pruner(stopping))
        else:  # the Optuna driver over a cluster asks the same
            check_cluster_pruner(runner, pruner(stopping))


def sampling_katib_controller(stopped_index: int):
    """Plays Katib sampling ranges: each Trial assigns its own values (not from any list we sent); trial
    `stopped_index` is ended by the median stopping rule after one epoch (condition EarlyStopped)."""

    def handle(cluster: Cluster, experiment: dict) -> None:
        for number in range(experiment["spec"]["maxTrialCount"]):
            values = {"lr": ["0.0003", "0.004", "0.0001", "0.009"][number], "hidden_size": str(16 * (number + 1)),
                      "num_layers": "1" if number % 2 else "2"}
            assignments = [{"name": key, "value": value} for key, value in values.items()]
            trial_name, pod_labels = create_katib_trial(cluster, experiment, number, assignments)
            loss = 1.0 + number / 10
            first = json.dumps({"event": "epoch", "epoch": 1, "val_loss": loss + 0.5, "train_loss": 2.0})
            if number == stopped_index:
                cluster.create_pod(pod(f"{trial_name}-x", pod_labels, "Failed", container(exit_code=143)),
                                   log=first + "\n")
                cluster.set_status("trials", trial_name, {
                    "observation": {"metrics": [{"name": "val_loss", "latest": str(loss + 0.5),
                                                 "min": str(loss + 0.5), "max": str(loss + 0.5)}]},
                    "conditions": [{"type": "EarlyStopped", "status": "True", "reason": "TrialEarlyStopped"}]})
                continue
            log = first + "\n" + metrics_line(config=values, val={"loss": loss}) + "\n"
            cluster.create_pod(pod(f"{trial_name}-x", pod_labels, "Succeeded", container()), log=log)
            trial_succeeded(cluster, trial_name, loss)
        experiment_succeeded(cluster, experiment["metadata"]["name"])

    return handle


def test_a_katib_search_over_ranges_reads_back_the_points_katib_chose_and_its_early_stopped_trials(k8s, tmp_path):
    from stockscale.experiments.search import SearchSettings, run_search

    settings = SearchSettings(backend="kubernetes", parallel=2, space=dict(RANGES), strategy="tpe", trials=4,
                              pruner="median", train={"max_steps": 2}, searcher="katib")
    launcher = ranged_runner(k8s)
    with Cluster(k8s, on_experiment=sampling_katib_controller(stopped_index=2)):
        summary = run_search(settings, launcher, tmp_path / "s").document()
    statuses = {entry["config"]["hidden_size"]: entry["status"] for entry in summary["results"]}
    assert statuses == {16: "success", 32: "success", 48: "pruned", 64: "success"}
    by_size = {entry["config"]["hidden_size"]: entry for entry in summary["results"]}
    assert by_size[16]["config"] == {"lr": 0.0003, "hidden_size": 16, "num_layers": 2}
    assert by_size[48]["val_loss"] == pytest.approx(1.7) and by_size[48]["epochs_done"] == 1
    assert summary["pruned"] == 1 and summary["best"]["config"]["hidden_size"] == 16
    (post,) = k8s.requests("post", f"/apis/kubeflow.org/v1beta1/namespaces/{launcher.namespace}/experiments")
    check_with_katib_sdk(post.data)
    check_feasible_spaces_as_katib_webhook(post.data)


# ------------------------------------------- Katib's collector and medianstop as upstream does them (v0.19.0)

REAL_LRS = ("0.001", "3.0")  # a learning rate that trains, one that overshoots: their first epochs differ widely


@pytest.fixture(scope="module")
def real_outputs(tmp_path_factory) -> dict[str, list[str]]:
    """What a real tiny `stockscale train` writes to Katib's metrics file for each learning rate: stdout and
    stderr together, as the webhook's `1>/var/log/katib/metrics.log 2>&1` sends them, three epochs."""
    outputs = {}
    for lr in REAL_LRS:
        folder = tmp_path_factory.mktemp(f"train-{lr}")
        done = subprocess.run(
            [sys.executable, "-m", "stockscale", "train", "--epochs", "3", "--max-steps", "1000", "--hidden-size", "8",
             "--num-layers", "1", "--threads", "1", "--baselines", "cheap", "--lr", lr, "--out", str(folder / "run")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180, cwd=folder,
            env={**os.environ, "STOCKSCALE_CACHE": str(folder / "cache")})
        assert done.returncode == 0, done.stdout
        outputs[lr] = done.stdout.splitlines()
    return outputs


def epoch_lines(lines: list[str]) -> list[tuple[str, dict]]:
    """(timestamp, progress object) of each epoch line, as console.epoch_line prints them."""
    return [(stamp, json.loads(rest)) for line in lines if ' {"event": "epoch"' in line
            for stamp, _, rest in [line.partition(" ")]]


def sidecar_of(experiment: dict, rules: list[dict] | None = None) -> katib_fake.Sidecar:
    """The collector sidecar the pod webhook injects for a Trial of `experiment`, its flags read as it reads them."""
    return katib_fake.Sidecar.from_args(katib_fake.collector_args(katib_trial(experiment, 0, [], rules)))


def test_the_rendered_collector_reads_every_epoch_of_a_real_run_with_its_timestamp(real_outputs):
    experiment = render()
    collector = experiment["spec"]["metricsCollectorSpec"]
    assert collector == {"collector": {"kind": "StdOut"}, "source": {"filter": {"metricsFormat": [METRICS_FORMAT]}}}
    sidecar = sidecar_of(experiment)
    # the webhook joined the regexes with ';' and the sidecar split them there: ours came through whole
    assert (sidecar.file_format, sidecar.metrics, sidecar.filters) == ("TEXT", ["val_loss", "train_loss"],
                                                                         [METRICS_FORMAT])
    lines = real_outputs["0.001"]
    epochs = epoch_lines(lines)
    assert [e["epoch"] for _, e in epochs] == [1, 2, 3]
    logs = sidecar.collect(lines)
    val = [log for log in logs if log.name == "val_loss"]
    assert [(log.timestamp, float(log.value)) for log in val] == \
        [(stamp, pytest.approx(e["val_loss"])) for stamp, e in epochs]  # each epoch once, at its own time
    assert [float(log.value) for log in logs if log.name == "train_loss"] == \
        [pytest.approx(e["train_loss"]) for _, e in epochs]
    times = [katib_fake.parse_rfc3339_nano(log.timestamp) for log in val]
    assert None not in times and times == sorted(times) and len(set(times)) == 3  # ordered by time, to the µs
    assert katib_fake.ZERO_TIME not in {log.timestamp for log in logs}
    db = katib_fake.ObservationDB()
    db.register("t", logs)
    assert [log.value for log in db.get("t", "val_loss")] == [log.value for log in val]  # the epochs' order
    status = katib_fake.observation(db.get("t"), sidecar.metrics)
    (objective,) = [metric for metric in status["metrics"] if metric["name"] == "val_loss"]
    assert float(objective["latest"]) == pytest.approx(epochs[-1][1]["val_loss"])


def test_without_the_timestamp_katib_cannot_order_the_epochs_and_medianstop_averages_the_wrong_one(real_outputs):
    """Why the epoch line carries its time: a line whose first field is not RFC3339 is observed at the zero
    time, and the DB then has no order among a trial's observations (the fake gives the worst: latest first)."""
    sidecar = sidecar_of(render())
    stamped = real_outputs["3.0"]
    bare = [line.partition(" ")[2] if ' {"event": "epoch"' in line else line for line in stamped]
    first_epoch = epoch_lines(stamped)[0][1]["val_loss"]
    ordered, unordered = katib_fake.ObservationDB(), katib_fake.ObservationDB()
    ordered.register("t", sidecar.collect(stamped))
    unordered.register("t", sidecar.collect(bare))
    assert {log.timestamp for log in unordered.get("t")} == {katib_fake.ZERO_TIME}
    experiment = ranged_experiment("median")  # medianstop, start_step 1: each trial's first observation
    for db, expected in ((ordered, first_epoch), (unordered, epoch_lines(stamped)[-1][1]["val_loss"])):
        stop = katib_fake.MedianStop(experiment, db)
        stop.min_trials_required = 1  # one trial is enough to see which observation it averages
        (rule,) = stop.rules(["t"])
        assert float(rule["value"]) == pytest.approx(expected)
    assert first_epoch != pytest.approx(epoch_lines(stamped)[-1][1]["val_loss"])


def test_medianstop_gives_its_rule_once_enough_trials_succeeded_as_its_service_does():
    db = katib_fake.ObservationDB()
    for number, values in enumerate([(3.0, 1.0), (5.0, 0.5), (4.0, 4.0), (6.0, 1.0), (2.0, 2.0)]):
        db.register(f"t{number}", [katib_fake.MetricLog(f"2026-12-04T19:0{number}:0{step}.000001Z", "val_loss",
                                                          str(value)) for step, value in enumerate(values)])
    stop = katib_fake.MedianStop(ranged_experiment("median"), db)
    assert (stop.min_trials_required, stop.start_step) == (5, 1)  # what we render
    assert stop.rules(["t0", "t1", "t2", "t3"]) == []  # 4 succeeded: no rule yet
    (rule,) = stop.rules(["t0", "t1", "t2", "t3", "t4"])
    assert rule == {"name": "val_loss", "value": "4.0", "comparison": "greater", "startStep": 1}  # mean of 3,5,4,6,2
    sidecar = sidecar_of(ranged_experiment("median"), [rule])
    line = '2026-12-04T19:10:00.000001Z {"event": "epoch", "epoch": %d, "val_loss": %s, "train_loss": 9.0}'
    assert sidecar.first_stop([line % (1, "4.5"), line % (2, "0.1")]) == 0  # worse than 4.0 at its first epoch
    assert sidecar.first_stop([line % (1, "3.5"), line % (2, "9.0")]) is None  # tried at the start step only


def test_every_trial_arg_comes_through_the_sh_c_line_katibs_webhook_makes_of_it():
    """The StdOut collector's webhook joins the container's command and args with spaces into one `sh -c` line
    (utils.go wrapWorkerContainer): each arg must come out of the shell as the same word, `$(POD_NAME)` once
    the kubelet has expanded it."""
    experiment = render()
    trial = katib_trial(experiment, 0, [{"name": "lr", "value": "0.001"}, {"name": "loader", "value": "lazy"}])
    (primary,) = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"]
    wrapped = katib_fake.wrap_command(primary, early_stopping=True)
    assert wrapped["command"] == ["sh", "-c"]
    (line,) = wrapped["args"]
    expanded = line.replace("$(POD_NAME)", "katib-test-0001-00000000-x7k2p").replace("$$", "$")  # the kubelet's
    words = shlex.split(expanded)
    ran = words[:words.index(f"1>{katib_fake.METRICS_FILE}")]
    assert ran == [arg.replace("$(POD_NAME)", "katib-test-0001-00000000-x7k2p")
                   for arg in [*primary["command"], *primary["args"]]]
    assert ran[:2] == ["stockscale", "train"] and ran[ran.index("--lr") + 1] == "0.001"


@pytest.mark.parametrize("value", ["two words", "a;b", "$(id)", "x'y"])
def test_a_value_the_sh_c_line_would_split_or_run_is_refused_in_one_line(value):
    sources = parse_space({"lr": [0.001, 0.002], "source": ["bundled:AAPL", f"csv:/data/{value}.csv"]}, "space")
    with pytest.raises(InputError, match=r"^source value .*sh -c") as refused:
        searcher().manifest(sources, strategy("grid"), pruner("none"), TEMPLATE, 2, trials=4)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"^data value .*sh -c"):  # a fixed flag too
        searcher().manifest(space(), strategy("grid"), pruner("none"),
                            TrialTemplate(config=TrainConfig(data=f"/data/{value}"), trials_dir=Path("t")), 2,
                            trials=4)


def katib_with_medianstop(outputs: dict[str, list[str]], lrs: list[str], given: dict[int, list[dict]],
                          namespace: dict):
    """Plays Katib v0.19.0 with medianstop and the StdOut collector, each Trial's pod printing the real output
    of training its learning rate (real_outputs):
    - Trials are made `parallelTrialCount` at a time, the next when one ends; each gets the rules medianstop
      gives from the Trials that had succeeded by then (suggestionclient.go SyncAssignments);
    - the pod is what the webhook makes of the trial Job's (wrap_command, the collector sidecar with
      collector_args) when `namespace` has the label its namespaceSelector asks for (webhooks.yaml), else the
      Job's own pod, whose Trial then observes nothing; the sidecar watches the metrics file for the rules
      (first_stop): on a hit, training is ended there, the file's observations stored, and medianstop appends
      EarlyStopped to the Trial;
    - the pod ends Succeeded either way (the wrapper's `|| <early-stopped check> && echo completed`); the
      training container's log holds only the wrapper's echo, the sidecar's every line of the file via klog;
    - the Trial's observation is getMetrics of its observations; Succeeded when the objective was observed
      (trial_controller_util.go UpdateTrialStatusCondition), else MetricsUnavailable.
    `given` is filled with the rules each Trial got, by its number."""

    def handle(cluster: Cluster, experiment: dict) -> None:
        spec, name = experiment["spec"], experiment["metadata"]["name"]
        db = katib_fake.ObservationDB()
        stop = katib_fake.MedianStop(experiment, db)
        ended: list[tuple[str, str]] = []
        for number, lr in enumerate(lrs):
            succeeded = [trial for trial, kind in ended[:max(0, number - spec["parallelTrialCount"] + 1)]
                         if kind == "Succeeded"]
            rules = given[number] = stop.rules(succeeded)
            assignments = [{"name": "lr", "value": lr}]
            trial_name, pod_labels = create_katib_trial(cluster, experiment, number, assignments, rules)
            trial = katib_trial(experiment, number, assignments, rules)
            sidecar = katib_fake.Sidecar.from_args(katib_fake.collector_args(trial))
            lines = outputs[lr]
            injected = namespace["metadata"].get("labels", {}).get(KATIB_INJECTION) == "enabled"
            stopped_at = sidecar.first_stop(lines) if injected else None
            written = lines if stopped_at is None else lines[:stopped_at + 1]
            if injected:
                db.register(trial_name, sidecar.collect(written))
            create_trial_pod(cluster, trial, pod_labels, "Succeeded", container(), written,
                             stopped=stopped_at is not None, injected=injected)
            observed = katib_fake.observation(db.get(trial_name), sidecar.metrics)
            running = [{"type": kind, "status": "True", "reason": f"Trial{kind}"} for kind in ("Created", "Running")]
            if stopped_at is not None:  # service.py SetTrialStatus appends it
                kind = "EarlyStopped"
                conditions = [*running, {"type": kind, "status": "True", "reason": "TrialEarlyStopped",
                                         "message": "Trial is early stopped"}]
            else:
                kind = "Succeeded" if katib_fake.observation_available(observed, m.OBJECTIVE) \
                    else "MetricsUnavailable"
                conditions = [*running, {"type": kind, "status": "True", "reason": f"Trial{kind}"}]
            cluster.set_status("trials", trial_name, {"observation": observed, "conditions": conditions})
            ended.append((trial_name, kind))
        experiment_succeeded(cluster, name)

    return handle


def test_katib_medianstop_end_to_end_stops_the_trial_its_rule_says_from_real_training_output(k8s, tmp_path,
                                                                                              real_outputs):
    from stockscale.experiments.search import SearchSettings, run_search

    # 2 at a time: trial 5 starts when 4 have succeeded (no rule yet), trial 6 when 5 have (mean of their first
    # val_loss: 4 overshooting runs and one that trains), trial 7 when 6 have.
    lrs = ["3.0"] * 4 + ["0.001", "0.001", "3.0", "0.001"]
    settings = SearchSettings(backend="kubernetes", parallel=2, space={"lr": [0.001, 3.0]}, strategy="random",
                              trials=len(lrs), pruner="median", train={"max_steps": 1000, "epochs": 3},
                              searcher="katib")
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test"), api=k8s.api(), run_id="katib-median-0001",
                              kind="katib", poll=0.02, watch_window=0.5)
    given: dict[int, list[dict]] = {}
    namespace = m.default_manifests(runner.spec)["namespace.yaml"]  # what `stockscale k8s render` applies
    assert namespace["metadata"]["name"] == NS
    with Cluster(k8s, on_experiment=katib_with_medianstop(real_outputs, lrs, given, namespace)):
        summary = run_search(settings, runner, tmp_path / "s").document()
    results = sorted(summary["results"], key=lambda entry: entry["name"])
    assert [entry["status"] for entry in results] == ["success"] * 6 + ["pruned", "success"]
    assert [entry["config"]["lr"] for entry in results] == [float(lr) for lr in lrs]
    first = {lr: epoch_lines(real_outputs[lr])[0][1]["val_loss"] for lr in REAL_LRS}
    # the rules medianstop gave: none before 5 had succeeded, then the mean of their first epochs' val_loss
    # (the DB's time order: the timestamps) to be exceeded at the first epoch
    assert [number for number, rules in given.items() if rules] == [6, 7]
    assert [(rule["name"], rule["comparison"], rule["startStep"]) for rule in given[6]] == [("val_loss", "greater", 1)]
    assert float(given[6][0]["value"]) == pytest.approx((4 * first["3.0"] + first["0.001"]) / 5)
    assert float(given[7][0]["value"]) == pytest.approx((4 * first["3.0"] + 2 * first["0.001"]) / 6)
    assert first["3.0"] > float(given[6][0]["value"]) and first["0.001"] < float(given[7][0]["value"])
    pruned = results[6]
    assert pruned["epochs_done"] == 1 and pruned["val_loss"] == pytest.approx(first["3.0"])
    for entry, lr in zip(results, lrs, strict=True):  # each read from the sidecar's log: the real result line
        if entry["status"] == "success":
            assert entry["epochs_done"] == 3
            real = json.loads(next(line for line in reversed(real_outputs[lr]) if line.startswith('{"kind"')))
            assert entry["val_loss"] == pytest.approx(real["val"]["loss"])
    assert summary["pruned"] == 1 and summary["best"]["config"]["lr"] == 0.001
    (post,) = k8s.requests("post", f"/apis/kubeflow.org/v1beta1/namespaces/{runner.namespace}/experiments")
    assert post.data["spec"]["earlyStopping"]["algorithmName"] == "medianstop"
    check_with_katib_sdk(post.data)


def test_asha_on_a_katib_search_is_refused_in_one_line_naming_medianstop(cli, tmp_path):
    out = tmp_path / "out"
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "katib", "--strategy", "random", "--trials", "4",
              "--pruner", "asha", "--image", "stockscale@sha256:" + "a" * 64, "--dry-run", "--out", out)
    assert_clean_error(ran, "--pruner", "asha", "medianstop")
    assert not out.exists()


@pytest.mark.parametrize(("mounted", "kept"), [(True, True), (False, False)])
def test_a_katib_trial_keeps_checkpoints_only_where_its_pod_mounts_the_pvc(mounted: bool, kept: bool) -> None:
    runner = KubernetesRunner(ClusterSpec(image="stockscale:test", trials_mount_pvc=mounted), run_id="katib-ck-0001",
                              kind="katib")
    experiment = KatibSearcher(runner).manifest(space(), strategy("grid"), pruner("none"), TEMPLATE, 2,
                                                trials=grid_size(space()))
    trial_spec = experiment["spec"]["trialTemplate"]["trialSpec"]
    (container,) = [c for c in trial_spec["spec"]["template"]["spec"]["containers"] if c["name"] != "sidecar"]
    assert ("--checkpoint-dir" in " ".join(map(str, container.get("args", []) + container.get("command", [])))) == kept
