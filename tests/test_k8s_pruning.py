"""Pruning on the searches stockscale schedules on a cluster (issue 22, item 4), on the emulator: the driver
follows each running trial's rank 0 log, shows every epoch to the trial's judge (the Optuna searcher's
pruner), and stops the trial the pruner prunes. An Indexed Job's pod is asked to stop by an annotation its
worker reads from a downward-API file, so it exits 0 and its index completes (k8s_job_fake.py plays the Job
controller and a kubelet that runs real `stockscale train` processes); a per-trial PyTorchJob is deleted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import NS, Cluster, Emulator, conditions, container, metrics_line, objects, pod, replicas
from k8s_job_fake import IndexedJobController, annotations_file, last_json, serve_growing_log

from stockscale.config import TrainConfig
from stockscale.console import epoch_line
from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes import manifests as m
from stockscale.progress import StopFileProgress, TrainProgress, TrialPruned
from stockscale.search.optuna_searcher import OptunaSearcher
from stockscale.search.registry import pruner, strategy
from stockscale.search.searcher import TrialResult, TrialTemplate, check_cluster_pruner
from stockscale.space import parse_space
from stockscale.worker import STOP_ANNOTATION, STOP_FILE_ENV, stop_requested

EPOCHS = 5
# A real trial, small enough for a test and long enough per epoch (multiplier) that a stop asked after
# epoch 1 reaches the pod before its last epoch.
REAL = {"epochs": EPOCHS, "multiplier": 10, "hidden_size": 8, "num_layers": 1, "threads": 1, "seed": 11,
        "device": "cpu", "loader": "memory"}


@pytest.fixture
def k8s():
    emulator = Emulator()
    yield emulator
    emulator.stop()


def runner(k8s: Emulator, kind: str, run_id: str, **kwargs: Any) -> KubernetesRunner:
    return KubernetesRunner(ClusterSpec(image="stockscale:test"), api=kwargs.pop("api", None) or k8s.api(),
                            run_id=run_id, kind=kind, poll=0.05, watch_window=0.5, startup_timeout=120.0, **kwargs)


def asha_search(launcher: KubernetesRunner, lrs: list[float], config: dict, trials_dir: Path,
                pruned_by: str = "asha") -> list[TrialResult]:
    """A grid of learning rates, one trial at a time, pruned by ASHA (rungs at epochs 1, 3, ...): the first
    trial passes its rungs alone; a later one worse at epoch 1 than the best there is pruned after it. With
    `pruned_by` "median": Optuna's MedianPruner, which prunes only after 5 finished trials."""
    searcher = OptunaSearcher(launcher)
    searcher.check(strategy("grid"), pruner(pruned_by))
    template = TrialTemplate(config=TrainConfig(**config), trials_dir=trials_dir, threads=1)
    return searcher.search(parse_space({"lr": lrs}, "space"), strategy("grid"), pruner(pruned_by), template, 1,
                           trials=len(lrs), on_trial=lambda trial: None)


# ------------------------------------------------------------------------------------ the worker's side


def test_a_stop_file_ends_the_run_after_the_epoch_it_is_asked_in_but_never_after_the_last(tmp_path):
    stop = tmp_path / "annotations"
    progress = StopFileProgress(TrainProgress(), stop)
    progress.epoch_start(1, 3, 10)
    progress.epoch_end(1, 1.0, 1.0, 0.1)  # no file yet: no request
    stop.write_text(annotations_file({m.COMPLETION_INDEX: "0"}))
    progress.epoch_end(1, 1.0, 1.0, 0.1)  # other annotations only
    assert not stop_requested(stop.read_text())
    stop.write_text(annotations_file({m.COMPLETION_INDEX: "0", STOP_ANNOTATION: "pruned"}))
    assert stop_requested(stop.read_text())
    progress.epoch_end(3, 1.0, 1.0, 0.1)  # the last epoch: a finished run is a result
    with pytest.raises(TrialPruned, match="pruned after epoch 2"):
        progress.epoch_end(2, 1.0, 1.0, 0.1)


def test_stockscale_train_asked_to_stop_says_pruned_and_exits_0(tmp_path):
    """The pod's worker: with the stop annotation in its file, `stockscale train` ends after its first epoch
    of three, prints a pruned result line, writes no run directory, and exits 0 (its index completes)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    stop = tmp_path / "annotations"
    stop.write_text(annotations_file({STOP_ANNOTATION: "pruned"}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), STOP_FILE_ENV: str(stop)}
    done = subprocess.run([sys.executable, "-m", "stockscale", "train", "--epochs", "3", "--max-steps", "1000",
                           "--hidden-size", "8", "--num-layers", "1", "--threads", "1", "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = last_json(done.stdout)
    assert result["status"] == "pruned" and result["epochs_completed"] == 1, done.stdout[-2000:]
    assert '"epoch": 2' not in done.stdout
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------- the manifests


def test_the_indexed_job_mounts_its_pods_annotations_and_names_the_file_and_the_role_may_patch_pods():
    launcher = KubernetesRunner(ClusterSpec(image="stockscale:test"), run_id="prune-render-0001", kind="job")
    _, job = launcher.manifests([TrialTemplate(config=TrainConfig(epochs=2), trials_dir=Path("t")).job(i, {})
                                 for i in range(2)], 2)
    pod_spec = job["spec"]["template"]["spec"]
    (box,) = pod_spec["containers"]
    assert {"name": "podinfo", "downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}} in pod_spec["volumes"]
    mount = next(mount for mount in box["volumeMounts"] if mount["name"] == "podinfo")
    assert mount == {"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": True}  # no subPath: updated
    assert {"name": STOP_FILE_ENV, "value": "/etc/podinfo/annotations"} in box["env"]
    rules = {(group, resource): verbs for group, resource, verbs in m.RBAC_RULES}
    assert "patch" in rules[("", "pods")]
    assert all("patch" not in verbs for key, verbs in rules.items() if key != ("", "pods"))


@pytest.mark.parametrize(("kind", "prunes"), [("job", True), ("pytorchjob", True), ("trainjob", False),
                                              ("optimizationjob", False), ("katib", False)])
def test_only_the_kinds_stockscale_schedules_prune_and_the_others_refuse_a_pruner_in_one_line(kind, prunes):
    launcher = KubernetesRunner(ClusterSpec(image="stockscale:test"), kind=kind)
    assert launcher.prunes is prunes
    if prunes:
        check_cluster_pruner(launcher, pruner("asha"))
        return
    check_cluster_pruner(launcher, pruner("none"))
    with pytest.raises(InputError) as refused:
        check_cluster_pruner(launcher, pruner("median"))
    message = str(refused.value)
    assert "\n" not in message and "kind job or pytorchjob" in message and "katib with pruner median" in message


# ------------------------------------------------------------------------------ Indexed Job, real trials


@pytest.mark.slow
def test_asha_prunes_indexed_job_trials_whose_pods_stop_exit_0_and_the_job_completes(k8s, tmp_path):
    """Three real trials, one at a time: lr 0.001 first (it passes ASHA's rungs alone), then two that overshoot
    (lr 3.0 and 2.5: worse at epoch 1, as test_k8s_katib's real outputs show). Each of those is pruned after
    epoch 1: the driver annotates its pod, the kubelet
    rewrites the pod's annotations file, and the worker ends after the epoch it is in with a pruned result
    line and exit 0, before its last epoch. No index runs twice, and the Job ends Complete."""
    controller = IndexedJobController(tmp_path / "node")
    events: list[str] = []
    with Cluster(k8s, on_job=controller.handle):
        launcher = runner(k8s, "job", "prune-asha-0001", on_event=events.append)
        trials = asha_search(launcher, [0.001, 3.0, 2.5], REAL, tmp_path / "t")
    by_lr = {trial.params["lr"]: trial.result for trial in trials}
    assert {lr: result.status for lr, result in by_lr.items()} == \
        {0.001: "success", 3.0: "pruned", 2.5: "pruned"}, [(r.status, r.detail) for r in by_lr.values()]
    assert [report.epoch for report in by_lr[0.001].epochs] == list(range(1, EPOCHS + 1))
    for lr in (3.0, 2.5):
        result = by_lr[lr]
        assert [report.epoch for report in result.epochs] == [1], result.epochs  # the judge stopped it there
        assert result.detail.startswith("pruned after epoch 1;") and result.metrics is None
    assert sorted(controller.pods) == [0, 1, 2] and all(len(pods) == 1 for pods in controller.pods.values())
    for index in (1, 2):
        (pod_name,) = controller.pods[index]
        assert controller.exit_codes[pod_name] == 0
        assert controller.annotations[pod_name][STOP_ANNOTATION] == "pruned"
        said = last_json(controller.logs(pod_name))
        assert said["status"] == "pruned" and 1 <= said["epochs_completed"] < EPOCHS, said
        assert f'"epoch": {EPOCHS},' not in controller.logs(pod_name)
    (first,) = controller.pods[0]
    assert STOP_ANNOTATION not in controller.annotations[first] and controller.exit_codes[first] == 0
    assert controller.ended == {"prune-asha-0001": {"type": "Complete", "status": "True",
                                                    "reason": "CompletionsReached"}}
    patched = [path for method, path, _ in k8s.all_requests() if method == "PATCH" and "/pods/" in path
               and not path.endswith("/status")]
    assert sorted(patched) == [f"/api/v1/namespaces/{NS}/pods/{controller.pods[i][0]}" for i in (1, 2)]
    assert sum("asked to stop" in event for event in events) == 2, events
    assert objects(k8s, "jobs") == {} and launcher.left_behind() == []


# ------------------------------------------------------------------------------ per-trial PyTorchJobs

SCRIPTED = {0: [1.0, 0.9, 0.8, 0.7], 1: [5.0, 4.0, 3.0, 2.0], 2: [0.5, 0.4, 0.3, 0.2]}  # val_loss by trial


class ScriptedOperator:
    """The Training Operator for single-replica PyTorchJobs whose master prints one epoch line (SCRIPTED, by
    the trial label) every `pace` seconds into a log served as it grows, then its metrics line, and
    Succeeds. A PyTorchJob deleted meanwhile stops there: the operator's pods go with their job (owner
    references), so its log ends and its pod is deleted. What it saw is kept for the test."""

    def __init__(self, root: Path, pace: float = 0.4, script: dict[int, list[float]] | None = None) -> None:
        self.root, self.pace, self.script = root, pace, script or SCRIPTED
        self.created: list[tuple[str, float]] = []
        self.deleted: dict[str, tuple[int, float]] = {}  # name -> (epochs written, when it noticed)
        self.lock = threading.Lock()

    def handle(self, cluster: Cluster, obj: dict) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            self.created.append((name, time.monotonic()))
        trial = int(obj["metadata"]["labels"][m.LABEL_TRIAL])
        ((pod_name, labels),) = replicas(obj)
        log = self.root / f"{pod_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        finished = threading.Event()
        serve_growing_log(cluster, pod_name, log, finished.is_set)
        cluster.create_pod(pod(pod_name, labels, "Running", container("running")))
        cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running")})
        for epoch, loss in enumerate(self.script[trial], start=1):
            time.sleep(self.pace)
            if name not in objects(cluster, "pytorchjobs"):
                with self.lock:
                    self.deleted[name] = (epoch - 1, time.monotonic())
                finished.set()
                cluster.core.delete_namespaced_pod(pod_name, NS)
                return
            with log.open("a") as sink:
                sink.write(epoch_line(epoch, loss, loss, self.pace) + "\n")
        with log.open("a") as sink:
            sink.write(metrics_line(val={"loss": self.script[trial][-1]}) + "\n")
        finished.set()
        cluster.update_pod(pod_name, {"phase": "Succeeded", "containerStatuses": [container()]})
        cluster.set_status("pytorchjobs", name, {"conditions": conditions("Created", "Running", "Succeeded")})


def test_asha_deletes_a_pruned_trials_pytorchjob_and_submits_the_next(k8s, tmp_path):
    operator = ScriptedOperator(tmp_path / "logs")
    events: list[str] = []
    with Cluster(k8s, on_pytorchjob=operator.handle):
        launcher = runner(k8s, "pytorchjob", "prune-ptj-0001", on_event=events.append)
        trials = asha_search(launcher, [0.001, 0.002, 0.003], {"epochs": 4, "max_steps": 2}, tmp_path / "t")
    assert [trial.result.status for trial in trials] == ["success", "pruned", "success"], \
        [(trial.result.status, trial.result.detail) for trial in trials]
    pruned = trials[1].result
    name = "prune-ptj-0001-trial-01"
    assert [report.epoch for report in pruned.epochs] == [1] and pruned.epochs[0].val_loss == 5.0
    assert pruned.detail == f"pruned after epoch 1: PyTorchJob {name} deleted"
    written, noticed = operator.deleted[name]
    assert 1 <= written < 4  # deleted before its last epoch
    assert list(operator.deleted) == [name]
    created = dict(operator.created)
    assert list(created) == ["prune-ptj-0001-trial-00", name, "prune-ptj-0001-trial-02"]
    assert created["prune-ptj-0001-trial-02"] < noticed + 5 * operator.pace  # the next went in at once
    assert [report.epoch for report in trials[2].result.epochs] == [1, 2, 3, 4]
    deletes = [path for method, path, _ in k8s.all_requests() if method == "DELETE" and path.endswith(name)]
    assert deletes, "the pruned trial's PyTorchJob was never deleted"
    assert any(f"PyTorchJob {name} deleted" in event for event in events), events
    assert objects(k8s, "pytorchjobs") == {}


def test_median_pruning_deletes_the_trial_worse_than_the_median_once_five_have_finished(k8s, tmp_path):
    # Optuna's MedianPruner as registered (n_startup_trials 5): trials 0-4 run to their end whatever they
    # report; trial 5, worse at epoch 1 than the median of theirs, is pruned there and its PyTorchJob deleted.
    script = {index: [1.0 - 0.01 * index, 0.9, 0.8, 0.7] for index in range(5)} | {5: [9.0, 8.0, 7.0, 6.0]}
    operator = ScriptedOperator(tmp_path / "logs", pace=0.2, script=script)
    with Cluster(k8s, on_pytorchjob=operator.handle):
        launcher = runner(k8s, "pytorchjob", "prune-med-0001")
        trials = asha_search(launcher, [0.001 * (i + 1) for i in range(6)], {"epochs": 4, "max_steps": 2},
                             tmp_path / "t", pruned_by="median")
    assert [trial.result.status for trial in trials] == ["success"] * 5 + ["pruned"], \
        [(trial.result.status, trial.result.detail) for trial in trials]
    assert [report.epoch for report in trials[5].result.epochs] == [1]
    assert trials[5].result.detail == "pruned after epoch 1: PyTorchJob prune-med-0001-trial-05 deleted"
    assert [name for name, _ in operator.created][-1] == "prune-med-0001-trial-05"
    assert objects(k8s, "pytorchjobs") == {}
