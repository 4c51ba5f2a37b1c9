"""One description of the pods stockscale runs, on a cluster or as containers: image, namespace, replica sizes,
results volume.

Every manifest stockscale renders (launch/kubernetes/manifests/, and through them docker's containers) and
every pod (launch/pods.py) comes from a `ClusterSpec`, so `stockscale k8s render`, `deploy.sh`, a
`--dry-run` and a real submission agree on names, sizes and security settings. The defaults reproduce the
original demonstration: namespace `stock-training`, Master 1 + Worker 3, each replica requesting 1 CPU and
2Gi and limited to 2 CPUs and 4Gi.

A spec can come from a YAML file (`--k8s-config`) with flags on top; a bad value is an `InputError` with one
line naming the field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stockscale import __version__
from stockscale.config import one_line, read_yaml_mapping
from stockscale.errors import InputError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes quantities stockscale accepts: plain numbers with an SI or binary suffix ("500m", "2", "4Gi").
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18), "Ki": Decimal(2**10),
    "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
DEFAULT_IMAGE = f"stockscale:{__version__}"
MASTER_PORT = 23456


def quantity(text: str | int) -> Decimal:
    """The value of a Kubernetes quantity ("500m" -> 0.5, "4Gi" -> 4294967296). Raises ValueError."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 4Gi)")
    try:
        return Decimal(match.group(1)) * _FACTORS[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from None


class ClusterSpec(BaseModel):
    """Where and how stockscale's pods run. Field names double as YAML keys of `--k8s-config`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    image: str = Field(DEFAULT_IMAGE, description="container image with stockscale (deploy/Dockerfile)")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="IfNotPresent works for images loaded into kind/minikube and for registries")
    namespace: str = "stock-training"
    workers: int = Field(4, ge=1, le=1000, description="DDP world size of the training PyTorchJob: Master 1 + "
                                                       "Worker (workers - 1)")
    cpu_request: str = "1"
    memory_request: str = "2Gi"
    cpu_limit: str = "2"
    memory_limit: str = "4Gi"
    multiplier: int = Field(100, ge=1, description="dataset multiplier of the rendered training PyTorchJob")
    train: dict[str, Any] = Field(default_factory=dict,
                                  description="more TrainConfig overrides for the rendered training PyTorchJob")
    pvc_name: str = "stockscale-results"
    pvc_size: str = "5Gi"
    storage_class: str | None = Field(None, description="storage class of the PVC (default: the cluster's)")
    pvc_access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        "ReadWriteOnce",
        description="ReadWriteOnce attaches to one node: only the training master mounts it; ReadWriteMany: "
                    "every pod does")
    trials_mount_pvc: bool | None = Field(
        None, description="mount the PVC in search trial pods; default: only when the PVC is ReadWriteMany")
    tmp_size: str = Field("1Gi", description="size limit of the emptyDir at /tmp in every pod")
    run_as_user: int = Field(1000, ge=1, description="non-root UID of every container (the image's USER)")
    service_account: str | None = Field(None, description="service account of the pods (default: namespace's)")
    ttl_seconds_after_finished: int = Field(
        86400, ge=0, description="finished Jobs, PyTorchJobs and their pods are removed this long after they end")
    network_policy: bool = Field(True, description="training jobs get a NetworkPolicy: only the run's own pods "
                                                   "reach their rendezvous port")
    env: dict[str, str] = Field(default_factory=dict,
                                description="more environment variables of every stockscale container (--track "
                                            "sets MLFLOW_TRACKING_URI here when the pods can reach the server)")

    @field_validator("namespace", "pvc_name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63 or not DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an image reference")
        if "@" in value and not _DIGEST.search(value):
            raise ValueError(f"{value!r}: a digest is written name@sha256:<64 lowercase hex digits>")
        return value

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", "pvc_size", "tmp_size",
                     mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> str:
        text = str(value).strip()
        if quantity(text) <= 0:
            raise ValueError(f"{text!r} must be positive")
        return text

    @field_validator("memory_request", "memory_limit", "pvc_size", "tmp_size")
    @classmethod
    def _whole_bytes(cls, value: str) -> str:
        if value.endswith("m"):
            raise ValueError(f"{value!r}: memory and storage sizes take no milli suffix (use Mi)")
        return value

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ClusterSpec:
        if quantity(self.cpu_request) > quantity(self.cpu_limit):
            raise ValueError(f"cpu_request {self.cpu_request} is above cpu_limit {self.cpu_limit}")
        if quantity(self.memory_request) > quantity(self.memory_limit):
            raise ValueError(f"memory_request {self.memory_request} is above memory_limit {self.memory_limit}")
        return self

    @property
    def image_is_digest(self) -> bool:
        """`name@sha256:<64 hex>`: every node runs exactly the same bytes, whatever it has cached."""
        return _DIGEST.search(self.image) is not None

    def image_warning(self) -> str | None:
        """Why a mutable tag is risky with IfNotPresent (ranks on different nodes may run different code)."""
        if self.image_is_digest or self.image_pull_policy != "IfNotPresent":
            return None
        return (f"image {self.image} is a mutable tag pulled IfNotPresent: nodes that cached an older image "
                "under that tag run old code; prefer a digest (--image name@sha256:...)")

    @property
    def mount_pvc_in_trials(self) -> bool:
        """Trial pods may run on several nodes at once; a ReadWriteOnce volume attaches to one node only."""
        if self.trials_mount_pvc is not None:
            return self.trials_mount_pvc
        return self.pvc_access_mode == "ReadWriteMany"

    @property
    def threads(self) -> int:
        """Torch threads per pod: the CPU limit (torch would otherwise use every core of the node)."""
        return max(1, int(quantity(self.cpu_limit)))


def build_cluster_spec(values: dict[str, Any], what: str = "cluster spec") -> ClusterSpec:
    """Validate a dict into a ClusterSpec, or raise InputError with one line."""
    if "optimization_env_prefix" in values:
        # Gone: the Trainer's OptimizationJob controller names a trial's parameters KUBEFLOW_TRAINER_OPT_<NAME>
        # whatever a config says (EnvOptParamPrefix, kubeflow/trainer pkg/controller/
        # optimizationjob_controller.go at commit c4c5e1bf57d96460ea7b71fead104737a4afaf27).
        raise InputError(f"{what}: optimization_env_prefix: the OptimizationJob controller's prefix is fixed "
                         "(KUBEFLOW_TRAINER_OPT_<NAME>, read by stockscale train itself); remove the setting")
    try:
        return ClusterSpec.model_validate(values)
    except ValidationError as error:
        raise InputError(one_line(error, what)) from None


def load_cluster_spec(path: Path | None = None, overrides: dict[str, Any] | None = None) -> ClusterSpec:
    """A `--k8s-config` YAML file (optional) with flag values on top; overrides that are None are unset."""
    values: dict[str, Any] = read_yaml_mapping(path, "cluster spec") if path is not None else {}
    what = f"cluster spec {path}" if path is not None else "cluster spec"
    if path is not None:
        build_cluster_spec(values, what)
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return build_cluster_spec(values, what)
