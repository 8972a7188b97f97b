"""A real service process on 127.0.0.1 and real inputs for it."""

from __future__ import annotations

import io
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.server import SHIPPED_MODELS, ServerProcess, service_process

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
StartServer = Callable[..., ServerProcess]


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Factory: start_server(**settings) -> a ServerProcess of `python -m service` with VQVAE_<NAME>
    settings; every server is stopped at the end."""
    servers: list[ServerProcess] = []

    def start(**settings: object) -> ServerProcess:
        server = service_process(tmp_path, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ready server on the shipped models, shared by a module's tests."""
    live = service_process(tmp_path_factory.mktemp("server"))
    live.wait("/readyz")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


LOADING = "loading and warming up models"


def wait_until_loaded(url: str, timeout: float = 60) -> httpx.Response:
    """Poll /readyz until loading has ended (ready or not) -> that response; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (ready := httpx.get(url + "/readyz", timeout=5)).json().get("error", {}).get("message") == LOADING:
        assert time.monotonic() < deadline, f"models still loading after {timeout} s"
        time.sleep(0.05)
    return ready


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


def stalled_while(server: ServerProcess, send: Callable[[], T], after_s: float = 0.3, stop_s: float = 4.0) -> T:
    """`send()` in a thread; `after_s` into it the server is stopped (SIGSTOP: a starved CPU, a
    paused VM) for `stop_s`, then continued -> send's response. Work under way when the server stops
    overruns any deadline shorter than the pause: the real way to reach a 504 now that a request's
    deadline grows with its expected work."""
    result: list[T] = []
    sender = threading.Thread(target=lambda: result.append(send()))
    sender.start()
    time.sleep(after_s)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(stop_s)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    sender.join(120)
    assert result, "no answer"
    return result[0]


def restamp(model_dir: Path, version: str) -> None:
    """Give a model directory another version, as a re-export would: the version in model.json and in
    every ONNX file's metadata, and the files' new sha256 in model.json (the checks on load all pass)."""
    import hashlib
    import json

    import onnx

    manifest = json.loads((model_dir / "model.json").read_text())
    graphs = [*manifest["files"].values(), *([manifest["prior"]] if manifest.get("prior") else [])]
    for spec in graphs:
        path = model_dir / spec["path"]
        model = onnx.load(str(path))
        for prop in model.metadata_props:
            if prop.key == "vqvae.version":
                prop.value = version
        onnx.save(model, str(path))
        spec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["version"] = version
    (model_dir / "model.json").write_text(json.dumps(manifest, indent=2))


def rest_codes(server: ServerProcess, pngs: list[bytes], model: str = "mnist") -> np.ndarray:
    """The codes /v1/models/{model}/encode gives for these PNGs: what the v2 and gRPC paths must equal."""
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    return np.array(httpx.post(f"{server.url}/v1/models/{model}/encode", files=files, timeout=60).json()["codes"])
