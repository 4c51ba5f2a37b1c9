"""One DDP optimizer step on this rank's half of a fixed batch; rank 0 saves the parameters as .npy.

Run as two processes with the PyTorchJob environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK).
Usage: python ddp_step.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stockscale.distributed import DistEnv, barrier, init_process_group, teardown
from stockscale.model import LSTMRegressor


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return torch.randn(16, 60, 5, generator=generator), torch.randn(16, generator=generator)


def main() -> None:
    out = Path(sys.argv[1])
    env = DistEnv.from_environ()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    init_process_group(env, "gloo")
    try:
        model = nn.parallel.DistributedDataParallel(LSTMRegressor(5, 16, 2, 0.0))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = fixed_batch()
        half = len(y) // env.world_size
        mine = slice(env.rank * half, (env.rank + 1) * half)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x[mine]), y[mine]).backward()
        optimizer.step()
        if env.is_main:
            for name, value in model.module.state_dict().items():
                np.save(out / f"{name}.npy", value.numpy())
        barrier()
    finally:
        teardown()


if __name__ == "__main__":
    main()
