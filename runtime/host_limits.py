"""What this process may really use, from the container's cgroup (v2 or v1) or the machine:

- CPUs: the affinity mask, capped by the cgroup CPU quota (a container limited to 1.5 CPUs on a
  64-core host gets 1, not 64);
- memory: the cgroup memory limit (else physical memory), shared among the worker processes;
  this process's RSS; and handing freed heap back to the OS after a large request.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a huge page-rounded number (9223372036854771712), not "max".
UNLIMITED = 1 << 60


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


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """Memory limit in bytes from cgroup v2 (memory.max) or v1 (memory.limit_in_bytes); None if unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        with contextlib.suppress(ValueError):
            value = int(text)
            return None if value >= UNLIMITED else value
    return None


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def worker_memory_share(workers: int, root: Path = CGROUP) -> int:
    """The bytes one of `workers` processes may use: the cgroup limit (or physical memory) / workers."""
    limit = cgroup_memory_limit(root)
    total = physical_memory() if limit is None else min(limit, physical_memory())
    return total // max(1, workers)


def process_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc), 0 where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc's malloc_trim): after a large request the allocator
    otherwise keeps them, and the worker's RSS stays at its peak. A no-op elsewhere."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
