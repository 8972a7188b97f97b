"""Prometheus metrics for /metrics.

Multiprocess-safe: with several workers, `python -m service` points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before the workers start, each worker writes its samples there, and /metrics
aggregates them (prometheus_client's multiprocess mode). A worker that dies (killed, out of
memory) is replaced by the supervisor; its counters stay in the sums (they counted real requests),
and the replacement drops its gauges of live values (in flight, memory reserved, the budget), which
would otherwise be summed for ever (`forget_dead_workers`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# gRPC calls count here too: route = the method's path, method = "GRPC", status = the code's name.
REQUESTS = Counter("vqvae_requests_total", "Requests by route template (or gRPC method), method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("vqvae_request_duration_seconds", "Request latency by route template (or gRPC method)", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
IN_FLIGHT = Gauge("vqvae_requests_in_flight", "Requests (HTTP and gRPC) being served", multiprocess_mode="livesum")
QUEUE_WAIT = Histogram("vqvae_queue_wait_seconds", "Time inputs waited in the batching queue", ["model", "graph"],
                       buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1))
BATCH_SIZE = Histogram("vqvae_batch_size", "Items per onnxruntime run", ["model", "graph"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
REJECTED = Counter("vqvae_rejected_total", "Requests refused with 429 because the queue was full",
                   ["model", "graph"])
ADMISSION_REJECTED = Counter("vqvae_admission_rejected_total",
                             "Codec requests refused with 429 because too many were in progress")
MEMORY_BUDGET = Gauge("vqvae_memory_budget_bytes", "Bytes of request working sets the workers may hold at once",
                      multiprocess_mode="livesum")
MEMORY_RESERVED = Gauge("vqvae_memory_reserved_bytes", "Bytes of request working sets reserved now",
                        multiprocess_mode="livesum")
MEMORY_REFUSED = Counter("vqvae_memory_refused_total",
                         "Requests refused by the memory budget: over_budget (413) or busy (429)", ["reason"])
WORK_QUEUED = Gauge("vqvae_work_queued_seconds", "Expected seconds of heavy work waiting for its turn",
                    multiprocess_mode="livesum")
WORK_REFUSED = Counter("vqvae_work_refused_total", "Heavy requests refused with 429 because they could not start "
                       "before their deadline: at_once (from the work ahead) or waited (it took longer)", ["when"])
PROVIDER = Gauge("vqvae_model_provider_info", "1 per ready model, labelled with its active execution provider",
                 ["model", "version", "provider"], multiprocess_mode="max")


class RunStats(Protocol):
    """The v2 statistics of the batcher's model version (service/inference/statistics.py)."""

    def queued(self, waits_s: list[float]) -> None: ...
    def executed(self, jobs: int, size: int, phases_ns: tuple[int, int, int]) -> None: ...


class BatchMetrics:
    """The observer a MicroBatcher reports to: these histograms, and the v2 statistics when given."""

    def __init__(self, model: str, graph: str, stats: RunStats | None = None) -> None:
        self._wait = QUEUE_WAIT.labels(model, graph)
        self._size = BATCH_SIZE.labels(model, graph)
        self._rejected = REJECTED.labels(model, graph)
        self._stats = stats

    def batch_ran(self, size: int, queue_waits: list[float]) -> None:
        self._size.observe(size)
        for wait in queue_waits:
            self._wait.observe(wait)
        if self._stats is not None:
            self._stats.queued(queue_waits)

    def batch_finished(self, jobs: int, size: int, phases_ns: tuple[int, int, int]) -> None:
        if self._stats is not None:
            self._stats.executed(jobs, size, phases_ns)

    def rejected(self) -> None:
        self._rejected.inc()


def model_ready(model: str, version: str, provider: str) -> None:
    PROVIDER.labels(model, version, provider).set(1)


LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_dead_workers() -> list[int]:
    """Drop the live gauges of worker processes that no longer exist -> their pids. Called by each
    worker as it starts: a worker replacing a dead one cleans up after it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return []
    pids = {int(m.group(1)) for f in Path(directory).glob("gauge_live*.db") if (m := LIVE_GAUGE_FILE.fullmatch(f.name))}
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric; aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
