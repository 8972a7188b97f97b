"""The codec routes' fast path (service/api/fast_path.py) answers exactly as FastAPI's routing would:
same codes, same errors, same metric labels, and everything else still reaches FastAPI."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from harness.prom import Scrape
from harness.server import ServerProcess
from tests.service.conftest import png_bytes

PNG = {"content-type": "image/png"}


def test_both_spellings_of_encode_and_decode_give_the_same_answer(client: httpx.Client, digits: np.ndarray) -> None:
    body = png_bytes(digits[7])
    default = client.post("/encode", content=body, headers=PNG)
    named = client.post("/v1/models/mnist/encode", content=body, headers=PNG)
    assert default.status_code == named.status_code == 200
    assert default.json() == named.json() and np.array(default.json()["codes"]).shape == (1, 7, 7)
    grid = {"codes": default.json()["codes"][0]}
    images = [client.post(path, json=grid, headers={"accept": "image/png"}) for path in
              ("/decode", "/v1/models/mnist/decode")]
    assert [r.headers["content-type"] for r in images] == ["image/png"] * 2
    assert images[0].content == images[1].content and images[0].content.startswith(b"\x89PNG")


@pytest.mark.parametrize(("path", "problem"), [
    ("/encode?format=bogus", "query.format"),
    ("/encode?resize=huge", "query.resize"),
    ("/v1/models/mnist/encode?format=png", "query.format"),
])
def test_bad_query_parameters_are_422_invalid_parameter(client: httpx.Client, digits: np.ndarray, path: str,
                                                        problem: str) -> None:
    response = client.post(path, content=png_bytes(digits[0]), headers=PNG)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and problem in error["message"]


def test_other_methods_paths_and_models_still_get_fastapis_answers(client: httpx.Client, digits: np.ndarray) -> None:
    assert client.get("/encode").status_code == 405
    assert client.post("/v1/models//encode", content=png_bytes(digits[0]), headers=PNG).status_code == 404
    unknown = client.post("/v1/models/nope/encode", content=png_bytes(digits[0]), headers=PNG)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/encode", "/decode", "/v1/models/{name}/encode", "/v1/models/{name}/decode"} <= set(paths)


def test_metrics_are_labelled_by_route_template(server: ServerProcess, client: httpx.Client,
                                                digits: np.ndarray) -> None:
    before = Scrape.of(server.url)
    client.post("/v1/models/mnist/encode", content=png_bytes(digits[1]), headers=PNG)
    client.post("/v1/models/nope/decode", json={"codes": [[1]]})
    after = Scrape.of(server.url)
    for route, status in (("/v1/models/{name}/encode", "200"), ("/v1/models/{name}/decode", "404")):
        labels = dict(route=route, method="POST", status=status)
        assert after.value("vqvae_requests_total", **labels) == before.value_or(0, "vqvae_requests_total",
                                                                                **labels) + 1
    assert not after.matching("vqvae_requests_total", route="/v1/models/nope/decode")  # never the raw path
