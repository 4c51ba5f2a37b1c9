"""The results files as typed models: one model per file, which its writer builds and the report, plots,
projection and `--resume` read back.

The formats are documented in docs/results.md. The models allow extra keys (newer writers may add some) and
refuse missing or mistyped ones: the keys the report prints are required, nullable where the format allows
null; keys added since the first format have defaults, so results written before them still load. A writer
dumps with `exclude_unset`, so a key it did not set (a trial's `study_trial` when a controller searched) is
absent, as the format says, rather than null. The run statuses are launch.runner's, the strategies and
pruners the registry's (search/registry.py). `load_results` reads a results folder; a file that cannot be
read or does not have the documented shape becomes a warning naming it, so one corrupt file does not hide the
other measurements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from stockscale.config import one_line
from stockscale.errors import InputError
from stockscale.experiments.dry_run import MARKER as DRY_RUN_MARKER
from stockscale.experiments.dry_run import DryRun
from stockscale.launch.runner import Status as RunStatus
from stockscale.search import registry

Scalar = int | float | str | bool | None  # a config's value: a nested mapping or list there is refused on read
# The results folders, named once: a search's folder by its backend, and its role in the report by folder.
SEARCH_FOLDERS = {"sequential": "hp_search_local", "parallel": "hp_search_parallel", "docker": "hp_search_docker",
                  "kubernetes": "hp_search_cloud"}
SEARCH_DIRS = {folder: "cloud" if backend == "kubernetes" else backend for backend, folder in SEARCH_FOLDERS.items()}


def scale_test_folder(mode: str, loader: str = "memory") -> str:
    """`scale_test_<mode>` for the memory loader (the original demonstration's), else with the loader."""
    return f"scale_test_{mode}" if loader == "memory" else f"scale_test_{mode}_{loader}"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Machine(_Shape):
    cpus: int | None
    memory_bytes: int | None = None
    platform: str | None = None
    python: str | None = None
    torch: str | None = None


class ScaleSettings(_Shape):
    mode: Literal["local", "cluster"]
    backend: str
    emulated: bool
    workers: int
    memory_limit_bytes: int | None
    limit_mechanism: str | None
    timeout_seconds: float | None = None
    loader: str
    max_steps: int | None = None
    epochs: int | None = None
    threads_per_worker: int | None = None
    multipliers: list[int] = []  # the grid's, or the sizes a boundary search probed
    search: dict[str, Scalar] = {}  # {"method": "grid"} or the boundary search's settings
    train: dict[str, Scalar] = {}
    launcher: str | None = None
    machine: Machine | None = None


class ScaleRow(_Shape):
    multiplier: int
    status: RunStatus
    detail: str = ""
    train_windows: int | None = None
    dataset_bytes: int | None = None
    wall_seconds: float | None
    peak_rss_bytes: list[int | None] | None
    samples_per_second: float | None = None
    steps: int | None = None
    data_resident_bytes: int | None = None
    run_dir: str | None = None
    probe: int | None = None  # its place in the order the runs were made

    def peak_per_worker(self) -> int | None:
        """The largest worker's peak: what has to fit under the per-worker limit."""
        measured = [value for value in self.peak_rss_bytes or [] if value is not None]
        return max(measured) if measured else None


class Boundary(_Shape):
    """What the probes show: the largest success, the smallest oom/timeout above it, their ratio."""

    largest_success: int | None
    smallest_failure: int | None
    ratio: float | None


class ScaleTest(_Shape):
    kind: Literal["scale_test"]
    format_version: Literal[1]
    started_at: str | None = None
    finished_at: str | None = None
    complete: bool = True
    settings: ScaleSettings
    boundary: Boundary | None = None
    results: list[ScaleRow]

    def document(self) -> dict[str, Any]:
        """The results as results.json holds them (keys never set left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class SplitMetrics(_Shape):
    rmse: float | None
    mae: float | None = None
    mape: float | None = None
    directional_accuracy: float | None = None


class SearchSettingsRecord(_Shape):
    backend: str  # sequential | parallel | docker | kubernetes (docs/results.md)
    workers: int | None  # trials at once (--parallel)
    threads_per_trial: int | None = None
    space: dict[str, list[Scalar] | dict[str, Scalar | list[Scalar]]]  # a list of values, or a range (Katib's terms)
    strategy: str = "grid"  # a registered strategy (search/registry.py)
    trials: int | None = None
    pruner: str = "none"  # a registered pruner
    seed: int | None = None
    train: dict[str, Scalar] = {}
    trial_timeout_seconds: float | None = None
    emulated: bool = False
    launcher: str | None = None  # the runner's name (warm, local, docker, kubernetes)
    machine: Machine | None = None

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, value: str) -> str:
        return registry.strategy(value).name  # ValueError naming the choices, as the registry words it

    @field_validator("pruner")
    @classmethod
    def _registered_pruner(cls, value: str) -> str:
        return registry.pruner(value).name


class Trial(_Shape):
    trial: int
    name: str
    config: dict[str, Scalar]
    status: RunStatus
    detail: str = ""
    start_time: float | None
    end_time: float | None
    wall_seconds: float | None
    train_seconds: float | None = None  # the training loop's own time: wall minus this is the overhead
    epochs_done: int | None = None
    val_loss: float | None  # a pruned trial's is the last loss it reported
    test_rmse: float | None = None
    test: SplitMetrics | None = None
    baseline_test: SplitMetrics | None = None
    baselines_test: dict[str, dict[str, Any]] = {}  # by baseline name (issue 23; older files lack it)
    peak_rss_bytes: int | None = None
    run_dir: str | None = None
    settings_hash: str | None = None  # what --resume compares (absent in files written before it)
    study_trial: int | None = None  # the Optuna trial's number; absent when a cluster controller searched


class Best(_Shape):
    trial: int
    name: str
    config: dict[str, Scalar]
    val_loss: float
    test: SplitMetrics | None  # None only when the trial's controller kept no test score
    baseline_test: SplitMetrics | None
    run_dir: str | None = None
    baselines_test: dict[str, dict[str, Any]] = {}  # by baseline name (issue 23; older files lack it)


class SearchSummary(_Shape):
    kind: Literal["hp_search"]
    format_version: Literal[1]
    started_at: str | None = None
    finished_at: str | None = None
    complete: bool
    settings: SearchSettingsRecord
    launched_at: float | None = None  # when the run handed out its first trial
    total_wall_seconds: float
    sum_trial_seconds: float | None = None
    successes: int
    pruned: int = 0
    failures: int
    results: list[Trial]
    best: Best | None

    def document(self) -> dict[str, Any]:
        """The summary as summary.json holds it (keys never set left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class Predictions(_Shape):
    split: str
    dates: list[str]
    actual: list[float]
    predicted: list[float]
    baseline: list[float]


class Evaluation(_Shape):
    """results/evaluate/evaluation.json (experiments/evaluate.py); the report reads it as a dict."""

    kind: Literal["evaluation"]
    format_version: Literal[1]
    settings: dict[str, Any]
    folds: list[dict[str, Any]]
    models: dict[str, Any]
    diebold_mariano: dict[str, Any]


@dataclass
class EvaluationRun:
    path: Path
    data: Evaluation


@dataclass
class ScaleRun:
    """One scale_test_*/results.json."""

    path: Path
    data: ScaleTest

    @property
    def label(self) -> str:
        s = self.data.settings
        if s.mode == "local":
            return "local"
        if s.backend == "docker":
            return f"cluster ({s.workers} containers)"
        return "cluster (emulated)" if s.emulated else f"cluster ({s.backend})"


@dataclass
class SearchRun:
    """One hp_search_*/summary.json; `role` is sequential | parallel | cloud (or the folder's name)."""

    role: str
    path: Path
    data: SearchSummary


@dataclass
class LoadedResults:
    results_dir: Path
    scale_tests: list[ScaleRun] = field(default_factory=list)
    searches: list[SearchRun] = field(default_factory=list)
    dry_runs: dict[str, DryRun] = field(default_factory=dict)  # by role: folders where only manifests were written
    warnings: list[str] = field(default_factory=list)
    evaluation: EvaluationRun | None = None  # results/evaluate/evaluation.json, when `stockscale evaluate` ran

    def search(self, role: str) -> SearchRun | None:
        return next((run for run in self.searches if run.role == role), None)


def _read_json(path: Path, kind: str) -> dict[str, Any]:
    """A results file's JSON object, or ValueError with a reason that fits on one line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror or error.__class__.__name__})") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"holds a JSON {type(data).__name__}, not a {kind} results object")
    if data.get("kind") != kind:
        raise ValueError(f"has kind {data.get('kind')!r}, expected {kind!r}")
    if data.get("format_version") != 1:
        raise ValueError(f"has format_version {data.get('format_version')!r}; this stockscale reads 1")
    return data


def read_search_summary(path: Path) -> SearchSummary:
    """A search's summary.json, validated (what `--resume` reads back); InputError in one line naming it."""
    try:
        return SearchSummary.model_validate(_read_json(path, "hp_search"))
    except ValidationError as error:
        raise InputError(f"--resume: {one_line(error, str(path))}") from None
    except ValueError as error:
        raise InputError(f"--resume: {path} {error}") from None


def _load(path: Path, model: type[BaseModel], kind: str, warnings: list[str]) -> Any:
    try:
        return model.model_validate(_read_json(path, kind))
    except ValueError as error:
        if isinstance(error, ValidationError):
            warnings.append(f"skipped {one_line(error, str(path))}")
        else:
            warnings.append(f"skipped {path}: {error}")
        return None


def load_results(results_dir: Path) -> LoadedResults:
    """Every scale test and search under `results_dir`; unreadable files become warnings naming them.

    Raises InputError only when `results_dir` itself is missing or not a directory."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        what = "is not a directory" if results_dir.exists() else "does not exist"
        raise InputError(f"results directory {results_dir} {what} (run `stockscale scale-test` or "
                         "`stockscale search` first, or pass --results DIR)")
    loaded = LoadedResults(results_dir)
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("scale_test_"):
            path = folder / "results.json"
            if not path.is_file():
                loaded.warnings.append(f"skipped {folder}: no results.json (an interrupted run?)")
            elif (scale := _load(path, ScaleTest, "scale_test", loaded.warnings)) is not None:
                loaded.scale_tests.append(ScaleRun(path, scale))
        elif folder.name.startswith("hp_search_"):
            path = folder / "summary.json"
            marker = folder / DRY_RUN_MARKER
            if not path.is_file() and marker.is_file():
                if (dry_run := _load(marker, DryRun, "dry_run", loaded.warnings)) is not None:
                    loaded.dry_runs[SEARCH_DIRS.get(folder.name, folder.name)] = dry_run
            elif not path.is_file():
                loaded.warnings.append(f"skipped {folder}: no summary.json (an interrupted run?)")
            elif (summary := _load(path, SearchSummary, "hp_search", loaded.warnings)) is not None:
                loaded.searches.append(SearchRun(SEARCH_DIRS.get(folder.name, folder.name), path, summary))
    evaluation = results_dir / "evaluate" / "evaluation.json"
    if evaluation.is_file() and (data := _load(evaluation, Evaluation, "evaluation", loaded.warnings)) is not None:
        loaded.evaluation = EvaluationRun(evaluation, data)
    order = list(SEARCH_DIRS.values())
    loaded.searches.sort(key=lambda run: (order.index(run.role) if run.role in order else len(order), run.role))
    return loaded


def config_text(config: dict[str, Any]) -> str:
    """A trial's config on one line (`lr=0.001, hidden_size=64`), as the tables and the plots' titles name it."""
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in config.items())


def best_search(results: LoadedResults) -> SearchRun | None:
    """The search whose best trial has the lowest validation loss (ties: sequential, parallel, cloud)."""
    candidates = [run for run in results.searches if run.data.best is not None]
    return min(candidates, key=lambda run: run.data.best.val_loss, default=None)  # type: ignore[union-attr]


def _resolve_run_dir(run_dir: str, search: SearchRun, results_dir: Path) -> Path | None:
    """A trial's run directory as recorded (relative to where the search ran), or found again under the
    search's folder when the results directory has moved."""
    recorded = Path(run_dir)
    # Searches record run_dir relative to where they ran, normally the results directory's parent.
    candidates = [recorded if recorded.is_absolute() else results_dir.parent / recorded]
    parts = recorded.parts
    if search.path.parent.name in parts:
        tail = parts[parts.index(search.path.parent.name) + 1:]
        candidates.append(search.path.parent.joinpath(*tail))
    return next((path for path in candidates if (path / "predictions.json").is_file()), None)


def load_predictions(results: LoadedResults) -> tuple[Predictions | None, str, str]:
    """(predictions, title, note): the best trial's test predictions, or None with the reason."""
    search = best_search(results)
    if search is None or search.data.best is None:
        return None, "", "no successful search trial to take predictions from"
    best = search.data.best
    if not best.run_dir:
        return None, "", f"the best trial ({search.role} {best.name}) has no run directory recorded"
    folder = _resolve_run_dir(best.run_dir, search, results.results_dir)
    if folder is None:
        return None, "", f"predictions.json not found in the best trial's run directory {best.run_dir}"
    path = folder / "predictions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        predictions = Predictions.model_validate(data)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = one_line(error, str(path)) if isinstance(error, ValidationError) else f"{path}: unreadable"
        return None, "", f"skipped {reason}"
    lengths = {len(predictions.dates), len(predictions.actual), len(predictions.predicted),
               len(predictions.baseline)}
    if len(lengths) != 1 or not predictions.dates:
        return None, "", f"{path}: dates, actual, predicted and baseline are empty or of different lengths"
    title = f"Best model ({search.role} {best.name}: {config_text(best.config)})"
    ticker = (predictions.model_extra or {}).get("ticker")
    if isinstance(ticker, str):  # a model pooled over tickers: the series shown is one of them
        title += f", ticker {ticker}"
    return predictions, title, ""


