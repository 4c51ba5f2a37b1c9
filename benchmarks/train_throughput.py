"""Training samples/s of the full loop (data included) beside the bare model step, in one run.

Goal (issue 2): the loop reaches at least 95% of the bare step's rate — hidden 128, 2 layers, batch 64,
1 thread. Usage: python benchmarks/train_throughput.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from stockscale.config import build_train_config
from stockscale.model import LSTMRegressor
from stockscale.train import train


def bare_step_rate(steps: int, hidden: int, layers: int, batch: int) -> float:
    """Forward, backward and Adam on one fixed batch: the most the loop could reach."""
    torch.manual_seed(0)
    model = LSTMRegressor(5, hidden, layers, 0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    x, y = torch.randn(batch, 60, 5), torch.randn(batch)
    for _ in range(10):  # warm-up
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def loop_rate(steps: int, hidden: int, layers: int, batch: int) -> float:
    """The real training loop (loader, features, step, bookkeeping) over the bundled data."""
    cfg = build_train_config({"hidden_size": hidden, "num_layers": layers, "batch_size": batch, "threads": 1,
                              "epochs": 1000, "max_steps": steps, "loader": "lazy"})
    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, Path(tmp) / "run")["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hidden, layers, batch = 128, 2, 64
    print(f"machine: {platform.node()} {platform.machine()}, 1 thread, torch {torch.__version__}")
    print(f"hidden {hidden}, {layers} layers, batch {batch}, {args.steps} steps, best of {args.repeats}")
    bare, loop = 0.0, 0.0
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        loop = max(loop, loop_rate(args.steps, hidden, layers, batch))
        bare = max(bare, bare_step_rate(args.steps, hidden, layers, batch))
    print(f"bare model step : {bare:8.0f} samples/s")
    print(f"full train loop : {loop:8.0f} samples/s")
    print(f"loop / bare     : {loop / bare * 100:6.1f} %   (goal >= 95 %)")


if __name__ == "__main__":
    main()
