"""Broken model files: a clear log line, then not ready (or a clean non-zero exit, per the setting);
a model that failed a check is never served, and the intact model keeps working."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import png_bytes, wait_until_loaded


def rewrite_manifest(folder: Path, edit: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    manifest = json.loads((folder / "model.json").read_text())
    edit(manifest)
    (folder / "model.json").write_text(json.dumps(manifest))


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing-onnx": (lambda m: (m / "encoder.onnx").unlink(), "encoder file encoder.onnx is missing"),
    "corrupted-onnx": (lambda m: corrupt(m / "quantizer.onnx"), "quantizer.onnx has sha256"),
    "missing-manifest": (lambda m: (m / "model.json").unlink(), "model.json not found"),
    "manifest-not-json": (lambda m: (m / "model.json").write_text("{ nope"), "model.json is not valid JSON"),
    "manifest-wrong-shape": (lambda m: rewrite_manifest(m, lambda d: d["grid"].update(height=8, width=8)),
                             "metadata disagrees with model.json"),
    # Both places model.json states K, so that only the ONNX metadata disagrees.
    "manifest-wrong-codebook": (lambda m: rewrite_manifest(m, lambda d: (d.update(codebook_size=1024),
                                                                         d["quantizer"].update(codebook_size=1024))),
                                "metadata disagrees with model.json"),
    "manifest-codebook-twice": (lambda m: rewrite_manifest(m, lambda d: d.update(codebook_size=1024)),
                                "quantizer.codebook_size 512 differs from codebook_size 1024"),
    "manifest-missing-field": (lambda m: rewrite_manifest(m, lambda d: d.pop("files")), "does not match the contract"),
    "corrupted-entropy-model": (lambda m: corrupt(m / "entropy.npz"), "entropy.npz has sha256"),
    "corrupted-prior": (lambda m: corrupt(m / "prior.onnx"), "prior.onnx has sha256"),
    "missing-prior": (lambda m: (m / "prior.onnx").unlink(), "prior file prior.onnx is missing"),
    "manifest-wrong-prior": (lambda m: rewrite_manifest(m, lambda d: d["prior"].update(
        classes=11, class_names=[str(i) for i in range(11)])), "prior.onnx metadata disagrees with model.json"),
    "manifest-prior-names": (lambda m: rewrite_manifest(m, lambda d: d["prior"].update(classes=11)),
                             "prior lists 10 class names for 11 classes"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_makes_the_service_not_ready_and_the_model_unserved(fault: str, start_server, models_copy: Path,
                                                                  digits) -> None:  # type: ignore[no-untyped-def]
    damage, reason = FAULTS[fault]
    damage(models_copy / "fashion-mnist")
    server = start_server(models_dir=models_copy)
    server.wait("/livez")
    ready = wait_until_loaded(server.url)
    assert ready.status_code == 503
    assert reason in ready.json()["error"]["message"]
    assert ready.json()["models"]["fashion-mnist"]["state"] == "failed"
    refused = httpx.post(server.url + "/v1/models/fashion-mnist/decode", json={"codes": [[0] * 7] * 7})
    assert refused.status_code == 503
    ok = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert ok.status_code == 200
    assert "model fashion-mnist not served: " in server.log and reason in server.log
    assert "fashion-mnist: fashion-mnist:" not in server.log + ready.text  # the name said once


@pytest.mark.parametrize("fault", ["corrupted-onnx", "manifest-wrong-shape"])
def test_exit_policy_stops_cleanly(fault: str, start_server, models_copy: Path) -> None:  # type: ignore[no-untyped-def]
    damage, reason = FAULTS[fault]
    damage(models_copy / "mnist")
    server = start_server(models_dir=models_copy, on_model_error="exit")
    assert server.process.wait(60) != 0
    assert reason in server.log
