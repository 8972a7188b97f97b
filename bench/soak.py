"""Load, soak and overload runs against a real server on loopback, with bounded count and time.

    python -m bench.soak mix --seconds 60 --concurrency 64        # the mix for a minute: 0 errors
    python -m bench.soak soak --requests 100000 --concurrency 64  # memory: RSS growth after warm-up
    python -m bench.soak overload --seconds 20                     # 2× the saturating rate, open loop
    python -m bench.soak drain --seconds 10                        # SIGTERM mid-load: nothing fails

The tool starts the server itself (python -m service on a free port) so that it can read the
server's resident memory from /proc. The mix: one-digit /encode, one-grid /decode, 16-digit batch
/encode and 16-grid batch /decode, in rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load import ours
from datasources.idx_files import load_split
from harness.multipart import image_parts, multipart_body
from runtime.images import encode_png

ROOT = Path(__file__).resolve().parents[1]
DRAIN_SECONDS = 2.0
# Connections opened this close to the listener closing race it: uvicorn closes, at shutdown, every
# connection whose request it has not parsed yet (measured: all such failures began 0.1-0.2 s before).
BACKLOG_MARGIN = 0.5


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"ok": [], "429": [], "other": []})
    failures: list[str] = field(default_factory=list)  # transport errors, described

    def record(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies["ok" if status == "200" else "429" if status == "429" else "other"].append(seconds)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != "200")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else 0.0


def json_body(value: Any) -> dict[str, Any]:
    return {"content": json.dumps(value).encode(), "headers": {"content-type": "application/json"}}


def multipart(pngs: list[bytes]) -> dict[str, Any]:
    body, content_type = multipart_body(image_parts(pngs))
    return {"content": body, "headers": {"content-type": content_type}}


def requests_mix(data_dir: str | None, batch: int = 16) -> list[dict[str, Any]]:
    """One-digit /encode, one-grid /decode, `batch`-digit /encode, `batch`-grid /decode; bodies pre-encoded."""
    digits = load_split("mnist", "test", data_dir)[0][:batch]
    pngs = [encode_png(d[:, :, None]) for d in digits]
    grid = np.arange(49).reshape(7, 7).tolist()
    return [
        {"url": "/encode", "content": pngs[0], "headers": {"content-type": "image/png"}},
        {"url": "/decode", **json_body({"codes": grid})},
        {"url": "/encode", **multipart(pngs)},
        {"url": "/decode", **json_body({"codes": [grid] * batch})},
    ]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one(client: httpx.AsyncClient, request: dict[str, Any], tally: Tally) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(**request)
        status = str(response.status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
        tally.failures.append(f"{request['url']}: {status}: {exc!r}"[:300])
    tally.record(status, time.perf_counter() - started)


async def closed_loop(url: str, mix: list[dict[str, Any]], concurrency: int, stop_after: float,
                      max_requests: int, tally: Tally, on_progress: Any = None) -> None:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    deadline = time.monotonic() + stop_after
    issued = 0

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal issued
        i = offset
        while time.monotonic() < deadline and issued < max_requests:
            issued += 1
            await one(client, mix[i % len(mix)], tally)
            i += 1
            if on_progress:
                on_progress(issued)

    # A new connection per request: with keep-alive, httpx's connection pool capped this client at
    # ~120 single-digit requests/s at concurrency 64 (measured; wrk gets ~1,200 from the same server),
    # so the server was never saturated. Without it the same client sends ~400/s.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))


async def open_loop(url: str, request: dict[str, Any], rate: float, seconds: float, tally: Tally) -> int:
    """Requests at a fixed arrival rate, whether or not earlier ones were answered; -> hung requests."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        tasks = []
        started = time.monotonic()
        for k in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + k / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(client, request, tally)))
        _, pending = await asyncio.wait(tasks, timeout=60)
        return len(pending)


def summary(tally: Tally, elapsed: float) -> dict[str, Any]:
    total = sum(tally.statuses.values())
    return {"requests": total, "seconds": round(elapsed, 1), "requests_per_s": round(total / elapsed, 1),
            "statuses": dict(tally.statuses), "errors": tally.errors,
            "p50_ms": round(percentile(tally.latencies["ok"], 50), 2),
            "p99_ms": round(percentile(tally.latencies["ok"], 99), 2),
            "transport_failures": tally.failures[:20]}


def run_mix(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    started = time.monotonic()
    asyncio.run(closed_loop(url, requests_mix(args.data_dir), args.concurrency, args.seconds, 10**9, tally))
    return summary(tally, time.monotonic() - started) | {"rss_mib_end": round(rss_kib(pid) / 1024, 1)}


def run_soak(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """RSS after a warm-up of 10 % of the requests, then at the end: growth must stay small."""
    tally, marks = Tally(), {}
    warm = args.requests // 10

    def progress(issued: int) -> None:
        if issued == warm and "warm" not in marks:
            marks["warm"] = rss_kib(pid)

    started = time.monotonic()
    asyncio.run(closed_loop(url, requests_mix(args.data_dir), args.concurrency, 3600, args.requests, tally, progress))
    end = rss_kib(pid)
    growth = (end - marks["warm"]) / marks["warm"]
    return summary(tally, time.monotonic() - started) | {
        "rss_mib_after_warmup": round(marks["warm"] / 1024, 1), "rss_mib_end": round(end / 1024, 1),
        "rss_growth_pct": round(100 * growth, 2)}


def run_overload(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure the saturating rate of 64-digit batch requests, then offer twice that, open loop."""
    batch = requests_mix(args.data_dir, batch=64)[2]  # 64 digits per request
    probe = Tally()
    asyncio.run(closed_loop(url, [batch], args.concurrency, 10, 10**9, probe))
    saturating = probe.statuses["200"] / 10
    tally = Tally()
    hung = asyncio.run(open_loop(url, batch, 2 * saturating, args.seconds, tally))
    return {"saturating_requests_per_s": round(saturating, 1), "offered_requests_per_s": round(2 * saturating, 1),
            "statuses": dict(tally.statuses), "hung": hung,
            "admitted_p50_ms": round(percentile(tally.latencies["ok"], 50), 1),
            "admitted_p99_ms": round(percentile(tally.latencies["ok"], 99), 1),
            "rejected_p99_ms": round(percentile(tally.latencies["429"], 99), 2),
            "rejected_median_ms": round(statistics.median(tally.latencies["429"]) * 1000, 2)
            if tally.latencies["429"] else None}


def run_drain(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Load on fresh connections; SIGTERM at half time; the server drains DRAIN_SECONDS, then closes
    its listener. Every request started before the listener closed (less BACKLOG_MARGIN) must succeed.
    Later attempts are refused, or reset when uvicorn had not parsed them yet: they never reached the
    application (in production the load balancer stops routing when /readyz turns 503, long before)."""
    mix = requests_mix(args.data_dir)
    outcomes: list[tuple[float, float, str]] = []  # (started, ended, status)

    async def load() -> None:
        # One client without keep-alive: a new connection per request, and no client built per request
        # (building one costs milliseconds of this process's CPU, which would skew the start times).
        fresh = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=fresh) as client:
            async def worker(k: int) -> None:
                i = k
                while time.monotonic() < stop:
                    started = time.monotonic()
                    try:
                        status = str((await client.post(**mix[i % len(mix)])).status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    outcomes.append((started, time.monotonic(), status))
                    i += 1

            await asyncio.gather(*(worker(k) for k in range(args.concurrency)))

    stop = time.monotonic() + args.seconds
    signalled = time.monotonic() + args.seconds / 2
    threading.Timer(args.seconds / 2, os.kill, (pid, signal.SIGTERM)).start()
    asyncio.run(load())
    closed = signalled + DRAIN_SECONDS - BACKLOG_MARGIN
    before = Counter(status for started, _, status in outcomes if started < closed)
    after = Counter(status for started, _, status in outcomes if started >= closed)
    return {"sigterm_after_s": args.seconds / 2, "drain_s": DRAIN_SECONDS,
            "started_before_close": dict(before), "started_after_close": dict(after),
            "in_flight_at_sigterm": sum(1 for started, ended, _ in outcomes if started < signalled < ended),
            "failed": sum(n for status, n in before.items() if status != "200"),
            "failures_at_s_after_sigterm": sorted(round(started - signalled, 2) for started, _, status in outcomes
                                                  if status != "200" and started < closed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mix", "soak", "overload", "drain"])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    env = {"VQVAE_DRAIN_SECONDS": str(DRAIN_SECONDS)} if args.mode == "drain" else {}
    with ours(args.models_dir, "on", env) as server:
        modes = {"mix": run_mix, "soak": run_soak, "overload": run_overload, "drain": run_drain}
        result = modes[args.mode](server.url, server.pid, args)  # one worker: the server process serves
        problems = [line for line in server.log.splitlines() if "ERROR" in line or "Traceback" in line]
        result["server_log_problems"] = problems[:20]
    print(json.dumps({"mode": args.mode, "concurrency": args.concurrency, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
