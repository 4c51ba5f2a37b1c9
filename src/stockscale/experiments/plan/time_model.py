"""The time model: epoch seconds = steps per epoch x seconds per step at that world size, plus start-up.

Seconds per step are measured by the calibration at each calibrated world size (with the threads each
worker gets there: cores // workers, at least one), so they include DDP's all-reduce and, in an emulated
cluster, the sharing of this machine's cores. Beyond the largest calibrated size the stated rule is: the
step time grows with the cores' oversubscription, workers x threads / cores (each rank gets a smaller share
of the same cores), and the all-reduce's rounds grow with log2(workers): the step time of the largest
calibrated size times that ratio (on one machine the all-reduce is CPU work too, so it shares the cores the
same way). Between two calibrated sizes: the straight line between them. Verification checks the rule at
held-out sizes. The first epoch of a run also pays a warm-up (torch's lazy initialization of the first
steps), measured at one worker and taken as the same for every world size.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from stockscale.experiments.plan.layout import windows_held
from stockscale.experiments.plan.memory_model import Interval

MEASURED_MARGIN = 0.15   # stated: a step's time on a shared machine moves by this much between runs
MODELLED_MARGIN = 0.35   # stated: a world size the rule extrapolates to


def threads_for(world: int, cores: int) -> int:
    """Threads per worker that the launcher gives `world` workers (launch/local.default_threads)."""
    return max(1, cores // max(1, world))


def oversubscription(world: int, cores: int) -> float:
    return max(1.0, world * threads_for(world, cores) / cores)


class TimeModel(BaseModel):
    """Seconds per step and the fixed time a run spends outside its training loop, per calibrated world."""

    model_config = ConfigDict(frozen=True)

    cores: int
    windows_per_replica: int
    batch_size: int
    step_seconds: dict[int, float]       # world -> rank 0's seconds per optimizer step
    overhead_seconds: dict[int, float]   # world -> a fresh worker set's wall time less its training loop
    warmup_seconds: float = 0.0          # the first steps' extra time, once per run (measured at one worker)

    def step_for(self, world: int) -> tuple[float, float, str]:
        """(seconds per step, relative margin, how it was obtained) for `world` workers."""
        if world in self.step_seconds:
            return self.step_seconds[world], MEASURED_MARGIN, f"measured at {world} worker(s)"
        value, how = self._per_world(self.step_seconds, world)
        return value, MODELLED_MARGIN, how

    def overhead_for(self, world: int) -> tuple[float, str]:
        if world in self.overhead_seconds:
            return self.overhead_seconds[world], f"measured at {world} worker(s)"
        return self._per_world(self.overhead_seconds, world)

    def _per_world(self, measured: dict[int, float], world: int) -> tuple[float, str]:
        """An uncalibrated world size: between two calibrated ones the line between them, else the nearest
        calibrated one below scaled by the oversubscription (the stated rule)."""
        lower = max((w for w in measured if w < world), default=None)
        upper = min((w for w in measured if w > world), default=None)
        if lower is not None and upper is not None:
            a, b = measured[lower], measured[upper]
            return a + (b - a) * (world - lower) / (upper - lower), f"interpolated between {lower} and {upper} workers"
        top = lower if lower is not None else min(measured)
        factor = oversubscription(world, self.cores) / oversubscription(top, self.cores)
        return measured[top] * factor, f"modelled from {top} worker(s): x{factor:.2f} (oversubscription of the cores)"

    def steps_per_epoch(self, multiplier: int, world: int) -> int:
        return -(-windows_held(multiplier, self.windows_per_replica, world) // self.batch_size)

    def epoch(self, multiplier: int, world: int) -> Interval:
        step, margin, _ = self.step_for(world)
        value = self.warmup_seconds + self.steps_per_epoch(multiplier, world) * step
        return Interval(value=value, low=value * (1 - margin), high=value * (1 + margin))
