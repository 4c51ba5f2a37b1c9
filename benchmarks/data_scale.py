"""Scaled-data figures (issue 3), all from one run:

1. generation throughput of `data scale` in MB/s beside numpy's raw normal-number generation (goal >= 50%);
2. peak RSS of `stockscale data scale --multiplier 20000` (goal < 250 MB; a separate process, no torch);
3. batches/s of each loader beside the model's step rate at hidden 64 (goal: every loader >= 5x faster);
4. resident bytes per training window for each loader at 1000x (measured RSS growth, and bytes held).

Each of --runs runs measures all four (the writer beside numpy side by side); the figures are the medians
over the runs with their range.

Usage: python benchmarks/data_scale.py [--big 20000] [--loader-multiplier 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _spread import spread, stamp


def raw_normal_rate(total_bytes: int) -> float:
    """MB/s of numpy's float32 standard normals alone, in shard-sized blocks."""
    rng = np.random.default_rng(0)
    block = 256 * 881 * 5
    start = time.perf_counter()
    produced = 0
    while produced < total_bytes:
        rng.standard_normal(block, dtype=np.float32)
        produced += block * 4
    return produced / (time.perf_counter() - start) / 1e6


def generation_rate(multiplier: int, out: Path) -> float:
    """MB/s of the dataset writer itself (generate, hash, write), in this process."""
    from stockscale.config import build_train_config
    from stockscale.data.dataset import prepare_from_config
    from stockscale.data.replicas import ReplicaSpec
    from stockscale.data.shards import source_record, write_dataset
    from stockscale.data.windows import PreparedData

    cfg = build_train_config({"multiplier": multiplier})
    prepared = prepare_from_config(cfg)
    if not isinstance(prepared, PreparedData):
        raise SystemExit("the writer's rate is measured on one ticker (the bundled AAPL)")
    spec = ReplicaSpec(prepared.train_series, multiplier, cfg.noise, cfg.seed,
                       price_std=prepared.stats.price_std)
    start = time.perf_counter()
    manifest = write_dataset(prepared, spec, source_record(cfg, prepared), out)
    return sum(shard["bytes"] for shard in manifest["shards"]) / (time.perf_counter() - start) / 1e6


def scale_in_subprocess(multiplier: int, out: Path) -> tuple[float, int, int]:
    """Run the real command; return (seconds, peak RSS of that child alone, bytes written). The peak is the
    child's own (os.wait4's rusage), so runs after a bigger one still measure their own."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "stockscale", "data", "scale", "--multiplier", str(multiplier),
                              "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        error = child.stderr.read().decode() if child.stderr is not None else ""
        raise SystemExit(f"data scale --multiplier {multiplier} failed: {error[-500:]}")
    written = sum(p.stat().st_size for p in out.iterdir())
    return seconds, usage.ru_maxrss * 1024, written


def loader_figures(dataset: Path, batch: int) -> dict[str, dict[str, float]]:
    """For each loader, in a fresh process: RSS growth when opened, bytes held, batches/s over one epoch."""
    code = f"""
import json, time, psutil, gc
from pathlib import Path
from stockscale.data.shards import read_manifest
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.windows import NormStats
import sys
kind = sys.argv[1]
manifest = read_manifest(Path({str(dataset)!r}))
stats = NormStats.from_dict(manifest["stats"])
proc = psutil.Process()
gc.collect(); before = proc.memory_info().rss
loader = TrainLoader(kind, ReplicaSource.on_disk(Path({str(dataset)!r}), manifest), stats, 0, 1, {batch}, 0)
opened = proc.memory_info().rss
start = time.perf_counter(); n = 0; peak = opened
for x, y in loader.epoch(1):
    n += 1
    if n % 200 == 0: peak = max(peak, proc.memory_info().rss)
    if n >= 3000: break
rate = n / (time.perf_counter() - start)
peak = max(peak, proc.memory_info().rss)
print(json.dumps({{"windows": loader.windows, "held": loader.data_resident_bytes, "rss_growth": peak - before,
                  "batches_per_s": rate}}))
"""
    figures = {}
    for kind in ("memory", "lazy", "stream"):
        done = subprocess.run([sys.executable, "-c", code, kind], check=True, capture_output=True, text=True)
        import json

        figures[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def model_step_rate(hidden: int, batch: int, steps: int = 100) -> float:
    import torch
    from torch import nn

    from stockscale.model import LSTMRegressor

    torch.set_num_threads(1)
    model = LSTMRegressor(5, hidden, 2, 0.2)
    optimizer = torch.optim.Adam(model.parameters())
    x, y = torch.randn(batch, 60, 5), torch.randn(batch)
    for i in range(steps + 10):
        if i == 10:
            start = time.perf_counter()
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=20000, help="multiplier for the throughput and RSS figures")
    parser.add_argument("--loader-multiplier", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, numpy {np.__version__}; {stamp()}")
    kinds = ("memory", "lazy", "stream")
    runs: dict[str, list[float]] = {key: [] for key in ("command", "writer", "raw", "ratio", "peak", "step",
                                                        *(f"rate {k}" for k in kinds), *(f"x {k}" for k in kinds),
                                                        *(f"rss {k}" for k in kinds), *(f"held {k}" for k in kinds))}
    written = windows = 0
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        # The command's runs first, while this process is still small: a child's peak RSS (ru_maxrss) also
        # counts the pages it shared with this process between fork and exec.
        for run in range(args.runs):
            seconds, peak, written = scale_in_subprocess(args.big, Path(tmp) / f"x{args.big}-{run}")
            shutil.rmtree(Path(tmp) / f"x{args.big}-{run}")
            runs["command"].append(seconds)
            runs["peak"].append(peak / 2**20)
            print(f"   run {run + 1}: data scale --multiplier {args.big} in {seconds:.1f} s, peak RSS "
                  f"{peak / 2**20:.0f} MiB; {stamp()}")
        dataset = Path(tmp) / f"x{args.loader_multiplier}"
        scale_in_subprocess(args.loader_multiplier, dataset)
        for run in range(args.runs):
            rate = generation_rate(args.big // 4, Path(tmp) / f"g{run}")
            shutil.rmtree(Path(tmp) / f"g{run}")
            raw = raw_normal_rate(written // 4)
            figures = loader_figures(dataset, args.batch)
            step = model_step_rate(64, args.batch)
            windows = int(figures["memory"]["windows"])
            for key, value in (("writer", rate), ("raw", raw), ("ratio", rate / raw * 100), ("step", step)):
                runs[key].append(value)
            for kind, fig in figures.items():
                runs[f"rate {kind}"].append(fig["batches_per_s"])
                runs[f"x {kind}"].append(fig["batches_per_s"] / step)
                runs[f"rss {kind}"].append(fig["rss_growth"] / fig["windows"])
                runs[f"held {kind}"].append(fig["held"] / fig["windows"])
            loader_rates = ", ".join(f"{k} {figures[k]['batches_per_s']:.0f}" for k in kinds)
            print(f"   run {run + 1}: writer {rate:.0f} vs raw {raw:.0f} MB/s = {rate / raw * 100:.1f} %, loaders "
                  f"{loader_rates} batches/s, model {step:.1f} steps/s; {stamp()}")
    print(f"\n1. the command, data scale --multiplier {args.big}: {written / 1e6:.0f} MB in "
          f"{spread(runs['command'], '{:.1f}', ' s')} (process start, imports and data loading included)")
    print(f"   writer (generate + sha256 + write, {args.big // 4}x): {spread(runs['writer'], '{:.0f}', ' MB/s')}; "
          f"numpy raw normals {spread(runs['raw'], '{:.0f}', ' MB/s')}")
    print(f"   ratio, side by side: {spread(runs['ratio'], '{:.1f}', ' %')} (goal >= 50 %)")
    print(f"2. peak RSS of data scale --multiplier {args.big}: {spread(runs['peak'], '{:.0f}', ' MiB')} "
          "(goal < 250 MB)")
    print(f"3. batches/s at {args.loader_multiplier}x, batch {args.batch}; model step at hidden 64: "
          f"{spread(runs['step'], '{:.1f}', ' steps/s')} (1 thread)")
    for kind in kinds:
        print(f"   {kind:<7} {spread(runs[f'rate {kind}'], '{:.0f}', ' batches/s')} = "
              f"{spread(runs[f'x {kind}'], '{:.0f}', 'x')} the model (goal >= 5x)")
    print(f"4. resident bytes per training window at {args.loader_multiplier}x ({windows:,} windows)")
    for kind in kinds:
        print(f"   {kind:<7} RSS growth {spread(runs[f'rss {kind}'], '{:.1f}', ' B/window')}; held by the loader "
              f"{spread(runs[f'held {kind}'], '{:.1f}', ' B/window')}")
    print(f"ended {stamp()}")


if __name__ == "__main__":
    main()
