"""Usable CPUs from fake cgroup trees (v2 and v1), as a container runtime would lay them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.host_limits import cgroup_cpu_limit, threads_per_worker, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota_us: str, period_us: str = "100000") -> Path:
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota_us + "\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(period_us + "\n")
    return root


@pytest.mark.parametrize("cpu_max, limit", [("150000 100000", 1.5), ("200000 100000", 2.0), ("50000 100000", 0.5),
                                            ("max 100000", None), ("garbage", None), ("", None)])
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, limit: float | None) -> None:
    assert cgroup_cpu_limit(cgroup_v2(tmp_path, cpu_max)) == limit


@pytest.mark.parametrize("quota, limit", [("300000", 3.0), ("-1", None), ("25000", 0.25), ("x", None)])
def test_cgroup_v1_quota(tmp_path: Path, quota: str, limit: float | None) -> None:
    assert cgroup_cpu_limit(cgroup_v1(tmp_path, quota)) == limit


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cpus(tmp_path) == AFFINITY


def test_v2_wins_over_v1_when_both_are_present(tmp_path: Path) -> None:
    cgroup_v1(tmp_path, "400000")
    cgroup_v2(tmp_path, "100000 100000")
    assert cgroup_cpu_limit(tmp_path) == 1.0


@pytest.mark.parametrize("cpu_max, expected", [("50000 100000", 1), ("150000 100000", 1),
                                               ("6400000 100000", AFFINITY), ("max 100000", AFFINITY)])
def test_usable_cpus_is_the_affinity_capped_by_the_floor_of_the_quota(tmp_path: Path, cpu_max: str,
                                                                       expected: int) -> None:
    # A fractional quota rounds down (1.5 CPUs -> 1), never below 1; a quota above the affinity mask
    # (64 CPUs of quota on this machine) is capped by the CPUs this process may run on.
    assert usable_cpus(cgroup_v2(tmp_path, cpu_max)) == min(expected, AFFINITY)


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_threads_per_worker_never_oversubscribe(tmp_path: Path, workers: int) -> None:
    root = cgroup_v2(tmp_path, "800000 100000")  # 8 CPUs of quota
    cpus = usable_cpus(root)
    threads = threads_per_worker(workers, root)
    assert threads >= 1 and (workers * threads <= cpus or threads == 1)
