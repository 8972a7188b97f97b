"""Code streams over HTTP: /encode?format=... decodes at /decode to the JSON path's images; bad and
foreign streams are refused."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.contract.test_streams import corruptions
from tests.service.conftest import png_bytes


@pytest.mark.parametrize("fmt", ["packed", "entropy"])
def test_http_round_trip(client: httpx.Client, digits: np.ndarray, fmt: str) -> None:
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits[:10])]
    as_json = client.post("/encode", files=files).json()
    stream = client.post(f"/encode?format={fmt}", files=files)
    assert stream.status_code == 200 and stream.headers["content-type"] == "application/octet-stream"
    from_stream = client.post("/decode", content=stream.content, headers={"content-type": "application/octet-stream"})
    from_json = client.post("/decode", json={"codes": as_json["codes"]})
    assert from_stream.status_code == 200 and from_stream.json()["images"] == from_json.json()["images"]
    one = client.post(f"/encode?format={fmt}", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    png = client.post("/decode", content=one.content,
                      headers={"content-type": "application/octet-stream", "accept": "image/png"})
    assert png.headers["content-type"] == "image/png"


def test_http_refuses_bad_and_foreign_streams(client: httpx.Client, digits: np.ndarray) -> None:
    stream = client.post("/encode?format=entropy", content=png_bytes(digits[0]),
                         headers={"content-type": "image/png"}).content
    octet = {"content-type": "application/octet-stream"}
    for bad, _ in corruptions(stream).values():
        response = client.post("/decode", content=bad, headers=octet)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]["code"] in ("invalid_stream", "empty_body")
    foreign = client.post("/v1/models/fashion-mnist/decode", content=stream, headers=octet)
    assert foreign.status_code == 422 and "made by model 'mnist'" in foreign.json()["error"]["message"]
    assert client.post("/encode?format=zip", content=png_bytes(digits[0]),
                       headers={"content-type": "image/png"}).status_code == 422
