"""The report's pictures, drawn from loaded results files with matplotlib's Agg canvas.

matplotlib is imported inside each function so that `stockscale --help` and `compare` without a report stay
fast, and through `matplotlib.figure.Figure` rather than pyplot: no global figure state, no GUI backend.
A plot whose data is missing raises `PlotSkipped` with the reason, which the report prints instead.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockscale.config import format_size

if TYPE_CHECKING:
    from stockscale.experiments.report import Predictions, ScaleRun, SearchRun

MIB = 1024**2
STATUS_STYLE = {  # marker, size, label: failures must stand out from successes at a glance
    "success": ("o", 6, "success"),
    "oom": ("X", 11, "out of memory"),
    "timeout": ("s", 9, "timeout"),
    "error": ("D", 8, "error"),
    "preempted": ("v", 9, "preempted"),
}
STATUS_COLOR = {"success": "tab:green", "oom": "tab:red", "timeout": "tab:orange", "error": "tab:purple",
                "preempted": "tab:gray"}


class PlotSkipped(Exception):
    """The data this plot needs is not in the results; the message says what is missing."""


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png")


def plot_memory(runs: list[ScaleRun], path: Path) -> None:
    """Peak memory per worker against the multiplier, one line per scale test, limits as dashed lines."""
    from matplotlib.lines import Line2D

    measured = [(run, row) for run in runs for row in run.data.results if row.peak_per_worker() is not None]
    if not measured:
        raise PlotSkipped("no scale test with a measured peak memory (run `stockscale scale-test`)")
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:red", "tab:cyan", "tab:brown", "tab:olive", "tab:pink"]
    for index, run in enumerate(runs):
        s = run.data.settings
        color = colors[index % len(colors)]
        rows = sorted((row for row in run.data.results if row.peak_per_worker() is not None),
                      key=lambda row: row.multiplier)
        if not rows:
            continue
        label = f"{run.label}: {s.workers} worker{'s' if s.workers > 1 else ''}, {s.loader} loader"
        ax.plot([r.multiplier for r in rows], [r.peak_per_worker() / MIB for r in rows], color=color,
                linewidth=1.5, label=label)
        for row in rows:
            marker, size, _ = STATUS_STYLE[row.status]
            edge = "black" if row.status != "success" else color
            ax.plot(row.multiplier, row.peak_per_worker() / MIB, marker=marker, markersize=size, color=color,
                    markeredgecolor=edge, linestyle="none")
    limits = sorted({run.data.settings.memory_limit_bytes for run in runs if run.data.settings.memory_limit_bytes})
    for limit in limits:
        ax.axhline(limit / MIB, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"limit {format_size(limit)} per worker", (0.01, limit / MIB), xycoords=("axes fraction",
                    "data"), xytext=(0, 3), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("dataset multiplier (log scale)")
    ax.set_ylabel("peak memory per worker (MiB)")
    ax.set_title("Dataset scale: peak memory per worker")
    ax.grid(True, which="both", alpha=0.3)
    status_handles = [Line2D([], [], marker=m, markersize=s, color="gray", markeredgecolor="black",
                             linestyle="none", label=label) for m, s, label in STATUS_STYLE.values()]
    lines, _ = ax.get_legend_handles_labels()
    ax.legend(handles=lines + status_handles, fontsize=8, loc="best")
    _save(fig, path)


def assign_lanes(spans: list[tuple[float, float]]) -> list[int]:
    """Lane per span so that spans in one lane never overlap (earliest free lane first): the lanes show
    how many trials really ran at once."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    lane_end: list[float] = []
    lanes = [0] * len(spans)
    for i in order:
        start, end = spans[i]
        free = next((lane for lane, busy in enumerate(lane_end) if busy <= start + 1e-6), None)
        if free is None:
            lane_end.append(end)
            free = len(lane_end) - 1
        lane_end[free] = end
        lanes[i] = free
    return lanes


def plot_timeline(searches: list[SearchRun], path: Path) -> None:
    """A Gantt chart per search on one shared time axis: sequential against parallel (and cloud)."""
    from matplotlib.patches import Patch

    timed = []
    for run in searches:
        trials = [t for t in run.data.results if t.start_time is not None and t.end_time is not None]
        if trials:
            timed.append((run, trials))
    if not timed:
        raise PlotSkipped("no search with trial start and end times (run `stockscale search`)")
    lane_counts = []
    for _, trials in timed:
        lane_counts.append(max(assign_lanes([(t.start_time, t.end_time) for t in trials])) + 1)
    fig = _figure(9, 1.2 + sum(0.35 * n + 0.8 for n in lane_counts))
    axes = fig.subplots(len(timed), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [n + 1.5 for n in lane_counts]})[:, 0]
    for ax, (run, trials), lanes_n in zip(axes, timed, lane_counts, strict=True):
        t0 = min(t.start_time for t in trials)
        lanes = assign_lanes([(t.start_time, t.end_time) for t in trials])
        for trial, lane in zip(trials, lanes, strict=True):
            start, width = trial.start_time - t0, trial.end_time - trial.start_time
            ax.barh(lane, width, left=start, height=0.8, color=STATUS_COLOR[trial.status], edgecolor="black",
                    linewidth=0.5)
            ax.text(start + width / 2, lane, str(trial.trial), ha="center", va="center", fontsize=7)
        makespan = max(t.end_time for t in trials) - t0
        ax.set_yticks(range(lanes_n), [f"lane {i + 1}" for i in range(lanes_n)], fontsize=8)
        ax.invert_yaxis()
        backend = f" ({run.data.settings.backend})" if run.data.settings.backend != run.role else ""
        ax.set_title(f"{run.role}{backend}: {len(trials)} trials, "
                     f"{makespan:.1f} s from first start to last end", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel("seconds since the search's first trial started")
    used = sorted({t.status for _, trials in timed for t in trials}, key=list(STATUS_COLOR).index)
    fig.legend(handles=[Patch(color=STATUS_COLOR[s], label=s) for s in used], fontsize=8, ncols=len(used),
               loc="outside lower center")
    _save(fig, path)


def _config_value(config: dict[str, Any], key: str) -> Any:
    if key == "lr" and "lr" not in config:
        return config.get("learning_rate")
    return config.get(key)


def plot_grid(run: SearchRun | None, path: Path) -> None:
    """Validation loss as a learning rate x hidden size heatmap, one panel per number of layers. Cells with
    no successful trial are grey; when the space has other parameters, a cell shows its lowest loss."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if run is None:
        raise PlotSkipped("no search with a successful trial (run `stockscale search`)")
    space = {("lr" if key == "learning_rate" else key): values for key, values in run.data.settings.space.items()}
    trials = run.data.results
    lrs = sorted({v for v in space.get("lr", []) if v is not None} |
                 {_config_value(t.config, "lr") for t in trials} - {None})
    hiddens = sorted({v for v in space.get("hidden_size", []) if v is not None} |
                     {_config_value(t.config, "hidden_size") for t in trials} - {None})
    if not lrs or not hiddens:
        raise PlotSkipped(f"the {run.role} search does not vary lr and hidden_size")
    layers = sorted({v for v in space.get("num_layers", []) if v is not None} |
                    {_config_value(t.config, "num_layers") for t in trials} - {None}) or [None]
    cells = np.full((len(layers), len(lrs), len(hiddens)), np.nan)
    for trial in trials:
        if trial.status != "success" or trial.val_loss is None:
            continue
        n, lr, hidden = (_config_value(trial.config, key) for key in ("num_layers", "lr", "hidden_size"))
        if n not in layers or lr not in lrs or hidden not in hiddens:
            continue
        i, j, k = layers.index(n), lrs.index(lr), hiddens.index(hidden)
        cells[i, j, k] = np.fmin(cells[i, j, k], trial.val_loss)
    finite = cells[np.isfinite(cells)]
    if not finite.size:
        raise PlotSkipped(f"no successful trial of the {run.role} search names its lr and hidden_size")
    norm = Normalize(float(finite.min()), float(finite.max()) if finite.max() > finite.min() else finite.min() + 1e-9)
    cmap = colormaps["viridis_r"].with_extremes(bad="lightgray")
    fig = _figure(3.2 * len(layers) + 1.5, 3.8)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    image = None
    for ax, n_layers, panel in zip(axes, layers, cells, strict=True):
        image = ax.imshow(np.ma.masked_invalid(panel), cmap=cmap, norm=norm, aspect="auto")
        for (j, k), value in np.ndenumerate(panel):
            ax.text(k, j, "n/a" if np.isnan(value) else f"{value:.3g}", ha="center", va="center", fontsize=8,
                    color="black" if np.isnan(value) or norm(value) < 0.5 else "white")
        ax.set_xticks(range(len(hiddens)), [str(h) for h in hiddens])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlabel("hidden size")
        ax.set_title(f"{n_layers} layers" if n_layers is not None else "all layers", fontsize=10)
    axes[0].set_ylabel("learning rate")
    others = sorted(set(space) - {"lr", "hidden_size", "num_layers"})
    extra = f" (lowest over {', '.join(others)})" if others else ""
    fig.suptitle(f"Validation loss, {run.role} search{extra}; lower is better", fontsize=11)
    fig.colorbar(image, ax=list(axes), label="validation loss")
    _save(fig, path)


def plot_predictions(predictions: Predictions | None, title: str, note: str, path: Path) -> None:
    """The best model's next-day close predictions against the actual closes and the persistence baseline."""
    import matplotlib.dates  # noqa: F401  (registers the date converter used by plot())

    if predictions is None:
        raise PlotSkipped(note or "no predictions")
    try:
        days = [date.fromisoformat(day[:10]) for day in predictions.dates]
    except ValueError as error:
        raise PlotSkipped(f"predictions.json has a date that is not ISO 8601 ({error})") from None
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    ax.plot(days, predictions.actual, color="black", linewidth=1.4, label="actual close")
    ax.plot(days, predictions.predicted, color="tab:blue", linewidth=1.2, label="LSTM prediction")
    ax.plot(days, predictions.baseline, color="gray", linewidth=1, linestyle="--",
            label="persistence (tomorrow = today)")
    ax.set_ylabel("price ($, split-adjusted)")
    ax.set_title(f"{title}\n{predictions.split} period", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    _save(fig, path)
