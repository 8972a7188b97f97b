"""A server in a subprocess on 127.0.0.1: free port, wait until ready, its log, a clean stop.

    with service_process(log_dir, batching="off") as server:   # python -m service, VQVAE_* settings
        server.wait("/readyz")
        httpx.get(server.url + "/v1/models")
        tritonclient.grpc.InferenceServerClient(server.grpc_target)   # its gRPC port, free too

Output goes to a log file rather than a pipe (a pipe nobody reads fills up and stalls the server
on a long run); `server.log` reads it back for assertions and failure messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = ROOT / "models"


class ServerFailed(RuntimeError):
    """The server exited, or did not answer 200 in time; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str], log_path: Path, cwd: Path = ROOT,
                 grpc_port: int = 0) -> None:
        self.cmd, self.port, self.log_path, self.grpc_port = cmd, port, log_path, grpc_port
        self.url = f"http://127.0.0.1:{port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"  # host:port, as gRPC clients take it (0: no gRPC)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """With several workers: the worker processes (uvicorn's supervisor spawns them as children
        running multiprocessing's spawn_main); [] with one (the server runs in this process)."""
        return sorted(pid for pid in children(self.pid)
                      if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait(self, path: str = "/readyz", timeout: float = 120,
             headers: dict[str, str] | None = None) -> httpx.Response:
        """Poll `path` until it answers 200 and return that response; ServerFailed otherwise."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.cmd[-3:]} exited with {self.process.returncode}:\n{self.log[-4000:]}")
            try:
                response = httpx.get(self.url + path, timeout=2, headers=headers)
                if response.status_code == 200:
                    return response
                last = response.text[:300]
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)
        raise ServerFailed(f"{path} not 200 after {timeout} s (last: {last}):\n{self.log[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig`, wait up to `timeout` s, kill if still running; -> the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc: their parent's pid is field 4 of stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def service_env(**settings: object) -> dict[str, str]:
    """This environment without any VQVAE_* variable, then the shipped models and `settings` as VQVAE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VQVAE_")}
    env |= {"VQVAE_MODELS_DIR": str(SHIPPED_MODELS), "PYTHONUNBUFFERED": "1"}
    return env | {f"VQVAE_{k.upper()}": str(v) for k, v in settings.items()}


def service_process(log_dir: Path, root: Path = ROOT, **settings: object) -> ServerProcess:
    """`python -m service` on a free port with VQVAE_<NAME> settings (e.g. batching="off"), from the
    checkout at `root` (another commit's worktree, to measure before and after). Its gRPC port is a
    free one too, unless `grpc_port` is given (0: off): never the default 8001 another server may hold."""
    port = free_port()
    grpc_port = int(str(settings.pop("grpc_port", free_port())))
    cmd = [sys.executable, "-m", "service", "--port", str(port)]
    env = service_env(**{"models_dir": root / "models", "grpc_port": grpc_port, **settings}) | {"PYTHONPATH": str(root)}
    return ServerProcess(cmd, port, env, log_dir / f"service-{port}.log", cwd=root, grpc_port=grpc_port)
