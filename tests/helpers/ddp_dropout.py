"""One DDP rank builds the model the way training does, seeds its dropout for epoch 1 the way training does,
and draws a dropout mask; rank 0 saves every rank's mask and parameters (gathered) as .npy.

Run as two processes with the PyTorchJob environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK).
Usage: python ddp_dropout.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stockscale.config import build_train_config
from stockscale.distributed import DistEnv, barrier, init_process_group, teardown
from stockscale.train import build_model, seed_dropout


def main() -> None:
    out = Path(sys.argv[1])
    env = DistEnv.from_environ()
    torch.set_num_threads(1)
    init_process_group(env, "gloo")
    try:
        cfg = build_train_config({"hidden_size": 8, "num_layers": 2, "dropout": 0.5, "seed": 42})
        core = build_model(cfg, torch.device("cpu"))
        flat = torch.cat([p.detach().flatten() for p in core.parameters()])  # before DDP's broadcast
        nn.parallel.DistributedDataParallel(core)
        seed_dropout(cfg.seed, env.rank, 1)
        mask = nn.functional.dropout(torch.ones(512), 0.5, training=True)
        masks = [torch.zeros_like(mask) for _ in range(env.world_size)]
        params = [torch.zeros_like(flat) for _ in range(env.world_size)]
        dist.all_gather(masks, mask)
        dist.all_gather(params, flat)
        if env.is_main:
            np.save(out / "masks.npy", torch.stack(masks).numpy())
            np.save(out / "params.npy", torch.stack(params).numpy())
        barrier()
    finally:
        teardown()


if __name__ == "__main__":
    main()
