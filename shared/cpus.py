"""How many physical cores this process may run on (WRK-150, POOL-100).

llama.cpp's own default thread count (`cpu_get_num_physical_cores`) counts the distinct
`thread_siblings` sets under /sys/devices/system/cpu: SMT siblings share a core's execution
units, and a decode thread on each sibling mostly waits at llama.cpp's per-operation barrier.
This counts the same sets, over the CPUs this process is allowed to run on (a cpuset or
`taskset` narrows them), so a worker in a container does not start more threads than it has
cores. Without sysfs (not Linux, or masked), every allowed CPU counts as a core.
"""

from __future__ import annotations

import os
from pathlib import Path

SYS_CPU = Path("/sys/devices/system/cpu")


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(sys_cpu: Path = SYS_CPU, cpus: set[int] | None = None) -> int:
    """Distinct cores among `cpus` (default: the allowed CPUs), at least 1."""
    chosen = allowed_cpus() if cpus is None else cpus
    cores: set[str] = set()
    for cpu in chosen:
        try:
            siblings = (sys_cpu / f"cpu{cpu}/topology/thread_siblings").read_text().strip()
        except OSError:
            siblings = f"cpu{cpu}"  # no topology: the CPU is its own core
        cores.add(siblings)
    return max(1, len(cores))
