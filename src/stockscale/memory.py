"""Peak memory of a process, as Linux records it: what training reports about itself, with no limit code."""

from __future__ import annotations


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak resident memory of a process from Linux's VmHWM (reset at exec), or None where it is not there.

    Not getrusage's ru_maxrss: Linux starts a forked child's maxrss at its parent's RSS, so a worker started
    by a large process would report the parent's size.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
