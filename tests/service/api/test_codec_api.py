"""End to end on a real server: real digits encoded, decoded, and checked against the ONNX files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from contract.manifest import load_manifest
from tests.service.conftest import SHIPPED_MODELS, image_bytes, png_bytes
from training.metrics import psnr_from_mse


def onnx_codes(model: str, images: np.ndarray) -> np.ndarray:
    """Run the shipped ONNX files directly: uint8 (N, H, W) -> int64 codes (N, H/4, W/4)."""
    folder = SHIPPED_MODELS / model
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    quant = ort.InferenceSession(str(folder / "quantizer.onnx"), providers=["CPUExecutionProvider"])
    latent = enc.run(None, {"image": (images[:, None] / np.float32(255)).astype(np.float32)})[0]
    return quant.run(None, {"latent": latent})[0]


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def multipart(images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"digit{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images)]


def test_encode_then_decode_real_digits_matches_onnx_and_the_model_card(client: httpx.Client,
                                                                         mnist_test) -> None:  # type: ignore[no-untyped-def]
    images = mnist_test[0][:1000]
    codes, recon = [], []
    for start in range(0, len(images), 250):
        batch = images[start : start + 250]
        enc = client.post("/encode", files=multipart(batch))
        assert enc.status_code == 200, enc.text
        codes.extend(enc.json()["codes"])
        dec = client.post("/decode", json={"codes": enc.json()["codes"]})
        assert dec.status_code == 200, dec.text
        recon.extend(decode_png(base64.b64decode(b)) for b in dec.json()["images"])
    assert np.array_equal(np.array(codes), onnx_codes("mnist", images))
    recon_u8 = np.stack(recon)
    assert recon_u8.shape == images.shape and recon_u8.dtype == np.uint8
    # The card's PSNR is over all 10000 test digits on float outputs; the first 1000 as 8-bit PNGs
    # must agree to within rounding and sampling (a broken pipeline is off by many dB).
    card = load_manifest(SHIPPED_MODELS / "mnist").metrics
    served = psnr_from_mse(float(np.mean((recon_u8 / 255.0 - images / 255.0) ** 2)))
    assert abs(served - card["psnr_dataset"]) < 0.5, (served, card["psnr_dataset"])


@pytest.mark.slow
def test_full_test_set_psnr_equals_the_model_card(client: httpx.Client, mnist_test) -> None:  # type: ignore[no-untyped-def]
    images = mnist_test[0]
    recon = []
    for start in range(0, len(images), 256):
        batch = images[start : start + 256]
        codes = onnx_codes("mnist", batch).tolist()
        dec = client.post("/decode", json={"codes": codes})
        recon.extend(decode_png(base64.b64decode(b)) for b in dec.json()["images"])
    recon_u8 = np.stack(recon).astype(np.float64)
    per_image = np.mean((recon_u8 - images) ** 2, axis=(1, 2))
    served_8bit = float(np.mean(10 * np.log10(255.0**2 / np.maximum(per_image, 1e-10))))
    card = load_manifest(SHIPPED_MODELS / "mnist").metrics
    assert served_8bit == pytest.approx(card["psnr_8bit_mean"], abs=0.01)


def test_three_ways_to_send_images_give_the_same_codes(client: httpx.Client, digits: np.ndarray) -> None:
    many = client.post("/encode", files=multipart(digits[:3])).json()
    as_json = client.post("/encode", json={"images": [base64.b64encode(png_bytes(d)).decode() for d in digits[:3]]})
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(digits[1])).decode()
    as_data_url = client.post("/encode", json={"images": [data_url]}).json()
    raw = [client.post("/encode", content=png_bytes(d), headers={"content-type": "image/png"}).json()
           for d in digits[:3]]
    assert many["grid"] == [7, 7] and len(many["codes"]) == 3
    assert as_json.json()["codes"] == many["codes"]
    assert [r["codes"][0] for r in raw] == many["codes"]
    assert as_data_url["codes"][0] == many["codes"][1]
    assert many["model"] == "mnist" and many["codebook_size"] == 512 and many["version"]


def test_codes_keep_input_order(client: httpx.Client, digits: np.ndarray) -> None:
    forward = client.post("/encode", files=multipart(digits[:16])).json()["codes"]
    backward = client.post("/encode", files=multipart(digits[:16][::-1])).json()["codes"]
    assert backward == forward[::-1]
    assert len({json.dumps(c) for c in forward}) > 1  # different digits, different codes


def test_decode_png_or_json(client: httpx.Client, digits: np.ndarray) -> None:
    codes = client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"}).json()["codes"]
    png = client.post("/decode", json={"codes": codes[0]}, headers={"accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    as_json = client.post("/decode", json={"codes": codes[0]})
    assert as_json.headers["content-type"] == "application/json"
    assert base64.b64decode(as_json.json()["images"][0]) == png.content
    two = client.post("/decode", json={"codes": codes * 2}, headers={"accept": "image/png"})
    assert two.headers["content-type"] == "application/json" and len(two.json()["images"]) == 2
    image = decode_png(png.content)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert np.mean((image / 255.0 - digits[0] / 255.0) ** 2) < 0.02  # it is the digit, reconstructed


@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
def test_both_models_by_name(client: httpx.Client, model: str, data_dir: Path) -> None:
    from datasources.idx_files import load_split

    images = load_split(model, "test", data_dir)[0][:8]
    enc = client.post(f"/v1/models/{model}/encode", files=multipart(images))
    assert enc.status_code == 200 and enc.json()["model"] == model
    assert np.array_equal(np.array(enc.json()["codes"]), onnx_codes(model, images))
    dec = client.post(f"/v1/models/{model}/decode", json={"codes": enc.json()["codes"]})
    assert dec.status_code == 200 and dec.json()["model"] == model and len(dec.json()["images"]) == 8


def test_non_square_images_give_proportional_grids(client: httpx.Client, digits: np.ndarray) -> None:
    wide = np.concatenate([np.pad(digits[0], ((2, 2), (0, 0))), np.pad(digits[1], ((2, 2), (10, 10)))], axis=1)
    assert wide.shape == (32, 76)
    enc = client.post("/encode", content=png_bytes(wide), headers={"content-type": "image/png"})
    assert enc.status_code == 200 and enc.json()["grid"] == [8, 19]
    assert np.array_equal(np.array(enc.json()["codes"]), onnx_codes("mnist", wide[None]))
    dec = client.post("/decode", json={"codes": enc.json()["codes"][0]}, headers={"accept": "image/png"})
    assert decode_png(dec.content).shape == (32, 76)


def test_resize_native(client: httpx.Client, digits: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(digits[0]).resize((57, 61), Image.Resampling.BICUBIC))
    refused = client.post("/encode", content=png_bytes(big), headers={"content-type": "image/png"})
    assert refused.status_code == 422 and "resize" in refused.json()["error"]["message"]
    accepted = client.post("/encode?resize=native", content=png_bytes(big), headers={"content-type": "image/png"})
    assert accepted.status_code == 200 and accepted.json()["grid"] == [7, 7]
    # The resized picture decodes to the same digit (codes may differ: several codes draw alike).
    png = client.post("/decode", json={"codes": accepted.json()["codes"][0]}, headers={"accept": "image/png"})
    assert np.mean((decode_png(png.content) / 255.0 - digits[0] / 255.0) ** 2) < 0.02


@pytest.mark.parametrize("fmt, save", [("JPEG", {"quality": 95}), ("BMP", {}), ("GIF", {}),
                                       ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_formats(client: httpx.Client, digits: np.ndarray, fmt: str, save: dict) -> None:  # type: ignore[type-arg]
    data = image_bytes(digits[0], fmt, **save)
    response = client.post("/encode", files=[("images", (f"digit.{fmt.lower()}", data, "application/octet-stream"))])
    assert response.status_code == 200, response.text
    reference = client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"}).json()
    agreement = np.mean(np.array(response.json()["codes"]) == np.array(reference["codes"]))
    assert agreement > (0.7 if fmt == "JPEG" else 0.999)


def test_exif_orientation_is_applied(client: httpx.Client, digits: np.ndarray) -> None:
    rotated = Image.fromarray(np.rot90(digits[0], k=1).copy())  # pixels stored turned 90° anticlockwise...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with EXIF "rotate 90° clockwise to display": viewers show the upright digit
    data = image_bytes(rotated, "JPEG", quality=100, exif=exif)
    upright = client.post("/encode", content=image_bytes(digits[0], "JPEG", quality=100),
                          headers={"content-type": "image/jpeg"}).json()["codes"]
    served = client.post("/encode", content=data, headers={"content-type": "image/jpeg"}).json()["codes"]
    ignored = client.post("/encode", content=image_bytes(rotated, "JPEG", quality=100),
                          headers={"content-type": "image/jpeg"}).json()["codes"]
    assert np.mean(np.array(served) == np.array(upright)) > 0.9
    assert np.mean(np.array(ignored) == np.array(upright)) < 0.5  # the tag, not luck, made them equal


def test_alpha_is_composited_on_black_and_colour_made_grey(client: httpx.Client, digits: np.ndarray) -> None:
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere; the digit lives in the alpha channel
    rgba[..., 3] = digits[0]
    reference = client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"}).json()
    served = client.post("/encode", content=png_bytes(rgba), headers={"content-type": "image/png"}).json()
    assert served["codes"] == reference["codes"]
    rgb = np.repeat(digits[0][..., None], 3, axis=2)
    grey = client.post("/encode", content=png_bytes(rgb), headers={"content-type": "image/png"}).json()
    assert grey["codes"] == reference["codes"]


def test_sixteen_bit_grey_is_scaled_not_clipped(client: httpx.Client, digits: np.ndarray) -> None:
    wide = digits[0].astype(np.uint16) * 257  # the same picture in 16 bits
    data = image_bytes(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    reference = client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"}).json()
    served = client.post("/encode", content=data, headers={"content-type": "image/png"}).json()
    assert served["codes"] == reference["codes"]
