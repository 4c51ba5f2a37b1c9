"""`stockscale compare`: read whatever results exist, print the two comparisons, write report.md.

Every number in the report comes from a results file (docs/results.md), read through the typed models of
experiments/results.py. A side that was not run is said to be missing, with the command that would run it;
nothing is filled in. A results file that cannot be read or does not have the documented shape becomes a
warning naming the file, and the rest still reports: one corrupt file must not hide the other measurements.

One module per job: text.py (fixed-width helpers), scale_table.py (comparison 1), search_table.py
(comparison 2), comparison.py (what `compare` prints), markdown.py (report.md and its plots). The names
callers use are re-exported here.
"""

from stockscale.experiments.report.comparison import format_comparison, format_report_text
from stockscale.experiments.report.markdown import PLOTS, grid_search, write_report
from stockscale.experiments.report.scale_table import ScaleGroup, scale_groups, scale_headlines
from stockscale.experiments.report.search_table import search_headline
from stockscale.experiments.results import best_search, load_predictions

__all__ = ["PLOTS", "ScaleGroup", "best_search", "format_comparison", "format_report_text", "grid_search",
           "load_predictions", "scale_groups", "scale_headlines", "search_headline", "write_report"]
