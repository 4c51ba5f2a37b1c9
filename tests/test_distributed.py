"""DDP: rank and world from the environment, and one DDP step equal to one step on the union of the batches."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stockscale.distributed import DistEnv, placement
from stockscale.errors import InputError
from stockscale.model import LSTMRegressor

HELPERS = Path(__file__).parent / "helpers"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pytorchjob_environment():
    env = DistEnv.from_environ({"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "4",
                                "RANK": "2", "PET_NNODES": "4", "PET_NODE_RANK": "2"})
    assert (env.rank, env.world_size, env.master_addr, env.master_port) == (2, 4, "job-master-0", 23456)
    assert env.is_distributed and not env.is_main


def test_torchrun_environment_and_single_process_default():
    env = DistEnv.from_environ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2",
                                "RANK": "1", "LOCAL_RANK": "1"})
    assert env.local_rank == 1 and env.rank == 1
    assert DistEnv.from_environ({}) == DistEnv()


def test_pet_variables_alone_are_enough():
    env = DistEnv.from_environ({"PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "1", "PET_NNODES": "3",
                                "PET_NODE_RANK": "1"})
    assert (env.rank, env.world_size) == (1, 3)


def test_placement_gives_each_rank_its_own_gpu_or_shares_them_over_gloo():
    local = DistEnv(rank=1, world_size=2, master_addr="127.0.0.1", master_port=1)
    pod = DistEnv(rank=3, world_size=4, master_addr="job-master-0", master_port=1)
    assert placement(local, "cpu", 0) == ("cpu", "gloo")
    assert placement(local, "cuda", 2) == ("cuda:1", "nccl")
    assert placement(local, "cuda", 1) == ("cuda:0", "gloo")  # NCCL refuses two ranks on one GPU
    assert placement(pod, "cuda", 1) == ("cuda:0", "nccl")  # a pod's own GPU


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "not within"),
        ({"WORLD_SIZE": "two"}, "not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),
        ({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "m",
          "PET_MASTER_PORT": "29500"}, "torchrun"),  # a Trainer v2 node with numProcPerNode 4, started directly
    ],
)
def test_bad_environment(environ, words):
    with pytest.raises(InputError, match=words):
        DistEnv.from_environ(environ)


@pytest.mark.slow
def test_one_ddp_step_with_two_workers_equals_one_step_on_the_union(tmp_path):
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "PYTHONPATH": str(Path(__file__).parents[1])}
        procs.append(subprocess.Popen([sys.executable, str(HELPERS / "ddp_step.py"), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_step import fixed_batch
    finally:
        sys.path.remove(str(HELPERS))
    torch.manual_seed(0)
    model = LSTMRegressor(5, 16, 2, 0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = fixed_batch()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    for name, value in model.state_dict().items():
        ddp = np.load(tmp_path / f"{name}.npy")
        assert not np.allclose(ddp, before[name].numpy())  # the step moved the parameters
        np.testing.assert_allclose(ddp, value.numpy(), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_train_with_two_local_workers_reports_each_worker(cli_process, tmp_path):
    ran = cli_process("train", "--workers", "2", "--epochs", "1", "--max-steps", "3", "--hidden-size", "8",
                      "--num-layers", "1", "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    metrics = ran.last_json
    assert metrics["world_size"] == 2 and [w["rank"] for w in metrics["workers"]] == [0, 1]
    assert all(w["peak_rss_bytes"] > 0 and w["samples_per_second"] > 0 for w in metrics["workers"])
    assert metrics["threads"] == max(1, os.cpu_count() // 2)  # never more threads than cores
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_worker_out_of_memory_ends_the_run_with_its_name(cli_process, tmp_path):
    start = time.monotonic()
    ran = cli_process("train", "--workers", "2", "--memory-limit", "500MiB", "--multiplier", "1000",
                      "--loader", "memory", "--max-steps", "2", "--out", tmp_path / "run")
    assert time.monotonic() - start < 60
    assert ran.code == 1
    assert "oom" in ran.err and "worker" in ran.err and "Traceback" not in ran.err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_rank_whose_peer_disappears_does_not_hang(tmp_path):
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "STOCKSCALE_DIST_TIMEOUT": "30", "STOCKSCALE_CACHE": str(tmp_path / "c")}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "stockscale", "train", "--epochs", "200", "--hidden-size", "8", "--threads", "1",
             "--out", str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    rank0, rank1 = procs
    # wait until training runs (rank 0 logs its first epoch), then take rank 1 away
    assert rank0.stdout.readline()  # the data line
    rank0.stdout.readline()
    rank1.kill()
    start = time.monotonic()
    rank0.communicate(timeout=90)
    assert rank0.returncode != 0
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()
