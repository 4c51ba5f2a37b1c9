"""How every benchmark reports a figure: the median of its runs with their spread, never the best run.

The README's figures are medians of at least 5 runs with their range (min-max) and the date; a benchmark
prints each run as it goes (so a reader sees the noise) and then one summary line per figure from here.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence


def spread(values: Sequence[float], fmt: str = "{:.2f}", unit: str = "") -> str:
    """'median X (min-max) over N runs', each number formatted with `fmt`, then `unit`."""
    if not values:
        return "no runs"
    low, high, middle = min(values), max(values), statistics.median(values)
    return (f"{fmt.format(middle)}{unit} ({fmt.format(low)}-{fmt.format(high)}{unit}) "
            f"over {len(values)} run{'s' if len(values) != 1 else ''}")


def stamp() -> str:
    """The date, time and load average, for the header of a benchmark's output."""
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}"
