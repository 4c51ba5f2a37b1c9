"""Rank and world from the environment, and the process group around one training run.

The same variables come from torchrun and from the Kubeflow Training Operator on every PyTorchJob replica
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK; PET_NNODES and PET_NODE_RANK as a fallback), and the local
emulated cluster sets exactly those. Kubeflow Trainer v2 (a TrainJob on torch-distributed) sets only the
PET_* ones, which is enough with one process per node. A process that finds WORLD_SIZE > 1 is one DDP rank.

Beyond the process group, the ranks exchange structured values (a resumed run's checkpoint, every rank's RNG
states for the next one) as tensors packed by `stockscale.wire`: nothing pickled goes over the wire.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stockscale.errors import InputError, PortInUse

if TYPE_CHECKING:
    import torch

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> DistEnv:
        env = os.environ if env is None else env
        if _int(env, "WORLD_SIZE") is None and (_int(env, "PET_NPROC_PER_NODE") or 1) > 1:
            # Kubeflow Trainer's torch plugin sets PET_* for torchrun; started directly, this process is one
            # of one per node (numProcPerNode 1), and anything else would leave ranks missing.
            raise InputError(f"environment: PET_NPROC_PER_NODE={env['PET_NPROC_PER_NODE']} but no WORLD_SIZE: "
                             "start several processes per node with torchrun, or set numProcPerNode 1")
        world = _int(env, "WORLD_SIZE") or _int(env, "PET_NNODES") or 1
        rank = _int(env, "RANK")
        if rank is None:
            rank = _int(env, "PET_NODE_RANK") or 0
        local_rank = _int(env, "LOCAL_RANK") or 0
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"environment: RANK {rank} is not within WORLD_SIZE {world}")
        if world == 1:
            return cls(rank, world, local_rank)
        addr = env.get("MASTER_ADDR") or env.get("PET_MASTER_ADDR")
        port = _int(env, "MASTER_PORT") or _int(env, "PET_MASTER_PORT")
        if not addr or not port:
            raise InputError(f"environment: WORLD_SIZE is {world} but MASTER_ADDR/MASTER_PORT are not set")
        return cls(rank, world, local_rank, addr, port)


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment: {name}={value!r} is not an integer") from None


def timeout_from_env() -> timedelta:
    """Collective and rendezvous timeout: a vanished peer ends the run instead of hanging it forever."""
    return timedelta(seconds=float(os.environ.get("STOCKSCALE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def placement(env: DistEnv, device_type: str, gpus: int) -> tuple[str, str]:
    """(device, backend) for this rank: gloo on CPU; on CUDA, nccl with a GPU of its own.

    Ranks of a local emulated cluster (the master on loopback) all live on this machine and take GPU
    `rank`; a pod or a torchrun process takes GPU `LOCAL_RANK`. NCCL refuses two ranks on one GPU, so when
    the local ranks outnumber the GPUs they share them over gloo instead (slower, but it runs).
    """
    if device_type != "cuda":
        return device_type, "gloo"
    if env.master_addr in LOOPBACK:
        if env.world_size > gpus:
            return f"cuda:{env.rank % gpus}", "gloo"
        return f"cuda:{env.rank}", "nccl"
    return f"cuda:{env.local_rank % gpus}", "nccl"


def init_process_group(env: DistEnv, backend: str) -> None:
    """The process group over TCP to the master (rank 0), with a timeout so a lost peer ends the run.

    With the master on loopback (the local emulated cluster) rank 0 binds the rendezvous store itself, to
    127.0.0.1 only: nothing off this machine can reach it. A port taken since the launcher chose it is
    PortInUse (exit status 4), which the launcher answers by starting the job again on a fresh port.
    """
    import torch.distributed as dist

    if env.master_addr not in LOOPBACK:
        dist.init_process_group(
            backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout_from_env(),
        )
        return
    assert env.master_addr is not None and env.master_port is not None
    listener = loopback_listener(env.master_addr, env.master_port) if env.is_main else None
    store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=env.is_main,
                          timeout=timeout_from_env(),
                          master_listen_fd=listener.fileno() if listener is not None else None)
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size,
                            timeout=timeout_from_env())
    _keep_open.append(listener)


_keep_open: list[socket.socket | None] = []  # the store's listening socket lives as long as the process group


def loopback_listener(addr: str, port: int) -> socket.socket:
    """A TCP socket bound to the loopback address `addr`:`port` and listening; PortInUse when it is taken."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    host = "127.0.0.1" if addr == "localhost" else addr
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(f"rendezvous port {port} on {host} is already in use") from None
        raise
    return sock


def barrier() -> None:
    """Wait for every rank; called before a clean teardown so no rank leaves while a peer still talks to it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` (tensors and JSON values, see stockscale.wire) on every rank; the others pass None.

    Two broadcasts: the packed size, then the packed bytes. Rank 0 gets its own `value` back, unchanged."""
    import torch
    import torch.distributed as dist

    from stockscale.wire import pack, unpack

    device = _wire_device()
    main = dist.get_rank() == 0
    blob = pack(value).to(device) if main else None
    size = torch.tensor([blob.numel() if blob is not None else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    if blob is None:
        blob = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(blob, src=0)
    return value if main else unpack(blob.cpu())


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's `value` (tensors and JSON values), in rank order, on rank 0; None on the others.

    An all_gather of the packed sizes, then of the packed bytes padded to the longest (every backend has
    all_gather; not every one has gather)."""
    import torch
    import torch.distributed as dist

    from stockscale.wire import pack, unpack

    device = _wire_device()
    world = dist.get_world_size()
    blob = pack(value).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([blob.numel()], dtype=torch.int64, device=device))
    lengths = [int(size.item()) for size in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[:blob.numel()] = blob
    rows = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(rows, padded)
    if dist.get_rank() != 0:
        return None
    return [unpack(row[:length].cpu()) for row, length in zip(rows, lengths, strict=True)]


def _wire_device() -> torch.device:
    """Where the process group's backend takes tensors: the rank's GPU under nccl, else the CPU (gloo)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
