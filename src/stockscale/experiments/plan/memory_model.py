"""The memory model: peak per worker = fixed(world) + bytes per window x windows that worker holds.

One model per (loader, model settings), never one line across loaders or world sizes: the fixed cost of one
process and of a DDP rank differ (gloo, the process group, the reducer's buckets), and the loaders hold their
windows in different layouts. `bytes_per_window` is the layout's figure (layout.py); the fixed cost is what a
calibration run measured at each world size, less the layout's bytes for the windows it held. A world size
that was not calibrated gets its fixed cost from a stated rule (`fixed_for`), which verification checks.

Whether a peak fits a limit depends on what holds the limit: a cgroup charges a page to the group that first
faulted it, so the shared library pages already in the page cache (torch's .so files) count in a worker's RSS
but not against its cgroup; the watchdog compares RSS itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from stockscale.bounds import MAX_MULTIPLIER, MAX_WORKERS
from stockscale.config import format_size
from stockscale.errors import InputError
from stockscale.experiments.plan.layout import windows_held

MiB = 2**20
MIN_FIXED_MARGIN = 4 * MiB   # the launcher polls RSS: a peak between two polls can be missed by a few MiB
MIN_RELATIVE_MARGIN = 0.02


class Interval(BaseModel):
    """A prediction and the range it is expected in."""

    model_config = ConfigDict(frozen=True)

    value: float
    low: float
    high: float


class MemoryModel(BaseModel):
    """Everything the memory predictions of one loader rest on (the calibration fills it)."""

    model_config = ConfigDict(frozen=True)

    loader: str
    bytes_per_window: float          # the layout's figure
    windows_per_replica: int
    fixed_bytes: dict[int, float]    # world size -> measured fixed cost per worker
    shared_bytes: float = 0.0        # file pages in RSS that a cgroup does not charge (0 for the watchdog)
    data_relative_error: float = MIN_RELATIVE_MARGIN  # |measured - layout| / layout at the second size
    fixed_residual_bytes: float = 0.0                 # what the layout left unexplained there, in bytes
    largest_calibrated_windows: int = 1               # per worker, at any calibrated point

    def fixed_for(self, world: int) -> tuple[float, float, str]:
        """(fixed bytes per worker, its uncertainty, how it was obtained) for `world` workers.

        Measured where calibrated. Otherwise: between two calibrated sizes, the straight line between them;
        beyond the largest, the largest one's cost plus the per-rank growth between the two largest
        calibrated DDP sizes (at least 0) per added rank. The modelled part counts as its own uncertainty."""
        measured = sorted(self.fixed_bytes)
        base_margin = max(MIN_FIXED_MARGIN, MIN_RELATIVE_MARGIN * self.fixed_bytes[measured[0]],
                          self.fixed_residual_bytes)
        if world in self.fixed_bytes:
            return self.fixed_bytes[world], base_margin, f"measured at {world} worker(s)"
        lower = max((w for w in measured if w < world), default=None)
        upper = min((w for w in measured if w > world), default=None)
        if lower is not None and upper is not None:
            a, b = self.fixed_bytes[lower], self.fixed_bytes[upper]
            value = a + (b - a) * (world - lower) / (upper - lower)
            return value, base_margin + abs(b - a) / 2, f"interpolated between {lower} and {upper} workers"
        ddp = [w for w in measured if w >= 2]
        if lower is None or not ddp:
            nearest = measured[0] if lower is None else measured[-1]
            return (self.fixed_bytes[nearest], base_margin + 0.1 * self.fixed_bytes[nearest],
                    f"taken from {nearest} worker(s) (no DDP size calibrated)")
        top = ddp[-1]
        slope = 0.0
        if len(ddp) >= 2:
            prev = ddp[-2]
            slope = max(0.0, (self.fixed_bytes[top] - self.fixed_bytes[prev]) / (top - prev))
        added = slope * (world - top)
        return (self.fixed_bytes[top] + added, base_margin + added + MIN_RELATIVE_MARGIN * self.fixed_bytes[top],
                f"modelled: {top} workers' {format_size(self.fixed_bytes[top])} + {format_size(slope)} per added rank "
                "(the rule: a rank's fixed cost does not grow with the world beyond the calibrated growth)")

    def windows(self, multiplier: int, world: int) -> int:
        return windows_held(multiplier, self.windows_per_replica, world)

    def peak(self, multiplier: int, world: int) -> Interval:
        """Peak RSS per worker (the largest worker) for `multiplier` x the data over `world` workers."""
        fixed, margin, _ = self.fixed_for(world)
        data = self.bytes_per_window * self.windows(multiplier, world)
        half = margin + max(self.data_relative_error, MIN_RELATIVE_MARGIN) * data
        value = fixed + data
        return Interval(value=value, low=max(0.0, value - half), high=value + half)

    def charged(self, peak: float) -> float:
        """What the limit counts of a peak RSS."""
        return max(0.0, peak - self.shared_bytes)

    def fits(self, multiplier: int, world: int, limit: int, which: str = "value") -> bool:
        return self.charged(getattr(self.peak(multiplier, world), which)) <= limit

    def largest_multiplier(self, world: int, limit: int, which: str = "value") -> int | None:
        """Largest multiplier whose peak (its `which`: value, low or high) fits `limit` with `world` workers;
        None when not even 1x fits; MAX_MULTIPLIER when nothing grows with the data (stream)."""
        if not self.fits(1, world, limit, which):
            return None
        if self.bytes_per_window <= 0:
            return MAX_MULTIPLIER
        lo, hi = 1, MAX_MULTIPLIER
        if self.fits(hi, world, limit, which):
            return hi
        while hi - lo > 1:  # fits(lo) and not fits(hi): the peak grows with the multiplier
            middle = (lo + hi) // 2
            lo, hi = (middle, hi) if self.fits(middle, world, limit, which) else (lo, middle)
        return lo

    def one_worker_needs(self) -> float:
        """What one worker's limit must hold before any data (the fixed cost, as the limit counts it)."""
        return self.charged(self.fixed_for(1)[0])

    def check_fits_at_all(self, limit: int) -> None:
        """InputError when no number of workers could fit under `limit`: a worker's fixed cost alone is more."""
        needs = min(self.charged(self.fixed_for(w)[0]) for w in (1, 2))
        if needs > limit:
            raise InputError(f"does not fit with any number of workers: one worker needs "
                             f"{format_size(self.one_worker_needs())} before any data, more than the limit of "
                             f"{format_size(limit)}")

    def workers_needed(self, multiplier: int, limit: int, which: str = "value") -> int | None:
        """Fewest workers (1..MAX_WORKERS) whose peak fits `limit` at `multiplier`, or None beyond that bound."""
        for world in range(1, MAX_WORKERS + 1):
            if self.windows(multiplier, world) < 1:
                return None
            if self.fits(multiplier, world, limit, which):
                return world
        return None

    def workers_beyond_bound(self, multiplier: int, limit: int) -> InputError:
        """The one line for a target that needs more workers than the bound: with the bound's data share."""
        fixed = self.fixed_for(MAX_WORKERS)[0]
        per = self.bytes_per_window * self.windows(multiplier, MAX_WORKERS)
        return InputError(f"{multiplier}x does not fit {format_size(limit)} per worker with up to {MAX_WORKERS} "
                          f"workers (the bound of --workers): even then each holds {format_size(fixed + per)}")

