"""The worker contract: what a training process says when it ends, whatever launched it.

Every worker, a local process, a container or a pod, runs `stockscale train` and ends the same way:

- after every epoch rank 0 prints a **progress line**, a JSON object with an `"event"` key (`{"event":
  "epoch", "epoch": 1, "val_loss": ...}`: Katib's metrics collector reads it); it is never a result;
- its **last stdout line that is a JSON object** (and not a progress line) is its result: rank 0's holds the
  run's metrics
  (metrics.json without the per-epoch history), another rank's holds its own `rank`, `peak_rss_bytes` and
  `samples_per_second`, and a failure it could name holds `status` ("oom" or "error") and `detail`. Lines a
  library prints after it are not JSON objects, so the search goes backwards;
- its **exit status** says how it ended (the constants below);
- a DDP rank leaves with `os._exit` once everything is flushed: gloo's threads can abort an interpreter's
  finalization (pytorch/pytorch#190489), which would turn a finished rank into a failed one;
- a single-process worker given a **stop file** (`$STOCKSCALE_STOP_FILE`: a pod's annotations, as the
  kubelet writes them into a downward-API volume) reads it after every epoch; once it holds the
  `stockscale/stop` annotation and epochs remain, the worker ends cleanly: its result line says
  `{"status": "pruned", ...}` and it exits 0 (an Indexed Job's index must succeed, or the Job fails).

The launchers (local, docker, kubernetes) read results only through `parse_result_line`, and the CLI writes
them only through `result_line`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict, cast

# Any value JSON can hold: what a result line's free-form parts (its config, its data summary) are made of.
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
JsonObject = dict[str, JsonValue]


class SplitScore(TypedDict, total=False):
    """How a model (or the persistence baseline) did on one split, in dollars (train.score)."""

    loss: float  # the model's own loss (in the training target's units); not in a baseline's score
    rmse: float
    mae: float
    mape: float
    directional_accuracy: float | None  # null when the prediction never moves (the baseline)
    windows: int


class BaselineScores(TypedDict):
    """The persistence baseline (tomorrow's close = today's) on the validation and test splits."""

    name: str
    val: SplitScore
    test: SplitScore


class WorkerStats(TypedDict):
    """One DDP rank's share of a run: what a non-zero rank's result line holds, and rank 0's `workers`."""

    rank: int
    peak_rss_bytes: int
    samples_per_second: float
    windows: NotRequired[int]  # pooled over tickers: this rank's training windows
    tickers: NotRequired[list[int]]  # and the first and last index (into data.tickers) of the tickers it holds
    shards: NotRequired[list[int]]  # and, from a dataset on disk, the first and last shard it opened, and how many


class EpochRecord(TypedDict):
    """One epoch of history.json (a result line leaves the history out)."""

    epoch: int
    train_loss: float
    val_loss: float
    steps: int
    seconds: float


class RunMetrics(TypedDict, total=False):
    """A worker's result line (and rank 0's metrics.json, which also has `history`); docs/results.md.

    Rank 0 of a run that finished writes every key but `rank` and `detail`; another rank writes only `rank`,
    `peak_rss_bytes` and `samples_per_second`; a failure the worker could name only `status` and `detail`
    (and its `rank`). A cluster controller that kept no log may know only `val`'s loss. Nothing validates a
    result line (a launcher takes what the worker printed), so every key is optional to its readers.
    """

    kind: Literal["train_run"]
    format_version: int
    status: str  # "success" from rank 0; "oom" or "error" in a failure's line
    detail: str
    rank: int
    config: JsonObject  # the full TrainConfig, as JSON (TrainConfig.to_dict)
    data: JsonObject  # the data's summary: source, dates, days per split, multiplier, noise, dataset
    loader: str
    train_samples: int
    data_resident_bytes: int
    steps: int
    epochs_completed: int
    train_seconds: float
    samples_per_second: float
    peak_rss_bytes: int
    world_size: int
    batch_scope: str  # per_worker | global (TrainConfig.batch_scope)
    batch_per_worker: int
    global_batch: int  # batch_per_worker x world_size: the windows one optimizer step averages over
    workers: list[WorkerStats]
    device: str
    threads: int
    history: list[EpochRecord]
    val: SplitScore
    test: SplitScore
    baseline: BaselineScores
    tickers: JsonObject  # pooled over tickers: count, skipped, best, worst, per_ticker (docs/results.md)
    baselines: JsonObject  # every baseline by name, each split's score (baselines.Baselines.scores)
    phase_seconds: dict[str, float | None]  # startup, setup, data, model, train, evaluate
    wall_seconds: float
    run_dir: str

EXIT_SUCCESS = 0
EXIT_FAILURE = 1  # StockscaleError: the run failed (a NaN loss, a worker that died)
EXIT_INPUT = 2  # InputError: bad flags, config or data, one line on stderr
EXIT_MEMORY = 3  # MemoryError inside Python: the launcher reports it as oom
EXIT_PORT_IN_USE = 4  # rank 0 found MASTER_PORT taken: the local launcher retries on another port
EXIT_INTERRUPTED = 130  # Ctrl-C

# How a launcher asks a running pod to stop after its current epoch (a search's pruner): it sets this
# annotation on the pod; the worker reads the pod's annotations from the file STOP_FILE_ENV names.
STOP_ANNOTATION = "stockscale/stop"
STOP_FILE_ENV = "STOCKSCALE_STOP_FILE"


def stop_requested(text: str) -> bool:
    """Whether a downward-API annotations file (`key="value"` lines, the value quoted as Go's %q does:
    kubernetes pkg/fieldpath FormatMap) holds the stop annotation."""
    return any(line.partition("=")[0].strip() == STOP_ANNOTATION for line in text.splitlines())


def result_line(metrics: RunMetrics | Mapping[str, object]) -> str:
    """The final stdout line of a rank: its result without the per-epoch history (history.json has it).

    Strict JSON: a NaN or infinity is refused here rather than written for a reader to choke on.
    """
    line = {key: value for key, value in metrics.items() if key != "history"}
    tickers = line.get("tickers")
    if isinstance(tickers, dict):  # a pooled run's figures per ticker (hundreds of them) stay in metrics.json
        line["tickers"] = {key: value for key, value in tickers.items() if key != "per_ticker"}
    return json.dumps(line, allow_nan=False)


def json_object(line: str) -> JsonObject | None:
    """`line` as a JSON object, or None when it is anything else (a log line, a list, broken JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def result_object(line: str) -> RunMetrics | None:
    """`line` as a result: a JSON object that is not a progress line (those carry an "event" key), or None.

    Its shape is the worker's word (RunMetrics): it is not checked, as no launcher ever checked it."""
    value = json_object(line)
    return None if value is None or "event" in value else cast(RunMetrics, value)


def parse_result_line(lines: Iterable[str]) -> RunMetrics | None:
    """A worker's result: the last of its output lines that is a JSON object and not a progress line, or None.

    A worker killed after an epoch has printed progress but no result: its progress is not taken for one."""
    for line in reversed(list(lines)):
        value = result_object(line)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class EpochReport:
    """One epoch's progress line, as a trial reports it while it runs: what a search's pruner judges."""

    epoch: int
    val_loss: float
    train_loss: float | None = None
    seconds: float | None = None


def parse_epoch_line(line: str) -> EpochReport | None:
    """`line` as an epoch progress line (see console.epoch_line: a timestamp, a space, a JSON object), or
    None when it is anything else. A line without the timestamp (an older worker's) is read too."""
    text = line.strip()
    if not text.startswith("{"):
        text = text.partition(" ")[2]
    value = json_object(text)
    if value is None or value.get("event") != "epoch":
        return None
    epoch, val_loss = value.get("epoch"), value.get("val_loss")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(val_loss, int | float):
        return None
    train_loss, seconds = value.get("train_loss"), value.get("seconds")
    return EpochReport(epoch, float(val_loss),
                       float(train_loss) if isinstance(train_loss, int | float) else None,
                       float(seconds) if isinstance(seconds, int | float) else None)
