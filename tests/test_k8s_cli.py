"""The command line's Kubernetes side: dry runs render valid manifests, and a search runs against a real HTTP
Kubernetes API (kmock's emulator, with a fake cluster side) through --kubeconfig, writing the cloud summary
that `stockscale compare` reads."""

import json
import socket

import pytest
import yaml
from k8s_cluster import Cluster, Emulator, job_controller
from k8s_schema import validate_manifest

from tests.conftest import assert_clean_error


def manifests(folder):
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


@pytest.mark.slow
def test_render_writes_the_namespace_pvc_rbac_and_a_valid_pytorchjob(cli, tmp_path):
    ran = cli("k8s", "render", "--out", tmp_path / "k8s", "--image", "registry.example/stockscale:1",
              "--storage-class", "standard")
    assert ran.code == 0, ran.err
    found = manifests(tmp_path / "k8s")
    assert set(found) == {"namespace.yaml", "pvc.yaml", "pytorchjob.yaml", "serviceaccount.yaml", "role.yaml",
                          "rolebinding.yaml", "search-driver.yaml"}
    for obj in found.values():
        validate_manifest(obj)
    replicas = found["pytorchjob.yaml"]["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    container = replicas["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch" and container["image"] == "registry.example/stockscale:1"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert found["pvc.yaml"]["spec"]["storageClassName"] == "standard"
    driver = found["search-driver.yaml"]["spec"]["template"]["spec"]
    assert driver["serviceAccountName"] == found["serviceaccount.yaml"]["metadata"]["name"] == "stockscale"


def test_train_dry_run_writes_the_pytorchjob_it_would_submit(cli, tmp_path):
    ran = cli("train", "--backend", "kubernetes", "--workers", "4", "--memory-limit", "3Gi", "--multiplier", "200",
              "--dry-run", "--out", tmp_path / "m")
    assert ran.code == 0, ran.err
    found = manifests(tmp_path / "m")
    for obj in found.values():
        validate_manifest(obj)
    (job,) = [obj for obj in found.values() if obj["kind"] == "PyTorchJob"]
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == str(3 * 2**30)
    assert container["args"][:3] == ["train", "--multiplier", "200"]


@pytest.mark.parametrize(("kind", "expected"),
                         [("job", {"ConfigMap": 1, "Job": 1}), ("pytorchjob", {"PyTorchJob": 18})])
def test_search_dry_run_renders_every_trial(cli, tmp_path, kind, expected):
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", kind, "--max-steps", "30", "--dry-run",
              "--out", tmp_path / "m")
    assert ran.code == 0, ran.err
    found = manifests(tmp_path / "m")
    kinds: dict[str, int] = {}
    for obj in found.values():
        validate_manifest(obj)
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    assert kinds == expected
    if kind == "job":
        job = next(obj for obj in found.values() if obj["kind"] == "Job")
        assert job["spec"]["completions"] == 18 and job["spec"]["completionMode"] == "Indexed"
        configmap = next(obj for obj in found.values() if obj["kind"] == "ConfigMap")
        assert len(yaml.safe_load(configmap["data"]["trials.yaml"])) == 18


@pytest.fixture
def cluster_api(tmp_path):
    emulator = Emulator()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": emulator.url}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "me"}}],
    }))
    yield emulator, kubeconfig
    emulator.stop()


@pytest.mark.slow
def test_search_on_kubernetes_writes_the_cloud_summary_that_compare_reads(cli, tmp_path, cluster_api):
    emulator, kubeconfig = cluster_api
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 0.002]\nhidden_size: [8, 16]\n")
    out = tmp_path / "results" / "hp_search_cloud"
    with Cluster(emulator, on_job=job_controller(oom_index=1)):
        ran = cli("search", "--backend", "kubernetes", "--kubeconfig", kubeconfig, "--space", space,
                  "--max-steps", "2", "--out", out)
    assert ran.code == 0, ran.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["backend"] == "kubernetes" and summary["settings"]["workers"] == 4
    # completion index 1 (the second trial submitted: longest-expected first) was OOM-killed
    assert sorted(t["status"] for t in summary["results"]) == ["oom", "success", "success", "success"]
    assert [t["name"] for t in summary["results"]] == ["trial-00", "trial-01", "trial-02", "trial-03"]
    assert summary["successes"] == 3 and summary["best"] is not None
    compared = cli("compare", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert compared.code == 0, compared.err
    assert "cloud" in compared.out and "hp_search_cloud/summary.json" in compared.out


def test_status_lists_no_runs_on_an_empty_cluster(cli, cluster_api):
    _, kubeconfig = cluster_api
    ran = cli("k8s", "status", "--kubeconfig", kubeconfig)
    assert ran.code == 0, ran.err
    assert "no stockscale runs" in ran.out
    assert_clean_error(cli("k8s", "status", "nothing-here", "--kubeconfig", kubeconfig), "no objects")
    deleted = cli("k8s", "delete", "nothing-here", "--yes", "--kubeconfig", kubeconfig)
    assert deleted.code == 0 and "no objects" in deleted.out


def test_unreachable_cluster_is_one_line(cli, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "me"}}],
    }))
    assert_clean_error(cli("k8s", "status", "--kubeconfig", kubeconfig), "127.0.0.1")
    assert_clean_error(cli("train", "--backend", "kubernetes", "--kubeconfig", kubeconfig, "--max-steps", "2"),
                       "127.0.0.1")


def test_train_dry_run_as_a_trainjob_renders_valid_objects(cli, tmp_path):
    digest = "registry.example/stockscale@sha256:" + "0" * 64
    ran = cli("train", "--backend", "kubernetes", "--k8s-kind", "trainjob", "--workers", "2", "--image", digest,
              "--max-steps", "2", "--dry-run", "--out", tmp_path / "m")
    assert ran.code == 0, ran.err
    assert "mutable tag" not in ran.out  # a digest needs no warning
    found = manifests(tmp_path / "m")
    assert sorted(obj["kind"] for obj in found.values()) == ["NetworkPolicy", "TrainJob"]
    for obj in found.values():
        validate_manifest(obj)
    trainjob = next(obj for obj in found.values() if obj["kind"] == "TrainJob")
    assert trainjob["spec"]["trainer"]["image"] == digest and trainjob["spec"]["trainer"]["numNodes"] == 2


def test_search_dry_run_as_an_optimizationjob_renders_a_valid_object(cli, tmp_path):
    ran = cli("search", "--backend", "kubernetes", "--k8s-kind", "optimizationjob", "--max-steps", "30",
              "--dry-run", "--out", tmp_path / "m")
    assert ran.code == 0, ran.err
    assert "mutable tag" in ran.out  # the default image is a tag: said once, as a warning
    (obj,) = manifests(tmp_path / "m").values()
    validate_manifest(obj)
    assert obj["kind"] == "OptimizationJob" and obj["spec"]["numTrials"] == 18


def test_an_error_while_waiting_names_the_delete_command(cli, tmp_path, cluster_api):
    emulator, kubeconfig = cluster_api
    path = "/apis/kubeflow.org/v1/namespaces/stock-training/pytorchjobs"
    emulator.do(lambda k: k[f"get {path}"] << 403 << {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": 'pytorchjobs.kubeflow.org is forbidden: User "ana" cannot watch resource "pytorchjobs"'})
    ran = cli("train", "--backend", "kubernetes", "--kubeconfig", kubeconfig, "--max-steps", "2",
              "--startup-timeout", "5")
    assert ran.code == 2 and "403 Forbidden" in ran.err
    (hint,) = [line for line in ran.out.splitlines() if line.startswith("left on the cluster")]
    run_id = hint.rsplit(" ", 1)[-1]
    assert hint.endswith(f"remove with: stockscale k8s delete {run_id}") and run_id.startswith("train-")
    assert f"PyTorchJob/{run_id}-train" in hint
