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


# -- the same table of requests through the fast path and through FastAPI's router -------------


def _digit() -> bytes:
    return png_bytes(np.full((28, 28), 9, np.uint8))


BOTH_WAYS = [  # (method, path, content, headers): good and bad, every codec route
    ("POST", "/encode", _digit(), PNG),
    ("POST", "/encode?format=entropy", _digit(), PNG),
    ("POST", "/encode?format=packed&resize=native", _digit(), PNG),
    ("POST", "/encode?format=", _digit(), PNG),
    ("POST", "/encode?format=bogus&resize=huge", _digit(), PNG),
    ("POST", "/encode?resize=", _digit(), PNG),
    ("POST", "/encode?other=ignored", _digit(), PNG),
    ("POST", "/encode", b"not an image", PNG),
    ("POST", "/encode", b"{}", {"content-type": "application/json"}),
    ("POST", "/encode", b"", {"content-type": "text/plain"}),
    ("POST", "/v1/models/fashion-mnist/encode?format=prior", _digit(), PNG),
    ("POST", "/v1/models/tiny-imagenet/encode?format=prior", _digit(), PNG),
    ("POST", "/v1/models/nope/encode", _digit(), PNG),
    ("POST", "/decode", b'{"codes": [[1, 2], [3, 4]]}', {"content-type": "application/json"}),
    ("POST", "/decode", b'{"codes": [[1, 2], [3, 999]]}', {"content-type": "application/json"}),
    ("POST", "/decode", b'{"codes": [[1]]}', {"content-type": "application/json", "accept": "image/png"}),
    ("POST", "/decode", b"VQ\x01", {"content-type": "application/octet-stream"}),
    ("POST", "/v1/models/tiny-imagenet/decode", b'{"codes": [[1]]}', {"content-type": "application/json"}),
    ("POST", "/v1/models/nope/decode", b'{"codes": [[1]]}', {"content-type": "application/json"}),
    ("GET", "/encode", b"", {}),
]


def test_a_table_of_requests_gets_the_same_answers_with_and_without_the_fast_path(start_server) -> None:  # type: ignore[no-untyped-def]
    servers = [start_server(fast_path=mode) for mode in ("on", "off")]
    answers = []
    for server in servers:
        server.wait("/readyz")
        with server.client() as client:
            before = Scrape.of(server.url)
            replies = [client.request(method, path, content=content, headers=headers)
                       for method, path, content, headers in BOTH_WAYS]
            after = Scrape.of(server.url)
        counted = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value - before.value_or(
                       0, "vqvae_requests_total", **s.labels)
                   for s in after.matching("vqvae_requests_total")}
        answers.append(([(r.status_code, r.headers.get("content-type"), r.content) for r in replies],
                        {key: n for key, n in counted.items() if n and key[0] != "/metrics"}))
    (fast, fast_metrics), (routed, routed_metrics) = answers
    for request, one, other in zip(BOTH_WAYS, fast, routed, strict=True):
        assert one == other, request[:2]
    assert fast_metrics == routed_metrics
    assert {status for status, _, _ in fast} >= {200, 400, 404, 405, 415, 422}
