"""The Open Inference Protocol with the official client (tritonclient[http]) against a live server:
health, metadata, encode and decode equal to /encode and /decode, binary and JSON tensors, gzip, and
every error raised as InferenceServerException carrying our message."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from harness.server import ServerProcess
from tests.service.conftest import StartServer, png_bytes, rest_codes


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=120) as c:
        yield c


def images_input(pngs: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(pngs)], "BYTES")
    tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    return tensor


def codes_input(codes: np.ndarray, binary: bool = True, datatype: str = "INT64") -> triton.InferInput:
    tensor = triton.InferInput("codes", list(codes.shape), datatype)
    tensor.set_data_from_numpy(codes.astype(np.int64 if datatype == "INT64" else np.int32), binary_data=binary)
    return tensor


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "vqvae-codec" and "binary_tensor_data" in meta["extensions"]
    encode = client.get_model_metadata("mnist-encode")
    assert encode["versions"] == ["2.1.0"]
    assert {i["name"]: (i["datatype"], i["shape"]) for i in encode["inputs"]} == {
        "images": ("BYTES", [-1]), "pixels": ("UINT8", [-1, -1, -1, 1])}
    assert encode["outputs"] == [{"name": "codes", "datatype": "INT64", "shape": [-1, -1, -1]}]
    decode = client.get_model_metadata("fashion-mnist-decode", "2.1.0")
    assert [o["name"] for o in decode["outputs"]] == ["pixels", "images"]
    assert client.is_model_ready("mnist-encode") and client.is_model_ready("mnist-decode", "2.1.0")


@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
def test_encode_a_batch_of_pngs_equals_rest_encode(server: ServerProcess, client: triton.InferenceServerClient,
                                                   digits: np.ndarray, model: str) -> None:
    pngs = [png_bytes(d) for d in digits[:16]]
    codes = client.infer(f"{model}-encode", [images_input(pngs)]).as_numpy("codes")
    assert codes.dtype == np.int64 and codes.shape == (16, 7, 7)
    assert np.array_equal(codes, rest_codes(server, pngs, model))


def test_pixels_in_json_and_binary_equal_the_files(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    expected = client.infer("mnist-encode", [images_input([png_bytes(d) for d in digits[:8]])]).as_numpy("codes")
    for binary in (True, False):
        pixels = triton.InferInput("pixels", [8, 28, 28, 1], "UINT8")
        pixels.set_data_from_numpy(digits[:8, :, :, None].copy(), binary_data=binary)
        outputs = [triton.InferRequestedOutput("codes", binary_data=binary)]
        assert np.array_equal(client.infer("mnist-encode", [pixels], outputs=outputs).as_numpy("codes"), expected)


def test_decode_gives_the_pixels_and_pngs_of_rest_decode(server: ServerProcess, client: triton.InferenceServerClient,
                                                         digits: np.ndarray) -> None:
    codes = rest_codes(server, [png_bytes(d) for d in digits[:4]])
    result = client.infer("mnist-decode", [codes_input(codes)])
    pixels, pngs = result.as_numpy("pixels"), result.as_numpy("images")
    rest = httpx.post(server.url + "/decode", json={"codes": codes.tolist()}, timeout=60).json()["images"]
    assert pixels.shape == (4, 28, 28, 1) and pixels.dtype == np.uint8
    assert [bytes(p) for p in pngs] == [base64.b64decode(r) for r in rest]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(bytes(pngs[0])))), pixels[0, :, :, 0])
    only = client.infer("mnist-decode", [codes_input(codes, binary=False, datatype="INT32")],
                        outputs=[triton.InferRequestedOutput("pixels", binary_data=False)])
    assert np.array_equal(only.as_numpy("pixels"), pixels) and only.as_numpy("images") is None


def test_gzip_and_deflate_bodies_and_the_request_id(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    pngs = [png_bytes(d) for d in digits[:3]]
    plain = client.infer("mnist-encode", [images_input(pngs)], request_id="abc-123")
    assert plain.get_response()["id"] == "abc-123"
    for algorithm in ("gzip", "deflate"):
        squeezed = client.infer("mnist-encode", [images_input(pngs)], request_compression_algorithm=algorithm)
        assert np.array_equal(squeezed.as_numpy("codes"), plain.as_numpy("codes"))


def test_versioned_inference_and_a_json_client(server: ServerProcess, digits: np.ndarray) -> None:
    """A plain JSON client (no tritonclient): BYTES as base64, outputs in JSON but BYTES binary."""
    body = {"id": "j1", "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                                    "data": [base64.b64encode(png_bytes(digits[0])).decode()]}]}
    response = httpx.post(server.url + "/v2/models/mnist-encode/versions/2.1.0/infer", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    out = response.json()
    assert out["model_name"] == "mnist-encode" and out["model_version"] == "2.1.0" and out["id"] == "j1"
    assert out["outputs"][0]["shape"] == [1, 7, 7] and len(out["outputs"][0]["data"]) == 49


@pytest.mark.parametrize("call, status, message", [
    (lambda c, d: c.infer("mnist-decode", [codes_input(np.full((1, 7, 7), 600))]), 400, "codes must be in [0, 512)"),
    (lambda c, d: c.infer("nope-encode", [images_input([png_bytes(d[0])])]), 404, "no v2 model named 'nope-encode'"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])])], model_version="9"), 404, "no version"),
    (lambda c, d: c.get_model_metadata("mnist-encode", "9.9.9"), 404, "no version '9.9.9'"),
    (lambda c, d: c.infer("mnist-encode", [codes_input(np.zeros((1, 7, 7)))]), 400, "takes one input, images"),
    (lambda c, d: c.infer("mnist-decode", [codes_input(np.zeros((7, 7, 1, 1)))]), 400, "must be INT64"),
    (lambda c, d: c.infer("mnist-encode", [images_input([b"not an image"])]), 400, "not an image"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])])],
                          outputs=[triton.InferRequestedOutput("logits")]), 400, "asked for ['logits']"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(np.zeros((30, 30), np.uint8))])]), 422,
     "multiples of 4"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])] * 300)]), 413, "the limit is 256"),
])
def test_errors_reach_the_client_with_our_message(client: triton.InferenceServerClient, digits: np.ndarray,
                                                  call, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        call(client, digits)
    assert caught.value.status() == str(status) and message in caught.value.message(), caught.value


def test_malformed_bodies_are_400_in_the_v2_shape(server: ServerProcess) -> None:
    url = server.url + "/v2/models/mnist-decode/infer"
    cases = [b"{nope", json.dumps({"inputs": []}).encode(),
             json.dumps({"inputs": [{"name": "codes", "shape": [1, 7, 7], "datatype": "INT64",
                                     "parameters": {"binary_data_size": 392}}]}).encode(),
             json.dumps({"inputs": [{"name": "codes", "shape": [1, 7, 7], "datatype": "FP16", "data": [1]}]}).encode(),
             json.dumps({"inputs": [{"name": "codes", "shape": [2, 7, 7], "datatype": "INT64",
                                     "data": [1] * 49}]}).encode()]
    for body in cases:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == 400 and isinstance(response.json()["error"], str), response.text
    bomb = httpx.post(url, content=_gzip(b"{" + b" " * (20 << 20) + b"}"), timeout=30,
                      headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert bomb.status_code == 413 and "inflates past the limit" in bomb.json()["error"]


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def test_not_ready_and_limits_apply_as_for_rest(start_server: StartServer, digits: np.ndarray) -> None:
    server = start_server(warmup_runs=4000, api_key="k3y")  # a long warm-up: a window while not ready
    headers = {"Authorization": "Bearer k3y"}
    server.wait("/livez", headers=headers)
    with triton.InferenceServerClient(url=server.url.removeprefix("http://")) as c:
        assert not c.is_server_ready(headers=headers)
        with pytest.raises(InferenceServerException) as caught:
            c.infer("mnist-encode", [images_input([png_bytes(digits[0])])], headers=headers)
        assert caught.value.status() == "503"
        with pytest.raises(InferenceServerException) as caught:
            c.get_server_metadata()  # no key
        assert caught.value.status() == "401"
