"""Training samples/s of the full loop (data included) beside the bare model step, side by side.

Goal (issue 2): the loop reaches at least 95% of the bare step's rate — hidden 128, 2 layers, batch 64,
1 thread. Each of --runs pairs measures the loop, then the bare step, so drift in the machine's load hits
both alike; the figure is the median of the pairs' ratios with their range.
Usage: python benchmarks/train_throughput.py [--steps 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from _spread import spread, stamp
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
    parser.add_argument("--runs", type=int, default=5, help="pairs of loop and bare-step measurements")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hidden, layers, batch = 128, 2, 64
    print(f"machine: {platform.node()} {platform.machine()}, 1 thread, torch {torch.__version__}; {stamp()}")
    print(f"hidden {hidden}, {layers} layers, batch {batch}, {args.steps} steps, {args.runs} pairs")
    loops, bares = [], []
    for run in range(args.runs):
        loops.append(loop_rate(args.steps, hidden, layers, batch))
        bares.append(bare_step_rate(args.steps, hidden, layers, batch))
        print(f"   pair {run + 1}: loop {loops[-1]:6.0f}, bare {bares[-1]:6.0f} samples/s = "
              f"{loops[-1] / bares[-1] * 100:5.1f} %")
    print(f"bare model step : {spread(bares, '{:.0f}', ' samples/s')}")
    print(f"full train loop : {spread(loops, '{:.0f}', ' samples/s')}")
    ratios = [loop / bare * 100 for loop, bare in zip(loops, bares, strict=True)]
    print(f"loop / bare     : {spread(ratios, '{:.1f}', ' %')}"
          f"   (goal >= 95 %); {stamp()}")


if __name__ == "__main__":
    main()
