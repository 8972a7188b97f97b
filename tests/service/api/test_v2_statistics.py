"""Triton's statistics extension, read with both official clients' get_inference_statistics(): every
route's work counts (REST /encode and /decode, v2 over HTTP and over gRPC), in Triton's schema, and
HTTP and gRPC report the same figures."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.service.conftest import StartServer, png_bytes

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def by_name(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in stats["model_stats"]}


def as_ints(value: Any) -> Any:
    """gRPC's JSON writes uint64 as strings and leaves zeros out; HTTP's are numbers: compare as ints."""
    if isinstance(value, dict):
        return {k: as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_ints(v) for v in value]
    return int(value) if isinstance(value, str) and value.isdigit() else value


def filled(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with every duration present (gRPC's JSON omits empty messages and zero counts)."""
    stats = entry.get("inference_stats", {})
    out = {**entry, "inference_stats": {k: {"count": stats.get(k, {}).get("count", 0),
                                            "ns": stats.get(k, {}).get("ns", 0)} for k in DURATIONS}}
    for key in ("last_inference", "inference_count", "execution_count"):
        out[key] = entry.get(key, 0)
    out["batch_stats"] = [{"batch_size": b["batch_size"], **{k: {"count": b.get(k, {}).get("count", 0),
                                                                 "ns": b.get(k, {}).get("ns", 0)}
                                                             for k in ("compute_input", "compute_infer",
                                                                       "compute_output")}}
                          for b in entry.get("batch_stats", [])]
    return as_ints(out)


def test_every_route_counts_in_the_statistics(start_server: StartServer, digits: np.ndarray) -> None:
    server = start_server(memory_budget_mb=16)
    server.wait("/readyz")
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(server.grpc_target)
    zero = by_name(http.get_inference_statistics())
    models = ("mnist", "fashion-mnist", "tiny-imagenet", "tiny-imagenet-f8", "tiny-imagenet-rvq")
    assert set(zero) == {f"{m}-{op}" for m in models for op in ("encode", "decode")}
    assert zero["mnist-encode"]["inference_count"] == 0 and zero["mnist-encode"]["batch_stats"] == []
    assert zero["mnist-encode"]["inference_stats"]["success"] == {"count": 0, "ns": 0}
    started_ms = time.time() * 1000

    assert httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"},
                      timeout=30).status_code == 200  # REST: 1 image
    grids = [np.arange(49).reshape(7, 7).tolist()] * 2
    assert httpx.post(server.url + "/decode", json={"codes": grids}, timeout=30).status_code == 200  # REST: 2 grids
    images = triton_http.InferInput("images", [3], "BYTES")  # v2 over HTTP: 3 images
    images.set_data_from_numpy(np.array([png_bytes(d) for d in digits[:3]], dtype=np.object_))
    http.infer("mnist-encode", [images])
    pixels = triton_grpc.InferInput("pixels", [4, 28, 28, 1], "UINT8")  # v2 over gRPC: 4 images
    pixels.set_data_from_numpy(digits[:4, :, :, None].copy())
    grpc.infer("mnist-encode", [pixels])
    photo = triton_grpc.InferInput("pixels", [1, 1024, 1024, 3], "UINT8")  # fails in the run step: 413
    photo.set_data_from_numpy(np.zeros((1, 1024, 1024, 3), np.uint8))
    with pytest.raises(InferenceServerException):
        grpc.infer("tiny-imagenet-encode", [photo])

    over_http = by_name(http.get_inference_statistics())
    encode, decode = over_http["mnist-encode"], over_http["mnist-decode"]
    assert encode["version"] == "2.1.0" and encode["inference_count"] == 1 + 3 + 4
    assert encode["inference_stats"]["success"]["count"] == 3 and encode["inference_stats"]["success"]["ns"] > 0
    assert 1 <= encode["execution_count"] <= 3 and encode["inference_stats"]["queue"]["count"] >= 3
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in encode["batch_stats"]) == 8
    assert all(b["compute_infer"]["ns"] > 0 for b in encode["batch_stats"])
    assert started_ms <= encode["last_inference"] <= time.time() * 1000
    assert decode["inference_count"] == 2 and decode["execution_count"] == 1
    failed = over_http["tiny-imagenet-encode"]["inference_stats"]
    assert failed["fail"]["count"] == 1 and failed["success"]["count"] == 0
    assert over_http["fashion-mnist-encode"]["inference_count"] == 0

    over_grpc = {name: filled(entry) for name, entry in
                 by_name(grpc.get_inference_statistics(as_json=True)).items()}
    assert over_grpc == {name: filled(entry) for name, entry in over_http.items()}  # one source, two protocols
    one = http.get_inference_statistics("mnist-decode", "2.1.0")["model_stats"]
    assert [(e["name"], e["version"], e["inference_count"]) for e in one] == [("mnist-decode", "2.1.0", 2)]
    assert filled(grpc.get_inference_statistics("mnist-decode", "2.1.0", as_json=True)["model_stats"][0]) == filled(
        one[0])
    for call in (lambda: http.get_inference_statistics("mnist-decode", "9.9"),
                 lambda: http.get_inference_statistics("nope-decode")):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == "404"
    metrics = httpx.get(server.url + "/metrics", timeout=10).text  # the same counters, for Prometheus
    assert 'vqvae_v2_inferences_total{model="mnist-encode",version="2.1.0"} 8.0' in metrics
    assert 'route="/inference.GRPCInferenceService/ModelInfer"' in metrics
    http.close()
    grpc.close()
