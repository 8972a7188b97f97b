"""A real service process on 127.0.0.1 and real inputs for it."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = ROOT / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`python -m service` in a subprocess; its log is kept for assertions and failure reports."""

    def __init__(self, tmp: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"service-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VQVAE_")}
        env |= {"VQVAE_MODELS_DIR": str(SHIPPED_MODELS), "PYTHONUNBUFFERED": "1"}
        env |= {f"VQVAE_{k.upper()}": str(v) for k, v in settings.items()}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "service", "--port", str(self.port)], cwd=ROOT,
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait(self, path: str = "/livez", timeout: float = 60, headers: dict[str, str] | None = None) -> httpx.Response:
        """Poll `path` until it answers 200; fails with the server log otherwise."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"service exited with {self.process.returncode}:\n{self.log}")
            try:
                response = httpx.get(self.url + path, timeout=2, headers=headers)
                if response.status_code == 200:
                    return response
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)
        pytest.fail(f"{path} not 200 after {timeout} s (last: {last}):\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()
        return code


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: start_server(**settings) -> LiveServer; every server is stopped at the end."""
    servers: list[LiveServer] = []

    def start(**settings: object) -> LiveServer:
        server = LiveServer(tmp_path, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One ready server on the shipped models, shared by a module's tests."""
    live = LiveServer(tmp_path_factory.mktemp("server"))
    live.wait("/readyz")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture()
def models_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped models, safe to tamper with."""
    target = tmp_path / "models"
    shutil.copytree(SHIPPED_MODELS, target)
    return target


def png_bytes(pixels: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def image_bytes(pixels: np.ndarray | Image.Image, fmt: str, **save: object) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def digits(mnist_test: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The first 64 real MNIST test digits, uint8 (64, 28, 28)."""
    return mnist_test[0][:64]
