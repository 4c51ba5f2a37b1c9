"""What the cluster's own searchers share (search/katib.py, search/optimization_job.py): a controller that
chooses the trials itself receives the space whole, and each trial it reports becomes a TrialResult with the
parameters it assigned, read from the trial object. Nothing is flattened into configs and rebuilt, and no trial
is matched back by comparing parameter strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from stockscale.config import TrainOverrides
from stockscale.errors import InputError
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.controllers import ControllerKind
from stockscale.launch.kubernetes.runner import KubernetesRunner
from stockscale.launch.runner import JobResult
from stockscale.search.registry import STRATEGIES, Pruner, Strategy
from stockscale.search.searcher import Searcher, TrialCallback, TrialResult, TrialTemplate
from stockscale.space import Space


def assigned_params(assigned: Mapping[str, str], space: Space) -> TrainOverrides:
    """A trial's parameter assignments (strings, as the trial object carries them) as the values of `space`
    they stand for: an int range's integer, a double's float, a list's own value (matched by how the
    manifests spell it). A list of one value is every trial's; {} for a trial the controller never made."""
    if not assigned:
        return {}
    params: TrainOverrides = {}
    for name, parameter in space.items():
        if parameter.choices is not None and len(parameter.choices) == 1:
            params[name] = parameter.choices[0]
            continue
        text = assigned.get(name)
        if text is None:
            raise InputError(f"a trial the cluster's controller ran was not assigned {name}")
        if parameter.choices is not None:
            params[name] = next((value for value in parameter.choices if m.value_text(value) == text), text)
        else:
            params[name] = int(float(text)) if parameter.type == "int" else float(text)
    return params


class ControllerSearcher(Searcher):
    """A search the cluster's controller runs: one object rendered from the space, its trials followed."""

    kind: ClassVar[ControllerKind]

    def __init__(self, runner: KubernetesRunner) -> None:
        self._runner = runner

    @property
    def runner(self) -> KubernetesRunner:
        return self._runner

    @staticmethod
    def algorithm(strategy: Strategy) -> str | None:
        """The controller's own name for `strategy`; None where it has none."""
        raise NotImplementedError

    def _refuse_strategy(self, strategy: Strategy, what: str) -> None:
        if self.algorithm(strategy) is None:
            runs = ", ".join(name for name, known in STRATEGIES.items() if self.algorithm(known) is not None)
            raise InputError(f"strategy {strategy.name} is not one {what} runs ({strategy.name} is for katib or "
                             f"job; {what} searches by {runs})")

    def manifest(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
                 parallel: int, *, trials: int) -> dict[str, object]:
        """The one object the search submits."""
        self.check(strategy, pruner)
        algorithm = self.algorithm(strategy)
        assert algorithm is not None  # check() refused it otherwise
        return self.kind.manifest(self._runner, space, trial_template, parallel, trials=trials, algorithm=algorithm,
                                  early_stopping=pruner.katib if pruner.prunes else None)

    def render(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int) -> dict[str, str]:
        obj = self.manifest(space, strategy, pruner, trial_template, parallel, trials=trials)
        return {m.file_name(obj): m.to_yaml(obj)}

    def dry_run(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
                parallel: int, *, trials: int, out_dir: Path) -> list[Path]:
        """`render` into `out_dir` with a kustomization.yaml listing it (`kubectl apply -k DIR`)."""
        obj = self.manifest(space, strategy, pruner, trial_template, parallel, trials=trials)
        return m.write_manifests(out_dir, {m.file_name(obj): obj})

    def search(self, space: Space, strategy: Strategy, pruner: Pruner, trial_template: TrialTemplate,
               parallel: int, *, trials: int, on_trial: TrialCallback) -> list[TrialResult]:
        manifest = self.manifest(space, strategy, pruner, trial_template, parallel, trials=trials)
        told: list[TrialResult] = []

        def tell(number: int, assigned: dict[str, str], result: JobResult) -> None:
            trial = TrialResult(number=number, params=assigned_params(assigned, space), result=result)
            told.append(trial)
            on_trial(trial)

        self.kind.follow(self._runner, manifest, trials, trial_template.timeout, tell)
        return sorted(told, key=lambda trial: trial.number)

