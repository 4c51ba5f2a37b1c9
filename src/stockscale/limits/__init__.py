"""A memory limit for one child process and its descendants, and its peak memory, measured.

The dataset-scale comparison needs a hard per-worker memory ceiling that behaves like a Kubernetes
container limit: the kernel OOM-kills a worker that goes over it. A memory cgroup does exactly that, so a
fresh cgroup (v2 when our own cgroup can delegate the memory controller, else v1) is created per child under
our own cgroup. Where no cgroup is writable (an unprivileged container, a read-only /sys/fs/cgroup) an RSS
watchdog thread stands in: it polls the child's process tree with psutil and SIGKILLs the tree when it is
over the limit. The watchdog is best effort (a child can overshoot between two polls), which is why the
mechanism that actually held the limit is always recorded next to the result.

Every child, limited or not, has its peak memory recorded by polling (VmHWM where Linux has it, RSS
otherwise), so every run reports a per-worker peak.
"""

from stockscale.limits.cgroups import (
    CGROUP_PREFIX,
    MECHANISM_ENV,
    MECHANISMS,
    describe_mechanism,
    detect_mechanism,
    own_cgroup_dir,
    sweep_stale_cgroups,
)
from stockscale.limits.limiter import (
    MIN_WORKER_MEMORY,
    LimitReport,
    MemoryLimiter,
    check_limit,
    parse_memory_limit,
)
from stockscale.memory import vm_hwm

__all__ = [
    "CGROUP_PREFIX",
    "MECHANISMS",
    "MECHANISM_ENV",
    "MIN_WORKER_MEMORY",
    "LimitReport",
    "MemoryLimiter",
    "check_limit",
    "describe_mechanism",
    "detect_mechanism",
    "own_cgroup_dir",
    "parse_memory_limit",
    "sweep_stale_cgroups",
    "vm_hwm",
]
