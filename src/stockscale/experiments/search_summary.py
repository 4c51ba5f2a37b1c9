"""What `stockscale search` prints at the end: the summary of a search in a few lines (its own module, so the
driver in search.py stays about running the search)."""

from __future__ import annotations

from stockscale.experiments.records import SearchSummaryRecord


def format_summary(summary: SearchSummaryRecord) -> str:
    settings = summary["settings"]
    strategy = settings.get("strategy", "grid")
    how = "" if strategy == "grid" else f" ({strategy}, pruner {settings.get('pruner', 'none')})"
    pruned = f", {summary['pruned']} pruned" if summary.get("pruned") else ""
    lines = [
        f"search, {settings['backend']}{how}: {len(summary['results'])} trials, {settings['workers']} at a time, "
        f"{settings['threads_per_trial']} thread(s) each",
        f"total {summary['total_wall_seconds']:.1f} s, sum of trial times {summary['sum_trial_seconds']:.1f} s, "
        f"{summary['successes']} succeeded{pruned}, {summary['failures']} failed",
    ]
    best = summary.get("best")
    if best:
        test, base = best["test"] or {}, best["baseline_test"] or {}
        lines.append(f"best by validation loss: {best['name']} {best['config']} val_loss {best['val_loss']:.4f}")
        if "rmse" in test and "rmse" in base:
            lines.append(f"  test RMSE ${test['rmse']:.3f} (persistence baseline ${base['rmse']:.3f})")
    return "\n".join(lines)
