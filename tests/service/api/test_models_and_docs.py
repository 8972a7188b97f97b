"""Model listing, offline docs, OpenAPI, and the service's independence from torch and training/."""

from __future__ import annotations

import httpx

from contract.manifest import load_manifest
from tests.service.conftest import SHIPPED_MODELS


def test_models_list_and_detail_come_from_the_manifests(client: httpx.Client) -> None:
    listing = client.get("/v1/models").json()
    assert listing["default"] == "mnist"
    assert [m["name"] for m in listing["models"]] == ["fashion-mnist", "mnist", "tiny-imagenet", "tiny-imagenet-f8",
                                                      "tiny-imagenet-rvq"]
    for name, channels, side in (("mnist", 1, 28), ("fashion-mnist", 1, 28), ("tiny-imagenet", 3, 64)):
        info = client.get(f"/v1/models/{name}").json()
        manifest = load_manifest(SHIPPED_MODELS / name)
        assert info["state"] == "ready" and info["provider"] == "CPUExecutionProvider"
        assert info["version"] == manifest.version and info["codebook_size"] == manifest.codebook_size
        assert info["code_dim"] == manifest.code_dim and info["grid"] == {"height": side // 4, "width": side // 4}
        assert info["input"] == {"channels": channels, "height": side, "width": side, "scale": "pixel/255"}
        assert info["metrics"] == manifest.metrics


def test_docs_work_without_the_internet(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static/docs/{asset}" in page.text
        served = client.get(f"/static/docs/{asset}")
        assert served.status_code == 200 and len(served.content) > 10000
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "https://" not in redoc.text


def test_openapi_describes_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/encode", "/decode", "/v1/models", "/v1/models/{name}", "/v1/models/{name}/encode",
            "/v1/models/{name}/decode", "/livez", "/healthz", "/readyz"} <= paths
    encode_body = schema["paths"]["/encode"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/png"} <= set(encode_body)
    assert "413" in schema["paths"]["/encode"]["post"]["responses"]


def test_openapi_lists_every_output_format_the_server_accepts(client: httpx.Client) -> None:
    """The formats come from one table (contract/formats.py); the schema must offer exactly those,
    and each of them must really be accepted (a real request per format)."""
    from contract.formats import FORMATS

    schema = client.get("/openapi.json").json()
    for path in ("/encode", "/v1/models/{name}/encode"):
        params = {p["name"]: p for p in schema["paths"][path]["post"]["parameters"]}
        assert params["format"]["schema"]["enum"] == [f.name for f in FORMATS]
        assert all(f"`{f.name}`" in params["format"]["description"] for f in FORMATS)
    digit = client.post("/decode", json={"codes": [[1] * 7] * 7}, headers={"accept": "image/png"}).content
    for fmt in FORMATS:
        response = client.post(f"/encode?format={fmt.name}", content=digit, headers={"content-type": "image/png"})
        assert response.status_code == 200 and response.headers["content-type"] == fmt.media_type, fmt.name
