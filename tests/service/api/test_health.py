"""Kubernetes semantics of /livez and /readyz on real processes, including the failure cases."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import png_bytes, wait_until_loaded


def test_liveness_aliases(client: httpx.Client) -> None:
    for path in ("/livez", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200 and response.json() == {"status": "alive"}


def test_ready_lists_every_model_on_its_provider(client: httpx.Client) -> None:
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert set(body["models"]) == {"mnist", "fashion-mnist", "tiny-imagenet", "tiny-imagenet-f8", "tiny-imagenet-rvq"}
    expected = {"state": "ready", "provider": "CPUExecutionProvider", "reason": ""}
    assert all(m == expected for m in body["models"].values())


@pytest.mark.slow
def test_not_ready_before_warm_up_then_ready(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(warmup_runs=4000)  # a long warm-up leaves a window to look into
    server.wait("/livez")
    early = httpx.get(server.url + "/readyz")
    assert early.status_code == 503
    assert early.json()["error"] == {"code": "not_ready", "message": "loading and warming up models"}
    busy = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "model_not_ready"
    assert server.wait("/readyz").json()["status"] == "ready"


def test_a_tampered_model_is_never_served(start_server, models_copy: Path, digits) -> None:  # type: ignore[no-untyped-def]
    decoder = models_copy / "fashion-mnist" / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[-100] ^= 0xFF
    decoder.write_bytes(bytes(data))
    server = start_server(models_dir=models_copy)
    server.wait("/livez")
    ready = wait_until_loaded(server.url)
    assert ready.status_code == 503
    assert ready.json()["error"]["message"].startswith("fashion-mnist: decoder.onnx has sha256")
    assert ready.json()["models"]["fashion-mnist"]["state"] == "failed"
    assert ready.json()["models"]["fashion-mnist"]["reason"].startswith("decoder.onnx has sha256")
    refused = httpx.post(server.url + "/v1/models/fashion-mnist/decode", json={"codes": [[0] * 7] * 7})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
    served = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert served.status_code == 200  # the intact model still works
    assert "model fashion-mnist not served" in server.log


def test_cuda_requested_without_a_gpu_is_not_ready(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(providers="cuda")
    server.wait("/livez")
    ready = wait_until_loaded(server.url)
    assert ready.status_code == 503
    message = ready.json()["error"]["message"]
    assert "VQVAE_PROVIDERS=cuda but onnxruntime runs CPUExecutionProvider" in message
    assert {m["state"] for m in ready.json()["models"].values()} == {"failed"}


def test_missing_models_directory_is_not_ready(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(models_dir=tmp_path / "nowhere")
    server.wait("/livez")
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 503 and "models directory 'nowhere' not found" in ready.json()["error"]["message"]


def test_exit_policy_fails_start_up_cleanly(start_server, models_copy: Path) -> None:  # type: ignore[no-untyped-def]
    (models_copy / "mnist" / "model.json").write_text("{ not json")
    server = start_server(models_dir=models_copy, on_model_error="exit")
    code = server.process.wait(60)
    assert code != 0
    first_error = next(line for line in server.log.splitlines() if line.startswith("ERROR"))
    assert "model mnist not served: model.json is not valid JSON" in first_error
    assert "Application startup failed" in server.log


def test_sigterm_flips_readiness_while_requests_still_finish(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(drain_seconds=2)
    server.wait("/readyz")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["message"] == "shutting down"
    during_drain = httpx.post(server.url + "/encode", content=png_bytes(digits[0]),
                              headers={"content-type": "image/png"})
    assert during_drain.status_code == 200
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully: exit status -15.
    assert server.process.wait(30) in (0, -signal.SIGTERM)
    assert 1.5 < time.monotonic() - started < 15
    assert "Finished server process" in server.log
