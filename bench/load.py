"""HTTP load on loopback with wrk: servers as subprocesses, one wrk run per row.

wrk (Debian package `wrk`) is a C load generator: it costs the 2-core machine far less CPU than a
Python client would, so more of the machine measures the server. One wrk thread, N connections.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def multipart_body(pngs: list[bytes], boundary: str = "bench-boundary") -> tuple[bytes, str]:
    """PNGs as a multipart/form-data body in the field `images`, encoded once -> (body, content type).
    Built ahead of a run: the load generator shares the 2 cores with the server."""
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{i}.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n" for i, png in enumerate(pngs))
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_LOGS = Path(tempfile.gettempdir()) / "vqvae-bench-logs"


@contextlib.contextmanager
def running(cmd: list[str], port: int, env: dict[str, str], ready_path: str) -> Iterator[str]:
    """Start a server process, wait for `ready_path` to answer 200, yield its base URL, stop it.

    The server's output goes to SERVER_LOGS/<port>.log (a pipe nobody reads would fill up and
    stall the server on a long run); `server_log(url)` reads it back."""
    SERVER_LOGS.mkdir(exist_ok=True)
    log_path = SERVER_LOGS / f"{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd} exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(url + ready_path, timeout=2).status == 200:  # noqa: S310
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} not ready")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(30)


def server_log(url: str) -> str:
    """What the server started by `running` for this URL has written so far."""
    path = SERVER_LOGS / f"{url.rsplit(':', 1)[1]}.log"
    return path.read_text() if path.exists() else ""


def ours(models_dir: Path, batching: str, port: int,
         extra_env: dict[str, str] | None = None) -> contextlib.AbstractContextManager[str]:
    env = {"VQVAE_MODELS_DIR": str(models_dir), "VQVAE_BATCHING": batching, "VQVAE_LOG_LEVEL": "warning",
           **(extra_env or {})}
    return running([sys.executable, "-m", "service", "--port", str(port)], port, env, "/readyz")


def comparison(kind: str, port: int, checkpoint: Path, workers: int = 1) -> contextlib.AbstractContextManager[str]:
    cmd = [sys.executable, "-m", "bench.servers", kind, "--port", str(port), "--checkpoint", str(checkpoint),
           "--workers", str(workers)]
    return running(cmd, port, {}, "/hello" if kind == "hello" else "/readyz")


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
            text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()  # noqa: S310
        except OSError:
            time.sleep(0.5)
            return
        in_flight = next((float(line.split()[-1]) for line in text.splitlines()
                          if line.startswith("vqvae_requests_in_flight ")), 0.0)
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
