"""Manifests as YAML files: what `stockscale k8s render` and every `--dry-run` write, one file per object plus
a kustomization.yaml, each replaced atomically, so `kubectl apply -k DIR` applies exactly what a submission sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from stockscale.errors import InputError
from stockscale.files import write_text_atomic


def kustomization(files: Iterable[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": list(files)}


def file_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


class PlainDumper(yaml.SafeDumper):
    """Plain YAML: a value used twice is written twice, never as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Mapping[str, Any]) -> str:
    return yaml.dump(dict(obj), Dumper=PlainDumper, sort_keys=False, default_flow_style=False)


def write_manifests(out_dir: Path, files: Mapping[str, Mapping[str, Any]],
                    unlisted: Mapping[str, Mapping[str, Any]] | None = None) -> list[Path]:
    """Write `{file name: object}` plus a kustomization.yaml listing them; each file replaced atomically.
    `unlisted` files are written too but left out of the kustomization (applied only on purpose)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    written = []
    try:
        for name, obj in {**files, **(unlisted or {})}.items():
            path = out_dir / name
            write_text_atomic(path, to_yaml(obj))
            written.append(path)
        path = out_dir / "kustomization.yaml"
        write_text_atomic(path, to_yaml(kustomization(files)))
    except OSError as error:
        raise InputError(f"cannot write manifests to {out_dir} ({error.strerror})") from None
    return [*written, path]

