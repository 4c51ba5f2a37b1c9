"""The runs behind the comparisons as markdown tables: one row per scale-test probe and one per search trial.

report.md shows the comparisons as fixed-width text; these tables list the same runs row by row, so that
report.html (rendered from report.md) has tables a reader can sort by any column. Every cell comes from a
results file; a value that was not measured is a dash.
"""

from __future__ import annotations

from collections.abc import Sequence

from stockscale.config import format_size
from stockscale.experiments.report.text import STATUS_WORDS
from stockscale.experiments.results import LoadedResults


def _cell(value: object) -> str:
    """A table cell: '-' for a missing value, pipes escaped so a detail cannot split the row."""
    if value is None or value == "":
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _number(value: float | None, digits: int) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def scale_runs_table(results: LoadedResults) -> list[str]:
    """Every scale-test probe: its test, multiplier, status, time, largest worker's peak and throughput."""
    rows: list[list[object]] = []
    for run in results.scale_tests:
        s = run.data.settings
        for row in run.data.results:
            peak = row.peak_per_worker()
            rows.append([run.path.parent.name, s.loader, s.workers, row.multiplier, STATUS_WORDS[row.status],
                         _number(row.wall_seconds, 1), format_size(peak) if peak else None,
                         _number(row.samples_per_second, 0), row.detail])
    if not rows:
        return ["_No scale test in the results._"]
    return _table(["test", "loader", "workers", "multiplier", "status", "time (s)", "peak per worker",
                   "samples/s", "detail"], rows)


def search_trials_table(results: LoadedResults) -> list[str]:
    """Every search trial: its search, number, config, status, epochs, validation loss, test RMSE, time."""
    rows: list[list[object]] = []
    for run in results.searches:
        for trial in run.data.results:
            config = ", ".join(f"{key}={value}" for key, value in trial.config.items())
            rows.append([run.path.parent.name, trial.trial, config, STATUS_WORDS[trial.status], trial.epochs_done,
                         _number(trial.val_loss, 4), _number(trial.test_rmse, 3), _number(trial.wall_seconds, 1),
                         format_size(trial.peak_rss_bytes) if trial.peak_rss_bytes else None])
    if not rows:
        return ["_No search in the results._"]
    return _table(["search", "trial", "config", "status", "epochs", "val loss", "test RMSE ($)", "time (s)",
                   "peak RSS"], rows)


def runs_section(results: LoadedResults) -> list[str]:
    """report.md's section listing every run (report.html sorts these tables by a click on a header)."""
    return ["## Every run", "", "### Scale-test probes", "", *scale_runs_table(results), "",
            "### Search trials", "", *search_trials_table(results), ""]
