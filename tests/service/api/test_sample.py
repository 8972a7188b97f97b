"""POST /v1/models/{name}/sample and ?format=prior on a real server with the shipped models: samples
are deterministic for a seed (also under concurrency) and decode like any grid; every bad request is
a clear 4xx; prior streams round-trip over HTTP and through the offline codec CLI; sampling keeps to
the memory budget and the deadline."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import png_bytes, stalled_while

SAMPLE = "/v1/models/mnist/sample"
STREAM = {"content-type": "application/octet-stream"}


def draw(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post(SAMPLE, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_samples_are_deterministic_for_a_seed_and_decode_like_any_grid(client: httpx.Client) -> None:
    first = draw(client, count=4, **{"class": 3}, seed=7)
    assert first == draw(client, count=4, **{"class": 3}, seed=7)
    assert first["codes"] != draw(client, count=4, **{"class": 3}, seed=8)["codes"]
    codes = np.array(first["codes"])
    assert codes.shape == (4, 7, 7) and codes.min() >= 0 and codes.max() < 512 and first["seed"] == 7
    decoded = client.post("/v1/models/mnist/decode", json={"codes": first["codes"]}).json()["images"]
    assert decoded == first["images"]  # the samples are exactly the decoder's images of the codes
    assert all(pixels(base64.b64decode(png)).shape == (28, 28) for png in first["images"])


def test_one_png_for_count_one_and_classes_by_name(client: httpx.Client) -> None:
    response = client.post(SAMPLE, json={"class": "7", "seed": 3}, headers={"accept": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "3"
    as_json = draw(client, **{"class": 7}, seed=3)
    assert response.content == base64.b64decode(as_json["images"][0])
    unseeded = draw(client, count=2)  # no class, no seed: a random seed that reproduces the draw
    assert draw(client, count=2, seed=unseeded["seed"])["codes"] == unseeded["codes"]
    greedy = [draw(client, **{"class": 1}, temperature=0, seed=s)["codes"] for s in (1, 2)]
    assert greedy[0] == greedy[1]


def test_the_model_says_what_it_can_sample(client: httpx.Client) -> None:
    prior = client.get("/v1/models/mnist").json()["prior"]
    assert prior["classes"] == 10 and prior["class_names"] == [str(d) for d in range(10)]
    assert prior["metrics"]["stream_bytes_per_image"] <= 35
    assert client.get("/v1/models/tiny-imagenet").json()["prior"] is None


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    (SAMPLE, {"class": 10}, 422, "unknown_class"),
    (SAMPLE, {"class": "eleven"}, 422, "unknown_class"),
    (SAMPLE, {"count": 0}, 422, "invalid_parameter"),
    (SAMPLE, {"count": 257}, 413, "too_many_images"),
    (SAMPLE, {"temperature": -1}, 422, "invalid_parameter"),
    (SAMPLE, {"temperature": "hot"}, 422, "invalid_parameter"),
    (SAMPLE, {"seed": -5}, 422, "invalid_parameter"),
    (SAMPLE, {"colour": "red"}, 422, "invalid_parameter"),
    ("/v1/models/tiny-imagenet/sample", {}, 404, "prior_not_available"),
    ("/v1/models/nope/sample", {}, 404, "model_not_found"),
])
def test_bad_sample_requests_are_clear_4xx(client: httpx.Client, path: str, body: dict[str, Any], status: int,
                                           code: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_body_that_is_not_json_is_a_4xx(client: httpx.Client) -> None:
    response = client.post(SAMPLE, content=b"\xff{", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and "error" in response.json()


def test_concurrent_samples_equal_sequential_ones(client: httpx.Client) -> None:
    alone = [draw(client, count=3, seed=s)["codes"] for s in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda s: draw(client, count=3, seed=s)["codes"], range(8)))
    assert together == alone


def test_prior_streams_round_trip_over_http(client: httpx.Client, digits: np.ndarray) -> None:
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits[:300])]
    prior = client.post("/encode?format=prior", files=files)
    entropy = client.post("/encode?format=entropy", files=files)
    codes = client.post("/encode", files=files).json()["codes"]
    assert prior.status_code == 200 and len(prior.content) < len(entropy.content)
    from_stream = client.post("/decode", content=prior.content, headers=STREAM).json()["images"]
    assert from_stream == client.post("/decode", json={"codes": codes}).json()["images"]
    other = client.post("/v1/models/fashion-mnist/decode", content=prior.content, headers=STREAM)
    assert other.status_code == 422 and other.json()["error"]["code"] == "invalid_stream"
    none = client.post("/v1/models/tiny-imagenet/encode?format=prior", files=files[:1])
    assert none.status_code == 422 and none.json()["error"]["code"] == "format_unavailable"
    big = client.post("/encode?format=prior", files=[("images", ("a.png", png_bytes(np.zeros((56, 56), np.uint8)),
                                                                 "image/png"))])
    assert big.status_code == 422 and big.json()["error"]["code"] == "unsupported_size"
    assert "7×7 grids only" in big.json()["error"]["message"]


@pytest.mark.slow
def test_sampling_keeps_to_the_memory_budget_and_the_deadline(start_server) -> None:  # type: ignore[no-untyped-def]
    tight = start_server(memory_budget_mb=16)  # 10.7 MiB for requests: 64 grids' walk alone needs 12.8 MB
    tight.wait()
    with tight.client() as client:
        over = client.post(SAMPLE, json={"count": 200})
        assert over.status_code == 413 and over.json()["error"]["code"] == "over_memory_budget"
        assert draw(client, count=2, seed=1)["codes"]  # a small draw still fits
    hurried = start_server(request_timeout_s=0.2)  # 256 grids: about 1.2 s expected, so a deadline of 2.6 s
    hurried.wait()
    with hurried.client() as client:
        late = stalled_while(hurried, lambda: client.post(SAMPLE, json={"count": 256}))  # the walk stalls 4 s
        assert late.status_code == 504 and late.json()["error"]["code"] == "deadline_exceeded"


@pytest.mark.parametrize(("body", "field"), [
    (b'{"guidance": -0.5}', "guidance"), (b'{"guidance": NaN}', "guidance"), (b'{"guidance": Infinity}', "guidance"),
    (b'{"top_p": 0}', "top_p"), (b'{"top_p": 1.5}', "top_p"), (b'{"top_p": NaN}', "top_p"),
    (b'{"top_k": 0}', "top_k"), (b'{"top_k": 513}', "top_k"), (b'{"top_k": 2.5}', "top_k"),
    (b'{"temperature": NaN}', "temperature"),
])
def test_bad_sampling_settings_are_422_naming_the_field(client: httpx.Client, body: bytes, field: str) -> None:
    response = client.post(SAMPLE, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and f"body.{field}" in error["message"]


def test_sampling_settings_change_the_draw_and_defaults_come_from_the_model(client: httpx.Client) -> None:
    info = client.get("/v1/models/mnist").json()["prior"]
    defaults = info["sampling"]
    explicit = draw(client, count=4, seed=3, **{"class": 5, **{k: defaults[k] for k in
                                                               ("temperature", "guidance", "top_k", "top_p")}})
    assert draw(client, count=4, seed=3, **{"class": 5})["codes"] == explicit["codes"]  # omitted = the defaults
    plain = draw(client, count=4, seed=3, **{"class": 5, "guidance": 0, "temperature": 1})
    guided = draw(client, count=4, seed=3, **{"class": 5, "guidance": 3, "temperature": 1})
    assert plain["codes"] != guided["codes"]
    narrow = draw(client, count=4, seed=3, **{"class": 5, "top_k": 1, "guidance": 0})
    assert narrow["codes"] == draw(client, count=4, seed=9, **{"class": 5, "temperature": 0, "guidance": 0})["codes"]
