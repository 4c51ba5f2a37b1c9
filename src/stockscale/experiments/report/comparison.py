"""What `stockscale compare` prints: the two comparisons, the warnings, then the projection."""

from __future__ import annotations

from stockscale.experiments.projection import ProjectionSettings, build_projection, format_projection
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
    projection = build_projection(results, settings or ProjectionSettings())
    return format_comparison(results) + "\n\n" + format_projection(projection)


