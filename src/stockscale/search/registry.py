"""Search strategies and pruners: typed objects in one registry, the one source of their names.

The CLI's `--strategy` and `--pruner` choices, Katib's `algorithmName` and early-stopping name, the
OptimizationJob's algorithm and the results reader's check of summary.json all read these tables
(tests/test_structure.py refuses a strategy name spelled anywhere else). A new strategy is one
`register_strategy(Strategy(...))`; a new pruner one `register_pruner(Pruner(...))`.

stockscale does not hand-write search strategies or early stopping: each entry builds Optuna's sampler or
pruner. `grid` enqueues the grid's points (so any sampler would do: a seeded random one); `random` and `tpe`
are Optuna's RandomSampler and TPESampler (with the constant liar, so trials asked while others run are
spread out); `asha` is Optuna's SuccessiveHalvingPruner and `median` its MedianPruner. Epochs are the
pruners' steps. Optuna is imported when a sampler or pruner is made, not when this module is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Strategy:
    """How a search chooses its trials.

    `lists_grid`: it runs every point of the space's lists (no --trials); otherwise it samples `trials`
    points. `adaptive`: what it asks next depends on the results so far, so a runner that needs a whole
    batch gets it in waves of `parallel` trials. `katib` / `optimization_job`: the controller's own name for
    it (Katib's `algorithmName`, the OptimizationJob's algorithm), None where that controller has none.
    """

    name: str
    help: str
    make_sampler: Callable[[int], optuna.samplers.BaseSampler]
    lists_grid: bool = False
    adaptive: bool = False
    katib: str | None = None
    optimization_job: str | None = None


@dataclass(frozen=True)
class Pruner:
    """When a search stops a trial early, by the validation loss it reports after each epoch.

    `katib`: Katib's early-stopping algorithmName for the same rule, None where Katib has none (it has
    medianstop only; ASHA is katib#1582, open since 2021)."""

    name: str
    help: str
    make_pruner: Callable[[], optuna.pruners.BasePruner]
    katib: str | None = None

    @property
    def prunes(self) -> bool:
        return self.name != "none"


STRATEGIES: dict[str, Strategy] = {}
PRUNERS: dict[str, Pruner] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is registered already")
    STRATEGIES[strategy.name] = strategy
    return strategy


def register_pruner(pruner: Pruner) -> Pruner:
    if pruner.name in PRUNERS:
        raise ValueError(f"pruner {pruner.name!r} is registered already")
    PRUNERS[pruner.name] = pruner
    return pruner


def _random(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _asha() -> optuna.pruners.BasePruner:
    """Successive halving from 1 epoch, keeping a third at each rung (rungs at epochs 1, 3, 9, ...)."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


def _median() -> optuna.pruners.BasePruner:
    """Stop a trial whose loss is worse than the median of earlier trials at the same epoch, once five trials
    have finished."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def _nop() -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


# Katib's names: kubeflow/katib v0.17 pkg/suggestion/v1beta1 (grid, random, tpe services) and
# pkg/earlystopping/v1beta1/medianstop; the OptimizationJob's: kubeflow/trainer KEP-3562 Phase 1 (grid, random).
register_strategy(Strategy("grid", "every combination of the space's lists", _random, lists_grid=True,
                           katib="grid", optimization_job="grid"))
register_strategy(Strategy("random", "--trials points chosen by Optuna's random sampler", _random,
                           katib="random", optimization_job="random"))
register_strategy(Strategy("tpe", "--trials points chosen by Optuna's TPE sampler, learning from each result",
                           _tpe, adaptive=True, katib="tpe"))
register_pruner(Pruner("none", "run every trial to its last epoch", _nop))
register_pruner(Pruner("asha", "asynchronous successive halving (Optuna's SuccessiveHalvingPruner)", _asha))
register_pruner(Pruner("median", "stop a trial worse than the median at the same epoch (Optuna's MedianPruner)",
                       _median, katib="medianstop"))


def strategy(name: str) -> Strategy:
    """The registered strategy called `name`; ValueError naming the choices otherwise (settings turn it into
    one line)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def pruner(name: str) -> Pruner:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}: choose {', '.join(PRUNERS)}")
    return PRUNERS[name]
