"""The colour model served like the others: a Kodak photo's codes and decoded PNG equal what the ONNX
files compute, JSON / packed / entropy streams, sizes that are multiples of 4, grey inputs, RGB out."""

from __future__ import annotations

import io

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from harness.server import SHIPPED_MODELS
from tests.conftest import shared_data_dir
from tests.service.conftest import png_bytes

MODEL = "tiny-imagenet"


def kodak(name: str = "kodim23") -> bytes:
    return (shared_data_dir() / "kodak" / f"{name}.png").read_bytes()


def onnx(graph: str, feed: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(SHIPPED_MODELS / MODEL / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: feed})[0]
    return result


def test_a_kodak_photo_gives_the_onnx_files_codes_and_pixels(client: httpx.Client) -> None:
    photo = np.asarray(Image.open(io.BytesIO(kodak())).convert("RGB"))  # (512, 768, 3)
    response = client.post(f"/v1/models/{MODEL}/encode", content=kodak(), headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.json()["grid"] == [128, 192]
    codes = np.array(response.json()["codes"])
    x = photo.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)  # (1, 3, 512, 768)
    assert np.array_equal(codes, onnx("quantizer", onnx("encoder", x)))
    png = client.post(f"/v1/models/{MODEL}/decode", json={"codes": codes[0].tolist()}, headers={"accept": "image/png"})
    served = np.asarray(Image.open(io.BytesIO(png.content)))
    expected = np.clip(np.rint(onnx("decoder", codes) * 255), 0, 255).astype(np.uint8)[0].transpose(1, 2, 0)
    assert served.shape == (512, 768, 3) and np.array_equal(served, expected)
    psnr = 10 * np.log10(255**2 / np.mean((served.astype(float) - photo) ** 2))
    assert psnr > 24, psnr  # a working colour codec, not noise (the shipped model: about 27 dB on this photo)


@pytest.mark.parametrize("fmt", ["packed", "entropy"])
def test_streams_round_trip_at_native_and_other_sizes(client: httpx.Client, fmt: str) -> None:
    rng = np.random.default_rng(0)
    for size in ((64, 64), (36, 52)):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        as_json = client.post(f"/v1/models/{MODEL}/encode", content=png_bytes(image),
                              headers={"content-type": "image/png"}).json()["codes"]
        stream = client.post(f"/v1/models/{MODEL}/encode?format={fmt}", content=png_bytes(image),
                             headers={"content-type": "image/png"})
        assert stream.status_code == 200
        back = client.post(f"/v1/models/{MODEL}/decode", content=stream.content,
                           headers={"content-type": "application/octet-stream", "accept": "image/png"})
        decoded = Image.open(io.BytesIO(back.content))
        assert decoded.mode == "RGB" and decoded.size == (size[1], size[0])
        again = client.post(f"/v1/models/{MODEL}/decode", json={"codes": as_json[0]}, headers={"accept": "image/png"})
        assert back.content == again.content  # the stream carried exactly the JSON's codes


def test_grey_images_are_encoded_as_rgb_and_odd_sizes_are_refused(client: httpx.Client, digits: np.ndarray) -> None:
    grey = np.kron(digits[0], np.ones((2, 2), np.uint8))  # 56×56 grey
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    codes = [client.post(f"/v1/models/{MODEL}/encode", content=png_bytes(a),
                         headers={"content-type": "image/png"}).json()["codes"] for a in (grey, rgb)]
    assert codes[0] == codes[1]
    odd = client.post(f"/v1/models/{MODEL}/encode", content=png_bytes(rgb[:55]), headers={"content-type": "image/png"})
    assert odd.status_code == 422 and odd.json()["error"]["code"] == "unsupported_size"
    native = client.post(f"/v1/models/{MODEL}/encode?resize=native", content=kodak(),
                         headers={"content-type": "image/png"})
    assert native.json()["grid"] == [16, 16]
