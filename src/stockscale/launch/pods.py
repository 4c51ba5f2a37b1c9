"""What every pod of a run looks like, whatever runs it (a cluster's kinds, launch/kubernetes/manifests/, and the
docker backend, which runs the same pods as containers): the container, its security settings, limits, volumes
and the `stockscale train` flags it runs.

Every pod runs the worker command stockscale runs locally, `stockscale train <flags> --out /results/<run>/<name>`,
in a container named `pytorch` (the name the Training Operator looks for) as a non-root user with a read-only
root filesystem, no privilege escalation, no capabilities and CPU/memory limits.

Volumes. Each DDP worker generates its own shards from the bundled data and the seed, so no pod needs a
shared data volume. The PVC holds outputs (rank 0's run directory) and data a user brings; which pods mount
it is the choice of each kind's manifest (training.py, searches.py), made with `pvc_volume` or
`scratch_volume` (an emptyDir at /results).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from stockscale.config import TrainConfig, build_train_config
from stockscale.errors import InputError
from stockscale.launch.cluster_spec import MASTER_PORT, ClusterSpec, quantity

CONTAINER = "pytorch"  # the container name the Training Operator looks for
RESULTS = "/results"
PORT_NAME = "pytorchjob-port"

# ------------------------------------------------------------------------------------------- training flags


def plain_config(config: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config's overrides as YAML/JSON-friendly values (TrainConfig.overrides(), the one serialisation; a
    mapping is validated into a TrainConfig first; unset values dropped)."""
    given = {} if isinstance(config, TrainConfig) else {key: value for key, value in config.items()
                                                         if value is not None}
    values = (config if isinstance(config, TrainConfig) else build_train_config(given, "training config")).overrides()
    order = {key: index for index, key in enumerate(given)}  # a mapping's flags keep its order
    return {key: _plain(values[key]) for key in sorted(values, key=lambda key: order.get(key, len(order)))
            if values[key] is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def train_flags(config: Mapping[str, Any]) -> list[str]:
    """`--field-with-dashes value` for every override, the flags `stockscale train` takes."""
    flags: list[str] = []
    for key, value in plain_config(config).items():
        flags += [f"--{key.replace('_', '-')}", value if isinstance(value, str) else flag_text(value)]
    return flags


def flag_text(value: Any) -> str:
    """A number as a flag's value (`repr`, so it reads back exactly); anything else cannot be a flag."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"training config: {value!r} cannot be passed as a command-line flag")
    return repr(value)


def checkpoint_flags(values: Mapping[str, Any], out: str) -> list[str]:
    """`--checkpoint-dir <out>.checkpoints` unless the config names its own: the one place the Kubernetes side
    wires checkpoints.

    A training job writes its checkpoints beside its run directory on the PVC (not inside it: the run
    directory appears only when training has finished), so the job resubmitted after a disruption, with the
    same `out`, resumes from the last complete epoch.
    """
    return [] if values.get("checkpoint_dir") else ["--checkpoint-dir", f"{out}.checkpoints"]


# ------------------------------------------------------------------------------------------------ pod template


def _memory_limit(spec: ClusterSpec, memory_limit: int | None) -> tuple[str, str]:
    """(request, limit): a job's own limit in bytes wins; the request never exceeds the limit."""
    if memory_limit is None:
        return spec.memory_request, spec.memory_limit
    if memory_limit <= 0:
        raise InputError(f"memory limit {memory_limit} must be positive")
    request = spec.memory_request if quantity(spec.memory_request) <= memory_limit else str(memory_limit)
    return request, str(memory_limit)


def pod_template(
    spec: ClusterSpec,
    labels: dict[str, str],
    args: list[str],
    *,
    threads: int,
    memory_limit: int | None,
    results: dict[str, Any],
    port: bool,
    extra_env: Sequence[dict[str, Any]] = (),
    extra_volumes: Sequence[dict[str, Any]] = (),
    extra_mounts: Sequence[dict[str, Any]] = (),
    deadline: float | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    """The pod template of one `stockscale train` process: `results` is the /results volume (`pvc_volume` or
    `scratch_volume`), `port` opens the PyTorchJob rendezvous port, `deadline` is activeDeadlineSeconds."""
    memory_request, memory_limit_text = _memory_limit(spec, memory_limit)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["stockscale"],
        "args": list(args),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "STOCKSCALE_CACHE", "value": "/tmp/stockscale-cache"},
            {"name": "OMP_NUM_THREADS", "value": str(threads)},
            *extra_env,
            *({"name": name, "value": value} for name, value in sorted(spec.env.items())),
        ],
        "resources": {
            "requests": {"cpu": spec.cpu_request, "memory": memory_request},
            "limits": {"cpu": spec.cpu_limit, "memory": memory_limit_text},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "results", "mountPath": RESULTS},
            *extra_mounts,
        ],
    }
    if port:
        container["ports"] = [{"name": PORT_NAME, "containerPort": MASTER_PORT, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_user,
            "fsGroup": spec.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}},
            {"name": "results", **results},
            *extra_volumes,
        ],
    }
    if restart_policy is not None:
        pod_spec["restartPolicy"] = restart_policy
    if deadline is not None:
        pod_spec["activeDeadlineSeconds"] = max(1, math.ceil(deadline))
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}


def pvc_volume(spec: ClusterSpec) -> dict[str, Any]:
    return {"persistentVolumeClaim": {"claimName": spec.pvc_name}}


def scratch_volume() -> dict[str, Any]:
    return {"emptyDir": {}}

