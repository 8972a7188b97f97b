"""Hostile requests to the codec routes, /sample and the API key (issue 27), on real servers.

- codec routes: zero-sized images and grids, empty grids, streams naming zero sizes, JSON nested
  at any depth: each a 4xx with its error code (they held on main; kept so they keep holding);
- /sample: a body that is not JSON is 400 (the README's promise), a body sent a byte at a time
  gets 408 after VQVAE_BODY_TIMEOUT_S;
- API key: VQVAE_AUTH_EXEMPT=probes exempts the v2 health routes KServe probes, the scheme is
  case-insensitive (the key is not: no prefix, suffix or case tricks), and a key no client could
  send (empty, blank, padded, non-ASCII) stops start-up with a message naming the variable.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from dataclasses import dataclass

import httpx
import pytest

from contract.streams import FORMAT_VERSION, MAGIC, _varint, seal
from harness.server import ServerProcess
from tests.service.conftest import StartServer

KEY = "k3y-For-Hostile-Tests"
SAMPLE = "/v1/models/mnist/sample"


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming width×height, with an empty image stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0,
                                                                     0, 0, 0, 0)


def packed_stream(height: int, width: int, count: int) -> bytes:
    """A packed stream's header for the shipped mnist model, with the sizes given and no payload."""
    sizes = b"".join(_varint(v) for v in (512, height, width, count))
    return seal(MAGIC + bytes([FORMAT_VERSION, 1, 5]) + b"mnist" + bytes([5]) + b"2.1.0" + sizes)


def deep(depth: int, key: str = "codes", inner: str = "1") -> bytes:
    return f'{{"{key}": '.encode() + b"[" * depth + inner.encode() + b"]" * depth + b"}"


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    content: bytes
    content_type: str
    status: int
    code: str


CODEC_CASES = [
    *[Case(f"png-{w}x{h}", "/encode", png_header(w, h), "image/png", 400, "undecodable_image")
      for w, h in ((0, 28), (28, 0), (0, 0))],
    Case("png-0x28-resized", "/encode?resize=native", png_header(0, 28), "image/png", 400, "undecodable_image"),
    Case("bmp-0x28", "/encode", bmp_header(0, 28), "image/bmp", 400, "undecodable_image"),
    Case("bmp-28x0", "/encode", bmp_header(28, 0), "image/bmp", 400, "undecodable_image"),
    *[Case(f"stream-{h}x{w}x{n}", "/decode", packed_stream(h, w, n), "application/octet-stream", 422, "invalid_stream")
      for h, w, n in ((0, 7, 1), (7, 0, 1), (7, 7, 0))],
    *[Case(f"grids-{i}", "/decode", json.dumps({"codes": grids}).encode(), "application/json", 422, "invalid_codes")
      for i, grids in enumerate(([[[]]], [[[]], [[]]], [[], []], [[[1]], []]))],
    *[Case(f"decode-depth-{d}", "/decode", deep(d), "application/json", 400, "invalid_json")
      for d in (5, 900, 1000, 100_000)],
    *[Case(f"encode-depth-{d}", "/encode", deep(d, "images", ""), "application/json", 400, "invalid_json")
      for d in (5, 900, 1000, 100_000)],
    Case("sample-not-json-bytes", SAMPLE, b"\xff{", "application/json", 400, "invalid_json"),
    Case("sample-not-json-text", SAMPLE, b"count=2", "application/json", 400, "invalid_json"),
    Case("sample-not-json-truncated", SAMPLE, b'{"count": ', "application/json", 400, "invalid_json"),
    *[Case(f"sample-depth-{d}", SAMPLE, b"[" * d + b"]" * d, "application/json", 400, "invalid_json")
      for d in (5, 1000, 100_000)],
]


@pytest.mark.parametrize("case", CODEC_CASES, ids=[c.id for c in CODEC_CASES])
def test_hostile_codec_request(client: httpx.Client, case: Case) -> None:
    response = client.post(case.path, content=case.content, headers={"content-type": case.content_type})
    assert response.status_code == case.status, response.text[:300]
    assert response.json()["error"]["code"] == case.code


def test_sample_body_sent_a_byte_at_a_time_gets_408(start_server: StartServer) -> None:
    server = start_server(body_timeout_s=1)
    server.wait("/readyz")
    body = b'{"count": 1, "seed": 1}' + b" " * 40
    head = (f"POST {SAMPLE} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        s.settimeout(0.3)
        reply = b""
        for byte in body:  # one byte every 0.3 s: the whole body would take 19 s
            try:
                s.sendall(bytes([byte]))
                reply = s.recv(65536)
                break
            except TimeoutError:
                continue
            except OSError:  # the server answered and closed while we were still sending
                break
        s.settimeout(10)
        try:  # the rest of the answer, until the server closes (headers and body may come apart)
            while chunk := s.recv(65536):
                reply += chunk
        except OSError:  # reset after answering: what came first is in `reply`
            pass
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b'"code":"body_timeout"' in reply and time.monotonic() - started < 10


AUTH_HEADERS = [  # (Authorization, status) for GET /v2/models/mnist-encode
    (f"Bearer {KEY}", 200),
    (f"bearer {KEY}", 200),
    (f"BEARER {KEY}", 200),
    (f"bEaReR {KEY}", 200),
    (f"Bearer   {KEY}", 200),  # 1*SP
    (None, 401),
    (KEY, 401),
    (f"Bearer{KEY}", 401),
    (f"Bearer {KEY[:-1]}", 401),
    (f"Bearer {KEY}x", 401),
    (f"Bearer {KEY.lower()}", 401),
    (f"Bearer {KEY} {KEY}", 401),
    (f"Basic {KEY}", 401),
    (f"Token {KEY}", 401),
    ("Bearer", 401),
]


def test_api_key_scheme_case_and_the_probes_kserve_uses(start_server: StartServer) -> None:
    server = start_server(api_key=KEY, auth_exempt="probes")
    server.wait("/v2/health/ready")  # without a key: KServe's readiness probe
    for path in ("/v2/health/live", "/v2/health/ready", "/livez", "/readyz"):
        assert httpx.get(server.url + path).status_code == 200, path
    for path in ("/v2", "/v2/models/mnist-encode", "/v2/models/mnist-encode/ready", "/v2/health/live/",
                 "/v2/health/livez", "/v2/health", "/metrics"):
        assert httpx.get(server.url + path).status_code == 401, path
    for authorization, status in AUTH_HEADERS:
        headers = {"authorization": authorization} if authorization is not None else {}
        response = httpx.get(server.url + "/v2/models/mnist-encode", headers=headers)
        assert response.status_code == status, (authorization, response.text[:200])


@pytest.mark.parametrize("key, problem", [
    ("", "set but empty"),
    ("   ", "set but empty"),
    (" " + KEY, "without leading or trailing spaces"),
    ("cl\u00e9", "printable ASCII"),
    ("tab\tkey", "printable ASCII"),
])
def test_a_key_no_client_could_send_stops_start_up(start_server: StartServer, key: str, problem: str) -> None:
    server = start_server(api_key=key)
    assert server.process.wait(60) == 2
    line = next((line for line in server.log.splitlines() if line.startswith("configuration error:")), "")
    assert line.startswith("configuration error: VQVAE_API_KEY: ") and problem in line, server.log[-2000:]
    assert "Traceback" not in server.log


def test_still_ready_after_every_case(server: ServerProcess, client: httpx.Client) -> None:
    for case in CODEC_CASES:
        assert client.post(case.path, content=case.content, headers={"content-type": case.content_type}
                           ).status_code == case.status
    assert client.get("/readyz").status_code == 200
    assert "Traceback" not in server.log and "unexpected error" not in server.log
