"""Every manifest stockscale renders is one an API server accepts, and says what the design says.

Core kinds are validated strictly against the Kubernetes OpenAPI schemas (oldest supported and newest),
PyTorchJobs against the Training Operator's CRD schema with unknown fields refused (tests/k8s_schema.py).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_schema import REPO, pod_templates, validate_core, validate_manifest, validate_pytorchjob

from stockscale.config import TrainConfig
from stockscale.errors import InputError
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner, load_cluster_spec, render_defaults
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.runner import TrainJob
from stockscale.search.optimization_job import OptimizationJobSearcher
from stockscale.search.registry import pruner, strategy
from stockscale.search.searcher import TrialTemplate
from stockscale.space import parse_space

SPEC = ClusterSpec()
TINY = {"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1}


def search_jobs(count: int = 3, **extra) -> list[TrainJob]:
    return [TrainJob(name=f"trial-{i:02d}", config={**TINY, "lr": 0.001 * (i + 1)}, run_dir=Path(f"t/{i}"),
                     **extra) for i in range(count)]


def launcher(**kwargs) -> KubernetesRunner:
    return KubernetesRunner(kwargs.pop("spec", SPEC), run_id="search-1128-174500-ab12", **kwargs)


def containers(obj: dict) -> list[dict]:
    return [c for t in pod_templates(obj) for c in t["spec"]["containers"]]


def every_manifest() -> list[dict]:
    jobs = search_jobs()
    train = TrainJob(name="train", config=TINY, run_dir=Path("r"), workers=4, memory_limit=3 * 2**30,
                     threads=2, timeout=600)
    return [
        *m.default_manifests(SPEC).values(),
        m.default_manifests(ClusterSpec(pvc_access_mode="ReadWriteMany", storage_class="standard")).pop(
            "pytorchjob.yaml"),
        launcher().manifests([train], 1)[0],
        *launcher().manifests(jobs, parallel=2),
        *launcher(kind="pytorchjob").manifests(jobs, parallel=2),
        *launcher(kind="trainjob").manifests([train], 1),
        launcher(kind="trainjob").manifests([TrainJob(name="one", config=TINY, run_dir=Path("r"))], 1)[0],
        optimizationjob(),
        optimizationjob("random", parallel=8),
        m.search_driver_manifest(SPEC),
    ]


GRID = {"hidden_size": [8, 16, 32], "lr": [0.001, 0.002]}  # a 2 x 3 grid, as `stockscale search` gets one


def optimizationjob(algorithm: str = "grid", parallel: int = 2, trials: int = 6, spec: ClusterSpec = SPEC,
                    run_id: str = "search-1128-174500-ab12", space: dict | None = None) -> dict:
    """The OptimizationJob an OptimizationJobSearcher submits for GRID (every trial: TINY, 1 thread, 60 s)."""
    searcher = OptimizationJobSearcher(KubernetesRunner(spec, run_id=run_id, kind="optimizationjob"))
    template = TrialTemplate(config=TrainConfig(**TINY), trials_dir=Path("t"), threads=1, timeout=60)
    return searcher.manifest(parse_space(space or GRID, "space"), strategy(algorithm), pruner("none"), template,
                             parallel, trials=trials)


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("obj", every_manifest(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_every_rendered_manifest_validates(obj):
    validate_manifest(obj)


def test_the_strict_crd_check_refuses_unknown_and_mistyped_fields():
    job = m.default_manifests(SPEC)["pytorchjob.yaml"]
    validate_pytorchjob(job)
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["runPolicy"]["cleanPodPolicyy"] = "None"
    with pytest.raises(jsonschema.ValidationError, match="cleanPodPolicyy"):
        validate_pytorchjob(misspelt)
    deep = copy.deepcopy(job)
    deep["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["memoryLimit"] = "4Gi"
    with pytest.raises(jsonschema.ValidationError, match="memoryLimit"):
        validate_pytorchjob(deep)
    mistyped = copy.deepcopy(job)
    mistyped["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_pytorchjob(mistyped)
    nameless = copy.deepcopy(job)
    del nameless["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        validate_pytorchjob(nameless)


def test_the_core_check_refuses_unknown_fields():
    _, job = launcher().manifests(search_jobs(), parallel=2)
    validate_core(job)
    job["spec"]["template"]["spec"]["containers"][0]["cpuLimit"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(job)


# -------------------------------------------------------------------------------------- the training job


def test_default_pytorchjob_is_the_demonstrations_master_1_worker_3():
    job = m.default_manifests(SPEC)["pytorchjob.yaml"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 3)
    assert job["metadata"]["namespace"] == "stock-training"
    assert job["spec"]["nprocPerNode"] == "1"  # so the operator's WORLD_SIZE is the replica count
    for container in containers(job):
        assert container["name"] == "pytorch"
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"}]
        assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                          "limits": {"cpu": "2", "memory": "4Gi"}}
        assert container["command"] == ["stockscale"]
        assert container["args"][0] == "train" and "--multiplier" in container["args"]
        assert container["args"][container["args"].index("--multiplier") + 1] == "100"
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"


@pytest.mark.parametrize("obj", every_manifest(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_every_pod_is_non_root_unprivileged_and_limited(obj):
    for template in pod_templates(obj):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        if obj["metadata"]["name"] == "stockscale-search-driver":  # the one pod that talks to the API server
            assert pod["serviceAccountName"] == "stockscale" and pod["automountServiceAccountToken"] is True
        elif obj["kind"] not in ("TrainJob", "OptimizationJob"):  # a runtime patch cannot set it
            assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/tmp", "/results"} <= mounts  # the only writable paths
        assert template["metadata"]["labels"].get(m.LABEL_RUN) == obj["metadata"]["labels"].get(m.LABEL_RUN)


def test_flags_are_the_train_commands_own_and_carry_every_config_field():
    """The inline flags parse back, through stockscale's own parser, into the config they came from."""
    from stockscale.cli import build_parser, load_config

    generated = {"source": "bundled:MSFT", "start": "2009-01-02", "end": "2012-12-31", "train_frac": 0.6,
                 "val_frac": 0.2, "multiplier": 3, "noise": 0.02, "loader": "stream",
                 "hidden_size": 16, "num_layers": 3, "dropout": 0.1, "lr": 0.0005, "batch_size": 32, "epochs": 2,
                 "batch_scope": "global", "baselines": "cheap", "tickers": "MSFT",
                 "max_steps": 7, "seed": 9, "device": "cpu", "threads": 3}
    on_disk = {"data": "/results/data/x3", "loader": "lazy", "threads": 1,  # a dataset fixes source, dates, size
               "checkpoint_dir": "/results/checkpoints/x"}
    assert set(generated) | set(on_disk) == set(TrainConfig.model_fields)
    for config in (generated, on_disk):
        job = m.pytorchjob_manifest(SPEC, name="x", run_id="run-1", config=config)
        args = containers(job)[0]["args"]
        parsed = build_parser().parse_args(args)
        # Checkpoints go beside the run directory unless the config names a place for them.
        expected = {"checkpoint_dir": "/results/run-1/x.checkpoints", **config}
        assert load_config(parsed) == TrainConfig.model_validate(expected)
        assert str(parsed.out) == "/results/run-1/x"


def test_job_limits_timeouts_and_workers_reach_the_manifest():
    job = TrainJob(name="m200", config={"multiplier": 200}, run_dir=Path("r"), workers=2,
                   memory_limit=1536 * 2**20, timeout=90.5)
    obj = launcher().manifests([job], 1)[0]
    assert obj["spec"]["runPolicy"]["activeDeadlineSeconds"] == 91
    assert obj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    for container in containers(obj):
        assert container["resources"]["limits"]["memory"] == str(1536 * 2**20)
        assert container["resources"]["requests"]["memory"] == str(1536 * 2**20)  # never above the limit
        assert container["args"][container["args"].index("--threads") + 1] == "2"  # = the CPU limit
    assert obj["metadata"]["name"] == "search-1128-174500-ab12-m200"
    single = launcher().manifests([TrainJob(name="one", config={}, run_dir=Path("r"))], 1)[0]
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_readwriteonce_pvc_is_mounted_by_the_master_only():
    def volumes(spec: ClusterSpec) -> dict[str, dict]:
        job = m.default_manifests(spec)["pytorchjob.yaml"]
        return {kind: next(v for v in r["template"]["spec"]["volumes"] if v["name"] == "results")
                for kind, r in job["spec"]["pytorchReplicaSpecs"].items()}

    rwo = volumes(SPEC)
    assert rwo["Master"] == {"name": "results", "persistentVolumeClaim": {"claimName": "stockscale-results"}}
    assert rwo["Worker"] == {"name": "results", "emptyDir": {}}
    rwx = volumes(ClusterSpec(pvc_access_mode="ReadWriteMany"))
    assert "persistentVolumeClaim" in rwx["Master"] and "persistentVolumeClaim" in rwx["Worker"]


def test_workers_cannot_read_user_files_from_a_readwriteonce_pvc():
    with pytest.raises(InputError, match="ReadWriteOnce"):
        m.pytorchjob_manifest(SPEC, name="x", run_id="r", config={"data": "/results/data"}, workers=2)
    m.pytorchjob_manifest(SPEC, name="x", run_id="r", config={"data": "/results/data"}, workers=1)
    m.pytorchjob_manifest(ClusterSpec(pvc_access_mode="ReadWriteMany"), name="x", run_id="r",
                          config={"source": "csv:/results/aapl.csv"}, workers=2)


# ------------------------------------------------------------------ checkpoints: where rank 0's volume survives


def args_of(obj: dict, replica: str = "Master") -> list[str]:
    if obj["kind"] == "TrainJob":
        return obj["spec"]["trainer"]["args"]
    return obj["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]["args"]


def trainjob_results(obj: dict) -> dict:
    pod = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    return next(v for v in pod["template"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "results")


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_trainjob_of_several_nodes_keeps_checkpoints_only_on_a_readwritemany_pvc():
    """Issue 22, item 3: every node of a TrainJob shares one pod template, so on a ReadWriteOnce PVC none
    mounts it and node 0's checkpoints would go to an emptyDir: none are passed, and a folder asked for is
    refused; on a ReadWriteMany PVC every node mounts it and rank 0 keeps them there."""
    rwx = ClusterSpec(pvc_access_mode="ReadWriteMany")
    three = TrainJob(name="big", config=TINY, run_dir=Path("r"), workers=3)
    shared = launcher(kind="trainjob", spec=rwx).manifests([three], 1)[0]
    assert trainjob_results(shared) == {"name": "results", "persistentVolumeClaim": {"claimName": "stockscale-results"}}
    assert flag(args_of(shared), "--checkpoint-dir") == "/results/search-1128-174500-ab12/big.checkpoints"
    local = launcher(kind="trainjob").manifests([three], 1)[0]
    assert trainjob_results(local) == {"name": "results", "emptyDir": {}}
    assert "--checkpoint-dir" not in args_of(local)  # never checkpoints to an emptyDir, silently or not
    asked = TrainJob(name="big", config={**TINY, "checkpoint_dir": "/results/ck"}, run_dir=Path("r"), workers=3)
    with pytest.raises(InputError) as refused:
        launcher(kind="trainjob").manifests([asked], 1)
    assert str(refused.value).startswith("--checkpoint-dir /results/ck: a TrainJob with 3 nodes cannot keep "
                                         "checkpoints on a ReadWriteOnce PVC")
    assert "pvc_access_mode ReadWriteMany" in str(refused.value) and "\n" not in str(refused.value)
    assert flag(args_of(launcher(kind="trainjob", spec=rwx).manifests([asked], 1)[0]), "--checkpoint-dir") == \
        "/results/ck"
    one = launcher(kind="trainjob").manifests([TrainJob(name="one", config=TINY, run_dir=Path("r"))], 1)[0]
    assert "persistentVolumeClaim" in trainjob_results(one)  # one node mounts even a ReadWriteOnce PVC
    assert flag(args_of(one), "--checkpoint-dir") == "/results/search-1128-174500-ab12/one.checkpoints"


def test_a_pytorchjobs_checkpoints_are_its_masters_on_the_pvc_and_workers_need_no_folder():
    """With a ReadWriteOnce PVC only the master mounts it: rank 0 alone reads and writes the checkpoint folder
    (checkpoint.resume; tests/test_multi_rank_resume.py runs that where the workers cannot see the folder), so
    every replica gets the same --checkpoint-dir and a worker's, on its emptyDir, need not exist."""
    two = launcher().manifests([TrainJob(name="two", config=TINY, run_dir=Path("r"), workers=2)], 1)[0]
    master, worker = (two["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"] for kind in ("Master", "Worker"))
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "stockscale-results"}} in master["volumes"]
    assert {"name": "results", "emptyDir": {}} in worker["volumes"]
    assert flag(args_of(two), "--checkpoint-dir") == flag(args_of(two, "Worker"), "--checkpoint-dir") == \
        "/results/search-1128-174500-ab12/two.checkpoints"
    # A search trial whose pods mount no PVC (trials_mount_pvc off) keeps none either.
    trials = launcher(kind="pytorchjob").manifests(search_jobs(2), parallel=2)
    assert all("--checkpoint-dir" not in args_of(trial) for trial in trials)
    kept = launcher(kind="pytorchjob", spec=ClusterSpec(trials_mount_pvc=True)).manifests(search_jobs(1), 1)[0]
    assert flag(args_of(kept), "--checkpoint-dir") == "/results/search-1128-174500-ab12/trial-00.checkpoints"
    with pytest.raises(InputError, match="^--checkpoint-dir /results/ck: a search trial's pods mount no PVC"):
        m.pytorchjob_manifest(SPEC, name="x", run_id="r", config={"checkpoint_dir": "/results/ck"}, mount_pvc=False)
    with pytest.raises(InputError, match="^--checkpoint-dir /tmp/ck: on the cluster a checkpoint folder must be "
                                         "under /results"):
        m.pytorchjob_manifest(SPEC, name="x", run_id="r", config={"checkpoint_dir": "/tmp/ck"})


def test_train_refuses_checkpoints_a_multi_node_trainjob_would_lose_in_one_line(cli, tmp_path):
    from tests.conftest import assert_clean_error

    ran = cli("train", "--backend", "kubernetes", "--k8s-kind", "trainjob", "--workers", "2", "--max-steps", "2",
              "--checkpoint-dir", "/results/ck", "--dry-run", "--out", tmp_path / "m")
    assert_clean_error(ran, "--checkpoint-dir", "ReadWriteOnce", "pvc_access_mode ReadWriteMany")
    assert not (tmp_path / "m").exists()
    spec = tmp_path / "cluster.yaml"
    spec.write_text("pvc_access_mode: ReadWriteMany\n")
    ran = cli("train", "--backend", "kubernetes", "--k8s-kind", "trainjob", "--workers", "2", "--max-steps", "2",
              "--k8s-config", spec, "--checkpoint-dir", "/results/ck", "--dry-run", "--out", tmp_path / "m")
    assert ran.code == 0, ran.err


def test_unknown_training_keys_are_refused_before_anything_is_rendered():
    with pytest.raises(InputError, match="learning_rat"):
        m.pytorchjob_manifest(SPEC, name="x", run_id="r", config={"learning_rat": 0.1})


def test_trainjob_runs_our_command_on_the_torch_distributed_runtime_with_our_security():
    job = TrainJob(name="big", config={**TINY, "multiplier": 50}, run_dir=Path("r"), workers=3,
                   memory_limit=3 * 2**30, timeout=600)
    obj = launcher(kind="trainjob").manifests([job], 1)[0]
    assert (obj["apiVersion"], obj["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    spec = obj["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 1)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                           "limits": {"cpu": "2", "memory": str(3 * 2**30)}}
    assert trainer["command"] == ["stockscale"] and trainer["args"][-2:] == ["--out",
                                                                           "/results/search-1128-174500-ab12/big"]
    assert spec["activeDeadlineSeconds"] == 600
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"  # the runtime's replicated job and container (tests/crds runtime YAML)
    runtime = yaml.safe_load((REPO / "tests" / "crds" / "trainer-runtime-torch-distributed.yaml").read_text())
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == node["name"]
    assert replicated["template"]["spec"]["template"]["spec"]["containers"][0]["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["labels"][m.LABEL_RUN] == "search-1128-174500-ab12"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    results = next(v for v in pod["spec"]["volumes"] if v["name"] == "results")
    assert results == {"name": "results", "emptyDir": {}}  # a ReadWriteOnce PVC cannot follow three nodes
    one = launcher(kind="trainjob").manifests([TrainJob(name="one", config=TINY, run_dir=Path("r"))], 1)[0]
    pod = one["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "stockscale-results"}} in \
        pod["template"]["spec"]["template"]["spec"]["volumes"]


def test_the_strict_trainjob_check_refuses_what_the_api_does_not_have():
    obj = launcher(kind="trainjob").manifests([TrainJob(name="one", config=TINY, run_dir=Path("r"))], 1)[0]
    validate_manifest(obj)
    wrong = copy.deepcopy(obj)
    wrong["spec"]["podTemplateOverrides"] = []  # the older API's field: gone from this CRD
    with pytest.raises(jsonschema.ValidationError, match="podTemplateOverrides"):
        validate_manifest(wrong)
    deep = copy.deepcopy(obj)
    deep["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]["containers"][0]["image"] = "x"  # not patchable
    with pytest.raises(jsonschema.ValidationError, match="image"):
        validate_manifest(deep)


def test_training_jobs_get_a_rendezvous_policy_for_their_own_pods_only():
    train = TrainJob(name="t", config=TINY, run_dir=Path("r"), workers=2)
    _, policy = launcher().manifests([train], 1)
    selector = {"matchLabels": {m.LABEL_APP: "stockscale", m.LABEL_RUN: "search-1128-174500-ab12"}}
    assert policy["spec"]["podSelector"] == selector and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": selector}]}]
    assert policy["metadata"]["annotations"]["stockscale/rendezvous-port"] == "23456"
    _, trainer_policy = launcher(kind="trainjob").manifests([train], 1)
    assert trainer_policy["metadata"]["annotations"]["stockscale/rendezvous-port"] == "29500"
    assert len(launcher().manifests([TrainJob(name="t", config=TINY, run_dir=Path("r"))], 1)) == 1  # one process
    assert len(launcher(spec=ClusterSpec(network_policy=False)).manifests([train], 1)) == 1


def test_jobs_are_cleaned_up_after_they_finish():
    assert m.default_manifests(SPEC)["pytorchjob.yaml"]["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 86400
    _, job = launcher(spec=ClusterSpec(ttl_seconds_after_finished=600)).manifests(search_jobs(), 2)
    assert job["spec"]["ttlSecondsAfterFinished"] == 600


def test_image_digests_are_accepted_and_mutable_tags_warned_about():
    digest = "registry.example/stockscale@sha256:" + "ab" * 32
    assert ClusterSpec(image=digest).image_is_digest and ClusterSpec(image=digest).image_warning() is None
    assert "mutable tag" in ClusterSpec(image="registry.example/stockscale:1").image_warning()
    assert ClusterSpec(image="stockscale:1", image_pull_policy="Always").image_warning() is None
    for bad in ("stockscale@sha256:abc", "stockscale@md5:" + "a" * 32):
        with pytest.raises(InputError, match="digest"):
            load_cluster_spec(None, {"image": bad})


def test_rbac_role_holds_only_the_verbs_stockscale_uses():
    files = m.rbac_manifests(SPEC)
    rules = {(rule["apiGroups"][0], rule["resources"][0]): set(rule["verbs"]) for rule in files["role.yaml"]["rules"]}
    assert rules[("", "pods/log")] == {"get"}
    assert all(not verbs & {"*", "update", "deletecollection", "escalate", "bind"} for verbs in rules.values())
    # patch: only a pod's annotations (a pruned trial's stop request, search_jobs.py)
    assert [key for key, verbs in rules.items() if "patch" in verbs] == [("", "pods")]
    assert files["rolebinding.yaml"]["subjects"] == [{"kind": "ServiceAccount", "name": "stockscale",
                                                      "namespace": "stock-training"}]
    assert files["rolebinding.yaml"]["roleRef"]["name"] == files["role.yaml"]["metadata"]["name"]


# ------------------------------------------------------------------------------------------------ the search


def test_indexed_job_runs_every_trial_from_the_configmap():
    configmap, job = launcher().manifests(search_jobs(5, timeout=120, memory_limit=2**30), parallel=2)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 5, 2)
    assert spec["backoffLimitPerIndex"] == 0 and "backoffLimit" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["activeDeadlineSeconds"] == 120
    (container,) = pod["containers"]
    assert container["args"] == ["train", "--trials", "/etc/stockscale/trials.yaml",
                                 "--out", "/results/search-1128-174500-ab12/trials/$(JOB_COMPLETION_INDEX)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert {"name": "trials", "mountPath": "/etc/stockscale", "readOnly": True} in container["volumeMounts"]
    assert {"name": "trials", "configMap": {"name": configmap["metadata"]["name"]}} in pod["volumes"]
    assert container["resources"]["limits"]["memory"] == str(2**30)
    trials = yaml.safe_load(configmap["data"]["trials.yaml"])
    assert trials == [{**TINY, "lr": 0.001 * (i + 1)} for i in range(5)]
    assert all(TrainConfig.model_validate(trial) for trial in trials)


def test_a_disrupted_index_runs_again_and_only_real_failures_count():
    _, job = launcher().manifests(search_jobs(), parallel=2)
    assert job["spec"]["podFailurePolicy"] == {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy requires
    assert job["spec"]["completionMode"] == "Indexed"  # what backoffLimitPerIndex requires


def test_optimizationjob_searches_the_grid_of_the_values_that_vary():
    obj = optimizationjob(parallel=4)
    spec = obj["spec"]
    assert (spec["numTrials"], spec["parallelTrials"], spec["searchAlgorithm"]) == (6, 4, {"grid": {}})
    assert spec["objectives"] == [{"metric": "val_loss", "direction": "Minimize"}]
    assert spec["parameters"] == [
        {"name": "hidden_size", "searchSpace": {"categorical": {"choices": ["8", "16", "32"]}}},
        {"name": "lr", "searchSpace": {"categorical": {"choices": ["0.001", "0.002"]}}}]
    args = spec["trainJobTemplate"]["spec"]["trainer"]["args"]
    # The controller's KUBEFLOW_TRAINER_OPT_* reach `stockscale train` as env, read there (kubeflow_trial.py):
    # what varies is no flag of the args.
    assert "--lr" not in args and "--hidden-size" not in args
    assert args[-2:] == ["--out", "/results/search-1128-174500-ab12/trials/$(POD_NAME)"]
    assert args[args.index("--epochs") + 1] == "1"  # what every trial shares stays a plain flag
    assert spec["trainJobTemplate"]["metadata"]["labels"][m.LABEL_RUN] == "search-1128-174500-ab12"
    random = optimizationjob("random", parallel=2)
    assert random["spec"]["searchAlgorithm"] == {"random": {}}
    with pytest.raises(InputError, match="not a full grid"):
        optimizationjob(trials=5)
    with pytest.raises(InputError, match="at most 100"):
        optimizationjob("random", trials=101)


def test_trials_mount_the_pvc_only_when_several_nodes_can():
    def results_volume(spec: ClusterSpec) -> dict:
        _, job = launcher(spec=spec).manifests(search_jobs(), parallel=3)
        return next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "results")

    assert "emptyDir" in results_volume(SPEC)
    assert "persistentVolumeClaim" in results_volume(ClusterSpec(pvc_access_mode="ReadWriteMany"))
    assert "persistentVolumeClaim" in results_volume(ClusterSpec(trials_mount_pvc=True))


def test_pytorchjob_search_is_one_master_only_job_per_config_with_inline_flags():
    jobs = search_jobs(3)
    objs = launcher(kind="pytorchjob").manifests(jobs, parallel=3)
    assert [o["kind"] for o in objs] == ["PyTorchJob"] * 3
    for index, obj in enumerate(objs):
        assert list(obj["spec"]["pytorchReplicaSpecs"]) == ["Master"]
        assert obj["metadata"]["labels"][m.LABEL_TRIAL] == str(index)
        args = containers(obj)[0]["args"]
        assert args[args.index("--lr") + 1] == repr(0.001 * (index + 1))
        assert args[-2:] == ["--out", f"/results/search-1128-174500-ab12/trial-{index:02d}"]


def test_indexed_trials_must_be_single_processes():
    with pytest.raises(InputError, match="pytorchjob"):
        launcher().manifests(search_jobs(2, workers=2), parallel=2)


# ------------------------------------------------------------------------------------------- names, spec


def test_names_are_dns_labels_of_bounded_length():
    long = m.k8s_name("Search_2026", "Trial #7 with a very long name " * 3)
    assert len(long) <= m.NAME_LIMIT and m.DNS_LABEL.match(long)
    assert long != m.k8s_name("Search_2026", "Trial #8 with a very long name " * 3)
    assert m.k8s_name("7up") == "s-7up"
    run_id = m.make_run_id("search")
    assert m.check_run_id(run_id) == run_id and run_id.startswith("search-")
    for bad in ("Upper", "x" * 41, "9lives", "a_b"):
        with pytest.raises(InputError, match="run id"):
            m.check_run_id(bad)


@pytest.mark.parametrize(("values", "words"), [
    ({"namespace": "Stock_Training"}, "namespace"),
    ({"memory_limit": "4 gigs"}, "memory_limit"),
    ({"memory_request": "8Gi"}, "above memory_limit"),
    ({"cpu_request": "3"}, "above cpu_limit"),
    ({"workers": 0}, "workers"),
    ({"tmp_size": "100m"}, "milli"),
    ({"replicas": 3}, "unknown key"),
])
def test_bad_cluster_specs_are_one_line_input_errors(tmp_path, values, words):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(InputError) as caught:
        load_cluster_spec(path)
    message = str(caught.value)
    assert "\n" not in message and words in message and str(path) in message


def test_cluster_spec_file_with_flag_overrides(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("namespace: research\nworkers: 8\ncpu_limit: '4'\n")
    spec = load_cluster_spec(path, {"workers": 2, "image": "registry.example/stockscale:1", "namespace": None})
    assert (spec.namespace, spec.workers, spec.image, spec.threads) == ("research", 2,
                                                                        "registry.example/stockscale:1", 4)


# ---------------------------------------------------------------------------------------- files on disk


def test_render_writes_plain_yaml_that_kustomize_lists(tmp_path):
    paths = render_defaults(SPEC, tmp_path / "k8s")
    assert sorted(p.name for p in paths) == ["kustomization.yaml", "namespace.yaml", "pvc.yaml",
                                             "pytorchjob.yaml", "role.yaml", "rolebinding.yaml",
                                             "search-driver.yaml", "serviceaccount.yaml"]
    kustomization = yaml.safe_load((tmp_path / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", "pvc.yaml", "serviceaccount.yaml", "role.yaml",
                                          "rolebinding.yaml", "pytorchjob.yaml"]  # the driver only on purpose
    for name in [*kustomization["resources"], "search-driver.yaml"]:
        text = (tmp_path / "k8s" / name).read_text()
        assert "&id" not in text and "*id" not in text  # no YAML anchors: plain for every reader
        validate_manifest(yaml.safe_load(text))
    assert not list((tmp_path / "k8s").glob(".*"))  # no temporary files left


def test_committed_deploy_manifests_are_the_rendered_defaults(tmp_path):
    render_defaults(SPEC, tmp_path)
    for path in sorted(tmp_path.iterdir()):
        committed = REPO / "deploy" / "k8s" / path.name
        assert committed.is_file(), f"deploy/k8s/{path.name} is missing: run stockscale k8s render --out deploy/k8s"
        assert yaml.safe_load(committed.read_text()) == yaml.safe_load(path.read_text()), (
            f"deploy/k8s/{path.name} differs from the rendered default: run stockscale k8s render --out deploy/k8s")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_deploy_folder():
    done = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy" / "k8s")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(done.stdout)]
    assert sorted(kinds) == ["Namespace", "PersistentVolumeClaim", "PyTorchJob", "Role", "RoleBinding",
                             "ServiceAccount"]


def test_dry_run_writes_the_search_without_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))  # any cluster access would fail loudly
    paths = launcher().dry_run(search_jobs(4), 2, tmp_path / "dry")
    names = sorted(p.name for p in paths)
    assert names == ["configmap-search-1128-174500-ab12-trials.yaml", "job-search-1128-174500-ab12.yaml",
                     "kustomization.yaml"]
    for path in paths:
        if path.name != "kustomization.yaml":
            validate_manifest(yaml.safe_load(path.read_text()))
    one = launcher().dry_run_run(TrainJob(name="train", config=TINY, run_dir=Path("r"), workers=4),
                                 tmp_path / "dry-train")
    assert [p.name for p in one] == ["pytorchjob-search-1128-174500-ab12-train.yaml",
                                     "networkpolicy-search-1128-174500-ab12-rendezvous.yaml", "kustomization.yaml"]
    single = launcher().dry_run(search_jobs(1), 1, tmp_path / "dry-one")  # a search of one trial is a search
    assert sorted(p.name for p in single) == ["configmap-search-1128-174500-ab12-trials.yaml",
                                              "job-search-1128-174500-ab12.yaml", "kustomization.yaml"]


# ------------------------------------------------------------------------------------------------ deploy.sh

DEPLOY = REPO / "deploy" / "deploy.sh"
FAKE_KUBECTL = """#!/usr/bin/env bash
echo "kubectl $*" >> "$CALLS"
case "$1" in
  config) echo "$FAKE_CONTEXT" ;;
  cluster-info) exit "${FAKE_UNREACHABLE:-0}" ;;
  apply) if [[ "$2" == "--server-side" ]]; then touch "$STATE/$(basename "${4%%.git*}")"
         else echo applied $(grep -m1 '^kind:' "$3") $(grep -m1 '^  name:' "$3") \\
           $(grep -m1 '^  namespace:' "$3") >> "$CALLS"; fi ;;
  api-resources) if [[ "$2" == "--api-group=kubeflow.org" && -e "$STATE/training-operator" ]]; then
                   echo pytorchjobs.kubeflow.org; fi
                 if [[ "$2" == "--api-group=trainer.kubeflow.org" && -e "$STATE/trainer" ]]; then
                   echo trainjobs.trainer.kubeflow.org; fi ;;
esac
"""
FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
"""
FAKE_STOCKSCALE = """#!/usr/bin/env bash
echo "stockscale $*" >> "$CALLS"
out="$4"; ns="$6"
printf 'apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: %s\\n' "$ns" > "$out/namespace.yaml"
printf 'apiVersion: v1\\nkind: PersistentVolumeClaim\\nmetadata:\\n  namespace: %s\\n' "$ns" > "$out/pvc.yaml"
"""


def run_deploy(tmp_path: Path, *args: str, context: str = "kind-demo", tools=("docker", "kind", "minikube"),
               **env: str) -> tuple[int, list[str], str]:
    """deploy.sh with fake kubectl/docker/kind/minikube on PATH; returns (exit code, their calls, stderr)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    for name, text in {"kubectl": FAKE_KUBECTL, **dict.fromkeys(tools, FAKE_TOOL),
                       "fake-stockscale": FAKE_STOCKSCALE}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "STATE": str(state),
                "FAKE_CONTEXT": context, "HOME": str(tmp_path), **env}
    done = subprocess.run(["bash", str(DEPLOY), *args], capture_output=True, text=True, env=full_env, timeout=60)
    return done.returncode, calls.read_text().splitlines(), done.stderr


def test_deploy_script_parses_and_passes_shellcheck():
    assert subprocess.run(["bash", "-n", str(DEPLOY)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    done = subprocess.run(["shellcheck", str(DEPLOY)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_deploy_on_kind_applies_builds_loads_and_is_the_same_twice(tmp_path):
    code, first, err = run_deploy(tmp_path)
    assert code == 0, err
    assert "kubectl cluster-info --request-timeout=15s" in first
    assert "applied kind: Namespace name: stock-training" in first
    assert "applied kind: PersistentVolumeClaim name: stockscale-results namespace: stock-training" in first
    assert f"docker build -f {REPO}/deploy/Dockerfile -t stockscale:0.1.0 {REPO}" in first
    assert "kind load docker-image stockscale:0.1.0 --name demo" in first
    assert not any("--server-side" in call for call in first)  # the operator only when asked
    code, second, err = run_deploy(tmp_path)
    assert code == 0 and second == first


def test_deploy_installs_the_pinned_operator_only_when_asked_and_missing(tmp_path):
    code, first, err = run_deploy(tmp_path, "--install-operator", "--no-build", context="minikube")
    assert code == 0, err
    install = ("kubectl apply --server-side -k github.com/kubeflow/training-operator.git/manifests/overlays/"
               "standalone?ref=v1.9.2")
    assert install in first and "minikube image load stockscale:0.1.0" in first
    assert not any(call.startswith("docker") for call in first)
    code, second, err = run_deploy(tmp_path, "--install-operator", "--no-build", context="minikube")
    assert code == 0 and install not in second  # already there: nothing to do


def test_deploy_installs_a_pinned_trainer_v2_release_with_its_runtimes(tmp_path):
    code, first, err = run_deploy(tmp_path, "--install-operator", "--trainer", "v2", "--no-build")
    assert code == 0, err
    manager = "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0"
    runtimes = "github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=v2.3.0"
    assert f"kubectl apply --server-side -k {manager}" in first
    assert f"kubectl apply --server-side -k {runtimes}" in first
    assert not any("training-operator" in call for call in first)
    code, second, err = run_deploy(tmp_path, "--install-operator", "--trainer", "v2", "--no-build")
    assert code == 0 and not any("--server-side" in call for call in second)  # already there


@pytest.mark.parametrize(("args", "env", "words"), [
    (("--trainer", "v3"), {}, "--trainer must be v1 or v2"),
    (("--install-operator",), {"OPERATOR_REF": "master"}, "OPERATOR_REF must be a release version"),
    (("--install-operator", "--trainer", "v2"), {"TRAINER_REF": "latest"}, "TRAINER_REF must be a release"),
])
def test_deploy_refuses_unpinned_operators(tmp_path, args, env, words):
    code, calls, err = run_deploy(tmp_path, *args, "--no-build", **env)
    assert code == 2 and words in err
    assert not any(call.startswith("kubectl apply") for call in calls)


def test_deploy_pushes_a_registry_image(tmp_path):
    code, calls, err = run_deploy(tmp_path, context="gke_project_zone_cluster",
                                  IMAGE="registry.example.com/me/stockscale:1")
    assert code == 0, err
    assert "docker push registry.example.com/me/stockscale:1" in calls
    assert not any(call.startswith(("kind", "minikube")) for call in calls)


def test_deploy_stops_with_a_message_when_the_cluster_is_unreachable(tmp_path):
    code, calls, err = run_deploy(tmp_path, FAKE_UNREACHABLE="1")
    assert code == 2 and "cannot reach the cluster of context kind-demo" in err
    assert not any(call.startswith(("kubectl apply", "docker")) for call in calls)


def test_deploy_renders_custom_settings_with_stockscale(tmp_path):
    code, _, err = run_deploy(tmp_path, "--namespace", "research")
    assert code == 2 and "needs stockscale" in err
    code, calls, err = run_deploy(tmp_path, "--namespace", "research", "--storage-class", "fast", "--no-build",
                                  STOCKSCALE="fake-stockscale")
    assert code == 0, err
    (render,) = [call for call in calls if call.startswith("stockscale k8s render")]
    assert render.endswith("--namespace research --image stockscale:0.1.0 --storage-class fast")
    assert "applied kind: Namespace name: research" in calls
    assert "applied kind: PersistentVolumeClaim namespace: research" in calls
