"""Many tickers (issue 24), on the SYNTHETIC fixture at all_stocks_5yr's size (505 tickers, ~619,000 rows):

1. loading the long-format CSV (data.sources.load_panel: strict parsing, split per ticker) against
   pandas.read_csv on the same file, interleaved, medians of --runs (goal: <= 10 s and within 3x of pandas);
2. resident bytes per training window of the memory and lazy loaders over every ticker against one ticker of
   the same length (goal: within 10%); for the stream loader (shards holding whole tickers, memory-mapped,
   pages released after each batch) the resident shard pages at their peak in a batch (smaps Rss of the
   mapped shards, read after the batch is gathered and before its pages are released, the most over
   --stream-batches batches) plus the batch's windows, over every ticker against one ticker with as many
   replicas as there are tickers (the same number of windows: the stream loader's resident memory is one
   batch's, so per window it only compares at equal window counts);
3. one epoch over the first 500 tickers with 1, 2 and 4 DDP workers (local processes, 1 thread each, a tiny
   model so the data path shows): samples/s and each worker's share of the windows and tickers.

Prints the load average beside each part: the machine is shared. Usage:
python benchmarks/many_tickers.py [--runs 5] [--epoch-runs 3] [--tickers 505] [--days 1226]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas
import psutil

from stockscale.config import TrainConfig
from stockscale.data.dataset import open_training_data
from stockscale.data.sources import load_panel
from stockscale.data.synthetic import write_synthetic_csv
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import TrainJob


def load_average() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def loading(path: Path, runs: int) -> None:
    ours, theirs = [], []
    load_panel(f"csv:{path}")  # warm the page cache and the imports for both
    pandas.read_csv(path)
    for _ in range(runs):
        start = time.perf_counter()
        panel = load_panel(f"csv:{path}")
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        pandas.read_csv(path)
        theirs.append(time.perf_counter() - start)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"\n1. loading {path.stat().st_size / 2**20:.1f} MiB, {sum(len(s) for s in panel):,} rows, {len(panel)} "
          f"tickers ({load_average()})")
    print(f"   stockscale load_panel: {spread(ours)}")
    print(f"   pandas.read_csv:       {spread(theirs)}")
    print(f"   ratio of medians {ratio:.2f}x (goal <= 3x; and <= 10 s: {max(ours) <= 10})")


def one_ticker_csv(path: Path, out: Path) -> Path:
    """The fixture's first ticker alone, without its Name column: today's single-series path."""
    lines = path.read_text().splitlines()
    first = lines[1].rsplit(",", 1)[1]
    out.write_text("\n".join([lines[0].rsplit(",", 1)[0]] + [line.rsplit(",", 1)[0] for line in lines[1:]
                                                              if line.endswith("," + first)]) + "\n")
    return out


def bytes_per_window(path: Path, single: Path) -> None:
    print(f"\n2. resident bytes per training window ({load_average()})")
    for loader in ("memory", "lazy"):
        rates = []
        for spec in (f"csv:{path}", f"csv:{single}"):
            data = open_training_data(TrainConfig(source=spec, loader=loader))
            rates.append((data.loader.data_resident_bytes / data.loader.windows, data.loader.windows))
            del data
        (many, many_windows), (one, one_windows) = rates
        print(f"   {loader:<6}: every ticker {many:8.2f} B/window ({many_windows:,} windows), one ticker "
              f"{one:8.2f} B/window ({one_windows:,}); ratio {many / one:.3f} (goal within 10%)")



def mapped_rss(directory: Path) -> int:
    """Bytes of this process's resident pages mapped from files in `directory` (/proc/self/smaps)."""
    total, inside = 0, False
    prefix = str(directory.resolve())
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line: ADDR-ADDR PERMS ... PATH
                inside = line.rstrip().split(None, 5)[-1].startswith(prefix)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def stream_peak(loader, directory: Path, batches: int) -> int:
    """The most shard pages resident during one batch plus that batch's windows, over the first `batches`."""
    order, peak = loader.order(0), 0
    for step in range(min(batches, loader.steps_per_epoch)):
        batch = order[step * loader.batch_size : (step + 1) * loader.batch_size]
        windows, next_close = loader._gather(batch)  # what TrainLoader.epoch does before releasing the pages
        peak = max(peak, mapped_rss(directory) + windows.nbytes + next_close.nbytes)
        for block in loader._blocks:
            block.release_pages()
    return peak


def stream_bytes_per_window(path: Path, single: Path, tickers: int, batches: int, runs: int) -> None:
    rates: dict[str, list[float]] = {"every ticker": [], "one ticker": []}
    windows = {}
    for _ in range(runs):
        for label, config in (("every ticker", TrainConfig(source=f"csv:{path}", loader="stream")),
                              ("one ticker", TrainConfig(source=f"csv:{single}", loader="stream",
                                                         multiplier=tickers, noise=0.01))):
            data = open_training_data(config)
            assert data.dataset is not None  # the stream loader reads a written dataset
            rates[label].append(stream_peak(data.loader, Path(data.dataset), batches) / data.loader.windows)
            windows[label] = data.loader.windows
            del data
    many, one = (statistics.median(rates[label]) for label in ("every ticker", "one ticker"))
    print(f"   stream: every ticker {many:8.3f} B/window ({windows['every ticker']:,} windows, "
          f"{min(rates['every ticker']):.3f}-{max(rates['every ticker']):.3f}), one ticker x {tickers} replicas "
          f"{one:8.3f} B/window ({windows['one ticker']:,}, {min(rates['one ticker']):.3f}-"
          f"{max(rates['one ticker']):.3f}); ratio {many / one:.3f} (goal within 10%; peak over {batches} "
          f"batches of 64, median of {runs}, {load_average()})")


def epochs(path: Path, runs: int, tickers: int) -> None:
    config = {"source": f"csv:{path}", "tickers": str(tickers), "loader": "lazy", "epochs": 1, "hidden_size": 8,
              "num_layers": 1, "batch_size": 512}
    print(f"\n3. one epoch over {tickers} tickers, lazy loader, hidden 8, 1 layer, batch 512 per worker, "
          f"1 thread per worker, local processes ({load_average()} before)")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2, 4):
            rates, shares = [], []
            for run in range(runs):
                job = TrainJob(name=f"w{workers}-{run}", config=TrainConfig.model_validate(config),
                               run_dir=Path(tmp) / f"w{workers}-{run}",
                               workers=workers, threads=1)
                result = LocalRunner().run(job)
                metrics = result.metrics
                if result.status != "success" or metrics is None:
                    raise SystemExit(f"{job.name}: {result.status} {result.detail}")
                rates.append(metrics["samples_per_second"])
                shares = [(w["windows"], w["tickers"]) for w in metrics["workers"]]
                total = metrics["train_samples"]
            rate = statistics.median(rates)
            held = ", ".join(f"{windows / total:.3f} of the windows (tickers {lo}-{hi})" for windows, (lo, hi)
                             in shares)
            print(f"   {workers} worker(s): {rate:8.0f} samples/s median (min {min(rates):.0f}, max "
                  f"{max(rates):.0f}, n={runs}); each holds {held} ({load_average()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epoch-runs", type=int, default=3)
    parser.add_argument("--tickers", type=int, default=505)
    parser.add_argument("--days", type=int, default=1226)
    parser.add_argument("--stream-batches", type=int, default=20)
    parser.add_argument("--skip-epochs", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; data: SYNTHETIC fixture (stockscale data synth), "
          f"{args.tickers} tickers x {args.days} days")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_csv(Path(tmp) / "all_stocks_synthetic.csv", args.tickers, args.days)
        loading(path, args.runs)
        single = one_ticker_csv(path, Path(tmp) / "one.csv")
        bytes_per_window(path, single)
        os.environ["STOCKSCALE_CACHE"] = str(Path(tmp) / "cache")  # the stream loader's shards, removed after
        stream_bytes_per_window(path, single, args.tickers, args.stream_batches, args.runs)
        if not args.skip_epochs:
            epochs(path, args.epoch_runs, min(500, args.tickers))


if __name__ == "__main__":
    main()
