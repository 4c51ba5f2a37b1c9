"""The pod's view: the rendered container, started with the environment the Training Operator (or the Job
controller) gives it, trains and prints its JSON result line.

The environment is built from the rendered manifest exactly as the operator builds it (names and rules in
tests/crds/README.md): the container's own env, plus PYTHONUNBUFFERED, MASTER_ADDR/PET_MASTER_ADDR,
MASTER_PORT/PET_MASTER_PORT (the container port named `pytorchjob-port`), WORLD_SIZE (replicas x
nprocPerNode), RANK (Master 0, Worker i -> i+1), PET_NODE_RANK, PET_NNODES, PET_NPROC_PER_NODE. Only what a
laptop cannot give is translated: the container paths (/tmp, /results, /etc/stockscale) become folders of
the test, `stockscale` becomes `python -m stockscale`, the master's service name becomes 127.0.0.1 and, for
two ranks, port 23456 becomes a free port.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.runner import TrainJob

try:
    import stockscale.train  # noqa: F401

    HAVE_TRAIN = True
except ImportError:
    HAVE_TRAIN = False

pytestmark = pytest.mark.skipif(not HAVE_TRAIN, reason="stockscale.train (the worker's train command) does "
                                                       "not import yet")

TINY = {"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1, "batch_size": 32}
SPEC = ClusterSpec(cpu_limit="1")  # one torch thread per rank on a shared 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def operator_env(job: dict, replica_type: str, index: int) -> dict[str, str]:
    """What the Training Operator adds to the `pytorch` container of one replica (envvar.go, release 1.9)."""
    replica_specs = job["spec"]["pytorchReplicaSpecs"]
    container = replica_specs[replica_type]["template"]["spec"]["containers"][0]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "pytorchjob-port"]
    nproc = int(job["spec"].get("nprocPerNode", "1"))
    total = sum(spec["replicas"] for spec in replica_specs.values())
    rank = 0 if replica_type == "Master" else index + 1
    master = f"{job['metadata']['name']}-master-0"
    return {"PYTHONUNBUFFERED": "1", "MASTER_ADDR": master, "PET_MASTER_ADDR": master, "MASTER_PORT": str(port),
            "PET_MASTER_PORT": str(port), "WORLD_SIZE": str(total * nproc), "RANK": str(rank),
            "PET_NODE_RANK": str(rank), "PET_NNODES": str(total), "PET_NPROC_PER_NODE": str(nproc)}


class Pod:
    """One container of a rendered pod template, run as a local process in a folder standing for the pod."""

    def __init__(self, template: dict, root: Path, field_values: dict[str, str] | None = None) -> None:
        (self.container,) = template["spec"]["containers"]
        assert self.container["name"] in ("pytorch", "node") and self.container["command"] == ["stockscale"]
        self.root = root
        self.paths = {"/tmp": root / "tmp", m.RESULTS: root / "results", m.TRIALS_DIR: root / "etc"}
        for path in self.paths.values():
            path.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {}
        for var in self.container["env"]:
            if "value" in var:
                self.env[var["name"]] = self.local(var["value"])
            else:  # a downward-API field, e.g. the completion index annotation
                self.env[var["name"]] = (field_values or {})[var["valueFrom"]["fieldRef"]["fieldPath"]]

    def local(self, text: str) -> str:
        for inside, outside in self.paths.items():
            if text == inside or text.startswith(inside + "/"):
                return str(outside) + text[len(inside):]
        return text

    def args(self, env: dict[str, str]) -> list[str]:
        """The container's args as the kubelet passes them: $(VAR) expanded from the container's env."""
        expand = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
        return [self.local(expand.sub(lambda match: env.get(match[1], match[0]), arg))
                for arg in self.container["args"]]

    def start(self, extra_env: dict[str, str]) -> subprocess.Popen:
        env = {**self.env, **extra_env, "PATH": os.environ["PATH"]}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return subprocess.Popen([sys.executable, "-m", "stockscale", *self.args(env)], env=env, cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_json(process: subprocess.Popen, timeout: float = 240) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_single_replica_pytorchjob_trains_and_prints_its_result(tmp_path):
    launcher = KubernetesRunner(SPEC, run_id="train-pod-0001")
    job = launcher.manifests([TrainJob(name="one", config=TINY, run_dir=Path("r"), workers=1)], 1)[0]
    master = Pod(job["spec"]["pytorchReplicaSpecs"]["Master"]["template"], tmp_path)
    env = operator_env(job, "Master", 0)
    assert env["WORLD_SIZE"] == "1" and env["RANK"] == "0"
    result = last_json(master.start(env))
    assert result["kind"] == "train_run" and result["status"] == "success"
    assert result["world_size"] == 1 and result["steps"] == 2 and result["threads"] == 1
    run_dir = tmp_path / "results" / "train-pod-0001" / "one"
    assert (run_dir / "metrics.json").is_file()  # rank 0 wrote its run directory on the PVC's path


@pytest.mark.slow
def test_master_and_worker_train_together_over_the_operators_environment(tmp_path):
    launcher = KubernetesRunner(SPEC, run_id="train-pod-0002")
    job = launcher.manifests([TrainJob(name="two", config=TINY, run_dir=Path("r"), workers=2)], 1)[0]
    port = str(free_port())
    processes = []
    for replica_type, index in (("Master", 0), ("Worker", 0)):
        template = job["spec"]["pytorchReplicaSpecs"][replica_type]["template"]
        env = operator_env(job, replica_type, index)
        assert env["WORLD_SIZE"] == "2" and env["MASTER_ADDR"] == "train-pod-0002-two-master-0"
        local = {"MASTER_ADDR": "127.0.0.1", "PET_MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                 "PET_MASTER_PORT": port}
        processes.append(Pod(template, tmp_path / replica_type.lower()).start({**env, **local}))
    master, worker = (last_json(process) for process in processes)
    assert master["status"] == "success" and master["world_size"] == 2
    assert [w["rank"] for w in master["workers"]] == [0, 1]
    assert worker["rank"] == 1
    assert (tmp_path / "master" / "results" / "train-pod-0002" / "two" / "metrics.json").is_file()
    assert not (tmp_path / "worker" / "results" / "train-pod-0002").exists()  # only rank 0 writes


@pytest.mark.slow
def test_an_indexed_job_pod_trains_the_config_of_its_completion_index(tmp_path):
    if "--trials" not in _train_help():
        pytest.skip("stockscale train --trials is not there yet")
    jobs = [TrainJob(name=f"trial-{i:02d}", config={**TINY, "lr": 0.001 * (i + 1)}, run_dir=Path(f"t{i}"))
            for i in range(3)]
    configmap, job = KubernetesRunner(SPEC, run_id="search-pod-0001").manifests(jobs, parallel=3)
    template = job["spec"]["template"]
    pod = Pod(template, tmp_path, {f"metadata.annotations['{m.COMPLETION_INDEX}']": "1"})
    (pod.paths[m.TRIALS_DIR] / "trials.yaml").write_text(configmap["data"]["trials.yaml"])
    result = last_json(pod.start({}))  # the Job controller adds no variables beyond the template's
    assert result["status"] == "success"
    assert result["config"]["lr"] == 0.002 == yaml.safe_load(configmap["data"]["trials.yaml"])[1]["lr"]
    assert result["run_dir"] == str(tmp_path / "results" / "search-pod-0001" / "trials" / "1")


def trainer_env(trainjob: dict, node_rank: int) -> dict[str, str]:
    """What Kubeflow Trainer v2's torch plugin adds to the `node` container of a torch-distributed TrainJob
    (pkg/runtime/framework/plugins/torch/torch.go): the torchrun variables PET_NNODES (numNodes),
    PET_NPROC_PER_NODE (numProcPerNode), PET_NODE_RANK (the Job completion index), PET_MASTER_ADDR
    (`<trainjob>-node-0-0.<trainjob>`) and PET_MASTER_PORT (29500). The runtime YAML sets no env of its own."""
    trainer = trainjob["spec"]["trainer"]
    name = trainjob["metadata"]["name"]
    return {"PET_NNODES": str(trainer["numNodes"]), "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": str(node_rank), "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
            "PET_MASTER_PORT": str(m.TRAINER_PORT)}


def test_trainjob_nodes_train_together_over_the_trainers_torchrun_environment(tmp_path):
    from k8s_schema import trainjob_pod

    runtime = yaml.safe_load((Path(__file__).parent / "crds" / "trainer-runtime-torch-distributed.yaml").read_text())
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert "env" not in replicated["template"]["spec"]["template"]["spec"]["containers"][0]
    launcher = KubernetesRunner(SPEC, run_id="train-pod-0003", kind="trainjob")
    job = launcher.manifests([TrainJob(name="two", config=TINY, run_dir=Path("r"), workers=2)], 1)[0]
    template = trainjob_pod(job["spec"])
    port = str(free_port())
    processes = []
    for rank in (0, 1):
        env = trainer_env(job, rank)
        assert env["PET_MASTER_ADDR"] == "train-pod-0003-two-node-0-0.train-pod-0003-two"
        local = {"PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port}
        processes.append(Pod(template, tmp_path / f"node-{rank}").start({**env, **local}))
    first, second = (last_json(process) for process in processes)
    assert first["status"] == "success" and first["world_size"] == 2
    assert [w["rank"] for w in first["workers"]] == [0, 1] and second["rank"] == 1
    assert (tmp_path / "node-0" / "results" / "train-pod-0003" / "two" / "metrics.json").is_file()


def _train_help() -> str:
    done = subprocess.run([sys.executable, "-m", "stockscale", "train", "--help"], capture_output=True, text=True,
                          timeout=60)
    return done.stdout
