"""How many CPUs this process may really use: the affinity mask, capped by the cgroup CPU quota
(a container limited to 1.5 CPUs on a 64-core host gets 1, not 64)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """CPU quota in CPUs from cgroup v2 (cpu.max) or v1 (cfs_quota/cfs_period); None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    available = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        available = min(available, max(1, math.floor(limit)))
    return max(1, available)


def threads_per_worker(workers: int, root: Path = CGROUP) -> int:
    """Intra-op threads for each worker process so that all workers together never oversubscribe."""
    return max(1, usable_cpus(root) // max(1, workers))
