"""Trial times that resist noise: outliers flagged against their peers, speed-ups and projections from medians.

One trial slowed down by something else on the machine (another process, a page-cache flush) moves a sum of
trial times and a "longest trial" by its full delay. The same config measured in another search is its
natural peer: a trial that took more than OUTLIER_FACTOR times the median of its peers is flagged, and the
figures that would carry its delay get a robust counterpart beside them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockscale.experiments.results import SearchRun

OUTLIER_FACTOR = 3.0


def config_key(config: dict[str, Any]) -> str:
    """One string per config, the same whatever order its keys were written in."""
    return json.dumps(config, sort_keys=True)


def trial_times(run: SearchRun) -> dict[str, float]:
    """Wall seconds of each successful trial, by config."""
    return {config_key(t.config): t.wall_seconds for t in run.data.results
            if t.status == "success" and t.wall_seconds is not None and t.wall_seconds > 0}


@dataclass(frozen=True)
class Outlier:
    """A trial far slower than the same config in the other searches."""

    role: str
    trial: int
    name: str
    seconds: float
    peer_seconds: float  # the median of the same config's times in the other searches

    @property
    def ratio(self) -> float:
        return self.seconds / self.peer_seconds


def find_outliers(searches: list[SearchRun], factor: float = OUTLIER_FACTOR) -> list[Outlier]:
    """Successful trials that took more than `factor` times the median of their config's times in the other
    searches. Only slow ones: noise on a shared machine adds time, it does not take it away."""
    times = {id(run): trial_times(run) for run in searches}
    found = []
    for run in searches:
        for trial in run.data.results:
            key = config_key(trial.config)
            seconds = times[id(run)].get(key)
            peers = [times[id(other)][key] for other in searches if other is not run and key in times[id(other)]]
            if seconds is None or not peers:
                continue
            peer = statistics.median(peers)
            if seconds > factor * peer:
                found.append(Outlier(run.role, trial.trial, trial.name, seconds, peer))
    return found


def parallelism(run: SearchRun) -> int:
    """How many trials the search ran at once: its workers, no more than its trials."""
    return max(1, min(run.data.settings.workers or 1, len(run.data.results) or 1))


def median_ratio(base: SearchRun, other: SearchRun) -> float | None:
    """The median over the configs both searches finished of base time / other time (None: none in common)."""
    a, b = trial_times(base), trial_times(other)
    ratios = [a[key] / b[key] for key in a.keys() & b.keys()]
    return statistics.median(ratios) if ratios else None


def median_speedup(base: SearchRun, other: SearchRun) -> float | None:
    """The speed-up of `other` over `base` from the median per-config time ratio, times how many more trials
    `other` ran at once: what the speed-up would be with every lane kept busy and every trial at its
    typical speed. One slow trial (on either side) does not move it."""
    ratio = median_ratio(base, other)
    if ratio is None:
        return None
    return ratio * parallelism(other) / parallelism(base)


def robust_durations(source: SearchRun, searches: list[SearchRun],
                     factor: float = OUTLIER_FACTOR) -> tuple[list[float], list[tuple[Outlier, float]]]:
    """The source search's trial times for a projection, each flagged outlier replaced by what its config
    typically takes in this search: for each other search that ran the config, its time there times the
    median source/other ratio of the other configs; the median of those. Returns the durations and
    (outlier, replacement) pairs."""
    durations = {t.trial: t.wall_seconds for t in source.data.results if t.wall_seconds is not None}
    mine = trial_times(source)
    replaced = []
    for outlier in find_outliers(searches, factor):
        if outlier.role != source.role or outlier.trial not in durations:
            continue
        key = config_key(next(t.config for t in source.data.results if t.trial == outlier.trial))
        estimates = []
        for other in searches:
            theirs = trial_times(other)
            if other is source or key not in theirs:
                continue
            ratios = [mine[k] / theirs[k] for k in mine.keys() & theirs.keys() if k != key]
            estimates.append(theirs[key] * (statistics.median(ratios) if ratios else 1.0))
        estimate = statistics.median(estimates)
        durations[outlier.trial] = estimate
        replaced.append((outlier, estimate))
    return list(durations.values()), replaced
