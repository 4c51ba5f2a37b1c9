"""What `stockscale search` prints at the end: the summary of a search in a few lines (its own module, so the
driver in search.py stays about running the search)."""

from __future__ import annotations

from stockscale.experiments.results import SearchSummary


def format_summary(summary: SearchSummary) -> str:
    settings = summary.settings
    how = "" if settings.strategy == "grid" else f" ({settings.strategy}, pruner {settings.pruner})"
    pruned = f", {summary.pruned} pruned" if summary.pruned else ""
    lines = [
        f"search, {settings.backend}{how}: {len(summary.results)} trials, {settings.workers} at a time, "
        f"{settings.threads_per_trial} thread(s) each",
        f"total {summary.total_wall_seconds:.1f} s, sum of trial times {summary.sum_trial_seconds or 0.0:.1f} s, "
        f"{summary.successes} succeeded{pruned}, {summary.failures} failed",
    ]
    best = summary.best
    if best:
        lines.append(f"best by validation loss: {best.name} {best.config} val_loss {best.val_loss:.4f}")
        rmse = best.test.rmse if best.test is not None else None
        base = best.baseline_test.rmse if best.baseline_test is not None else None
        if rmse is not None and base is not None:
            lines.append(f"  test RMSE ${rmse:.3f} (persistence baseline ${base:.3f})")
    return "\n".join(lines)
