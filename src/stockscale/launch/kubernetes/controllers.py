"""The searches a controller schedules, as two kinds: a Trainer v2 OptimizationJob (its controller makes a
TrainJob per trial) and a Katib Experiment (a Trial per point, and a batch Job per Trial). Each renders the one
object from the space whole, then follows the trial objects the controller makes: each ended trial is told
with the parameters the controller assigned it, read from the trial object itself, and its result read from its
pod's log. The Searchers that drive them are search/optimization_job.py and search/katib.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import ClassVar

from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.logs import read_log
from stockscale.launch.kubernetes.manifests.katib import KATIB_COLLECTOR
from stockscale.launch.kubernetes.outcome import name_of, pytorchjob_result, trial_result, true_condition
from stockscale.launch.kubernetes.run import ClusterRun
from stockscale.launch.kubernetes.training import ENDED, Kind, Obj, TrainJobKind, give_up
from stockscale.launch.pods import CONTAINER, RESULTS
from stockscale.launch.runner import JobResult
from stockscale.search.searcher import TrialTemplate, trial_name
from stockscale.space import Space
from stockscale.worker import EpochReport, parse_epoch_line

KATIB_TRIAL_ENDED = ("Succeeded", "Failed", "EarlyStopped", "Killed", "MetricsUnavailable")
# Told each ended trial: its number (the order it ended in), the parameters the controller assigned it (as
# the trial object carries them: strings; {} for a trial the controller never made), and its result.
TrialTeller = Callable[[int, dict[str, str], JobResult], None]
TRAINJOB = TrainJobKind()  # an OptimizationJob's trials are TrainJobs


class ControllerKind(Kind):
    """A kind whose controller chooses the trials: rendered from the space whole, followed trial by trial."""

    parent_ended: tuple[str, ...] = ("Succeeded", "Failed")
    trial_kind = ""
    trial_ended: tuple[str, ...] = ENDED

    renders: ClassVar[Callable[..., Obj]]  # the one object, from the space whole

    def manifest(self, runner: ClusterRun, space: Space, template: TrialTemplate, parallel: int, *,
                 trials: int, algorithm: str, early_stopping: str | None = None) -> Obj:
        """`algorithm` and `early_stopping` are the controller's own names for the strategy and the pruner."""
        stopping = {} if early_stopping is None else {"early_stopping": early_stopping}
        return self.renders(runner.spec, run_id=runner.run_id, space=space, config=template.config, trials=trials,
                            parallelism=parallel, algorithm=algorithm, threads=template.threads,
                            memory_limit=template.memory_limit, timeout=template.timeout, **stopping)

    def trial(self, runner: ClusterRun, manifest: Obj, trial: Obj, name: str) -> tuple[dict[str, str], JobResult]:
        """The parameters one ended trial object of `manifest` was assigned, and its result (named `name`)."""
        raise NotImplementedError

    def trial_selector(self, runner: ClusterRun, manifest: Obj) -> str:
        """The label selector of `manifest`'s trial objects: our run's labels, where the controller copies them."""
        return m.run_selector(runner.run_id)

    def trials_made(self, runner: ClusterRun, manifest: Obj) -> list[Obj]:
        """The trial objects the controller has made for `manifest` so far."""
        return runner.session.list_kind(self.trial_kind, runner.run_id)

    def follow(self, runner: ClusterRun, manifest: Obj, trials: int, timeout: float | None,
               on_trial: TrialTeller) -> None:
        """Submit `manifest` and tell each trial as it ends until `trials` have; when the parent has ended or is
        gone and no trial still runs, the trials never made are told as not run. Deleted at the end unless
        keep (its trials, their jobs and pods go with it: owner references)."""
        runner.create(manifest)
        name, kind = name_of(manifest), manifest["kind"]
        results: dict[int, JobResult] = {}
        collected: set[str] = set()
        parallel = manifest["spec"].get("parallelTrials") or manifest["spec"]["parallelTrialCount"]
        deadline = runner.deadline(timeout, trials, parallel)

        def collect(trial: Obj) -> None:
            collected.add(name_of(trial))
            number = len(results)
            params, result = self.trial(runner, manifest, trial, trial_name(number))
            results[number] = result
            runner.event(f"trial {number} ({self.trial_kind} {name_of(trial)}): {result.status}")
            on_trial(number, params, result)

        def give_up_rest(status: str, detail: str) -> None:
            for number in give_up([trial_name(number) for number in range(trials)], results, None, status, detail):
                on_trial(number, {}, results[number])

        def ended(trial: Obj) -> bool:
            return true_condition(trial, self.trial_ended) is not None

        def watch() -> None:
            group, version, plural = m.CUSTOM_KINDS[self.trial_kind]
            while len(results) < trials:
                window = runner.window(deadline)
                if window is None:
                    return give_up_rest("timeout", "no result before the search's deadline")
                for event in runner.api.watch(runner.api.custom.list_namespaced_custom_object, group, version,
                                              runner.namespace, plural, window=window,
                                              label_selector=self.trial_selector(runner, manifest),
                                              what=f"watch the {self.trial_kind}s of {kind} {name}",
                                              kind=self.trial_kind, namespace=runner.namespace):
                    trial = event["object"]
                    if event["type"] != "DELETED" and name_of(trial) not in collected and ended(trial):
                        collect(trial)
                    if len(results) == trials:
                        return None
                runner.check_start(runner.session.list_kind("Pod", runner.run_id))
                now = runner.session.list_kind(kind, runner.run_id)
                parent = true_condition(now[0], self.parent_ended) if now else None
                if not now or parent is not None:
                    made = self.trials_made(runner, manifest)
                    for trial in made:
                        if name_of(trial) not in collected and ended(trial) and len(results) < trials:
                            collect(trial)
                    if any(not ended(trial) for trial in made):
                        continue  # trials still running after the parent ended: let them finish
                    reason = f"{kind} deleted" if parent is None else \
                        f"{kind} {parent.get('reason') or parent['type']}: {parent.get('message') or ''}".strip()
                    return give_up_rest("error", f"not run ({reason})")
            return None

        runner.interruptible(watch)
        if not runner.keep:
            runner.remove(kind, name)
            runner.event(f"deleted {kind} {name}")


class OptimizationJobKind(ControllerKind):
    """Kind "optimizationjob": the Trainer v2 OptimizationJob. What its controller does, read from kubeflow/trainer
    pkg/controller/optimizationjob_controller.go at commit c4c5e1bf57d96460ea7b71fead104737a4afaf27 (the
    newest of that file in our mirror; later upstream commits may differ):
    - it makes one TrainJob per trial, `<optimizationjob>-trial-<index>` (index from 1), from the template's
      *spec* only: the trial carries the label `trainer.kubeflow.org/optimization-job: <optimizationjob>` and an
      owner reference, not the template's labels, so its trials are found by that label (their pods keep our
      run's labels: those travel in the spec's runtime patch);
    - it records the trial's parameters in the annotation `trainer.kubeflow.org/optimization-parameters`
      (JSON `[{"name", "value"}]`) and appends them to `spec.trainer.env` as `KUBEFLOW_TRAINER_OPT_<NAME>`.
    Parameters are read from that annotation, else from that env; a trial's result from its node 0's log,
    else (the log gone) from the objective it reported to the TrainJobStatus endpoint (`status.trainerStatus`).
    """

    name = "optimizationjob"
    parent_ended = ("Complete", "Failed")
    trial_kind = "TrainJob"

    renders = staticmethod(m.optimizationjob_manifest)

    def trial_selector(self, runner: ClusterRun, manifest: Obj) -> str:
        return f"{m.OPTIMIZATION_JOB_LABEL}={name_of(manifest)}"

    def trials_made(self, runner: ClusterRun, manifest: Obj) -> list[Obj]:
        return runner.session.optimization_trials(name_of(manifest))

    def trial(self, runner: ClusterRun, manifest: Obj, trial: Obj, name: str) -> tuple[dict[str, str], JobResult]:
        keys = [param["name"] for param in manifest["spec"]["parameters"]]
        params = optimization_parameters(trial, keys)
        master = TRAINJOB.master(runner, name_of(trial))
        lines = [] if master is None else read_log(runner.api, runner.namespace, master, container=m.TRAINER_NODE)
        path = f"{RESULTS}/{runner.run_id}/trials/{master}"
        now = time.time()
        result = pytorchjob_result(
            name, trial, TRAINJOB.pods(runner, name_of(trial)), lines,
            runner.result_dir(path, runner.spec.pvc_access_mode == "ReadWriteMany"),
            waited=(now, now), kind="TrainJob", master_pod=master)
        result.epochs = [report for line in lines if (report := parse_epoch_line(line)) is not None]
        ended = true_condition(trial, ("Complete", "Failed")) or {}
        reported = trainer_status_objective(trial)
        if ended.get("type") == "Complete" and result.metrics is None and reported is not None:
            result.status, result.detail = "success", ""  # the log is gone; the controller's record stays
            result.metrics = {"val": {"loss": reported}}
        elif ended.get("type") == "Failed" and ended.get("reason") == METRICS_UNAVAILABLE:
            result.status = "error"
            result.detail = (f"TrainJob {name_of(trial)}: {METRICS_UNAVAILABLE} (it reported no {m.OBJECTIVE} to the "
                             "TrainJobStatus endpoint: is the Trainer's TrainJobStatus feature gate on?)")
        return params, result


OPTIMIZATION_PARAMETERS = "trainer.kubeflow.org/optimization-parameters"  # AnnotationOptParams (commit above)
OPT_ENV_PREFIX = "KUBEFLOW_TRAINER_OPT_"  # EnvOptParamPrefix (commit above)
# KEP-3744's name for a trial that ended without its objective (not in the controller commit above).
METRICS_UNAVAILABLE = "MetricsUnavailable"


def opt_env_name(parameter: str) -> str:
    """The env var the controller gives a parameter: EnvOptParamPrefix + upper(name, `-` as `_`)."""
    return OPT_ENV_PREFIX + parameter.replace("-", "_").upper()


def optimization_parameters(trial: Obj, keys: list[str]) -> dict[str, str]:
    """The parameters the controller assigned a trial TrainJob: its annotation (the controller's own record),
    else the env it appended to the trainer. Values stay the strings the controller carried."""
    text = ((trial.get("metadata") or {}).get("annotations") or {}).get(OPTIMIZATION_PARAMETERS)
    if text:
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):  # a garbled record: the env
            recorded = {str(item["name"]): str(item["value"]) for item in json.loads(text)}
            return {key: recorded[key] for key in keys if key in recorded}
    env = {var.get("name"): var.get("value") for var in ((trial.get("spec") or {}).get("trainer") or {}).get("env")
           or []}
    return {key: str(env[opt_env_name(key)]) for key in keys if env.get(opt_env_name(key)) is not None}


def trainer_status_objective(trial: Obj) -> float | None:
    """The objective a trial reported to the TrainJobStatus endpoint: `status.trainerStatus.metrics`'s
    val_loss (kubeflow/trainer v2.3.0 docs/user-guides/trainjob-progress.md)."""
    metrics = (((trial.get("status") or {}).get("trainerStatus") or {}).get("metrics")) or []
    for metric in metrics:
        if isinstance(metric, dict) and metric.get("name") == m.OBJECTIVE:
            with contextlib.suppress(TypeError, ValueError):
                return float(metric["value"])
    return None


class KatibKind(ControllerKind):
    """Kind "katib": one Katib Experiment; its controller creates a Trial per point (labelled with our run:
    Katib copies the Experiment's labels) and a batch Job per Trial."""

    name = "katib"
    trial_kind = "Trial"
    trial_ended = KATIB_TRIAL_ENDED

    renders = staticmethod(m.experiment_manifest)

    def trial(self, runner: ClusterRun, manifest: Obj, trial: Obj, name: str) -> tuple[dict[str, str], JobResult]:
        """A Trial's result from its pod's log (the final JSON line; on Katib, the collector sidecar's log, see
        _katib_trial_lines), or, when that log is gone, from the validation loss Katib's metrics collector
        observed; a Trial Katib's early stopping ended is `pruned`, with the epochs its log reported."""
        params = {str(item.get("name")): str(item.get("value"))
                  for item in (trial.get("spec") or {}).get("parameterAssignments") or []}
        trial_name = name_of(trial)
        pods = [pod for pod in runner.session.list_kind("Pod", runner.run_id)
                if (pod["metadata"].get("labels") or {}).get("job-name") == trial_name]
        pod = pods[-1] if pods else None
        lines = [] if pod is None else _katib_trial_lines(runner, pod)
        path = f"{RESULTS}/{runner.run_id}/trials/{name_of(pod) if pod else trial_name}"
        run_dir = runner.result_dir(path, runner.spec.mount_pvc_in_trials)
        metrics = ((trial.get("status") or {}).get("observation") or {}).get("metrics") or []
        observed = next((metric for metric in metrics if metric.get("name") == m.OBJECTIVE), None)
        ended = true_condition(trial, KATIB_TRIAL_ENDED) or {}
        if pod is not None and (lines or observed is None):
            result = trial_result(name, pod, lines, run_dir)
        else:
            ok = ended.get("type") == "Succeeded" and observed is not None
            now = time.time()
            result = JobResult(
                name=name, status="success" if ok else "error",
                detail="" if ok else f"Katib trial {trial_name}: {ended.get('reason') or ended.get('type')}",
                metrics={"val": {"loss": float(observed["min"])}} if ok and observed else None,
                start_time=now, end_time=now, limit_mechanism="kubernetes")
        result.epochs = [report for line in lines if (report := parse_epoch_line(line)) is not None]
        if ended.get("type") == "EarlyStopped":
            result.status, result.detail, result.metrics = "pruned", "stopped early by Katib's medianstop", None
            if not result.epochs and observed is not None:
                with contextlib.suppress(TypeError, ValueError):  # Katib says "unavailable" when it has none
                    result.epochs = [EpochReport(0, float(observed["latest"]))]
        return params, result


# klog's text header before each line the collector sidecar prints (`I1204 19:13:07.123456       1 main.go:147] `):
# klog v2's documented layout, severity, mmdd, time to microseconds, the pid 7 wide, file:line and `] `.
_KLOG_HEADER = re.compile(r"[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d{6}\s+\d+ [^\s\]]+\] ")


def _katib_trial_lines(runner: ClusterRun, pod: Obj) -> list[str]:
    """What `stockscale train` printed in a Trial's pod. With the StdOut collector, Katib's pod webhook runs the
    training container as `sh -c "<command> 1>/var/log/katib/metrics.log 2>&1 ..."`, so that container's own
    log is empty, and the injected sidecar (`metrics-logger-and-collector`) prints every line of the file with
    klog.Info (kubeflow/katib v0.19.0: pkg/webhook/v1beta1/pod/utils.go wrapWorkerContainer,
    cmd/metricscollector/v1beta1/file-metricscollector/main.go printMetricsFile and watchMetricsFile; the
    training container's own log holds at most the wrapper's "Training Container was Early Stopped"). The
    sidecar's log, klog's header cut, when the pod has the sidecar; else the training container's."""
    containers = [container.get("name") for container in (pod.get("spec") or {}).get("containers") or []]
    if KATIB_COLLECTOR not in containers:
        return read_log(runner.api, runner.namespace, name_of(pod), container=CONTAINER)
    collected = read_log(runner.api, runner.namespace, name_of(pod), container=KATIB_COLLECTOR)
    return [line[header.end():] if (header := _KLOG_HEADER.match(line)) else line for line in collected]

