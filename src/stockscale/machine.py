"""What machine a result came from: every results file says where its figures were measured."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil


def machine_info() -> dict[str, Any]:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch_version,
    }
