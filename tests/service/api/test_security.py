"""API key, CORS and what responses reveal, on real servers."""

from __future__ import annotations

import httpx
import pytest

from service.api.middleware import exempt_prefixes
from tests.service.conftest import png_bytes

KEY = "s3cret-key-for-tests"


def test_api_key_guards_everything_by_default(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(api_key=KEY)
    bearer = {"authorization": f"Bearer {KEY}"}
    server.wait("/readyz", headers=bearer)  # the probes need the key too
    accepted = httpx.post(server.url + "/encode", content=png_bytes(digits[0]),
                          headers={"content-type": "image/png", **bearer})
    assert accepted.status_code == 200
    for path in ("/livez", "/readyz", "/metrics", "/docs", "/v1/models"):
        assert httpx.get(server.url + path).status_code == 401, path
    missing = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = httpx.post(server.url + "/decode", json={"codes": [[1]]}, headers={"authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401
    assert httpx.get(server.url + "/livez", headers={"authorization": KEY}).status_code == 401  # scheme required


def test_exempt_groups_only_when_configured(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(api_key=KEY, auth_exempt="probes,metrics")
    server.wait("/readyz")
    assert httpx.get(server.url + "/livez").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 200
    assert httpx.get(server.url + "/docs").status_code == 401
    assert httpx.post(server.url + "/encode", content=png_bytes(digits[0]),
                      headers={"content-type": "image/png"}).status_code == 401


def test_unknown_exempt_group_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown groups"):
        exempt_prefixes({"everything"})


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    preflight = client.options("/encode", headers={"origin": "https://evil.example",
                                                   "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/v1/models", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_exactly_the_configured_origins(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(cors_origins="https://app.example, https://other.example")
    server.wait("/readyz")
    request = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    ok = httpx.options(server.url + "/encode", headers={"origin": "https://app.example", **request})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    denied = httpx.options(server.url + "/encode", headers={"origin": "https://evil.example", **request})
    assert denied.headers.get("access-control-allow-origin") != "https://evil.example"


def test_responses_reveal_no_server_software(client: httpx.Client, digits) -> None:  # type: ignore[no-untyped-def]
    responses = [client.get("/livez"), client.get("/nope"),
                 client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"}),
                 client.post("/decode", json={"codes": "x"})]
    for response in responses:
        assert "server" not in response.headers and "x-powered-by" not in response.headers
        assert "uvicorn" not in response.text.lower() and "python" not in response.text.lower()
