"""What `stockscale compare` prints: the two comparisons, the warnings, then the projection."""

from __future__ import annotations

from stockscale.experiments.projection import Projection, ProjectionSettings, build_projection, format_projection
from stockscale.experiments.report.evaluation_table import format_evaluation_record
from stockscale.experiments.report.scale_table import format_scale
from stockscale.experiments.report.search_table import format_search
from stockscale.experiments.report.text import wrap
from stockscale.experiments.results import LoadedResults


def format_comparison(results: LoadedResults) -> str:
    """The report as `stockscale compare` prints it: plain fixed-width text, every figure from a file."""
    lines = [f"stockscale comparison — results from {results.results_dir}", ""]
    lines += format_scale(results)
    lines += [""]
    lines += format_search(results)
    if results.evaluation is not None:
        lines += [""] + format_evaluation_record(results.evaluation.data.model_dump(), str(results.evaluation.path))
    if results.warnings:
        lines += ["", "WARNINGS (files left out of this report)"]
        for warning in results.warnings:
            lines += wrap("  ", warning, indent=4)
    return "\n".join(lines) + "\n"


def format_report_text(results: LoadedResults, settings: ProjectionSettings | None = None) -> str:
    """What `compare` (and `demo`) print: the two comparisons, then the projection for a real cluster."""
    projection = report_projection(results, settings or ProjectionSettings())
    return format_comparison(results) + "\n\n" + format_projection(projection)


def report_projection(results: LoadedResults, settings: ProjectionSettings) -> Projection:
    """The projection as the report shows it: the search on K nodes, and for the dataset scale the planner's
    predictions against the measured boundaries where the planner made some (the demo does), in place of the
    straight line."""
    from dataclasses import replace

    from stockscale.experiments.plan.report import planner_section

    projection = build_projection(results, settings)
    text, _ = planner_section(results)
    return replace(projection, scale=[], planner=text) if not text.startswith("not shown") else projection


