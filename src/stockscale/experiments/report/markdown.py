"""report.md: the printed comparison, the four plots and the projection, written into a report folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from stockscale.errors import InputError
from stockscale.experiments.plan.report import planner_section, plot_compared
from stockscale.experiments.projection import Projection, ProjectionSettings, format_projection
from stockscale.experiments.report.comparison import format_comparison, report_projection
from stockscale.experiments.report.html import write_html_report
from stockscale.experiments.report.scale_table import scale_headlines
from stockscale.experiments.report.search_table import search_headline
from stockscale.experiments.report.tables import runs_section
from stockscale.experiments.report.tickers import ticker_section
from stockscale.experiments.results import LoadedResults, SearchRun, load_predictions
from stockscale.experiments.strategy_plot import plot_best_so_far
from stockscale.experiments.timings import find_outliers
from stockscale.files import replace_with, write_json_atomic, write_text_atomic


def grid_search(results: LoadedResults) -> SearchRun | None:
    """The search with the most trials that have a validation loss: the fullest grid to draw (a search over
    ranges has no grid; one is taken only when no search has lists alone)."""
    def filled(run: SearchRun) -> int:
        return sum(1 for t in run.data.results if t.status == "success" and t.val_loss is not None)
    def gridded(run: SearchRun) -> bool:
        return all(isinstance(values, list) for values in run.data.settings.space.values())
    candidates = [run for run in results.searches if filled(run) and gridded(run)] or \
        [run for run in results.searches if filled(run)]
    return max(candidates, key=filled, default=None)  # max keeps the first of equals: sequential first


PLOTS = ("memory.png", "timeline.png", "grid.png", "best_so_far.png", "predictions.png", "plan.png")
REPORT_MARKER = "stockscale-report.json"  # what makes a folder a stockscale report folder, which compare may replace


def claim_report_dir(out_dir: Path) -> None:
    """Make `out_dir` a report folder `compare` may write into: created, or empty, or already holding the
    marker file. Anything else is someone's folder, whose report.md and PNGs are never overwritten: one line.
    Every writer of a report file (report.md, the PNGs, report.html) calls this first."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"--out {out_dir} is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        marker = out_dir / REPORT_MARKER
        if _marked(marker):
            return
        if any(out_dir.iterdir()) and not _earlier_report(out_dir):
            raise InputError(f"--out {out_dir} is not empty and not a stockscale report folder (no {REPORT_MARKER}); "
                             "choose an empty or new folder")
        write_json_atomic(marker, {"kind": "report", "note": "a stockscale report folder: `stockscale compare` "
                                   "replaces its files"})
    except OSError as error:
        raise InputError(f"report directory {out_dir} cannot be created ({error.strerror})") from None


def _marked(marker: Path) -> bool:
    try:
        return not marker.is_symlink() and json.loads(marker.read_text(encoding="utf-8")).get("kind") == "report"
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _earlier_report(out_dir: Path) -> bool:
    """A report folder written before the marker existed: only stockscale's file names, and its report.md."""
    names = {entry.name for entry in out_dir.iterdir()}
    try:
        ours = (out_dir / "report.md").read_text(encoding="utf-8")[:100].startswith("# stockscale report")
    except (OSError, UnicodeDecodeError):
        ours = False
    return ours and names <= {"report.md", "report.html", *PLOTS}


def write_report(results: LoadedResults, out_dir: Path,
                 projection_settings: ProjectionSettings | None = None) -> Path:
    """Write `out_dir/report.md` with the comparison, the four plots and the projection; return its path.

    `out_dir` is a report folder: report.md and the PNGs named in PLOTS are replaced there, each written to
    a temporary file and renamed; a plot whose data is missing is skipped with a note (and an older PNG of
    that name removed, so the folder never shows a stale picture). report.md is written after the plots, and
    report.html (the same content as one self-contained page, experiments/report/html.py) after it."""
    from stockscale.experiments import plots

    out_dir = Path(out_dir)
    claim_report_dir(out_dir)
    settings = projection_settings or ProjectionSettings()
    predictions, title, predictions_note = load_predictions(results)
    grid_run = grid_search(results)
    outliers = [(outlier.role, outlier.trial) for outlier in find_outliers(results.searches)]
    planner_text, planner_rows = planner_section(results)
    # Each figure is drawn into the temporary file that then replaces the PNG, so no reader sees half of one.
    drawers = {
        "memory.png": lambda out: plots.plot_memory(results.scale_tests, out, scale_headlines(results)),
        "timeline.png": lambda out: plots.plot_timeline(results.searches, out, search_headline(results), outliers),
        "grid.png": lambda out: plots.plot_grid(grid_run, out),
        "best_so_far.png": lambda out: plot_best_so_far(results.searches, out),
        "predictions.png": lambda out: plots.plot_predictions(predictions, title, predictions_note, out),
    }
    if planner_rows:  # the demo's predictions; without them the section says so and has no figure
        drawers["plan.png"] = lambda out: plot_compared(planner_rows, out)
    else:
        (out_dir / "plan.png").unlink(missing_ok=True)
    notes: dict[str, str] = {}
    for name, draw in drawers.items():
        try:
            replace_with(out_dir / name, draw)
        except plots.PlotSkipped as skipped:
            notes[name] = str(skipped)
            (out_dir / name).unlink(missing_ok=True)
    text = _report_markdown(results, report_projection(results, settings), notes, grid_run,
                            planner_text if planner_rows else "")
    text += "\n".join(runs_section(results)) + "\n"
    report = out_dir / "report.md"
    write_text_atomic(report, text)
    write_html_report(report)
    return report


def _figure(name: str, alt: str, notes: dict[str, str]) -> str:
    return f"_Plot skipped: {notes[name]}._" if name in notes else f"![{alt}]({name})"


def _report_markdown(results: LoadedResults, projection: Projection, notes: dict[str, str],
                     grid_run: SearchRun | None, planner_text: str = "") -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    grid_from = f" (from the {grid_run.role} search)" if grid_run is not None else ""
    parts = [
        "# stockscale report", "",
        f"Generated {now} from `{results.results_dir}`. Every figure below comes from a results file there "
        "(formats: docs/results.md); a comparison side that was not run is said to be missing.", "",
        "## The comparison", "", "```text", format_comparison(results).rstrip("\n"), "```", "",
        "## Dataset scale: peak memory per worker", "",
        "The largest worker's peak RSS at each multiplier (one process dashed with hollow markers, the workers "
        "solid and filled; a colour per loader); the memory limit as a thick grey line; runs that "
        "ran out of memory or time are marked. RSS includes shared library pages (torch) that a cgroup charges "
        "to the process that loaded them first, so a worker can show an RSS above its limit and still run.",
        "", _figure("memory.png", "peak memory per worker", notes), "",
        "## Hyperparameter search: timeline", "",
        "Each trial as a bar from its start to its end, time counted from the start of its search; one row "
        "per lane (trials that ran one after another share a lane). The shade says the model size, a hatch "
        "a failed trial, a thick outline an outlier (over 3x its config's time in the other searches).", "",
        _figure("timeline.png", "search timeline", notes), "",
        f"## Validation loss over the grid{grid_from}", "",
        "Grey cells: configs that were not run or did not finish.", "", _figure("grid.png", "grid", notes), "",
        "## Search strategies: best validation loss so far", "",
        "The lowest validation loss among the trials finished so far, against the time since each search began: "
        "one line per search in the results (the grid, random or TPE, with or without a pruner). Pruned trials "
        "do not count: their loss is from fewer epochs.", "",
        _figure("best_so_far.png", "best validation loss so far", notes), "",
        *ticker_section(results),
        "## Best model: predicted against actual prices (test period)", "",
        _figure("predictions.png", "predictions", notes), "",
        "## The planner: predicted boundaries against measured ones", "",
        "Before its scale tests ran, the demo asked `stockscale plan` where each side's boundary would be (a "
        "calibrated model per loader and world size: fixed cost + the layout's bytes per window x windows held). "
        "Diamonds: the prediction and its interval; bars: the measured bracket.", "",
        *(["```text", planner_text, "```", "", _figure("plan.png", "planner predictions", notes), ""]
          if planner_text else ["Not shown: no planner predictions in these results (`stockscale demo` writes "
                                "them before its scale tests).", ""]),
        "## Projection for a real cluster", "",
        "**A projection, not a measurement**: what the measured numbers suggest under the assumptions "
        "printed with it.", "", "```text", format_projection(projection), "```", "",
    ]
    return "\n".join(parts)
