"""What a scale test is asked to run, and the defaults `stockscale scale-test` offers: the multipliers of the
grid, the limit and time per run, the loader, the steps, and the boundary search's lattice.

Kept apart from scale_test.py (which runs the test and pulls in the data layer) so that the command line can
build its flags and help from these defaults without importing numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_MULTIPLIERS = (1, 10, 50, 100, 200)
CLUSTER_WORKERS = 4  # the emulated cluster's workers unless asked otherwise


@dataclass(frozen=True)
class BoundarySearch:
    """Find the boundary instead of walking a grid.

    Every probe lies on the geometric lattice `base * resolution**k` (whole multipliers, at least 1), so
    searches with different starting points (one process, N workers, another loader) try the same sizes and
    their tables line up. The first probe is step `start_step`; no probe goes above `ceiling`. The search ends
    when the last success and the first failure are neighbours on the lattice: a bracket as fine as a grid
    with this step.
    """

    base: float
    ceiling: int
    start_step: int = 0
    resolution: float = math.sqrt(2)

    def __post_init__(self) -> None:
        if not (self.base >= 1 and self.resolution > 1 and math.isfinite(self.base * self.resolution)):
            raise ValueError(f"boundary search: base {self.base} must be >= 1 and resolution "
                             f"{self.resolution} above 1")
        if not 1 <= self.multiplier(self.start_step) <= self.ceiling:
            raise ValueError(f"boundary search: start {self.multiplier(self.start_step)} is not within "
                             f"1..{self.ceiling}")

    @property
    def start(self) -> int:
        return self.multiplier(self.start_step)

    @property
    def doubling(self) -> int:
        """Lattice steps that make (about) a factor of two: 2 for sqrt 2."""
        return max(1, round(math.log(2) / math.log(self.resolution)))

    def multiplier(self, step: int) -> int:
        return max(1, round(self.base * self.resolution**step))

    def step_of(self, multiplier: int) -> int:
        """The lattice step nearest to `multiplier`."""
        return round(math.log(multiplier / self.base) / math.log(self.resolution))

    def record(self) -> dict[str, Any]:
        return {"method": "bracket-bisect", "base": self.base, "start": self.start, "ceiling": self.ceiling,
                "resolution": self.resolution}



@dataclass
class ScaleTestSettings:
    """One scale test. The defaults are the command line's: a grid of DEFAULT_MULTIPLIERS, one process, 1 GiB
    and 600 s per run, the memory loader (the original demonstration's), 50 steps of one epoch (the data is
    loaded whole either way, so more steps would only add time).

    Which settings go together is checked here, once, when the settings are made (SettingError naming the
    settings; the CLI names their flags): one process is mode local, the docker backend runs the cluster
    side, a boundary search chooses its own multipliers, and the memory limit must let a worker start."""

    mode: Literal["local", "cluster"] = "local"  # one process, or workers
    workers: int = 1
    backend: str = "local"  # where the cluster side runs: local processes or docker containers
    multipliers: list[int] = field(default_factory=lambda: list(DEFAULT_MULTIPLIERS))
    memory_limit: int | None = 2**30  # per process or worker
    timeout: float | None = 600.0  # seconds per run
    loader: str = "memory"
    max_steps: int | None = 50
    epochs: int | None = 1  # max_steps usually ends the run first
    threads: int | None = None  # per worker; None: torch's choice
    train: dict[str, Any] = field(default_factory=dict)  # other TrainConfig overrides, the same for every run
    keep_going: bool = False
    search: BoundarySearch | None = None  # None: run `multipliers` as a grid

    def __post_init__(self) -> None:
        from stockscale.errors import SettingError
        from stockscale.limits import check_limit

        if self.mode not in ("local", "cluster"):
            raise SettingError(f"{{mode}} must be local or cluster, not {self.mode!r}")
        if self.mode == "local" and self.workers != 1:
            raise SettingError(f"{{mode}} local runs one process; {{workers}} {self.workers} needs {{mode}} cluster")
        if self.backend != "local" and self.mode != "cluster":
            raise SettingError(f"{{backend}} {self.backend} runs the cluster side: use it with {{mode}} cluster")
        if self.search is not None and (self.multipliers or self.keep_going):
            raise SettingError("{search} finds the boundary itself; it does not take {multipliers} or {keep_going}")
        check_limit(self.memory_limit)

    @staticmethod
    def default_workers(mode: str) -> int:
        """Workers when none are asked for: one process locally, CLUSTER_WORKERS for the cluster."""
        return CLUSTER_WORKERS if mode == "cluster" else 1
