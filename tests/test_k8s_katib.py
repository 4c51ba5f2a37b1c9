"""A search as a Katib Experiment: what is rendered is a valid Experiment by the kubeflow-katib SDK's models
and by the rules Katib's admission webhook applies (its CRD accepts any fields, so the schema proves nothing);
its metrics regex matches the epoch line a real `stockscale train` prints; and a search round-trips through the
emulated API with a fake Katib controller that creates Trials and their pods the way Katib does (Trial labels
copied from the Experiment, parameters substituted for `${trialParameters.<name>}`, a batch Job's pod labelled
`job-name=<trial>`), so the searcher reads every trial back with the parameters Katib assigned it."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import TINY
from k8s_cluster import Cluster, Emulator, container, metrics_line, objects, pod
from k8s_schema import CRDS, check_meta, validate_manifest

from stockscale.config import TrainConfig
from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes import manifests as m
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


def create_katib_trial(cluster: Cluster, experiment: dict, number: int, assignments: list[dict]) -> tuple[str, dict]:
    """One Trial as Katib's controller makes it (the Experiment's labels, its assignments substituted into the
    template); returns its name and the labels of its trial Job's pod."""
    spec, name = experiment["spec"], experiment["metadata"]["name"]
    template = spec["trialTemplate"]
    trial_name = f"{name}-{number:08d}"
    run_spec = json.dumps(template["trialSpec"])
    for item in assignments:
        run_spec = run_spec.replace(f"${{trialParameters.{item['name']}}}", item["value"])
    cluster.create_trial({
        "apiVersion": experiment["apiVersion"], "kind": "Trial",
        "metadata": {"name": trial_name, "labels": {**experiment["metadata"]["labels"], m.EXPERIMENT_LABEL: name}},
        "spec": {"parameterAssignments": assignments, "runSpec": json.loads(run_spec),
                 "objective": spec["objective"], "primaryContainerName": template["primaryContainerName"]}})
    return trial_name, {**template["trialSpec"]["spec"]["template"]["metadata"]["labels"], "job-name": trial_name}


def trial_succeeded(cluster: Cluster, trial_name: str, loss: float) -> None:
    cluster.set_status("trials", trial_name, {
        "observation": {"metrics": [{"name": "val_loss", "latest": str(loss), "min": str(loss),
                                     "max": str(loss + 0.5)}]},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "TrialSucceeded"}]})


def experiment_succeeded(cluster: Cluster, name: str) -> None:
    cluster.set_status("experiments", name, {"conditions": [
        {"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached", "message": "done"}]})


def katib_controller(fail_index: int | None = None, pod_gone_index: int | None = None):
    """Plays Katib's controller (grid): one Trial per point, labelled like the Experiment plus
    katib.kubeflow.org/experiment, with its parameter assignments; the trial Job's pod (our template's labels
    and job-name) with a log of epoch lines and the final JSON result line; the Trial's observation and
    conditions; then the Experiment Succeeded. `pod_gone_index`'s pod is already gone (Katib only observed
    its metrics)."""

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
            log = (json.dumps({"event": "epoch", "epoch": 1, "val_loss": loss + 0.5, "train_loss": 2.0}) + "\n"
                   + json.dumps({"event": "epoch", "epoch": 2, "val_loss": loss, "train_loss": 1.5}) + "\n"
                   + metrics_line(config=config, val={"loss": loss}) + "\n")
            if number != pod_gone_index:
                cluster.create_pod(pod(pod_name, pod_labels, "Succeeded", container()), log=log)
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


@pytest.mark.parametrize(("kind", "stopping"), [("katib", "asha"), ("job", "median"), ("optimizationjob", "median")])
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
