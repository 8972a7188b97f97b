"""HTTP load on loopback with wrk: servers as subprocesses (harness.server), one wrk run per row.

wrk (Debian package `wrk`) is a C load generator: it costs the 2-core machine far less CPU than a
Python client would, so more of the machine measures the server. One wrk thread, N connections.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.prom import MissingSeries, Scrape
from harness.server import ServerProcess, free_port, service_process


@dataclass
class LoadRow:
    server: str
    workload: str
    concurrency: int
    images_per_request: int
    requests_s: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def images_s(self) -> float:
        return self.requests_s * self.images_per_request


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    method: str = "GET"
    body: bytes = b""
    content_type: str = ""
    images: int = 1
    headers: tuple[tuple[str, str], ...] = ()  # beyond Content-Type, e.g. the v2 binary header's length


SERVER_LOGS = Path(tempfile.gettempdir()) / "vqvae-bench-logs"


@contextlib.contextmanager
def running(server: ServerProcess, ready_path: str) -> Iterator[ServerProcess]:
    """Wait for `ready_path` to answer 200, yield the server, stop it (SIGTERM) however the block ends."""
    with server:
        server.wait(ready_path, timeout=120)
        yield server


def ours(models_dir: Path, batching: str, extra_env: dict[str, str] | None = None
         ) -> contextlib.AbstractContextManager[ServerProcess]:
    settings = {"models_dir": models_dir, "batching": batching, "log_level": "warning"}
    settings |= {k.removeprefix("VQVAE_").lower(): v for k, v in (extra_env or {}).items()}
    return running(service_process(SERVER_LOGS, **settings), "/readyz")


def comparison(kind: str, checkpoint: Path, workers: int = 1) -> contextlib.AbstractContextManager[ServerProcess]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.servers", kind, "--port", str(port), "--checkpoint", str(checkpoint),
           "--workers", str(workers)]
    server = ServerProcess(cmd, port, dict(os.environ), SERVER_LOGS / f"{kind}-{port}.log")
    return running(server, "/hello" if kind == "hello" else "/readyz")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """wrk --latency output -> (requests/s, p50 ms, p99 ms, errors: non-2xx + socket errors)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, errors


def wrk(url: str, workload: Workload, concurrency: int, seconds: float, scratch: Path) -> str:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if workload.method == "POST":
        body = scratch / f"{workload.name}.body"
        body.write_bytes(workload.body)
        script = scratch / f"{workload.name}.lua"
        script.write_text(
            f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{workload.content_type}"\n'
            + "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in workload.headers)
        )
        cmd += ["-s", str(script)]
    done = subprocess.run([*cmd, url + workload.path], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}")
    return done.stdout


def settle(url: str, timeout: float = 60) -> None:
    """Wait until the server has nothing in flight: wrk abandons its last requests when a run ends, and
    the next row must not start behind them. Servers without /metrics just get a short pause."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            in_flight = Scrape.of(url, timeout=5).value("vqvae_requests_in_flight")
        except (httpx.HTTPError, MissingSeries):  # a comparison server: no /metrics of ours
            time.sleep(0.5)
            return
        if in_flight <= 1:  # the /metrics request itself
            return
        time.sleep(0.1)


def run_rows(server: str, url: str, workloads: list[Workload], concurrencies: tuple[int, ...],
             seconds: float) -> list[LoadRow]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in workloads:
            wrk(url, workload, 4, 1, Path(tmp))  # warm-up, not recorded
            for concurrency in concurrencies:
                settle(url)
                rps, p50, p99, errors = parse_wrk(wrk(url, workload, concurrency, seconds, Path(tmp)))
                rows.append(LoadRow(server, workload.name, concurrency, workload.images, rps, p50, p99, errors))
                print(f"  {server:<14} {workload.name:<12} c={concurrency:<3} {rps:9.0f} req/s  "
                      f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}", flush=True)
    return rows
