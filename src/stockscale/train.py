"""One training loop: a single process, or one rank of a DDP job. Read it top to bottom.

1. seed, threads, device; join the process group when the environment says this is one of several ranks
2. open this rank's share of the training data (validation and test are always the original data)
3. train: Adam on MSE, every rank the same number of steps, gradients averaged by DDP
4. score the model on validation and test in dollars, beside the baselines (baselines.py)
5. rank 0 writes the run directory (temporary directory renamed at the end) and returns the metrics

With a checkpoint folder, rank 0 alone reads it and writes it (checkpoint.py): a resumed DDP run's other
ranks get the model, the optimizer, their RNG states and the counters from rank 0, not from the folder.
"""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from stockscale import checkpoint
from stockscale.baselines import Baselines, prediction_summary, score, to_price
from stockscale.config import TrainConfig
from stockscale.data.dataset import open_training_data
from stockscale.data.windows import EvalSet, NormStats, make_features
from stockscale.distributed import DistEnv, barrier, init_process_group, placement, teardown
from stockscale.errors import InputError, TrainingDiverged
from stockscale.files import staged_dir, temp_dir_beside, to_json
from stockscale.memory import vm_hwm
from stockscale.model import LSTMRegressor
from stockscale.optim import Adam
from stockscale.progress import TrainProgress
from stockscale.ticker_metrics import ticker_metrics
from stockscale.worker import WorkerStats

FORMAT_VERSION = 1


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def process_age_seconds() -> float | None:
    """Seconds since this process was created (Linux: /proc/self/stat against the boot clock), else None.

    At the start of train() in a fresh `stockscale train` process this is its start-up: interpreter, imports,
    config. It is recorded so that a short run's wall time can be split into phases (benchmarks/startup.py).
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM on Linux (see limits.vm_hwm), else getrusage."""
    peak = vm_hwm()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train(cfg: TrainConfig, out: Path, progress: TrainProgress | None = None,
          env: DistEnv | None = None, startup: float | None = None) -> dict[str, Any]:
    """Train per `cfg`; rank 0 writes the run directory `out` and every rank returns its result line.

    `startup` is the time this run waited before train() began, when the process served other runs first (a
    warm worker); by default the process's age."""
    started = time.perf_counter()
    phases: dict[str, float | None] = {"startup": process_age_seconds() if startup is None else startup}
    env = env or DistEnv.from_environ()
    progress = progress if (progress is not None and env.is_main) else TrainProgress()
    if env.is_main:
        if out.exists():
            raise InputError(f"run directory {out} already exists")
        temp_dir_beside(out).rmdir()  # fail now, not after training, if `out` cannot be written
        if cfg.checkpoint_dir is not None:
            checkpoint.check_writable(cfg.checkpoint_dir)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)

    if env.is_distributed:
        name, backend = placement(env, device.type, torch.cuda.device_count())
        device = torch.device(name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        init_process_group(env, backend)
    try:
        phases["setup"] = time.perf_counter() - started
        result = _train(cfg, out, progress, env, device, started, phases)
        barrier()  # rank 0 has written the run directory; everyone leaves together
        return result
    finally:
        teardown()


def _train(cfg: TrainConfig, out: Path, progress: TrainProgress, env: DistEnv, device: torch.device,
           started: float, phases: dict[str, float | None]) -> dict[str, Any]:
    mark = time.perf_counter()
    data = open_training_data(cfg, env.rank, env.world_size)
    loader, stats = data.loader, data.prepared.stats
    val_set, test_set = data.prepared.eval_set("val"), data.prepared.eval_set("test")
    span = data.prepared.summary()
    for warning in getattr(data.prepared, "warnings", list)():  # pooled tickers skipped for too few days
        progress.message(warning)
    progress.message(
        f"data: {span['source']} {span['first_date']}..{span['last_date']}, "
        f"{data.total_windows} training windows (x{data.multiplier}), {len(val_set)} val, {len(test_set)} test, "
        f"loader {cfg.loader}" + (f", {env.world_size} workers" if env.is_distributed else "")
    )

    phases["data"], mark = time.perf_counter() - mark, time.perf_counter()

    core = build_model(cfg, device)
    optimizer = Adam(core.parameters(), lr=cfg.lr)  # torch.optim.Adam's update without importing dynamo
    identity = checkpoint.run_identity(cfg, env.world_size)
    # Rank 0 alone reads the checkpoint folder and hands every rank what it needs (checkpoint.resume).
    resumed = checkpoint.resume(cfg.checkpoint_dir, identity, core, optimizer, env)
    done = resumed if resumed is not None else checkpoint.Progress()
    if resumed is not None:
        progress.message(f"resuming from {cfg.checkpoint_dir}: {done.epoch} epoch(s), {done.steps} steps done")
    # DDP averages gradients across ranks during backward; evaluation uses the bare module.
    model = nn.parallel.DistributedDataParallel(core) if env.is_distributed else core
    loss_fn = nn.MSELoss()
    phases["model"], mark = time.perf_counter() - mark, time.perf_counter()

    history = done.history
    steps, samples, epochs_completed = done.steps, done.samples, done.epochs_completed
    train_seconds = done.train_seconds
    val_outputs = None  # the last epoch's validation pass; none when a resumed run had no epoch left
    for epoch in range(done.epoch + 1, cfg.epochs + 1):
        if cfg.max_steps is not None and steps >= cfg.max_steps:
            break
        epoch_start = time.perf_counter()
        steps_this_epoch = loader.steps_per_epoch
        if cfg.max_steps is not None:
            steps_this_epoch = min(steps_this_epoch, cfg.max_steps - steps)
        progress.epoch_start(epoch, cfg.epochs, steps_this_epoch)
        if env.is_distributed:
            seed_dropout(cfg.seed, env.rank, epoch)
        model.train()
        loss_sum, loss_count = 0.0, 0
        for step, (x, y) in enumerate(loader.epoch(epoch), start=1):
            if step > steps_this_epoch:
                break
            inputs, targets = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            steps += 1
            samples += len(y)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at step {steps}")
            loss_sum += value * len(y)
            loss_count += len(y)
            progress.step(epoch, step, value)
        train_seconds += time.perf_counter() - epoch_start
        val_outputs = model_outputs(core, val_set, stats, device)
        val_loss = evaluate_loss(val_outputs, val_set, stats)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss became {val_loss} after step {steps}")
        finished_epoch = steps_this_epoch == loader.steps_per_epoch
        epochs_completed += finished_epoch
        history.append({"epoch": epoch, "train_loss": loss_sum / max(loss_count, 1), "val_loss": val_loss,
                        "steps": steps, "seconds": time.perf_counter() - epoch_start})
        progress.epoch_end(epoch, history[-1]["train_loss"], val_loss, history[-1]["seconds"])
        if cfg.checkpoint_dir is not None:  # every rank: the others hand rank 0 their RNG states, it writes
            checkpoint.save_from_every_rank(cfg.checkpoint_dir, identity, checkpoint.Progress(
                epoch, steps, samples, epochs_completed, train_seconds, history), core, optimizer, env)
        if cfg.max_steps is not None and steps >= cfg.max_steps:
            break

    phases["train"], mark = time.perf_counter() - mark, time.perf_counter()
    my_rate = samples / train_seconds if train_seconds > 0 else 0.0
    workers = gather_worker_stats(env, peak_rss_bytes(), my_rate, loader.windows, loader.ticker_span,
                                  loader.shards_opened)
    if not env.is_main:
        return {"rank": env.rank, "peak_rss_bytes": peak_rss_bytes(), "samples_per_second": my_rate}

    # One forward pass per split serves both its loss and its predictions (val's from the last epoch).
    if val_outputs is None:
        val_outputs = model_outputs(core, val_set, stats, device)
    test_outputs = model_outputs(core, test_set, stats, device)
    val_pred, test_pred = predict(val_outputs, val_set, stats), predict(test_outputs, test_set, stats)
    # The training data is let go before the baselines: their library (scikit-learn, about 110 MiB resident)
    # then takes the place of the data instead of adding to it at this process's peak.
    summary, total_windows, prepared = data.summary(), data.total_windows, data.prepared
    held, batch = int(loader.data_resident_bytes), loader.batch_size
    del data, loader
    baselines = Baselines.fit(prepared, ridge=cfg.baselines == "all")  # on the original training days only
    metrics: dict[str, Any] = {
        "kind": "train_run",
        "format_version": FORMAT_VERSION,
        "status": "success",
        "config": cfg.to_dict(),
        "data": summary,
        "loader": cfg.loader,
        "train_samples": total_windows,
        "data_resident_bytes": held,
        "steps": steps,
        "epochs_completed": epochs_completed,
        "train_seconds": train_seconds,
        "samples_per_second": sum(w["samples_per_second"] for w in workers),
        "peak_rss_bytes": peak_rss_bytes(),
        "world_size": env.world_size,
        "batch_scope": cfg.batch_scope,
        "batch_per_worker": batch,
        "global_batch": batch * env.world_size,
        "workers": workers,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "history": history,
        "val": {"loss": history[-1]["val_loss"], **score(val_pred, val_set),
                **prediction_summary(val_pred, val_set)},
        "test": {"loss": evaluate_loss(test_outputs, test_set, stats), **score(test_pred, test_set),
                 **prediction_summary(test_pred, test_set)},
        "baseline": {"name": "persistence", "val": score(val_set.last_price, val_set),
                     "test": score(test_set.last_price, test_set)},
        "baselines": baselines.scores({"val": val_set, "test": test_set}),
    }
    if test_set.tickers:  # one model over several tickers: each ticker's figures beside the pooled ones above
        metrics["tickers"] = ticker_metrics(val_pred, val_set, test_pred, test_set, score,
                                            list(getattr(prepared, "skipped", [])))
    phases["evaluate"] = time.perf_counter() - mark
    metrics["phase_seconds"] = phases
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["run_dir"] = str(out)
    write_run_dir(out, cfg, metrics, core, test_set, test_pred, baselines.predictions(test_set))
    return metrics


def build_model(cfg: TrainConfig, device: torch.device) -> LSTMRegressor:
    """The model, its weights drawn from `cfg.seed` alone: every rank builds the same one (DDP would broadcast
    rank 0's anyway), and a single process draws what it always did."""
    torch.manual_seed(cfg.seed)
    return LSTMRegressor(5, cfg.hidden_size, cfg.num_layers, cfg.dropout).to(device)


def dropout_seed(seed: int, rank: int, epoch: int) -> int:
    """The torch seed of one DDP rank's dropout in one epoch: from (seed, rank, epoch) through numpy's
    SeedSequence, so no two ranks share a stream (seed + rank would: seed 42 rank 1 is seed 43 rank 0) and a
    resumed epoch draws what it drew the first time, whatever the RNG states a checkpoint put back."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def seed_dropout(seed: int, rank: int, epoch: int) -> None:
    """Give this rank its own dropout stream for `epoch`: ranks that drew the same masks would waste the
    regularisation that a larger batch of independent masks gives."""
    torch.manual_seed(dropout_seed(seed, rank, epoch))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(dropout_seed(seed, rank, epoch))


def gather_worker_stats(env: DistEnv, rss: int, rate: float, windows: int = 0,
                        tickers: tuple[int, int] | None = None,
                        shards: list[str] | None = None) -> list[WorkerStats]:
    """Every rank's peak RSS and samples/s (and, pooled over tickers, its training windows, the first and
    last ticker index it holds, and the first and last shard number it read or mapped and how many: shard
    files of a dataset on disk), gathered as a tensor (no pickled objects on the wire)."""
    span = tickers if tickers is not None else (-1, -1)
    numbers = [int(name[6:11]) for name in shards or []]  # shard-NNNNN.npy
    opened = (min(numbers), max(numbers), len(numbers)) if numbers else (-1, -1, 0)
    mine = torch.tensor([float(env.rank), float(rss), rate, float(windows), *map(float, span), *map(float, opened)],
                        dtype=torch.float64)
    if not env.is_distributed:
        rows = [mine]
    else:
        import torch.distributed as dist

        rows = [torch.zeros_like(mine) for _ in range(env.world_size)]
        dist.all_gather(rows, mine)
    stats: list[WorkerStats] = [{"rank": int(r[0]), "peak_rss_bytes": int(r[1]), "samples_per_second": float(r[2])}
                                for r in rows]
    if tickers is not None:
        for entry, r in zip(stats, rows, strict=True):
            entry["windows"], entry["tickers"] = int(r[3]), [int(r[4]), int(r[5])]
            if int(r[8]) > 0:
                entry["shards"] = [int(r[6]), int(r[7]), int(r[8])]
    return stats


@torch.no_grad()
def model_outputs(model: nn.Module, evalset: EvalSet, stats: NormStats, device: torch.device) -> np.ndarray:
    model.eval()
    features, _ = make_features(evalset.windows, evalset.next_close, stats)
    outputs = [model(torch.from_numpy(chunk).to(device)).cpu().numpy()
               for chunk in np.array_split(features, max(1, math.ceil(len(features) / 1024)))]
    return np.concatenate(outputs)


def evaluate_loss(outputs: np.ndarray, evalset: EvalSet, stats: NormStats) -> float:
    """MSE of the model's outputs in the training target's units, comparable to the train loss."""
    _, targets = make_features(evalset.windows, evalset.next_close, stats)
    return float(np.mean((outputs - targets) ** 2))


def predict(outputs: np.ndarray, evalset: EvalSet, stats: NormStats) -> np.ndarray:
    """Predicted next-day closes in dollars from the model's outputs: today's close moved by the predicted log
    return."""
    return to_price(outputs, evalset, stats)


def write_run_dir(out: Path, cfg: TrainConfig, metrics: dict[str, Any], model: nn.Module,
                  test_set: EvalSet, test_pred: np.ndarray, baselines: dict[str, np.ndarray] | None = None) -> None:
    """Everything in a temporary directory beside `out`, renamed to `out` only when complete."""
    with staged_dir(out) as tmp:
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (tmp / "metrics.json").write_text(to_json(metrics) + "\n")
        (tmp / "history.json").write_text(to_json(metrics["history"]) + "\n")
        torch.save(model.state_dict(), tmp / "model.pt")
        rows = slice(None) if test_set.ticker_index is None else test_set.ticker_index == 0
        predictions: dict[str, Any] = {
            "split": "test",
            "dates": [str(d) for d in test_set.dates[rows]],
            "actual": test_set.next_price[rows].tolist(),
            "predicted": test_pred[rows].tolist(),
            "baseline": test_set.last_price[rows].tolist(),
            "baselines": {name: values[rows].tolist() for name, values in (baselines or {}).items()
                          if name != "persistence"},
        }
        if test_set.tickers:  # pooled: one price series to plot, the source's first ticker (not a chosen one)
            predictions["ticker"] = test_set.tickers[0]
        (tmp / "predictions.json").write_text(to_json(predictions, indent=None) + "\n")


def load_model(run_dir: Path) -> LSTMRegressor:
    """Rebuild a trained model from its run directory (weights only: no code is unpickled)."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    model = LSTMRegressor(5, cfg["hidden_size"], cfg["num_layers"], cfg["dropout"])
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return model
