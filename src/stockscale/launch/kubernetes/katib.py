"""A search as one Katib Experiment (`kubeflow.org/v1beta1`): rendering, and reading its Trials back.

Katib's controller runs each trial as the batch/v1 Job of the trial template, with the trial's parameter
assignments substituted for `${trialParameters.<name>}` in the template's args. Its StdOut metrics collector
reads the trial's stdout and keeps every line the `metricsFormat` regex matches (group 1 the metric's name,
group 2 its value): `stockscale train` prints one JSON progress line per epoch
(`{"event": "epoch", "epoch": 1, "val_loss": 0.12, "train_loss": 0.3, ...}`, console.PlainTrainProgress),
so Katib sees `val_loss` after every epoch. The final JSON result line still comes last in the pod log, and the
launcher reads a trial's metrics from it as for every other kind.

Katib's CRD takes any fields (x-kubernetes-preserve-unknown-fields); its admission webhook checks the rest.
tests/test_k8s_katib.py loads every rendered Experiment into the kubeflow-katib SDK's models and checks what
the webhook checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from stockscale.errors import InputError
from stockscale.launch.kubernetes.manifests import (
    CONTAINER,
    EXPERIMENT_API,
    OBJECTIVE,
    RESULTS,
    TRIAL_API,
    checkpoint_flags,
    flag_text,
    plain_config,
    pod_template,
    pvc_volume,
    run_labels,
    scratch_volume,
    search_parameters,
    train_flags,
)
from stockscale.launch.kubernetes.spec import ClusterSpec
from stockscale.space import Parameter, Space

__all__ = ["ALGORITHMS", "EXPERIMENT_API", "METRICS_FORMAT", "TRIAL_API", "experiment_manifest",
           "trial_assignments", "trial_metric", "value_text"]

ALGORITHMS = ("grid", "random", "tpe")
TRAIN_LOSS = "train_loss"
# One metric of an epoch progress line: `"val_loss": 0.1234` (group 1 the name, group 2 the value).
METRICS_FORMAT = r'"((?:val|train)_loss)":\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)'
JOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def experiment_manifest(
    spec: ClusterSpec,
    *,
    run_id: str,
    configs: Sequence[Mapping[str, Any]],
    parallelism: int,
    algorithm: str = "grid",
    threads: int | None = None,
    memory_limit: int | None = None,
    timeout: float | None = None,
    space: Space | None = None,
    max_trials: int | None = None,
    early_stopping: bool = False,
) -> dict[str, Any]:
    """The Experiment for a search over `configs`: the settings that vary become parameters (`discrete` when
    every value is a number, else `categorical`), the rest fixed flags of every trial's `stockscale train`.

    maxTrialCount is len(configs); `grid` needs `configs` to be the full product of the values (Katib's grid
    walks exactly that product), `random` and `tpe` sample that many points from the same lists. A failed
    trial does not end the Experiment (maxFailedTrialCount = maxTrialCount): it is one result of the search.
    Each trial writes to /results/<run>/trials/<its pod name>.

    With `space` (random and tpe over ranges), the parameters are the space's in Katib's own terms (`double`
    and `int` ranges, log-uniform when the space says log) and `configs` give only the fixed settings;
    `max_trials` then sets maxTrialCount. `early_stopping` adds Katib's median stopping rule (the search's
    `--pruner median`).
    """
    if algorithm not in ALGORITHMS:
        raise InputError(f"a Katib Experiment searches by {', '.join(ALGORITHMS)}, not {algorithm!r}")
    if space is not None:  # Katib samples the space itself: the configs only carry the fixed settings
        values = [plain_config(config) for config in configs]
        if not values:
            raise InputError("a search needs at least one trial")
        varying = list(space)
        fixed = {key: value for key, value in values[0].items() if key not in space}
    else:
        values, _, varying, fixed = search_parameters(configs, "a Katib Experiment", algorithm, value_text)
    fixed["threads"] = fixed.get("threads") or threads or spec.threads
    out = f"{RESULTS}/{run_id}/trials/$(POD_NAME)"
    searched = [arg for key in varying for arg in (f"--{key.replace('_', '-')}", f"${{trialParameters.{key}}}")]
    args = ["train", *train_flags(fixed), *searched, *checkpoint_flags(fixed, out), "--out", out]
    labels = run_labels(run_id, "search")
    template = pod_template(
        spec, labels, args, threads=fixed["threads"], memory_limit=memory_limit,
        results=pvc_volume(spec) if spec.mount_pvc_in_trials else scratch_volume(), port=False,
        extra_env=[{"name": "PYTHONUNBUFFERED", "value": "1"},
                   {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        deadline=timeout, restart_policy="Never")
    trials = max_trials or len(values)
    parameters = ([_parameter(key, parameter) for key, parameter in space.items()] if space is not None else
                  [_list_parameter(key, [config[key] for config in values]) for key in varying])
    experiment = {
        "apiVersion": f"{EXPERIMENT_API[0]}/{EXPERIMENT_API[1]}",
        "kind": "Experiment",
        "metadata": {"name": run_id, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": OBJECTIVE,
                          "additionalMetricNames": [TRAIN_LOSS]},
            "algorithm": {"algorithmName": algorithm},
            "parallelTrialCount": max(1, min(parallelism, trials)),
            "maxTrialCount": trials,
            "maxFailedTrialCount": trials,
            "parameters": parameters,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"},
                                     "source": {"filter": {"metricsFormat": [METRICS_FORMAT]}}},
            "trialTemplate": {
                "primaryContainerName": CONTAINER,
                "successCondition": JOB_SUCCEEDED,
                "failureCondition": JOB_FAILED,
                "trialParameters": [{"name": key, "reference": key,
                                     "description": f"stockscale train --{key.replace('_', '-')}"}
                                    for key in varying],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job",
                              "spec": {"backoffLimit": 0, "template": template}},
            },
        },
    }
    if early_stopping:
        # Katib's median stopping rule, like Optuna's MedianPruner: from the first epoch, once 5 trials ended.
        experiment["spec"]["earlyStopping"] = {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "5"}, {"name": "start_step", "value": "1"}]}
    return experiment


def _list_parameter(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """A parameter given as its values: `discrete` when every value is a number, else `categorical`, with
    each distinct value once, as Katib carries it (value_text)."""
    numeric = all(isinstance(value, int | float) and not isinstance(value, bool) for value in values)
    return {"name": name, "parameterType": "discrete" if numeric else "categorical",
            "feasibleSpace": {"list": list(dict.fromkeys(value_text(value) for value in values))}}


def _parameter(name: str, parameter: Parameter) -> dict[str, Any]:
    """One search parameter as Katib's ParameterSpec: a list stays discrete/categorical, a range keeps its
    type, bounds, step and log-uniform distribution."""
    if parameter.choices is not None:
        return _list_parameter(name, parameter.choices)
    cast = int if parameter.type == "int" else float
    feasible: dict[str, Any] = {"min": value_text(cast(parameter.min)), "max": value_text(cast(parameter.max))}
    if parameter.step is not None:
        feasible["step"] = value_text(cast(parameter.step))
    if parameter.log:
        feasible["distribution"] = "logUniform"
    return {"name": name, "parameterType": parameter.type, "feasibleSpace": feasible}


def value_text(value: Any) -> str:
    """A parameter value as Katib carries it (a string), and as `stockscale train` parses it back."""
    return value if isinstance(value, str) else flag_text(value)



def trial_assignments(trial: Mapping[str, Any]) -> dict[str, str]:
    """A Trial's parameter assignments, {name: value}."""
    return {item.get("name"): str(item.get("value")) for item in
            (trial.get("spec") or {}).get("parameterAssignments") or []}


def trial_metric(trial: Mapping[str, Any], name: str = OBJECTIVE) -> dict[str, Any] | None:
    """What Katib observed of one metric of a Trial ({name, latest, min, max}), or None."""
    metrics = ((trial.get("status") or {}).get("observation") or {}).get("metrics") or []
    return next((metric for metric in metrics if metric.get("name") == name), None)


def assigned_config(assignments: Mapping[str, str], space: Space) -> dict[str, Any]:
    """A Trial's parameter assignments (strings) as the values of `space` they stand for: an int range's
    integer, a double's float, a list's own value (matched by how value_text spells it)."""
    config: dict[str, Any] = {}
    for name, parameter in space.items():
        text = assignments.get(name)
        if text is None:
            raise InputError(f"a Katib trial did not assign {name}")
        if parameter.choices is not None:
            config[name] = next((value for value in parameter.choices if value_text(value) == text), text)
        else:
            config[name] = int(float(text)) if parameter.type == "int" else float(text)
    return config
