"""Bad input, table-driven, against one real server: every case gets its status and error code,
no response carries a stack trace or a server path, and the server is still ready afterwards."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from datasources.idx_files import load_split
from harness.multipart import Part, multipart_body
from harness.server import ServerProcess
from tests.conftest import shared_data_dir
from tests.service.conftest import StartServer, image_bytes, png_bytes

DIGIT = load_split("mnist", "test", shared_data_dir())[0][0]  # a real 28×28 digit (honours VQVAE_DATA_DIR)
PNG = png_bytes(DIGIT)
JPEG = image_bytes(DIGIT, "JPEG", quality=90)
GRID = [[5] * 7 for _ in range(7)]


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels, with no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    return image_bytes(Image.fromarray(DIGIT).convert("CMYK"), "JPEG", quality=95)


def palette_png_with_transparency() -> bytes:
    image = Image.fromarray(DIGIT).convert("P")
    return image_bytes(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.fromarray(DIGIT), Image.fromarray(255 - DIGIT)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes(Image.fromarray(np.rot90(DIGIT).copy()), "JPEG", quality=95, exif=exif)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><circle cx="14" cy="14" r="9"/></svg>'


def multipart_raw(parts: list[Part]) -> dict[str, Any]:
    body, content_type = multipart_body(parts)
    return {"content": body, "headers": {"content-type": content_type}}


def truncated(request: dict[str, Any], cut: int) -> dict[str, Any]:
    """The body without its last `cut` bytes: the closing boundary and the file's tail."""
    return {**request, "content": request["content"][:-cut]}


def raw(data: bytes, kind: str = "image/png") -> dict[str, Any]:
    return {"content": data, "headers": {"content-type": kind}}


def files(*items: tuple[str, bytes], field_name: str = "images") -> dict[str, Any]:
    return {"files": [(field_name, (name, data, "application/octet-stream")) for name, data in items]}


def codes(value: Any) -> dict[str, Any]:
    return {"json": {"codes": value}}


def json_text(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    request: Callable[[], dict[str, Any]]
    status: int
    code: str | None = None  # error code slug; None for a 2xx
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- encode: bodies and media types
    Case("empty-body", "POST", "/encode", lambda: {}, 400, "empty_body"),
    Case("empty-raw-png", "POST", "/encode", lambda: raw(b""), 400, "empty_body"),
    Case("zero-byte-file", "POST", "/encode", lambda: files(("empty.png", b"")), 400, "undecodable_image"),
    Case("text-as-image", "POST", "/encode", lambda: raw(b"just some text", "image/png"), 400, "undecodable_image"),
    Case("html-as-image", "POST", "/encode", lambda: raw(b"<html><body>hi</body></html>"), 400, "undecodable_image"),
    Case("json-as-image", "POST", "/encode", lambda: raw(b'{"images": []}', "image/jpeg"), 400, "undecodable_image"),
    Case("truncated-png", "POST", "/encode", lambda: raw(PNG[: len(PNG) // 2]), 400, "undecodable_image"),
    Case("truncated-jpeg", "POST", "/encode", lambda: raw(JPEG[: len(JPEG) // 2], "image/jpeg"), 400,
         "undecodable_image"),
    Case("png-header-only", "POST", "/encode", lambda: raw(PNG[:40]), 400, "undecodable_image"),
    Case("bomb-100000x100000", "POST", "/encode", lambda: raw(bomb_png(100000, 100000)), 413, "image_too_large"),
    Case("one-pixel", "POST", "/encode", lambda: raw(png_bytes(np.zeros((1, 1), np.uint8))), 422, "unsupported_size"),
    Case("odd-size", "POST", "/encode", lambda: raw(png_bytes(np.zeros((30, 28), np.uint8))), 422, "unsupported_size"),
    Case("over-pixel-limit", "POST", "/encode", lambda: raw(png_bytes(np.zeros((2048, 2048), np.uint8))), 413,
         "image_too_large"),
    Case("sixteen-bit-grey", "POST", "/encode",
         lambda: raw(image_bytes(Image.fromarray(DIGIT.astype(np.uint16) * 257), "PNG")), 200),
    Case("cmyk-jpeg", "POST", "/encode", lambda: raw(cmyk_jpeg(), "image/jpeg"), 200),
    Case("palette-transparency", "POST", "/encode", lambda: raw(palette_png_with_transparency()), 200),
    Case("animated-gif", "POST", "/encode", lambda: raw(animated_gif(), "image/gif"), 200),
    Case("exif-rotated-jpeg", "POST", "/encode", lambda: raw(exif_rotated_jpeg(), "image/jpeg"), 200),
    Case("svg-raw", "POST", "/encode", lambda: raw(SVG, "image/svg+xml"), 415, "unsupported_media_type"),
    Case("svg-in-multipart", "POST", "/encode", lambda: files(("x.svg", SVG)), 400, "undecodable_image"),
    Case("wrong-content-type", "POST", "/encode", lambda: raw(PNG, "application/xml"), 415, "unsupported_media_type"),
    Case("text-plain", "POST", "/encode", lambda: raw(b"hello", "text/plain"), 415, "unsupported_media_type"),
    Case("form-urlencoded", "POST", "/encode", lambda: {"data": {"images": "x"}}, 415, "unsupported_media_type"),
    Case("multipart-no-file", "POST", "/encode", lambda: multipart_raw([Part("note", b"hi")]), 400,
         "missing_images"),
    Case("multipart-300-files", "POST", "/encode", lambda: files(*[(f"{i}.png", PNG) for i in range(300)]), 413,
         "too_many_images"),
    Case("multipart-wrong-field", "POST", "/encode", lambda: files(("a.png", PNG), field_name="image"), 400,
         "missing_images"),
    Case("multipart-broken", "POST", "/encode",
         lambda: {"content": b"--x\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=x"}},
         400, None),
    Case("multipart-truncated", "POST", "/encode",
         lambda: truncated(multipart_raw([Part("images", PNG, "a.png")]), 30), 400, "bad_request"),
    Case("multipart-boundary-300-chars", "POST", "/encode",
         lambda: {"content": b"--" + b"b" * 300 + b"\r\n", "headers": {"content-type":
                  "multipart/form-data; boundary=" + "b" * 300}}, 400, "bad_request"),
    Case("multipart-part-without-name", "POST", "/encode",
         lambda: {"content": b'--x\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n' + PNG
                  + b"\r\n--x--\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}},
         400, "bad_request"),
    Case("format-blank", "POST", "/encode?format=", lambda: raw(PNG), 422, "invalid_parameter"),
    Case("mixed-sizes", "POST", "/encode",
         lambda: files(("a.png", PNG), ("b.png", png_bytes(np.zeros((32, 32), np.uint8)))), 422, "unsupported_size"),
    Case("json-invalid-base64", "POST", "/encode", lambda: {"json": {"images": ["not base64!!"]}}, 400,
         "invalid_base64"),
    Case("json-images-not-list", "POST", "/encode", lambda: {"json": {"images": "abc"}}, 400, "bad_request"),
    Case("json-images-empty", "POST", "/encode", lambda: {"json": {"images": []}}, 400, "missing_images"),
    Case("json-image-not-string", "POST", "/encode", lambda: {"json": {"images": [1]}}, 400, "bad_request"),
    Case("json-syntax", "POST", "/encode", lambda: json_text('{"images": ['), 400, "invalid_json"),
    Case("resize-bogus", "POST", "/encode?resize=huge", lambda: raw(PNG), 422, "invalid_parameter"),
    # -- decode: codes
    Case("decode-not-object", "POST", "/decode", lambda: {"json": [1, 2, 3]}, 400, "bad_request"),
    Case("decode-no-codes", "POST", "/decode", lambda: {"json": {"grid": GRID}}, 400, "bad_request"),
    Case("decode-nan", "POST", "/decode", lambda: json_text('{"codes": [[NaN, 1], [2, 3]]}'), 400, "invalid_json"),
    Case("decode-infinity", "POST", "/decode", lambda: json_text('{"codes": [[Infinity]]}'), 400, "invalid_json"),
    Case("decode-strings", "POST", "/decode", lambda: codes([["1", "2"], ["3", "4"]]), 422, "invalid_codes"),
    Case("decode-floats", "POST", "/decode", lambda: codes([[1.0, 2.5], [3, 4]]), 422, "invalid_codes"),
    Case("decode-negative", "POST", "/decode", lambda: codes([[1, -1], [3, 4]]), 422, "invalid_codes"),
    Case("decode-too-large-code", "POST", "/decode", lambda: codes([[1, 512], [3, 4]]), 422, "invalid_codes"),
    Case("decode-booleans", "POST", "/decode", lambda: codes([[True, False], [1, 2]]), 422, "invalid_codes"),
    Case("decode-null", "POST", "/decode", lambda: codes([[None, 1], [1, 2]]), 422, "invalid_codes"),
    Case("decode-too-deep", "POST", "/decode", lambda: codes([[[[[1]]]]]), 400, "invalid_json"),
    # As deep as a residual model's list of grids ([N][k][h][w]): the single-stage model names the place.
    Case("decode-a-stage-axis-for-one-stage", "POST", "/decode", lambda: codes([[[[1]]]]), 422, "invalid_codes"),
    Case("decode-ragged", "POST", "/decode", lambda: codes([[1, 2, 3], [4, 5]]), 422, "invalid_codes"),
    Case("decode-empty-grid", "POST", "/decode", lambda: codes([]), 422, "invalid_codes"),
    Case("decode-empty-row", "POST", "/decode", lambda: codes([[]]), 422, "invalid_codes"),
    Case("decode-scalar", "POST", "/decode", lambda: codes(7), 422, "invalid_codes"),
    Case("decode-mixed-grid-sizes", "POST", "/decode", lambda: codes([GRID, [[1, 2], [3, 4]]]), 422, "invalid_codes"),
    Case("decode-grid-over-pixel-limit", "POST", "/decode", lambda: codes([[0] * 510] * 510), 413, "image_too_large"),
    Case("decode-too-many-grids", "POST", "/decode", lambda: codes([[[1]]] * 257), 413, "too_many_images"),
    Case("decode-wrong-content-type", "POST", "/decode", lambda: raw(b'{"codes": [[1]]}', "text/plain"), 415,
         "unsupported_media_type"),
    Case("decode-empty-body", "POST", "/decode", lambda: json_text(""), 400, "empty_body"),
    # -- routing, methods, limits
    Case("unknown-model-encode", "POST", "/v1/models/cifar/encode", lambda: raw(PNG), 404, "model_not_found"),
    Case("unknown-model-decode", "POST", "/v1/models/cifar/decode", lambda: codes(GRID), 404, "model_not_found"),
    Case("unknown-model-info", "GET", "/v1/models/cifar", dict, 404, "model_not_found"),
    Case("unknown-path", "GET", "/nope", dict, 404, "not_found"),
    Case("get-encode", "GET", "/encode", dict, 405, "method_not_allowed"),
    Case("delete-decode", "DELETE", "/decode", dict, 405, "method_not_allowed"),
    Case("body-over-limit", "POST", "/encode", lambda: raw(b"\0" * (8 * 1024 * 1024 + 1)), 413, "payload_too_large"),
    Case("long-url", "GET", "/v1/models/" + "m" * 8000, dict, 404, "model_not_found"),
    Case("long-header", "GET", "/livez", dict, 431, "headers_too_large", headers={"x-long": "v" * 60000}),
    Case("100-kb-header", "POST", "/encode", lambda: raw(PNG), 431, "headers_too_large",
         headers={"x-long": "v" * 100_000}),
    Case("headers-at-the-limit", "GET", "/livez", dict, 200, headers={"x-long": "v" * 15000}),
    Case("many-small-headers", "GET", "/livez", dict, 431, "headers_too_large",
         headers={f"x-h{i}": "v" * 100 for i in range(200)}),
    Case("valid-control", "POST", "/encode", lambda: raw(PNG), 200),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(client: httpx.Client, case: Case) -> None:
    request = case.request()
    request["headers"] = {**request.get("headers", {}), **case.headers}
    response = client.request(case.method, case.path, **request)
    assert response.status_code == case.status, response.text[:300]
    assert response.status_code < 500
    if case.code is not None or response.status_code >= 400:
        error = response.json()["error"]
        assert case.code is None or error["code"] == case.code, error
        assert error["message"] and len(error["message"]) < 1000
    for leak in ("Traceback", "/work/", "site-packages", ".py\""):
        assert leak not in response.text


def test_chunked_body_over_the_limit_is_cut_off(server: ServerProcess) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(129):  # 129 × 64 KiB = 8 MiB + 64 KiB, sent without a Content-Length
            yield b"\0" * 65536

    response = httpx.post(server.url + "/encode", content=chunks(), headers={"content-type": "image/png"}, timeout=30)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_lying_content_length_is_a_client_error(server: ServerProcess) -> None:
    body = b'{"codes": [[1, 2], [3, 4]]}' * 1000
    head = b"POST /decode HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + body)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:200]


def test_a_huge_claimed_content_length_is_refused_before_reading(server: ServerProcess) -> None:
    head = b"POST /encode HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 999999999999\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + b"\x89PNG")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_still_ready_after_every_case(start_server: StartServer) -> None:
    """On a server of its own (so no test order matters): every case in turn, then still ready,
    still running, and nothing unexpected in its log."""
    server = start_server()
    server.wait("/readyz")
    with server.client() as client:
        statuses = []
        for case in CASES:
            request = case.request()
            request["headers"] = {**request.get("headers", {}), **case.headers}
            statuses.append(client.request(case.method, case.path, **request).status_code)
        assert statuses == [case.status for case in CASES]
        assert client.get("/readyz").status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log and "unexpected error" not in server.log
