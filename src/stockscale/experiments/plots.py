"""The report's pictures, drawn from loaded results files with matplotlib's Agg canvas.

matplotlib is imported inside each function so that `stockscale --help` and `compare` without a report stay
fast, and through `matplotlib.figure.Figure` rather than pyplot: no global figure state, no GUI backend.
A plot whose data is missing raises `PlotSkipped` with the reason, which the report prints instead.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from stockscale.config import canonical_name, format_size
from stockscale.experiments.timings import OUTLIER_FACTOR

if TYPE_CHECKING:
    from stockscale.experiments.results import Predictions, ScaleRun, SearchRun, Trial

MIB = 1024**2
# Okabe & Ito's palette, distinguishable with every common colour-vision deficiency; line styles and
# markers carry each distinction on their own as well, so the figures also read in grey.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}
LOADER_COLOURS = {"memory": OKABE_ITO["blue"], "lazy": OKABE_ITO["orange"], "stream": OKABE_ITO["green"]}
LineStyle = Literal["-", "--", "-.", ":"]  # the ones these figures use, of matplotlib's
FillStyle = Literal["full", "none"]
# Line style and marker fill: one process dashed and hollow, the workers solid and filled.
MODE_STYLES: dict[str, list[tuple[LineStyle, FillStyle]]] = {
    "local": [("--", "none"), (":", "none")],
    "cluster": [("-", "full"), ("-.", "full")],
}
STATUS_STYLE = {  # marker, size, label: failures must stand out from successes at a glance
    "success": ("o", 6, "success"),
    "oom": ("X", 11, "out of memory"),
    "timeout": ("s", 9, "timeout"),
    "error": ("D", 8, "error"),
    "preempted": ("v", 9, "preempted"),
    "pruned": ("|", 9, "pruned"),
}
STATUS_HATCH = {"success": "", "oom": "xxx", "timeout": "...", "error": "\\\\", "preempted": "///", "pruned": "--"}
GAP_FACTOR = 4.0  # neighbouring multipliers further apart than this are not joined by a line
MAX_SHADES = 12  # a timeline colours its bars by a parameter with at most this many values


class PlotSkipped(Exception):
    """The data this plot needs is not in the results; the message says what is missing."""


@dataclass(frozen=True)
class TimedTrial:
    """A trial with both its times: only these can be drawn against time (a trial that never started, or
    whose end was not recorded, has no bar)."""

    trial: Trial
    start: float
    end: float


def timed_trials(run: SearchRun) -> list[TimedTrial]:
    """The trials of `run` with a start and an end time, in the results' order."""
    return [TimedTrial(t, t.start_time, t.end_time) for t in run.data.results
            if t.start_time is not None and t.end_time is not None]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: Path | BinaryIO) -> Any:
    """Write the PNG; return the figure, whose texts tests can read."""
    fig.savefig(path, format="png")
    return fig


def _segments(points: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """Runs of neighbouring points no more than GAP_FACTOR apart: a line across a wider gap would show a
    straight trend where nothing was measured."""
    runs: list[list[tuple[int, float]]] = []
    for point in points:
        if runs and point[0] <= runs[-1][-1][0] * GAP_FACTOR:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def plot_memory(runs: list[ScaleRun], path: Path | BinaryIO, headlines: Sequence[str] = ()) -> Any:
    """Peak memory per worker against the multiplier, one line style per scale test, the limits as thick grey
    lines; `headlines` (the measured ratios) go on top, so the figure says what the text says."""
    from matplotlib.lines import Line2D

    measured = [(run, row) for run in runs for row in run.data.results if row.peak_per_worker() is not None]
    if not measured:
        raise PlotSkipped("no scale test with a measured peak memory (run `stockscale scale-test`)")
    fig = _figure(8.5, 5.8 + 0.25 * len(headlines))
    ax = fig.add_subplot()
    gaps = failed_above = False
    run_handles = []
    seen: dict[tuple[str, str], int] = {}
    ordered = sorted(runs, key=lambda run: (list(LOADER_COLOURS).index(run.data.settings.loader)
                                            if run.data.settings.loader in LOADER_COLOURS else 9,
                                            run.data.settings.mode != "local"))
    for run in ordered:
        s = run.data.settings
        color = LOADER_COLOURS.get(s.loader, OKABE_ITO["purple"])
        repeat = seen.get((s.mode, s.loader), 0)
        seen[(s.mode, s.loader)] = repeat + 1
        linestyle, fill = MODE_STYLES[s.mode][repeat % 2]
        rows = sorted(((row, peak) for row in run.data.results if (peak := row.peak_per_worker()) is not None),
                      key=lambda pair: pair[0].multiplier)
        if not rows:
            continue
        label = f"{run.label}: {s.workers} worker{'s' if s.workers > 1 else ''}, {s.loader} loader"
        points = [(row.multiplier, peak / MIB) for row, peak in rows]
        segments = _segments(points)
        gaps = gaps or len(segments) > 1
        for segment in segments:
            ax.plot([x for x, _ in segment], [y for _, y in segment], color=color, linestyle=linestyle,
                    linewidth=1.8)
        for row, peak in rows:
            marker, size, _ = STATUS_STYLE[row.status]
            edge = "black" if row.status != "success" else color
            ax.plot(row.multiplier, peak / MIB, marker=marker, markersize=size, color=color,
                    markeredgecolor=edge, fillstyle=fill if row.status == "success" else "full",
                    markerfacecolor="white" if fill == "none" and row.status == "success" else color,
                    linestyle="none")
            limit = s.memory_limit_bytes
            failed_above = failed_above or (row.status == "oom" and limit is not None and limit != 0
                                            and peak > limit)
        run_handles.append(Line2D([], [], color=color, linestyle=linestyle, linewidth=1.8, marker="o",
                                  fillstyle=fill, markerfacecolor="white" if fill == "none" else color,
                                  label=label))
    limits = sorted({run.data.settings.memory_limit_bytes for run in runs if run.data.settings.memory_limit_bytes})
    limit_handles = [ax.axhline(limit / MIB, color="0.55", linestyle="-", linewidth=3, alpha=0.6, zorder=0,
                                label=f"memory limit: {format_size(limit)} per process or worker")
                     for limit in limits]
    ax.set_xscale("log")
    ax.set_xlabel("dataset multiplier (log scale; markers are the measured runs)")
    ax.set_ylabel("peak memory per worker (MiB)")
    title = "Dataset scale: peak memory per worker"
    if headlines:
        title += "\n" + "\n".join(textwrap.fill(line, 110) for line in headlines)
    ax.set_title(title, fontsize=9.5)
    ax.grid(True, which="both", alpha=0.3)
    statuses = sorted({row.status for _, row in measured}, key=list(STATUS_STYLE).index)
    status_handles = [Line2D([], [], marker=STATUS_STYLE[s][0], markersize=STATUS_STYLE[s][1], color="gray",
                             markeredgecolor="black", linestyle="none", label=STATUS_STYLE[s][2])
                      for s in statuses]
    ax.legend(handles=run_handles + limit_handles + status_handles, fontsize=8, loc="best")
    notes = []
    if failed_above:
        notes.append("An out-of-memory mark above the limit is the last peak RSS seen before the kill: RSS also "
                     "counts shared library pages, which the cgroup charges elsewhere.")
    if gaps:
        notes.append(f"No line joins multipliers more than {GAP_FACTOR:g}x apart: nothing was measured between.")
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=7.5, ha="left", va="bottom", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.035 * len(notes), 1, 1 - 0.035 * len(notes)))
    return _save(fig, path)


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


def _colour_key(trials: list[Any]) -> tuple[str | None, list[Any]]:
    """The parameter that colours the timeline's bars: hidden size when it varies (it sets a trial's cost),
    else the first parameter that varies; its values in order."""
    keys = [key for trial in trials for key in trial.config]
    for key in ["hidden_size", *dict.fromkeys(keys)]:
        values = {_config_value(trial.config, key) for trial in trials} - {None}
        if 1 < len(values) <= MAX_SHADES:  # a sampled range has a value per trial: no key to read
            try:
                return key, sorted(values)
            except TypeError:
                return key, sorted(values, key=str)
    return None, []


def plot_timeline(searches: list[SearchRun], path: Path | BinaryIO, headline: str = "",
                  outliers: Sequence[tuple[str, int]] = ()) -> Any:
    """A Gantt chart per search on one shared time axis: sequential against parallel (and cloud). Bars are
    coloured by the parameter that sets a trial's cost, hatched when the trial failed, and outlined when it
    is an outlier (`outliers`: (role, trial) pairs); `headline` (the speed-up) goes on top."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    timed = []
    for run in searches:
        trials = timed_trials(run)
        if trials:
            timed.append((run, trials))
    if not timed:
        raise PlotSkipped("no search with trial start and end times (run `stockscale search`)")
    key, values = _colour_key([t.trial for _, trials in timed for t in trials])
    cmap = colormaps["cividis_r"]  # one lightness per value, darker for larger: readable in grey
    shades = {value: cmap(0.15 + 0.8 * i / max(1, len(values) - 1)) for i, value in enumerate(values)}
    flagged = set(outliers)
    lane_counts = []
    for _, trials in timed:
        lane_counts.append(max(assign_lanes([(t.start, t.end) for t in trials])) + 1)
    fig = _figure(9, 1.8 + sum(0.35 * n + 0.8 for n in lane_counts))
    axes = fig.subplots(len(timed), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [n + 1.5 for n in lane_counts]})[:, 0]
    for ax, (run, trials), lanes_n in zip(axes, timed, lane_counts, strict=True):
        t0 = min(t.start for t in trials)
        lanes = assign_lanes([(t.start, t.end) for t in trials])
        for timed_trial, lane in zip(trials, lanes, strict=True):
            trial = timed_trial.trial
            start, width = timed_trial.start - t0, timed_trial.end - timed_trial.start
            colour = shades.get(_config_value(trial.config, key), "0.75") if key else "0.75"
            outlier = (run.role, trial.trial) in flagged
            ax.barh(lane, width, left=start, height=0.8, color=colour, hatch=STATUS_HATCH[trial.status],
                    edgecolor=OKABE_ITO["vermillion"] if outlier else "black", linewidth=2.5 if outlier else 0.5)
            dark = sum(colour[:3]) / 3 < 0.45 if isinstance(colour, tuple) else False
            label = f"{trial.trial}" if trial.status == "success" else f"{trial.trial} {trial.status}"
            ax.text(start + width / 2, lane, label + (" outlier" if outlier else ""), ha="center", va="center",
                    fontsize=7, color="white" if dark else "black")
        makespan = max(t.end for t in trials) - t0
        ax.set_yticks(range(lanes_n), [f"lane {i + 1}" for i in range(lanes_n)], fontsize=8)
        ax.invert_yaxis()
        backend = f" ({run.data.settings.backend})" if run.data.settings.backend != run.role else ""
        ax.set_title(f"{run.role}{backend}: {len(trials)} trials, "
                     f"{makespan:.1f} s from first start to last end", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel("seconds since the search's first trial started (bar labels: trial numbers)")
    if headline:
        fig.suptitle(headline, fontsize=11)
    name = {"hidden_size": "hidden size", "num_layers": "layers", "lr": "learning rate"}.get(key or "", key)
    handles = [Patch(facecolor=shades[value], edgecolor="black", linewidth=0.5, label=f"{name} {value:g}"
                     if isinstance(value, float) else f"{name} {value}") for value in values]
    used = sorted({t.trial.status for _, trials in timed for t in trials} - {"success"}, key=list(STATUS_HATCH).index)
    handles += [Patch(facecolor="white", edgecolor="black", hatch=STATUS_HATCH[s], label=s) for s in used]
    if flagged:
        handles.append(Patch(facecolor="white", edgecolor=OKABE_ITO["vermillion"], linewidth=2.5,
                             label=f"outlier: over {OUTLIER_FACTOR:g}x its config's time elsewhere"))
    if not handles:
        handles = [Patch(facecolor="0.75", edgecolor="black", linewidth=0.5, label="trial (bar: start to end)")]
    fig.legend(handles=handles, fontsize=8, ncols=min(len(handles), 5), loc="outside lower center")
    return _save(fig, path)


def _config_value(config: dict[str, Any], key: str) -> Any:
    """A trial's value of `key`, under its field name or (an older summary's) its alias."""
    return next((value for name, value in config.items() if canonical_name(name) == key), None)


MAX_GRID_CELLS = 400  # cells of the grid plot: beyond this a cell's label cannot be read anyway


def plot_grid(run: SearchRun | None, path: Path | BinaryIO) -> Any:
    """Validation loss as a learning rate x hidden size heatmap, one panel per number of layers. Cells with
    no successful trial are grey; when the space has other parameters, a cell shows its lowest loss."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if run is None:
        raise PlotSkipped("no search with a successful trial (run `stockscale search`)")
    space = {canonical_name(key): values for key, values in run.data.settings.space.items()}
    if not all(isinstance(values, list) for values in space.values()):
        raise PlotSkipped(f"the {run.role} search samples ranges: it has no grid to draw")
    trials = run.data.results
    # The whole grid when it is small; else only the values trials ran: the work (and the picture) is bounded
    # by what ran, never by a long list in the space (a 3-trial random search over 100,000 values).
    keys = ("lr", "hidden_size", "num_layers")
    whole = math.prod(max(1, len(space.get(key) or [])) for key in keys) <= MAX_GRID_CELLS
    ran = [t for t in trials if t.status == "success" and t.val_loss is not None] if not whole else trials
    lrs, hiddens, layers = (sorted(({v for v in space.get(key) or [] if v is not None} if whole else set())
                                   | {_config_value(t.config, key) for t in ran} - {None}) for key in keys)
    if not lrs or not hiddens:
        raise PlotSkipped(f"the {run.role} search does not vary lr and hidden_size")
    layers = layers or [None]
    if len(layers) * len(lrs) * len(hiddens) > MAX_GRID_CELLS:
        raise PlotSkipped(f"the {run.role} search ran {len(lrs)} lr x {len(hiddens)} hidden_size x {len(layers)} "
                          f"num_layers values: more than the {MAX_GRID_CELLS} cells a grid plot shows")
    cells = np.full((len(layers), len(lrs), len(hiddens)), np.nan)
    index = [{value: i for i, value in enumerate(axis)} for axis in (layers, lrs, hiddens)]
    for trial in trials:
        if trial.status != "success" or trial.val_loss is None:
            continue
        n, lr, hidden = (_config_value(trial.config, key) for key in ("num_layers", "lr", "hidden_size"))
        if n not in index[0] or lr not in index[1] or hidden not in index[2]:
            continue
        i, j, k = index[0][n], index[1][lr], index[2][hidden]
        cells[i, j, k] = np.fmin(cells[i, j, k], trial.val_loss)
    finite = cells[np.isfinite(cells)]
    if not finite.size:
        raise PlotSkipped(f"no successful trial of the {run.role} search names its lr and hidden_size")
    norm = Normalize(float(finite.min()), float(finite.max()) if finite.max() > finite.min() else finite.min() + 1e-9)
    cmap = colormaps["viridis_r"].with_extremes(bad="lightgray")
    fig = _figure(max(6.0, 3.2 * len(layers) + 1.5), 4.2)
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
        ax.set_title(f"{n_layers} layer{'' if n_layers == 1 else 's'}" if n_layers is not None else "all layers",
                     fontsize=10)
    axes[0].set_ylabel("learning rate")
    others = sorted(set(space) - {"lr", "hidden_size", "num_layers"})
    extra = f" (lowest over {', '.join(others)})" if others else ""
    low, high = float(finite.min()), float(finite.max())
    spread = f"{(high - low) / low * 100:.1f}%" if low > 0 else f"{high - low:.3g}"
    width = max(6.0, 3.2 * len(layers) + 1.5)
    only = " only" if low > 0 and (high - low) / low < 0.1 else ""  # a narrow scale makes small gaps look big
    fig.suptitle(textwrap.fill(f"Validation loss, {run.role} search{extra}; lower is better. The colours span"
                               f"{only} {low:.3g} to {high:.3g}: the best and worst cell differ by {spread}.",
                               int(width * 11)), fontsize=10)
    fig.colorbar(image, ax=list(axes), label=f"validation loss (scale: {low:.3g} to {high:.3g}{only})")
    return _save(fig, path)


def _rmse(predicted: Sequence[float], actual: Sequence[float]) -> float:
    return (sum((p - a) ** 2 for p, a in zip(predicted, actual, strict=True)) / len(actual)) ** 0.5


def _rolling_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_predictions(predictions: Predictions | None, title: str, note: str, path: Path | BinaryIO) -> Any:
    """The best model's next-day close predictions against the actual closes and the persistence baseline,
    with both models' errors in a panel below and their RMSE in the title: the LSTM line alone can look
    good although persistence (tomorrow = today) does as well or better."""
    import matplotlib.dates  # noqa: F401  (registers the date converter used by plot())

    if predictions is None:
        raise PlotSkipped(note or "no predictions")
    try:
        days = [date.fromisoformat(day[:10]) for day in predictions.dates]
    except ValueError as error:
        raise PlotSkipped(f"predictions.json has a date that is not ISO 8601 ({error})") from None
    lstm = _rmse(predictions.predicted, predictions.actual)
    base = _rmse(predictions.baseline, predictions.actual)
    if base > 0:
        diff = (lstm - base) / base * 100
        verdict = (f"the LSTM is {abs(diff):.1f}% {'worse' if diff > 0 else 'better'} than persistence"
                   if abs(diff) >= 0.05 else "the LSTM and persistence are level")
    else:
        verdict = "persistence is exact here"
    fig = _figure(9, 9)
    top, middle, zoom = fig.subplots(3, 1, gridspec_kw={"height_ratios": [2.2, 1.1, 1.6]})
    middle.sharex(top)
    styles = {"actual": {"color": "0.6", "linewidth": 3.2, "label": "actual close", "zorder": 1},
              "lstm": {"color": OKABE_ITO["blue"], "linewidth": 1.3, "label": "LSTM prediction", "zorder": 3},
              "persistence": {"color": OKABE_ITO["vermillion"], "linewidth": 1.3, "linestyle": (0, (4, 2)),
                              "label": "persistence (tomorrow = today)", "zorder": 2}}
    series = {"actual": predictions.actual, "lstm": predictions.predicted, "persistence": predictions.baseline}
    for name, values in series.items():
        top.plot(days, values, **styles[name])
    top.set_ylabel(r"price (\$, split-adjusted)")
    top.set_title(f"{title}\n{predictions.split} period: RMSE LSTM \\${lstm:.2f} vs persistence \\${base:.2f}: "
                  f"{verdict}", fontsize=10)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8)

    window = max(1, min(10, len(days) // 5))
    gap = _rolling_mean([abs(p - a) - abs(b - a) for p, b, a in
                         zip(predictions.predicted, predictions.baseline, predictions.actual, strict=True)], window)
    middle.axhline(0, color="black", linewidth=0.8)
    middle.fill_between(days, gap, 0, where=[g > 0 for g in gap], color=OKABE_ITO["vermillion"], alpha=0.5,
                        hatch="///", linewidth=0, label="LSTM further from the close", interpolate=True)
    middle.fill_between(days, gap, 0, where=[g <= 0 for g in gap], color=OKABE_ITO["blue"], alpha=0.5,
                        linewidth=0, label="LSTM closer than persistence", interpolate=True)
    middle.plot(days, gap, color="black", linewidth=0.8)
    mean = f"{window}-day mean of " if window > 1 else ""
    middle.set_ylabel(f"{mean}LSTM |error|\n- persistence |error| (\\$)", fontsize=8)
    middle.grid(True, alpha=0.3)
    middle.legend(fontsize=8, ncols=2, loc="upper left")
    for label in top.get_xticklabels():
        label.set_visible(False)

    last = min(len(days), 20)
    for name, values in series.items():
        style = {**styles[name], "marker": {"actual": "s", "lstm": "o", "persistence": "^"}[name],
                 "markersize": 4}
        zoom.plot(days[-last:], values[-last:], **style)
    zoom.set_title(f"The last {last} days, closer: persistence is the close of the day before", fontsize=9)
    zoom.set_ylabel(r"price (\$)")
    zoom.grid(True, alpha=0.3)
    for ax in (middle, zoom):
        for label in ax.get_xticklabels():
            label.set_rotation(20)
            label.set_horizontalalignment("right")
    return _save(fig, path)
