"""The search strategies' figure: the best validation loss found so far against time, one line per search."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from stockscale.experiments.plots import OKABE_ITO, PlotSkipped, _figure, _save, timed_trials

if TYPE_CHECKING:
    from stockscale.experiments.results import SearchRun

SEARCH_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]


def plot_best_so_far(searches: list[SearchRun], path: Path | BinaryIO) -> Any:
    """The best validation loss found so far against seconds since the search began: one step line per
    search (grid, random, TPE with a pruner, ...), so a strategy that finds a good config sooner shows at once.
    Only trials that finished count (a pruned trial's loss is from fewer epochs); each mark is a new best."""
    lines = []
    for run in searches:
        trials = timed_trials(run)
        scored = sorted(((t.end, loss) for t in trials if t.trial.status == "success"
                         and (loss := t.trial.val_loss) is not None and math.isfinite(loss)),
                        key=lambda end_loss: end_loss[0])
        if scored:
            lines.append((run, min(t.start for t in trials), max(t.end for t in trials), scored))
    if not lines:
        raise PlotSkipped("no search with finished trials and their times (run `stockscale search`)")
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    palette = [OKABE_ITO[name] for name in ("blue", "orange", "green", "vermillion", "purple", "sky blue")]
    for number, (run, t0, end, scored) in enumerate(lines):
        best, xs, ys = math.inf, [0.0], [math.nan]
        for trial_end, loss in scored:
            if loss < best:
                best = loss
                xs.append(trial_end - t0)
                ys.append(best)
        xs.append(end - t0)
        ys.append(best)
        settings = run.data.settings
        how = settings.strategy + ("" if settings.pruner == "none" else f" + {settings.pruner}")
        pruned = sum(t.status == "pruned" for t in run.data.results)
        style, marker = SEARCH_STYLES[number % len(SEARCH_STYLES)]
        ax.step(xs, ys, where="post", linestyle=style, color=palette[number % len(palette)], marker=marker,
                markevery=list(range(1, len(xs) - 1)), markersize=5,
                label=f"{run.role}: {how}, {len(run.data.results)} trials"
                      + (f" ({pruned} pruned)" if pruned else "") + f", best {best:.4f}")
    ax.set_xlabel("seconds since the search's first trial started")
    ax.set_ylabel("best validation loss so far (MSE, normalized)")
    ax.set_title("How soon each search finds its best configuration", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
