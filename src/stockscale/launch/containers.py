"""A rendered pod template as the options of one container: the Kubernetes manifests, run by a local engine.

The docker backend writes no container spec of its own. It renders the same PyTorchJob or Indexed Job that
`--backend kubernetes` submits (launch/kubernetes/manifests/) and translates each pod into a container,
field by field, as a kubelet would:

    pod template                                   container (Docker Engine API, also podman's)
    command / args ($(VAR) expanded from env)      entrypoint / command
    env (+ the operator's or Job controller's)     environment
    securityContext runAsUser/runAsGroup           user "1000:1000"
    readOnlyRootFilesystem                         read_only
    capabilities.drop [ALL]                        cap_drop ["ALL"]
    allowPrivilegeEscalation false                 security_opt no-new-privileges
    fsGroup                                        group_add
    resources.limits.memory                        mem_limit = memswap_limit (no swap)
    resources.limits.cpu / requests.cpu            nano_cpus / cpu_shares
    emptyDir                                       tmpfs (sizeLimit kept)
    persistentVolumeClaim, configMap               bind mounts of host folders (the ConfigMap read-only)

What the Training Operator adds to a PyTorchJob replica (its env contract, tests/crds/README.md) comes from
`operator_environment`, and the Indexed Job's completion index from `JOB_COMPLETION_INDEX`. Pure functions:
testable without an engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockscale.launch.cluster_spec import quantity

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Pod:
    """One pod to run as a container: its name (also its hostname), labels, template and extra env."""

    name: str
    template: Mapping[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def operator_environment(pytorchjob: Mapping[str, Any], replica_type: str, index: int) -> dict[str, str]:
    """What the Kubeflow Training Operator (release 1.9) adds to replica `index` of `replica_type`."""
    specs = pytorchjob["spec"]["pytorchReplicaSpecs"]
    container = specs[replica_type]["template"]["spec"]["containers"][0]
    ports = [port["containerPort"] for port in container.get("ports", []) if port.get("name") == "pytorchjob-port"]
    port = str(ports[0]) if ports else "23456"
    nproc = int(pytorchjob["spec"].get("nprocPerNode", "1"))
    replicas = sum(int(spec["replicas"]) for spec in specs.values())
    rank = 0 if replica_type == "Master" else index + 1
    master = f"{pytorchjob['metadata']['name']}-master-0"
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": master, "PET_MASTER_ADDR": master,
        "MASTER_PORT": port, "PET_MASTER_PORT": port,
        "WORLD_SIZE": str(replicas * nproc), "RANK": str(rank),
        "PET_NODE_RANK": str(rank), "PET_NNODES": str(replicas), "PET_NPROC_PER_NODE": str(nproc),
    }


def replica_pods(pytorchjob: Mapping[str, Any]) -> list[Pod]:
    """Every replica of a PyTorchJob as a Pod named as the operator names it (`<job>-master-0`, ...)."""
    job_name = pytorchjob["metadata"]["name"]
    pods = []
    for replica_type in ("Master", "Worker"):
        spec = pytorchjob["spec"]["pytorchReplicaSpecs"].get(replica_type)
        for index in range(int(spec["replicas"]) if spec else 0):
            template = spec["template"]
            pods.append(Pod(name=f"{job_name}-{replica_type.lower()}-{index}", template=template,
                            env=operator_environment(pytorchjob, replica_type, index),
                            labels=dict(template.get("metadata", {}).get("labels", {}))))
    return pods


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args; an unknown reference stays as written."""
    return _VAR_REF.sub(lambda match: env.get(match.group(1), match.group(0)), text)


def container_options(pod: Pod, *, volumes: Mapping[str, Path], field_values: Mapping[str, str] | None = None,
                      network: str | None = None) -> dict[str, Any]:
    """Keyword arguments of the Docker SDK's `containers.create` for `pod`.

    `volumes` maps a pod volume's name to the host folder that stands for it (the PVC, the ConfigMap);
    emptyDir volumes become tmpfs mounts. `field_values` gives downward-API fields (the completion index).
    """
    spec = pod.template["spec"]
    (container,) = spec["containers"]
    env = _environment(container, pod.env, field_values or {})
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup", user))
    limits = container.get("resources", {}).get("limits", {})
    requests = container.get("resources", {}).get("requests", {})
    options: dict[str, Any] = {
        "image": container["image"],
        "name": pod.name,
        "hostname": pod.name,
        "entrypoint": [expand(part, env) for part in container.get("command", [])] or None,
        "command": [expand(part, env) for part in container.get("args", [])],
        "environment": env,
        "labels": dict(pod.labels),
        "read_only": bool(security.get("readOnlyRootFilesystem")),
        "cap_drop": list(security.get("capabilities", {}).get("drop", [])),
        "security_opt": ["no-new-privileges"] if security.get("allowPrivilegeEscalation") is False else [],
        "detach": True,
    }
    if user is not None:
        options["user"] = f"{user}:{group}"
    if pod_security.get("fsGroup") is not None:
        options["group_add"] = [str(pod_security["fsGroup"])]
    if "memory" in limits:
        options["mem_limit"] = options["memswap_limit"] = int(quantity(limits["memory"]))
    if "cpu" in limits:
        options["nano_cpus"] = int(quantity(limits["cpu"]) * 10**9)
    if "cpu" in requests:
        options["cpu_shares"] = max(2, int(quantity(requests["cpu"]) * 1024))
    options["network_mode" if network in (None, "none", "host") else "network"] = network or "none"
    options["tmpfs"], options["mounts"] = _mounts(spec, container, volumes)
    return options


def _environment(container: Mapping[str, Any], extra: Mapping[str, str],
                 field_values: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in field_values:
                raise ValueError(f"no value for the downward-API field {path} of {var['name']}")
            env[var["name"]] = field_values[path]
    env.update(extra)
    return env


def _mounts(spec: Mapping[str, Any], container: Mapping[str, Any],
            volumes: Mapping[str, Path]) -> tuple[dict[str, str], list[Any]]:
    from docker.types import Mount

    by_name = {volume["name"]: volume for volume in spec.get("volumes", [])}
    tmpfs: dict[str, str] = {}
    mounts: list[Any] = []
    for mount in container.get("volumeMounts", []):
        volume = by_name[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            tmpfs[path] = "mode=1777" + (f",size={int(quantity(size))}" if size else "")
        elif mount["name"] in volumes:
            mounts.append(Mount(target=path, source=str(volumes[mount["name"]]), type="bind",
                                read_only=bool(mount.get("readOnly"))))
        else:
            raise ValueError(f"no host folder for volume {mount['name']} of pod template")
    return tmpfs, mounts
