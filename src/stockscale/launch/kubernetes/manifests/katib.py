"""A search as one Katib Experiment (`kubeflow.org/v1beta1`).

Katib's controller runs each trial as the batch/v1 Job of the trial template, with the trial's parameter
assignments substituted for `${trialParameters.<name>}` in the template's args. Its StdOut metrics collector,
as kubeflow/katib v0.19.0 does it:
- the pod webhook runs the training container as `sh -c "<command> <args> 1>/var/log/katib/metrics.log 2>&1
  ..."` (pkg/webhook/v1beta1/pod/utils.go wrapWorkerContainer) and injects the sidecar
  `metrics-logger-and-collector` (KATIB_COLLECTOR) with the metric names, the `metricsFormat` regexes joined by
  `;` and `-format TEXT` (inject_webhook.go getMetricsCollectorArgs); the sidecar prints every line of that file
  in its own log (cmd/metricscollector/v1beta1/file-metricscollector/main.go), so the training container's log
  is empty and the runner reads a trial's output from the sidecar's (controllers.KatibKind);
- the file's lines are parsed by parseLogsInTextFormat (pkg/metricscollector/v1beta1/file-metricscollector/
  file-metricscollector.go): a line that contains a metric's name, its first space-separated field its time
  when Go's time.Parse(time.RFC3339Nano) reads it (else the zero time), each match of each regex a metric
  (group 1 the name, group 2 the value). `stockscale train` prints one such line per epoch on rank 0
  (console.epoch_line: `2026-12-04T19:15:56.068008Z {"event": "epoch", "epoch": 1, "val_loss": 0.57, ...}`),
  so Katib observes `val_loss` and `train_loss` after every epoch, in time order. The final JSON result line
  still comes last.

Katib's CRD takes any fields (x-kubernetes-preserve-unknown-fields); its admission webhook checks the rest.
tests/test_k8s_katib.py loads every rendered Experiment into the kubeflow-katib SDK's models, checks what the
webhook checks, and parses a real training run's output with a fake collector that follows the files above
(tests/katib_fake.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from stockscale.config import TrainConfig
from stockscale.errors import InputError
from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.kubernetes.manifests.naming import EXPERIMENT_API, run_labels
from stockscale.launch.kubernetes.manifests.searches import OBJECTIVE, check_grid, searched
from stockscale.launch.pods import (
    CONTAINER,
    RESULTS,
    checkpoint_flags,
    flag_text,
    pod_template,
    pvc_volume,
    scratch_volume,
    train_flags,
)
from stockscale.space import Parameter, Space

TRAIN_LOSS = "train_loss"
# The sidecar Katib injects for a StdOut collector (pkg/metricscollector/v1beta1/common/const.go, v0.19.0).
KATIB_COLLECTOR = "metrics-logger-and-collector"
# The namespace label Katib's pod webhook selects (manifests/v1beta1/components/webhook/webhooks.yaml, v0.19.0).
KATIB_INJECTION = "katib.kubeflow.org/metrics-collector-injection"
# One metric of an epoch progress line: `"val_loss": 0.1234` (group 1 the name, group 2 the value). No `;`: the
# webhook joins the regexes with `;` and the sidecar splits them there. RE2 (Go's regexp) reads it as re does.
METRICS_FORMAT = r'"((?:val|train)_loss)":\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)'
JOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"


def experiment_manifest(
    spec: ClusterSpec,
    *,
    run_id: str,
    space: Space,
    config: TrainConfig,
    trials: int,
    parallelism: int,
    algorithm: str = "grid",
    threads: int | None = None,
    memory_limit: int | None = None,
    timeout: float | None = None,
    early_stopping: str | None = None,
) -> dict[str, Any]:
    """The Experiment for a search of `space`: each parameter in Katib's own terms (a list `discrete` when every
    value is a number, else `categorical`; `double` and `int` ranges, log-uniform when the space says log; a list
    of one value is a fixed flag), `config` the fixed flags of every trial's `stockscale train`.

    maxTrialCount is `trials`; `grid` needs them to be the full product of the lists (Katib's grid walks exactly
    that product). A failed trial does not end the Experiment (maxFailedTrialCount = maxTrialCount): it is one
    result of the search. Each trial writes to /results/<run>/trials/<its pod name>. `early_stopping` is
    Katib's name of the search's pruner (medianstop, like Optuna's MedianPruner), or None.
    """
    varying, fixed = searched(space, config, "a Katib Experiment")
    if algorithm == "grid":
        check_grid(space, varying, trials)
    fixed["threads"] = fixed.get("threads") or threads or spec.threads
    out = f"{RESULTS}/{run_id}/trials/$(POD_NAME)"
    flags = [arg for key in varying for arg in (f"--{key.replace('_', '-')}", f"${{trialParameters.{key}}}")]
    # A trial keeps checkpoints only on the PVC: on an emptyDir they would be lost with the pod (issue 22).
    kept = checkpoint_flags(fixed, out) if spec.mount_pvc_in_trials else []
    args = ["train", *train_flags(fixed), *flags, *kept, "--out", out]
    _check_shell_words(args, space, varying)
    labels = run_labels(run_id, "search")
    template = pod_template(
        spec, labels, args, threads=fixed["threads"], memory_limit=memory_limit,
        results=pvc_volume(spec) if spec.mount_pvc_in_trials else scratch_volume(), port=False,
        extra_env=[{"name": "PYTHONUNBUFFERED", "value": "1"},
                   {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        deadline=timeout, restart_policy="Never")
    experiment: dict[str, Any] = {
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
            "parameters": [_parameter(key, space[key]) for key in varying],
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
    if early_stopping is not None:
        # medianstop (pkg/earlystopping/v1beta1/medianstop/service.py, v0.19.0): once 5 trials succeeded, each
        # new trial is stopped when its best val_loss at its first epoch exceeds the mean, over the succeeded
        # trials, of their first epoch's val_loss (start_step 1; the sidecar tries the rule at that step only).
        experiment["spec"]["earlyStopping"] = {"algorithmName": early_stopping, "algorithmSettings": [
            {"name": "min_trials_required", "value": "5"}, {"name": "start_step", "value": "1"}]}
    return experiment


# What sh reads as one plain word (shlex.quote's safe characters), plus the kubelet's `$(POD_NAME)` and the
# `${trialParameters.<name>}` Katib substitutes before the pod exists.
_SHELL_WORD = re.compile(r"(?:[\w@%+=:,./-]|\$\(POD_NAME\)|\$\{trialParameters\.\w+\})+")


def _check_shell_words(args: list[str], space: Space, varying: Sequence[str]) -> None:
    """Katib's StdOut collector runs the trial container as `sh -c "<command> <args joined by spaces> 1>...`"
    (kubeflow/katib v0.19.0, pkg/webhook/v1beta1/pod/utils.go wrapWorkerContainer): an arg or a parameter value
    with a space or a shell character would reach `stockscale train` split or changed, so it is refused."""
    named = [(args[index - 1] if index else "train", arg) for index, arg in enumerate(args)]
    named += [(key, value_text(value)) for key in varying for value in (space[key].choices or [])]
    for flag, value in named:
        if not _SHELL_WORD.fullmatch(value):
            raise InputError(f"{flag.lstrip('-')} value {value!r}: a Katib trial runs its args through `sh -c` "
                             "(the StdOut metrics collector), so it must have no spaces or shell characters")


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
    assert parameter.min is not None and parameter.max is not None  # a range has both (space.Parameter)
    feasible: dict[str, Any] = {"min": value_text(cast(parameter.min)), "max": value_text(cast(parameter.max))}
    if parameter.step is not None:
        feasible["step"] = value_text(cast(parameter.step))
    if parameter.log:
        feasible["distribution"] = "logUniform"
    return {"name": name, "parameterType": parameter.type, "feasibleSpace": feasible}


def value_text(value: Any) -> str:
    """A parameter value as Katib carries it (a string), and as `stockscale train` parses it back."""
    return value if isinstance(value, str) else flag_text(value)
