"""How many CPUs this process may really use: what sizes the scoring thread pool."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a container's CPU quota (a Kubernetes ``limits.cpu``
    of 2 on a 64-core node is 2, rounded up), cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            text = (cgroup / quota_file).read_text().split()
            quota, period = (text[0], text[1]) if period_file is None else \
                (text[0], (cgroup / period_file).read_text().strip())
            if quota not in ("max", "-1") and int(period) > 0:
                cpus = min(cpus, max(1, -(-int(quota) // int(period))))
                break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cpus)
