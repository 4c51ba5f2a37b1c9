"""The results files as their writers build them: the search's summary and the scale test's results, and the
entries each hands to its `on_result` callback as a trial or a run ends.

These are TypedDicts, so an entry stays the plain dict that is written as JSON and read by key
(`entry["val_loss"]`). The format is docs/results.md; experiments/results.py holds the pydantic models that
validate the same files when the report reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

from stockscale.config import TrainOverrides
from stockscale.launch.base import Status
from stockscale.worker import JsonObject, JsonValue, SplitScore

# ------------------------------------------------------------------------------------------------- the search


class TrialEntry(TypedDict):
    """One trial of summary.json's `results`, as the search records it when the trial ends."""

    trial: int
    name: str
    config: TrainOverrides  # the trial's point in the space (what a controller chose, on Katib)
    status: Status
    detail: str
    start_time: float
    end_time: float
    wall_seconds: float
    train_seconds: float | None
    epochs_done: int | None
    val_loss: float | None  # a pruned trial's is the last loss it reported
    test_rmse: float | None
    test: SplitScore | None
    baseline_test: SplitScore | None
    baselines_test: NotRequired[dict[str, JsonObject]]  # every baseline's test score (split_baselines)
    peak_rss_bytes: int | None
    run_dir: str | None
    settings_hash: NotRequired[str]
    study_trial: NotRequired[int]  # the Optuna trial's number, when a study of ours asked for it


class BestTrial(TypedDict):
    """summary.json's `best`: the successful trial with the lowest finite validation loss."""

    trial: int
    name: str
    config: TrainOverrides
    val_loss: float | None
    test: SplitScore | None
    baseline_test: SplitScore | None
    run_dir: str | None
    baselines_test: NotRequired[dict[str, JsonObject]]


class SearchSettingsRecord(TypedDict):
    backend: str
    workers: int | None
    threads_per_trial: int | None
    space: dict[str, JsonValue]  # a list of values, or a range in Katib's terms
    strategy: str
    trials: int
    pruner: str
    seed: int
    train: TrainOverrides
    trial_timeout_seconds: float | None
    emulated: bool
    launcher: str
    machine: JsonObject


class SearchSummaryRecord(TypedDict):
    """summary.json. The totals and `best` are filled in (and rewritten) after every trial."""

    kind: str
    format_version: int
    started_at: str
    finished_at: str | None
    complete: bool
    settings: SearchSettingsRecord
    results: list[TrialEntry]
    launched_at: NotRequired[float]
    total_wall_seconds: NotRequired[float]
    sum_trial_seconds: NotRequired[float]
    successes: NotRequired[int]
    pruned: NotRequired[int]
    failures: NotRequired[int]
    best: NotRequired[BestTrial | None]


# --------------------------------------------------------------------------------------------- the scale test


class ScaleRunEntry(TypedDict):
    """One run of results.json's `results`: one multiplier, as the scale test records it when it ends."""

    multiplier: int
    status: Status
    detail: str
    train_windows: int
    dataset_bytes: int
    wall_seconds: float
    peak_rss_bytes: list[int]
    samples_per_second: float | None
    steps: int | None
    data_resident_bytes: int | None
    run_dir: str | None
    probe: NotRequired[int]  # its place in the order the runs were made


class BoundaryRecord(TypedDict):
    largest_success: int | None
    smallest_failure: int | None
    ratio: float | None


class ScaleSettingsRecord(TypedDict):
    mode: str
    backend: str
    emulated: bool
    workers: int
    memory_limit_bytes: int | None
    limit_mechanism: str | None
    timeout_seconds: float | None
    loader: str
    max_steps: int | None
    epochs: int | None
    threads_per_worker: int | None
    multipliers: list[int]
    search: JsonObject  # {"method": "grid"} or the boundary search's settings
    train: TrainOverrides
    launcher: str
    machine: JsonObject


class ScaleTestRecord(TypedDict):
    """results.json of a scale test, rewritten after every run."""

    kind: str
    format_version: int
    started_at: str
    finished_at: str | None
    complete: bool
    settings: ScaleSettingsRecord
    boundary: BoundaryRecord
    results: list[ScaleRunEntry]


def split_baselines(baselines: Mapping[str, Any] | None, split: str = "test") -> dict[str, dict[str, Any]]:
    """metrics.json's `baselines` narrowed to one split: name -> score (drift's with its daily_log_return)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in (baselines or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get(split), Mapping):
            out[name] = dict(entry[split])
            if "daily_log_return" in entry:
                out[name]["daily_log_return"] = entry["daily_log_return"]
    return out
