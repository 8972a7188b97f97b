"""Triton's statistics extension: per v2 model (`{name}-encode`, `{name}-decode`) and version, the
counts and cumulative nanoseconds of requests, queue waits and runs, whatever route did the work.

Recorded in two places, both shared by every route (/encode, /decode, /sample, v2 over HTTP and gRPC):
- per request, when its scope ends (api/request_scope.py, told by the run step which model it ran):
  success / fail {count, ns} from admission to the end of the response, and the items of the
  successful ones (`inference_count`: 64 for a request of 64 images, as Triton counts);
- per run of the micro-batcher (inference/batching.py): `execution_count`, `batch_stats` per batch
  size, and each queued job's wait (`queue`) and share of its run (`compute_input`: gathering the
  jobs into one batch; `compute_infer`: onnxruntime, padding included; `compute_output`: handing
  the slices back). A job is one submission to the batcher: a request's run of images or one tile,
  so for an ordinary request job and request are the same thing.

The figures are Prometheus counters (they also appear on /metrics as vqvae_v2_*): with several worker
processes they are summed over all of them, as /metrics is (prometheus_client's multiprocess mode),
so the statistics describe the whole server, as Triton's do, whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample

LABELS = ["model", "version"]
REQUESTS = Counter("vqvae_v2_requests", "Requests by v2 model, version and outcome (success, fail)",
                   [*LABELS, "outcome"])
REQUEST_NS = Counter("vqvae_v2_request_ns", "Nanoseconds of requests, admission to response, by outcome",
                     [*LABELS, "outcome"])
INFERENCES = Counter("vqvae_v2_inferences", "Items (images or grids) of successful requests", LABELS)
QUEUED = Counter("vqvae_v2_queued_jobs", "Jobs taken from the batching queue", LABELS)
QUEUE_NS = Counter("vqvae_v2_queue_ns", "Nanoseconds jobs waited in the batching queue", LABELS)
EXECUTIONS = Counter("vqvae_v2_executions", "onnxruntime runs by batch size (items, before padding)",
                     [*LABELS, "batch_size"])
COMPUTE_NS = Counter("vqvae_v2_compute_ns", "Nanoseconds of runs by phase (input, infer, output) and batch size",
                     [*LABELS, "phase", "batch_size"])
JOB_COMPUTE_NS = Counter("vqvae_v2_job_compute_ns", "Nanoseconds of runs charged to each job in them, by phase",
                         [*LABELS, "phase"])
JOBS_RUN = Counter("vqvae_v2_jobs_run", "Jobs whose run finished", LABELS)
LAST_MS = Gauge("vqvae_v2_last_inference_ms", "When the last request of a model ended, ms since the epoch",
                LABELS, multiprocess_mode="max")
METRICS: tuple[MetricWrapperBase, ...] = (REQUESTS, REQUEST_NS, INFERENCES, QUEUED, QUEUE_NS, EXECUTIONS,
                                          COMPUTE_NS, JOB_COMPUTE_NS, JOBS_RUN, LAST_MS)
PHASES = ("input", "infer", "output")


class GraphStats:
    """The recorder of one v2 model version: its label children resolved once (the hot path pays only
    the increments), the batch-size ones on first use."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        labels = (model, version)
        self._requests = {o: REQUESTS.labels(*labels, o) for o in ("success", "fail")}
        self._request_ns = {o: REQUEST_NS.labels(*labels, o) for o in ("success", "fail")}
        self._inferences, self._last = INFERENCES.labels(*labels), LAST_MS.labels(*labels)
        self._queued, self._queue_ns = QUEUED.labels(*labels), QUEUE_NS.labels(*labels)
        self._jobs_run = JOBS_RUN.labels(*labels)
        self._job_ns = [JOB_COMPUTE_NS.labels(*labels, p) for p in PHASES]
        # Per batch size: its run counter, and (phase counter, job phase counter) for each phase in order.
        self._by_size: dict[int, tuple[Counter, list[tuple[Counter, Counter]]]] = {}

    def request_ended(self, ok: bool, ns: int, items: int) -> None:
        outcome = "success" if ok else "fail"
        self._requests[outcome].inc()
        self._request_ns[outcome].inc(ns)
        if ok:
            self._inferences.inc(items)
        self._last.set(time.time_ns() // 1_000_000)

    def queued(self, waits_s: list[float]) -> None:
        self._queued.inc(len(waits_s))
        self._queue_ns.inc(int(sum(waits_s) * 1e9))

    def executed(self, jobs: int, size: int, phases_ns: tuple[int, int, int]) -> None:
        series = self._by_size.get(size)
        if series is None:
            labels = (self.model, self.version)
            series = self._by_size[size] = (EXECUTIONS.labels(*labels, str(size)), [
                (COMPUTE_NS.labels(*labels, p, str(size)), job_ns) for p, job_ns in zip(PHASES, self._job_ns,
                                                                                        strict=True)])
        runs, phases = series
        runs.inc()
        self._jobs_run.inc(jobs)
        for (phase_ns, job_ns), ns in zip(phases, phases_ns, strict=True):
            phase_ns.inc(ns)
            job_ns.inc(ns * jobs)


# -- reading: Triton's schema ---------------------------------------------------------------------


def _families() -> Iterable[Any]:
    """Every family of ours; summed over the worker processes' files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        names = {family.name for metric in METRICS for family in metric.describe()}
        return (family for family in registry.collect() if family.name in names)
    return chain.from_iterable(metric.collect() for metric in METRICS)


def _samples() -> Iterator[Sample]:
    for family in _families():
        yield from (s for s in family.samples if not s.name.endswith("_created"))


@dataclass
class _Totals:
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def add(self, key: tuple[str, ...], value: float) -> None:
        self.values[key] = self.values.get(key, 0.0) + value

    def get(self, *key: str) -> int:
        return int(self.values.get(key, 0.0))


def _duration(totals: _Totals, count: tuple[str, ...], ns: tuple[str, ...]) -> dict[str, int]:
    return {"count": totals.get(*count), "ns": totals.get(*ns)}


def _batch_sizes(totals: _Totals, model: str, version: str) -> list[int]:
    return sorted({int(key[3]) for key in totals.values
                   if key[:3] == ("vqvae_v2_executions_total", model, version)})


def model_statistics(models: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """(v2 name, version) of each model to report -> Triton's `model_stats` entries, in that order."""
    totals = _Totals()
    for s in _samples():
        extra = tuple(s.labels[k] for k in ("outcome", "phase", "batch_size") if k in s.labels)
        totals.add((s.name, s.labels.get("model", ""), s.labels.get("version", ""), *extra), s.value)
    return [_entry(totals, model, version) for model, version in models]


def _entry(t: _Totals, model: str, version: str) -> dict[str, Any]:
    m = (model, version)
    phases = {f"compute_{p}": _duration(t, ("vqvae_v2_jobs_run_total", *m), ("vqvae_v2_job_compute_ns_total", *m, p))
              for p in PHASES}
    sizes = _batch_sizes(t, model, version)
    batches = [{"batch_size": size, **{f"compute_{p}": _duration(t, ("vqvae_v2_executions_total", *m, str(size)),
                                                                 ("vqvae_v2_compute_ns_total", *m, p, str(size)))
                                       for p in PHASES}}
               for size in sizes]
    zero = {"count": 0, "ns": 0}
    return {
        "name": model, "version": version,
        "last_inference": t.get("vqvae_v2_last_inference_ms", *m),
        "inference_count": t.get("vqvae_v2_inferences_total", *m),
        "execution_count": sum(t.get("vqvae_v2_executions_total", *m, str(size)) for size in sizes),
        "inference_stats": {
            "success": _duration(t, ("vqvae_v2_requests_total", *m, "success"),
                                 ("vqvae_v2_request_ns_total", *m, "success")),
            "fail": _duration(t, ("vqvae_v2_requests_total", *m, "fail"), ("vqvae_v2_request_ns_total", *m, "fail")),
            "queue": _duration(t, ("vqvae_v2_queued_jobs_total", *m), ("vqvae_v2_queue_ns_total", *m)),
            **phases, "cache_hit": zero, "cache_miss": zero,  # no response cache here
        },
        "batch_stats": batches,
    }
