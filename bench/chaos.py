"""Chaos with two workers: kill -9 one under steady load, and SIGTERM during large requests.

    python -m bench.chaos kill --seconds 30 --concurrency 16 --data-dir ../shared/data
    python -m bench.chaos term --data-dir ../shared/data

kill: `python -m service --workers 2` under a closed loop of the soak mix (bench/soak.py: one
digit, one grid, 16 digits, 16 grids; a new connection per request) and a /readyz probe every
50 ms. A third of the way in, one worker gets SIGKILL. Reported: what was lost (every failed
request, and whether it was in flight at the kill), how many were in flight then (the client's
count, and the killed worker's own in-flight gauge read from its metrics file just before), the
probes' answers (the service must stay ready), when the supervisor replaced the worker and when
the replacement was ready, and /metrics afterwards (the dead worker's gauges dropped, its counters
kept).

term: for each large request, a fresh two-worker server; the request is sent, and SIGTERM goes to
the server (uvicorn's supervisor, which passes it on to the workers) a second into the work. The
request must finish (200) and the server exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.mmap_dict import MmapedDict

from bench.memory import png
from bench.soak import requests_mix
from contract.manifest import load_manifest
from contract.streams import Kind, encode_stream
from harness.prom import Scrape
from harness.server import SHIPPED_MODELS, ServerProcess, service_process

READY = "Application startup complete"


@dataclass
class Outcome:
    started: float
    ended: float
    status: str  # the HTTP status, or the transport error's name


@dataclass
class Run:
    requests: list[Outcome] = field(default_factory=list)
    probes: list[Outcome] = field(default_factory=list)


def wait_for_workers(server: ServerProcess, count: int, timeout: float = 300) -> None:
    """Until `count` workers have logged their start-up complete (each loads before it serves)."""
    deadline = time.monotonic() + timeout
    while server.log.count(READY) < count:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise SystemExit(f"workers not ready:\n{server.log[-3000:]}")
        time.sleep(0.1)


def in_flight_of(pid: int) -> float:
    """A worker's own vqvae_requests_in_flight, from its multiprocess metrics file."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / f"gauge_livesum_{pid}.db"
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        if json.loads(key)[0] == "vqvae_requests_in_flight":
            return float(value)
    return 0.0


def served_by(pid: int) -> dict[str, float]:
    """A worker's own vqvae_requests_total by status (POSTs only: the load, not the probes), from its
    counter file, which outlives it."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / f"counter_{pid}.db"
    served: dict[str, float] = {}
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        _, name, labels, _ = json.loads(key)
        if name == "vqvae_requests_total" and labels.get("method") == "POST":
            served[labels["status"]] = served.get(labels["status"], 0) + value
    return served


async def drive(url: str, mix: list[dict[str, Any]], concurrency: int, seconds: float, run: Run) -> None:
    """A closed loop of the mix on fresh connections, and a /readyz probe every 50 ms, for `seconds`."""
    stop = time.monotonic() + seconds
    fresh = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=fresh) as client:
        async def send(method: str, request: dict[str, Any], into: list[Outcome]) -> None:
            started = time.monotonic()
            try:
                status = str((await client.request(method, **request)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            into.append(Outcome(started, time.monotonic(), status))

        async def loader(k: int) -> None:
            i = k
            while time.monotonic() < stop:
                await send("POST", mix[i % len(mix)], run.requests)
                i += 1

        async def prober() -> None:
            while time.monotonic() < stop:
                await send("GET", {"url": "/readyz"}, run.probes)
                await asyncio.sleep(0.05)

        await asyncio.gather(prober(), *(loader(k) for k in range(concurrency)))


def watch_replacement(server: ServerProcess, victim: int, killed: float, found: dict[str, Any]) -> None:
    """Note when a new worker appears and when it has logged its start-up complete."""
    before = server.log.count(READY)
    deadline = killed + 120
    while time.monotonic() < deadline and "ready_s" not in found:
        pids = server.worker_pids()
        if "spawned_s" not in found and len(pids) == 2 and victim not in pids:
            found |= {"spawned_s": round(time.monotonic() - killed, 2), "pid": max(pids)}
        if "spawned_s" in found and server.log.count(READY) > before:
            found["ready_s"] = round(time.monotonic() - killed, 2)
        time.sleep(0.05)


def lost_and_kept(run: Run, killed: float) -> dict[str, Any]:
    failed = [o for o in run.requests if o.status != "200"]
    in_flight = [o for o in run.requests if o.started < killed < o.ended]
    after = [o for o in run.requests if o.started > killed + 0.5]
    return {"requests": len(run.requests), "ok": sum(o.status == "200" for o in run.requests),
            "lost": len(failed), "lost_statuses": sorted({o.status for o in failed}),
            "lost_all_in_flight_at_kill": all(o.started < killed < o.ended for o in failed),
            "in_flight_at_kill": len(in_flight),
            "started_after_kill": len(after), "failed_after_kill": sum(o.status != "200" for o in after),
            "probes": len(run.probes), "probes_not_200": sorted({o.status for o in run.probes if o.status != "200"}),
            "probes_failed": sum(o.status != "200" for o in run.probes),
            "probes_failed_outside_kill": sum(o.status != "200" and not o.started < killed < o.ended
                                              for o in run.probes)}


def run_kill(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    with service_process(logs, workers=2) as server:
        wait_for_workers(server, 2)
        victim = server.worker_pids()[0]
        run, found, result = Run(), dict[str, Any](), dict[str, Any]()

        def kill() -> None:
            result["victim_in_flight_gauge"] = in_flight_of(victim)
            result["killed_at"] = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            watch_replacement(server, victim, result["killed_at"], found)

        timer = threading.Timer(args.seconds / 3, kill)
        timer.start()
        asyncio.run(drive(server.url, requests_mix(args.data_dir), args.concurrency, args.seconds, run))
        timer.join()
        killed = result.pop("killed_at")
        scrape = Scrape.of(server.url)
        per_worker = {pid: served_by(pid) for pid in (victim, *server.worker_pids())}
        return {"victim": victim, "replacement": found, **result, **lost_and_kept(run, killed),
                "served_per_worker": per_worker,
                "metrics_after": {"requests_in_flight": scrape.value("vqvae_requests_in_flight"),
                                  "encode_and_decode_200": scrape.value("vqvae_requests_total", status="200",
                                                                        method="POST")},
                "log_problems": [line for line in server.log.splitlines() if "Traceback" in line][:5]}


def large_requests(data_dir: str | None) -> dict[str, dict[str, Any]]:
    manifest = load_manifest(SHIPPED_MODELS / "mnist")
    grids = np.random.default_rng(0).integers(0, 512, (4, 500, 500))
    return {
        "encode: one black 2000×2000 PNG": {"url": "/encode", "content": png(np.zeros((2000, 2000), np.uint8)),
                                            "headers": {"content-type": "image/png"}},
        "decode: packed stream, 4 grids of 500×500": {
            "url": "/decode", "content": encode_stream(grids, Kind.PACKED, manifest, None),
            "headers": {"content-type": "application/octet-stream"}},
        "sample: 256 grids": {"url": "/v1/models/mnist/sample", "json": {"count": 256, "seed": 1}},
    }


def run_term(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    rows = {}
    for name, request in large_requests(args.data_dir).items():
        with service_process(logs, workers=2) as server:
            wait_for_workers(server, 2)
            answer: dict[str, Any] = {}

            def send(req: dict[str, Any] = request, into: dict[str, Any] = answer) -> None:
                started = time.monotonic()
                try:
                    into["status"] = httpx.post(server.url + req["url"], timeout=300,
                                                **{k: v for k, v in req.items() if k != "url"}).status_code
                except httpx.HTTPError as exc:
                    into["status"] = type(exc).__name__
                into["seconds"] = round(time.monotonic() - started, 2)

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(args.term_after)
            signalled = time.monotonic()
            code = server.stop(signal.SIGTERM, timeout=300)
            sender.join()
            rows[name] = {**answer, "sigterm_after_s": args.term_after, "exit_code": code,
                          "exited_after_sigterm_s": round(time.monotonic() - signalled, 2)}
            print(name, rows[name], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["kill", "term"])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--term-after", type=float, default=1.0, help="term: seconds into the request")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    # A known metrics directory, so that a worker's own gauges can be read from its file.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vqvae-chaos-metrics-")
    logs = Path(tempfile.gettempdir()) / "vqvae-bench-chaos"
    result = run_kill(args, logs) if args.mode == "kill" else run_term(args, logs)
    print(json.dumps({"mode": args.mode, **result}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
