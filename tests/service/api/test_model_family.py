"""The shipped 8× and residual models through every route of a real server: /encode and /decode at
every stage count, equal to the PyTorch model decoding fewer stages; streams (packed at ⌈log2 K⌉
bits, entropy per stage); v2 tensors [N, k, h, w] with the `stages` parameter; bad `stages` values
a 422 naming it; sizes that are multiples of 8 and 16 (and ?resize=native for the others)."""

from __future__ import annotations

import base64
import io
import math

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from contract.manifest import load_manifest
from harness.server import ServerProcess
from runtime.model_runtime import SHIPPED_MODELS
from tests.conftest import shared_data_dir
from training.checkpoint import load_checkpoint, model_from_checkpoint

RVQ, F8 = "tiny-imagenet-rvq", "tiny-imagenet-f8"
OCTET = {"content-type": "application/octet-stream"}


def kodak_crop(height: int, width: int) -> bytes:
    with Image.open(shared_data_dir() / "kodak" / "kodim23.png") as image:
        pixels = np.asarray(image.convert("RGB"))[:height, :width]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_pixels(data: str | bytes) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def encode(client: httpx.Client, model: str, image: bytes, query: str = "") -> httpx.Response:
    return client.post(f"/v1/models/{model}/encode{query}", content=image, headers={"content-type": "image/png"})


def test_the_models_describe_their_quantizer(client: httpx.Client) -> None:
    rvq, f8 = (client.get(f"/v1/models/{name}").json() for name in (RVQ, F8))
    assert rvq["downsample"] == 4 and rvq["quantizer"] == {"kind": "rvq", "codebook_size": 512, "stages": 4}
    assert f8["downsample"] == 8 and f8["grid"] == {"height": 8, "width": 8}
    assert f8["quantizer"]["kind"] in ("fsq", "vq") and f8["quantizer"]["codebook_size"] >= 15000


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_fewer_stages_over_http_equal_pytorch_decoding_fewer_stages(client: httpx.Client, stages: int) -> None:
    image = kodak_crop(64, 96)
    encoded = encode(client, RVQ, image, f"?stages={stages}").json()
    codes = np.array(encoded["codes"])
    assert encoded["stages"] == stages and codes.shape == (1, stages, 16, 24) and encoded["grid"] == [16, 24]
    decoded = png_pixels(client.post(f"/v1/models/{RVQ}/decode", json={"codes": encoded["codes"]}).json()["images"][0])
    ckpt = load_checkpoint(SHIPPED_MODELS / RVQ / "checkpoint.pt")
    model = model_from_checkpoint(ckpt)
    pixels = torch.tensor(np.asarray(Image.open(io.BytesIO(image))), dtype=torch.float32).div(255)
    with torch.no_grad():
        indices = model.encode_to_indices(pixels.permute(2, 0, 1)[None])  # (1, S, 16, 24)
        assert np.array_equal(indices[:, :stages].numpy(), codes)  # the same first k stages
        expected = model.decode_from_indices(indices[:, :stages])[0].permute(1, 2, 0).numpy()
    assert np.abs(decoded.astype(np.int16) - np.rint(expected * 255).astype(np.int16)).max() <= 1


def test_more_stages_give_a_better_picture(client: httpx.Client) -> None:
    image = kodak_crop(128, 128)
    original = np.asarray(Image.open(io.BytesIO(image)), np.float64)
    errors = []
    for stages in range(1, 5):
        grids = encode(client, RVQ, image, f"?stages={stages}").json()["codes"]
        decoded = png_pixels(client.post(f"/v1/models/{RVQ}/decode", json={"codes": grids}).json()["images"][0])
        errors.append(float(((decoded - original) ** 2).mean()))
    assert errors == sorted(errors, reverse=True), errors


@pytest.mark.parametrize("query", ["?stages=0", "?stages=5", "?stages=-1", "?stages=two", "?stages="])
def test_bad_stage_counts_are_422_naming_stages(client: httpx.Client, query: str) -> None:
    response = encode(client, RVQ, kodak_crop(64, 64), query)
    assert response.status_code == 422 and "stages" in response.json()["error"]["message"]


def test_decode_takes_any_stage_count_and_refuses_more_or_none(client: httpx.Client) -> None:
    grids = encode(client, RVQ, kodak_crop(64, 64)).json()["codes"][0]  # (4, 16, 16)
    for k in (1, 4):
        assert client.post(f"/v1/models/{RVQ}/decode", json={"codes": grids[:k]}).status_code == 200
    too_many = client.post(f"/v1/models/{RVQ}/decode", json={"codes": [*grids, grids[0]]})
    flat = client.post(f"/v1/models/{RVQ}/decode", json={"codes": grids[0]})
    for response in (too_many, flat):
        assert response.status_code == 422 and "stages" in response.json()["error"]["message"]


@pytest.mark.parametrize("fmt", ["packed", "entropy"])
@pytest.mark.parametrize("stages", [1, 4])
def test_streams_carry_the_stages_they_hold(client: httpx.Client, fmt: str, stages: int) -> None:
    image = kodak_crop(64, 64)
    stream = encode(client, RVQ, image, f"?format={fmt}&stages={stages}").content
    as_json = encode(client, RVQ, image, f"?stages={stages}").json()["codes"]
    if fmt == "packed":
        assert len(stream) >= math.ceil(stages * 16 * 16 * 9 / 8)
    from_stream = client.post(f"/v1/models/{RVQ}/decode", content=stream, headers=OCTET).json()["images"]
    assert from_stream == client.post(f"/v1/models/{RVQ}/decode", json={"codes": as_json}).json()["images"]


def test_the_large_codebook_packs_at_its_bit_width_and_is_entropy_coded(client: httpx.Client) -> None:
    k = load_manifest(SHIPPED_MODELS / F8).codebook_size
    image = kodak_crop(64, 64)
    packed = encode(client, F8, image, "?format=packed").content
    entropy = encode(client, F8, image, "?format=entropy").content
    codes = encode(client, F8, image).json()["codes"]
    assert np.array(codes).shape == (1, 8, 8) and int(np.max(codes)) < k
    assert len(packed) - 64 * math.ceil(math.log2(k)) // 8 < 40  # the header and checksum on top
    for stream in (packed, entropy):
        back = client.post(f"/v1/models/{F8}/decode", content=stream, headers=OCTET)
        assert back.json()["images"] == client.post(f"/v1/models/{F8}/decode", json={"codes": codes}).json()["images"]


@pytest.mark.parametrize(("height", "width", "status"), [(64, 128, 200), (72, 96, 200), (68, 64, 422)])
def test_sizes_must_be_multiples_of_eight_or_resized(client: httpx.Client, height: int, width: int,
                                                     status: int) -> None:
    image = kodak_crop(height, width)
    response = encode(client, F8, image)
    assert response.status_code == status
    if status == 200:
        assert np.array(response.json()["codes"]).shape == (1, height // 8, width // 8)
    else:
        assert "multiples of 8" in response.json()["error"]["message"]
        assert np.array(encode(client, F8, image, "?resize=native").json()["codes"]).shape == (1, 8, 8)


def test_v2_tensors_have_a_stage_axis_and_take_the_stages_parameter(client: httpx.Client) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(kodak_crop(64, 64))))[None]  # (1, 64, 64, 3)
    request = {"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "UINT8",
                           "data": pixels.reshape(-1).tolist()}], "parameters": {"stages": 2}}
    out = client.post(f"/v2/models/{RVQ}-encode/infer", json=request).json()["outputs"][0]
    assert out["shape"] == [1, 2, 16, 16]
    codes = {"inputs": [{"name": "codes", "shape": out["shape"], "datatype": "INT64", "data": out["data"]}],
             "outputs": [{"name": "pixels"}]}
    assert client.post(f"/v2/models/{RVQ}-decode/infer", json=codes).json()["outputs"][0]["shape"] == [1, 64, 64, 3]
    meta = client.get(f"/v2/models/{RVQ}-decode").json()
    assert meta["inputs"][0]["shape"] == [-1, -1, -1, -1]
    bad = client.post(f"/v2/models/{RVQ}-encode/infer", json={**request, "parameters": {"stages": 9}})
    assert bad.status_code == 422 and "stages" in bad.json()["error"]


def test_grpc_takes_the_stages_parameter_too(server: ServerProcess) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(kodak_crop(64, 64))))[None]  # (1, 64, 64, 3)
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    with triton.InferenceServerClient(server.grpc_target) as c:
        codes = c.infer(f"{RVQ}-encode", [tensor], parameters={"stages": 3}).as_numpy("codes")
        assert codes.shape == (1, 3, 16, 16)
        every = c.infer(f"{RVQ}-encode", [tensor]).as_numpy("codes")  # (1, 4, 16, 16): all stages by default
        assert every.shape == (1, 4, 16, 16) and np.array_equal(every[:, :3], codes)
        with pytest.raises(InferenceServerException) as caught:
            c.infer(f"{RVQ}-encode", [tensor], parameters={"stages": 5})
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "stages" in str(caught.value)
        with pytest.raises(InferenceServerException) as caught:
            c.infer(f"{RVQ}-encode", [tensor], parameters={"stages": "two"})
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "stages" in str(caught.value)


def test_the_8x_colour_model_samples_by_class_and_codes_photos_with_its_prior(client: httpx.Client) -> None:
    prior = client.get(f"/v1/models/{F8}").json()["prior"]
    assert prior["classes"] == 200 and len(prior["class_names"]) == 200
    name = prior["class_names"][3]
    drawn = client.post(f"/v1/models/{F8}/sample", json={"count": 2, "class": name, "seed": 7})
    assert drawn.status_code == 200, drawn.text
    body = drawn.json()
    codes = np.array(body["codes"])
    assert codes.shape == (2, 8, 8) and codes.min() >= 0 and codes.max() < 15_360
    assert [png_pixels(image).shape for image in body["images"]] == [(64, 64, 3)] * 2
    again = client.post(f"/v1/models/{F8}/sample", json={"count": 2, "class": 3, "seed": 7}).json()
    assert again["codes"] == body["codes"]  # by name or by index, the same draw for a seed

    photo = kodak_crop(64, 64)
    stream = encode(client, F8, photo, "?format=prior")
    assert stream.status_code == 200, stream.text
    plain = encode(client, F8, photo).json()
    decoded = client.post(f"/v1/models/{F8}/decode", content=stream.content, headers=OCTET)
    from_codes = client.post(f"/v1/models/{F8}/decode", json={"codes": plain["codes"]}).json()["images"]
    assert decoded.status_code == 200 and decoded.json()["images"] == from_codes  # lossless
    larger = encode(client, F8, kodak_crop(64, 128), "?format=prior")
    assert larger.status_code == 422 and "8×8 grids only" in larger.json()["error"]["message"]
