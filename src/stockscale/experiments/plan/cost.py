"""What a planned run costs: node-hours and dollars rented, for one training run and for a search, and the
break-even against buying one machine with the same memory and cores.

Every input is an assumption the user can set, and each is returned beside the figures it shapes
(`CostSettings.assumptions`), so no figure is printed without what it rests on. Renting: each worker is a
node of `node_cpus` vCPUs and the memory limit, billed at the vCPU-hour and GiB-hour prices
(experiments/projection.ProjectionSettings' defaults), for the whole run. Buying: one machine with every
worker's memory and cores, priced per GiB and per core, written off over `amortization_years`, used
`utilization` of the time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stockscale.config import format_size, one_line
from stockscale.errors import InputError
from stockscale.experiments.plan.startup import Startup
from stockscale.experiments.projection import ProjectionSettings

GIB = 2**30
HOURS_PER_YEAR = 8766.0


class CostSettings(BaseModel):
    """Prices and assumptions of the cost figures (rented nodes, a search, a bought machine)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    node_cpus: float = Field(ProjectionSettings().node_cpus, gt=0, le=100_000)
    price_vcpu_hour: float = Field(ProjectionSettings().price_vcpu_hour, ge=0, le=1e6)
    price_gib_hour: float = Field(ProjectionSettings().price_gib_hour, ge=0, le=1e6)
    pod_startup_seconds: float = Field(ProjectionSettings().pod_startup_seconds, ge=0, le=86_400)
    trials: int = Field(18, ge=1, le=100_000, description="trials of the search (the default grid's 18)")
    price_gib: float = Field(5.0, ge=0, le=1e6, description="dollars per GiB of memory, bought")
    price_core: float = Field(50.0, ge=0, le=1e6, description="dollars per core, bought")
    amortization_years: float = Field(3.0, gt=0, le=100)
    utilization: float = Field(0.5, gt=0, le=1, description="share of the time a bought machine is used")

    def node_price_per_hour(self, memory_bytes: int) -> float:
        return self.node_cpus * self.price_vcpu_hour + memory_bytes / GIB * self.price_gib_hour

    def assumptions(self, memory_bytes: int) -> list[str]:
        return [
            f"node: {self.node_cpus:g} vCPU and {format_size(memory_bytes)} (the limit) per worker, billed for the "
            f"whole run at ${self.price_vcpu_hour:g}/vCPU-hour + ${self.price_gib_hour:g}/GiB-hour "
            f"= ${self.node_price_per_hour(memory_bytes):.4f} per node-hour (assumption)",
            f"search: {self.trials} trials, one after another on the same nodes, each paying a pod start-up of "
            f"{self.pod_startup_seconds:g} s (assumption, --pod-startup-seconds)",
            f"buying: ${self.price_gib:g} per GiB and ${self.price_core:g} per core, written off over "
            f"{self.amortization_years:g} years, used {self.utilization:.0%} of the time (assumptions)",
        ]


def build_cost_settings(values: dict[str, Any]) -> CostSettings:
    """CLI values (None = default) into CostSettings, or InputError with one line (non-finite prices too)."""
    try:
        return CostSettings.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        raise InputError(one_line(error, "cost settings")) from None


class RentCost(BaseModel):
    seconds: float
    node_hours: float
    dollars: float


class BuyComparison(BaseModel):
    memory_bytes: int
    cores: float
    price_dollars: float
    rent_dollars_per_hour: float
    bought_dollars_per_used_hour: float
    break_even_hours: float | None          # hours of use at which buying has cost what renting would
    break_even_runs: float | None           # the same in training runs of this plan
    cheaper: str                            # "buy" or "rent" at the assumed utilization


def rent(workers: int, seconds: float, settings: CostSettings, memory_bytes: int) -> RentCost:
    node_hours = workers * seconds / 3600
    return RentCost(seconds=seconds, node_hours=node_hours,
                    dollars=node_hours * settings.node_price_per_hour(memory_bytes))


def search_cost(workers: int, run_seconds: float, settings: CostSettings, memory_bytes: int) -> RentCost:
    """`trials` runs of this plan one after another on the same `workers` nodes, each with a pod start-up."""
    return rent(workers, settings.trials * (run_seconds + settings.pod_startup_seconds), settings, memory_bytes)


class BackendSearch(BaseModel):
    """A search of `trials` trials on the plan's nodes with one backend's per-trial start-up (None: not priced,
    the start-up was not measured)."""

    trials: int
    startup: Startup
    cost: RentCost | None


def search_on_backend(workers: int, train_seconds: float, startup: Startup, settings: CostSettings,
                      memory_bytes: int) -> BackendSearch:
    """`trials` trials one after another on the same nodes, each its training plus the backend's start-up."""
    cost = None if startup.seconds is None else rent(
        workers, settings.trials * (train_seconds + startup.seconds), settings, memory_bytes)
    return BackendSearch(trials=settings.trials, startup=startup, cost=cost)


def buy_comparison(workers: int, run_seconds: float, settings: CostSettings, memory_bytes: int) -> BuyComparison:
    """One machine with every worker's memory and cores against renting the `workers` nodes."""
    memory, cores = workers * memory_bytes, workers * settings.node_cpus
    price = memory / GIB * settings.price_gib + cores * settings.price_core
    per_hour = workers * settings.node_price_per_hour(memory_bytes)
    used_hours = settings.amortization_years * HOURS_PER_YEAR * settings.utilization
    bought_per_hour = price / used_hours
    break_even = price / per_hour if per_hour > 0 else None
    runs = break_even * 3600 / run_seconds if break_even is not None and run_seconds > 0 else None
    return BuyComparison(memory_bytes=memory, cores=cores, price_dollars=price, rent_dollars_per_hour=per_hour,
                         bought_dollars_per_used_hour=bought_per_hour, break_even_hours=break_even,
                         break_even_runs=runs, cheaper="buy" if bought_per_hour < per_hour else "rent")
