"""Triton's model repository extension over HTTP and gRPC with the official clients: the index, unload
and load, a new version replacing the old, a model that fails its checks left out with its reason
while the old version serves on, the API key, and a reload under load that loses no request."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from harness.server import ServerProcess
from tests.service.conftest import StartServer, png_bytes, restamp

KEY = {"authorization": "Bearer k3y"}


def explicit_server(start_server: StartServer, models: Path, **settings: object) -> ServerProcess:
    server = start_server(models_dir=models, model_control="explicit", api_key="k3y", **settings)
    server.wait("/readyz", headers={"Authorization": "Bearer k3y"})
    return server


def index(client: triton_grpc.InferenceServerClient) -> dict[str, tuple[str, str, str]]:
    entries = client.get_model_repository_index(headers=KEY).models
    return {e.name: (e.version, e.state, e.reason) for e in entries}


def encode_one(client: triton_grpc.InferenceServerClient, digit: np.ndarray) -> Any:
    pixels = triton_grpc.InferInput("pixels", [1, 28, 28, 1], "UINT8")
    pixels.set_data_from_numpy(digit[None, :, :, None].copy())
    return client.infer("mnist-encode", [pixels], headers=KEY)


def test_index_unload_load_new_versions_and_failures(start_server: StartServer, models_copy: Path,
                                                     digits: np.ndarray) -> None:
    server = explicit_server(start_server, models_copy)
    grpc = triton_grpc.InferenceServerClient(server.grpc_target)
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    assert index(grpc)["mnist-encode"] == ("2.1.0", "READY", "") and len(index(grpc)) == 10
    assert http.get_model_repository_index(headers=KEY) == [
        {"name": n, "version": v, "state": s, "reason": r} for n, (v, s, r) in index(grpc).items()]

    grpc.unload_model("mnist", headers=KEY)  # both v2 models of the directory go
    assert index(grpc)["mnist-decode"] == ("", "UNAVAILABLE", "unloaded by request")
    with pytest.raises(InferenceServerException) as caught:
        encode_one(grpc, digits[0])
    assert caught.value.status() == "StatusCode.UNAVAILABLE" and "is unloaded" in caught.value.message()
    assert not grpc.is_model_ready("mnist-encode", headers=KEY) and grpc.is_server_ready(headers=KEY)
    assert "mnist-encode" not in {e["name"] for e in http.get_inference_statistics(headers=KEY)["model_stats"]}
    ready = httpx.post(server.url + "/v2/repository/index", json={"ready": True}, headers=KEY, timeout=10).json()
    assert [e["name"] for e in ready] == [
        f"{name}-{op}" for name in ("fashion-mnist", "tiny-imagenet", "tiny-imagenet-f8", "tiny-imagenet-rvq")
        for op in ("encode", "decode")]

    http.load_model("mnist-decode", headers=KEY)  # either v2 name loads the directory
    before = encode_one(grpc, digits[0]).as_numpy("codes")

    restamp(models_copy / "mnist", "2.2.0")  # a new version of the same weights
    grpc.load_model("mnist-encode", headers=KEY)
    result = encode_one(grpc, digits[0])
    assert result.get_response().model_version == "2.2.0" and np.array_equal(result.as_numpy("codes"), before)
    assert grpc.get_model_metadata("mnist-decode", headers=KEY).versions == ["2.2.0"]
    stats = http.get_inference_statistics("mnist-encode", headers=KEY)["model_stats"][0]
    assert (stats["version"], stats["inference_count"]) == ("2.2.0", 1)  # a new version counts from zero

    with (models_copy / "mnist" / "decoder.onnx").open("ab") as f:  # damaged: fails its sha256 check
        f.write(b"\0")
    with pytest.raises(InferenceServerException) as caught:
        grpc.load_model("mnist", headers=KEY)
    assert caught.value.status() == "StatusCode.FAILED_PRECONDITION" and "sha256" in caught.value.message()
    assert "version 2.2.0 still serves" in caught.value.message()
    version, state, reason = index(grpc)["mnist-encode"]
    assert (version, state) == ("2.2.0", "READY") and "sha256" in reason  # the old version serves on
    assert encode_one(grpc, digits[0]).get_response().model_version == "2.2.0"
    with pytest.raises(InferenceServerException) as caught:
        http.load_model("mnist", headers=KEY)
    assert caught.value.status() == "422" and "sha256" in caught.value.message()

    (models_copy / "newcomer").mkdir()  # a directory added after start-up, without its files
    assert index(grpc)["newcomer-encode"][1:] == ("UNAVAILABLE", "not loaded: found in the models directory "
                                                                 "after start-up")
    with pytest.raises(InferenceServerException) as caught:
        grpc.load_model("newcomer", headers=KEY)
    assert caught.value.status() == "StatusCode.FAILED_PRECONDITION" and "model.json not found" in str(caught.value)
    assert index(grpc)["newcomer-decode"] == ("", "UNAVAILABLE", "load failed: model.json not found")
    assert httpx.get(server.url + "/readyz", headers={"Authorization": "Bearer k3y"}).status_code == 200
    grpc.close()
    http.close()


def test_repository_errors_and_the_api_key(start_server: StartServer, models_copy: Path) -> None:
    server = explicit_server(start_server, models_copy)
    grpc = triton_grpc.InferenceServerClient(server.grpc_target)
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    cases = [
        (lambda: grpc.load_model("nope", headers=KEY), "StatusCode.NOT_FOUND", "no model named 'nope'"),
        (lambda: grpc.unload_model("../models", headers=KEY), "StatusCode.NOT_FOUND", "no model named"),
        (lambda: http.unload_model("nope-decode", headers=KEY), "404", "no model named"),
        (lambda: http.load_model("mnist", config='{"max_batch_size": 8}', headers=KEY), "400", "not supported"),
        (lambda: grpc.load_model("mnist", files={"file:1/model.onnx": b"x"}, headers=KEY),
         "StatusCode.INVALID_ARGUMENT", "not supported"),
        (lambda: grpc.load_model("mnist"), "StatusCode.UNAUTHENTICATED", "API key"),
        (lambda: grpc.get_model_repository_index(), "StatusCode.UNAUTHENTICATED", "API key"),
        (lambda: http.unload_model("mnist"), "401", "API key"),
    ]
    for call, status, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == status and message in str(caught.value), (status, caught.value)
    assert index(grpc)["mnist-encode"][1] == "READY"  # none of that changed anything
    grpc.close()
    http.close()


def test_settings_refuse_explicit_control_with_workers_and_a_shared_port() -> None:
    from pydantic import ValidationError

    from service.config import Settings

    with pytest.raises(ValidationError, match="VQVAE_MODEL_CONTROL=explicit needs VQVAE_WORKERS=1"):
        Settings(model_control="explicit", workers=2)
    with pytest.raises(ValidationError, match="give gRPC its own port"):
        Settings(port=9000, grpc_port=9000)
    assert Settings(model_control="explicit").workers == 1 and Settings(port=9000, grpc_port=0).grpc_port == 0


@pytest.mark.slow
def test_a_reload_under_load_loses_nothing(start_server: StartServer, models_copy: Path, digits: np.ndarray) -> None:
    """gRPC and HTTP clients send without pause while the model is reloaded four times, between two
    versions: every request succeeds, and answers come from both versions."""
    second = models_copy.parent / "second"
    shutil.copytree(models_copy / "mnist", second)
    restamp(second, "2.2.0")
    first = models_copy.parent / "first"
    shutil.copytree(models_copy / "mnist", first)
    server = explicit_server(start_server, models_copy)
    stop, failures, versions, lock = threading.Event(), [], set(), threading.Lock()
    body = png_bytes(digits[0])

    def grpc_client() -> None:
        with triton_grpc.InferenceServerClient(server.grpc_target) as client:
            while not stop.is_set():
                try:
                    version = encode_one(client, digits[1]).get_response().model_version
                    with lock:
                        versions.add(version)
                except InferenceServerException as exc:
                    failures.append(str(exc))

    def http_client() -> None:
        with httpx.Client(timeout=30, headers={"Authorization": "Bearer k3y"}) as client:
            while not stop.is_set():
                response = client.post(server.url + "/encode", content=body, headers={"content-type": "image/png"})
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=target) for target in (grpc_client, grpc_client, http_client, http_client)]
    for thread in threads:
        thread.start()
    with triton_grpc.InferenceServerClient(server.grpc_target) as admin:
        for source in (second, first, second, first):
            time.sleep(0.3)
            shutil.rmtree(models_copy / "mnist")
            shutil.copytree(source, models_copy / "mnist")
            admin.load_model("mnist", headers=KEY)
        time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not failures, failures[:5]
    assert versions == {"2.1.0", "2.2.0"}, versions
    assert "Traceback" not in server.log
