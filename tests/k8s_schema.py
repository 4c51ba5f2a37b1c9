"""Validate manifests as an API server would: core kinds against the Kubernetes OpenAPI schemas (strict),
PyTorchJobs, TrainJobs and OptimizationJobs against their vendored CRD schemas with unknown fields refused
(and the CEL rules of those CRDs that stockscale's manifests could break, checked by hand).

A CRD's structural schema prunes fields it does not list instead of rejecting them; a real apiserver would
silently drop a misspelt field and run something else than we meant. So `strict_schema` adds
`additionalProperties: false` to every object schema that lists its properties and does not say
`x-kubernetes-preserve-unknown-fields`, and the check refuses what the operator would never see.
ObjectMeta is validated by the API server itself, not by the CRD schema: names and labels are checked here.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "tests" / "crds"  # vendored; see tests/crds/README.md
CRD = CRDS / "kubeflow.org_pytorchjobs.v1.yaml"
CRD_FILES = {"PyTorchJob": CRD, "TrainJob": CRDS / "trainer.kubeflow.org_trainjobs.yaml",
             "OptimizationJob": CRDS / "trainer.kubeflow.org_optimizationjobs.yaml"}
# The oldest Kubernetes stockscale supports (backoffLimitPerIndex is on by default from 1.29) and the newest
# schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which objects with listed properties refuse unknown ones."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if "properties" in result and not result.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in result:
        result["additionalProperties"] = False
    if result.get("x-kubernetes-int-or-string") and "anyOf" not in result:
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return result


@cache
def crd_schema(kind: str = "PyTorchJob") -> dict[str, Any]:
    path = CRD_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"the {kind} CRD is expected at {path} (vendored in the repository)")
    crd = yaml.safe_load(path.read_text())
    version_name = "v1" if kind == "PyTorchJob" else "v1alpha1"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    return strict_schema(version["schema"]["openAPIV3Schema"])


def validate_pytorchjob(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the CRD schema (made strict) accepts the object."""
    jsonschema.Draft7Validator(crd_schema()).validate(obj)


def validate_custom(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the kind's CRD schema (made strict) and CEL rules accept it."""
    jsonschema.Draft7Validator(crd_schema(obj["kind"])).validate(obj)
    if obj["kind"] == "OptimizationJob":
        spec = obj["spec"]
        assert spec.get("parallelTrials", 1) <= spec.get("numTrials", 1), "parallelTrials cannot exceed numTrials"
        assert len(spec.get("searchAlgorithm", {"random": {}})) == 1, "exactly one of random, grid"
        for param in spec["parameters"]:
            assert len(param["searchSpace"]) == 1, "exactly one of uniform, logUniform, categorical"
            if "grid" in spec.get("searchAlgorithm", {}):
                assert "categorical" in param["searchSpace"], "grid search takes categorical parameters only"
        assert not {"name", "namespace"} & set(spec["trainJobTemplate"].get("metadata", {})), "no name in template"


def validate_core(obj: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError unless every supported Kubernetes version accepts it."""
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def check_meta(meta: dict[str, Any], *, named: bool = True) -> None:
    """What the API server checks in ObjectMeta: a DNS-1123 name, valid label keys and values."""
    if named:
        name = meta["name"]
        assert len(name) <= 63 and DNS_LABEL.match(name), f"bad name {name!r}"
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        assert len(label) <= 63 and LABEL_NAME.match(label), f"bad label key {key!r}"
        assert not prefix or all(DNS_LABEL.match(part) for part in prefix.split(".")), f"bad label key {key!r}"
        assert isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value), f"bad label {value!r}"


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template in a PyTorchJob or Job, and the pod a TrainJob's trainer and patch make."""
    if obj["kind"] == "TrainJob":
        return [trainjob_pod(obj["spec"])]
    if obj["kind"] == "OptimizationJob":
        return [trainjob_pod(obj["spec"]["trainJobTemplate"]["spec"])]
    if obj["kind"] == "PyTorchJob":
        return [replica["template"] for replica in obj["spec"]["pytorchReplicaSpecs"].values()]
    if obj["kind"] == "Job":
        return [obj["spec"]["template"]]
    return []


def trainjob_pod(spec: dict[str, Any]) -> dict[str, Any]:
    """The pod template the torch-distributed runtime ends up with for a TrainJob spec: the runtime's `node`
    container with the trainer's image, command, args, env and resources, and stockscale's patch merged in."""
    trainer = spec["trainer"]
    (patch,) = [p for p in spec.get("runtimePatches", []) if p["manager"] == "stockscale"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]
    (container_patch,) = pod["spec"]["containers"]
    container = {"name": container_patch["name"], "image": trainer["image"], "command": trainer["command"],
                 "args": trainer["args"], "env": trainer["env"], "resources": trainer["resourcesPerNode"],
                 **{k: v for k, v in container_patch.items() if k != "name"}}
    pod_spec = {**{k: v for k, v in pod["spec"].items() if k != "containers"}, "containers": [container]}
    return {"metadata": pod.get("metadata", {}), "spec": pod_spec}


def validate_manifest(obj: dict[str, Any]) -> None:
    """Validate any manifest stockscale renders, including each pod template as a core Pod."""
    check_meta(obj["metadata"])
    if obj["kind"] in CRD_FILES:
        validate_custom(obj)
        for template in pod_templates(obj):
            check_meta(template.get("metadata", {}), named=False)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {**copy.deepcopy(template.get("metadata", {})), "name": "template"},
                   "spec": template["spec"]}
            validate_core(pod)
    else:
        validate_core(obj)
        for template in pod_templates(obj):
            check_meta(template.get("metadata", {}), named=False)
