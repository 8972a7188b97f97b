"""Hostile v2 requests (issue 27), table-driven, against one real server: every case is answered 4xx
with the protocol's {"error": "<message>"} naming the problem (never 5xx), each class with several
payloads, plus a valid control per class; afterwards the server logged no traceback and is ready.

Classes: zero-sized dimensions; `parameters` that are not objects and flags that are not JSON
booleans; Inference-Header-Content-Length that is not ASCII digits; tensor data nested past the
shape's rank (at every depth, on either side of the JSON parser's recursion limit); bytes after the
last binary tensor; compressed bodies with junk after them, truncated, or in several gzip members.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from harness.server import ServerProcess

ENCODE, DECODE = "/v2/models/mnist-encode/infer", "/v2/models/mnist-decode/infer"
GRID = [1] * 49
JSON = {"content-type": "application/json"}


def body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def codes(shape: list[int], data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"name": "codes", "shape": shape, "datatype": "INT64", "data": GRID if data is None else data, **extra}


def pixels(shape: list[int], data: Any = None, **extra: Any) -> dict[str, Any]:
    count = int(np.prod(shape))
    return {"name": "pixels", "shape": shape, "datatype": "UINT8", "data": [0] * count if data is None else data,
            **extra}


def binary(head: dict[str, Any], blob: bytes, extra: bytes = b"") -> tuple[bytes, dict[str, Any]]:
    """JSON head then binary data, with the header length the binary extension needs."""
    text = json.dumps(head).encode()
    return text + blob + extra, {"content-type": "application/octet-stream",
                                 "inference-header-content-length": str(len(text))}


def binary_codes(shape: list[int], blob: bytes, extra: bytes = b"", **parameters: Any) -> tuple[bytes, dict[str, Any]]:
    spec = {"name": "codes", "shape": shape, "datatype": "INT64",
            "parameters": {"binary_data_size": len(blob), **parameters}}
    return binary({"inputs": [spec]}, blob, extra)


def nested(depth: int) -> bytes:
    """The codes' data, 49 ones, inside `depth` lists (3 is the shape's own rank)."""
    data = "[" * depth + ",".join(["1"] * 49) + "]" * depth
    return b'{"inputs": [{"name": "codes", "shape": [1, 7, 7], "datatype": "INT64", "data": ' + data.encode() + b"}]}"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


BLOB = np.ones((1, 7, 7), "<i8").tobytes()
OK = body([codes([1, 7, 7])])


@dataclass(frozen=True)
class Case:
    surface: str
    id: str
    path: str
    content: bytes
    status: int
    message: str = ""  # a part of the error message; "" for a 200
    headers: dict[str, Any] = field(default_factory=lambda: dict(JSON))

    @property
    def name(self) -> str:
        return f"{self.surface}-{self.id}"


def case(surface: str, id: str, path: str, request: bytes | tuple[bytes, dict[str, Any]], status: int,
         message: str = "", **headers: Any) -> Case:
    content, sent = request if isinstance(request, tuple) else (request, dict(JSON))
    return Case(surface, id, path, content, status, message, {**sent, **{k.replace("_", "-"): v
                                                                         for k, v in headers.items()}})


ZERO = "has a dimension of size 0"
EMPTY = "send at least one item"
NOT_OBJECT = "parameters must be a JSON object"
NOT_BOOL = "must be true or false"
HEADER = "Inference-Header-Content-Length"
DEEPER = "nested deeper than its shape"
NOT_JSON = "not valid JSON"

CASES = [
    # -- zero-sized dimensions: a 400 naming the shape, or "send at least one item" for an empty batch
    case("zero-dims", "pixels-height", ENCODE, body([pixels([1, 0, 28, 1])]), 400, ZERO),
    case("zero-dims", "pixels-width", ENCODE, body([pixels([1, 28, 0, 1])]), 400, ZERO),
    case("zero-dims", "pixels-both", ENCODE, body([pixels([3, 0, 0, 1])]), 400, ZERO),
    case("zero-dims", "pixels-channels", ENCODE, body([pixels([1, 28, 28, 0])]), 400, "must be UINT8"),
    case("zero-dims", "pixels-batch", ENCODE, body([pixels([0, 28, 28, 1])]), 400, EMPTY),
    case("zero-dims", "pixels-binary", ENCODE,
         binary({"inputs": [{"name": "pixels", "shape": [2, 28, 0, 1], "datatype": "UINT8",
                             "parameters": {"binary_data_size": 0}}]}, b""), 400, ZERO),
    case("zero-dims", "images-batch", ENCODE, body([{"name": "images", "shape": [0], "datatype": "BYTES",
                                                      "data": []}]), 400, EMPTY),
    case("zero-dims", "codes-height", DECODE, body([codes([1, 0, 7], [])]), 400, ZERO),
    case("zero-dims", "codes-width", DECODE, body([codes([1, 7, 0], [])]), 400, ZERO),
    case("zero-dims", "codes-batch", DECODE, body([codes([0, 7, 7], [])]), 400, EMPTY),
    case("zero-dims", "codes-binary-int32", DECODE,
         binary({"inputs": [{"name": "codes", "shape": [4, 0, 7], "datatype": "INT32",
                             "parameters": {"binary_data_size": 0}}]}, b""), 400, ZERO),
    case("zero-dims", "control", DECODE, OK, 200),
    # -- parameters: objects only (null is absent); flags JSON booleans only
    case("parameters", "top-list", DECODE, body([codes([1, 7, 7])], parameters=[1]), 400, NOT_OBJECT),
    case("parameters", "top-string", DECODE, body([codes([1, 7, 7])], parameters="binary"), 400, NOT_OBJECT),
    case("parameters", "top-number", ENCODE, body([pixels([1, 28, 28, 1])], parameters=7), 400, NOT_OBJECT),
    case("parameters", "input-list", DECODE, body([codes([1, 7, 7], parameters=[])]), 400, NOT_OBJECT),
    case("parameters", "input-true", DECODE, body([codes([1, 7, 7], parameters=True)]), 400, NOT_OBJECT),
    case("parameters", "output-int", DECODE, body([codes([1, 7, 7])], outputs=[{"name": "pixels", "parameters": 5}]),
         400, NOT_OBJECT),
    case("parameters", "output-list", DECODE,
         body([codes([1, 7, 7])], outputs=[{"name": "pixels", "parameters": ["binary_data"]}]), 400, NOT_OBJECT),
    case("parameters", "binary-data-string-false", DECODE,
         body([codes([1, 7, 7])], outputs=[{"name": "pixels", "parameters": {"binary_data": "false"}}]), 400,
         NOT_BOOL),
    case("parameters", "binary-data-number", DECODE,
         body([codes([1, 7, 7])], outputs=[{"name": "pixels", "parameters": {"binary_data": 0}}]), 400, NOT_BOOL),
    case("parameters", "binary-output-string-true", DECODE,
         body([codes([1, 7, 7])], parameters={"binary_data_output": "true"}), 400, NOT_BOOL),
    case("parameters", "binary-size-string", DECODE, binary_codes([1, 7, 7], BLOB, binary_data_size="392"), 400,
         "binary_data_size"),
    case("parameters", "binary-size-bool", DECODE, binary_codes([1, 7, 7], BLOB, binary_data_size=True), 400,
         "binary_data_size"),
    case("parameters", "binary-size-negative", DECODE, binary_codes([1, 7, 7], BLOB, binary_data_size=-8), 400,
         "binary_data_size"),
    case("parameters", "control-null", DECODE, body([codes([1, 7, 7], parameters=None)], parameters=None), 200),
    case("parameters", "control-false", DECODE,
         body([codes([1, 7, 7])], outputs=[{"name": "pixels", "parameters": {"binary_data": False}}]), 200),
    # -- Inference-Header-Content-Length: ASCII digits only, a count within the body
    case("header-length", "superscript-two", DECODE, OK, 400, HEADER, inference_header_content_length=b"\xb2"),
    case("header-length", "arabic-indic-digits", DECODE, OK, 400, HEADER,
         inference_header_content_length="\u0661\u0662".encode()),
    case("header-length", "5000-digits", DECODE, OK, 400, HEADER, inference_header_content_length="9" * 5000),
    case("header-length", "negative", DECODE, OK, 400, HEADER, inference_header_content_length="-1"),
    case("header-length", "hex", DECODE, OK, 400, HEADER, inference_header_content_length="0x10"),
    case("header-length", "past-the-body", DECODE, OK, 400, HEADER, inference_header_content_length=str(len(OK) + 1)),
    case("header-length", "control", DECODE, OK, 200, inference_header_content_length=str(len(OK))),
    # -- nesting: a 400 at every depth, below and beyond the JSON parser's recursion limit
    *[case("nesting", f"depth-{depth}", DECODE, nested(depth), 400, DEEPER) for depth in (4, 10, 100, 500)],
    # Near 1,000 the parser's recursion limit (less the frames already in use) decides which 400.
    *[case("nesting", f"depth-{depth}", DECODE, nested(depth), 400) for depth in (900, 950, 980, 990, 999, 1000,
                                                                                   1100, 30000)],
    case("nesting", "bytes-in-lists", ENCODE, body([{"name": "images", "shape": [1], "datatype": "BYTES",
                                                      "data": [[["aGk="]]]}]), 400, DEEPER),
    case("nesting", "outputs-deep", DECODE, b'{"inputs": [' + json.dumps(codes([1, 7, 7])).encode()
         + b'], "outputs": ' + b"[" * 900 + b"]" * 900 + b"}", 400, '"outputs" must be a list'),
    case("nesting", "control-rank-3", DECODE, nested(3), 200),
    # -- bytes after the last binary tensor, inputs sent twice
    case("trailing", "one-byte-after-binary", DECODE, binary_codes([1, 7, 7], BLOB, b"\0"), 400, "1 bytes after"),
    case("trailing", "binary-with-no-binary-input", DECODE, binary({"inputs": [codes([1, 7, 7])]}, b"junk"), 400,
         "4 bytes after"),
    case("trailing", "bytes-elements-past-shape", ENCODE,
         binary({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                             "parameters": {"binary_data_size": 10}}]}, b"\1\0\0\0a\1\0\0\0b"), 400,
         "more BYTES elements"),
    case("trailing", "input-twice", DECODE, body([codes([1, 7, 7]), codes([1, 7, 7])]), 400, "sent twice"),
    case("trailing", "control", DECODE, binary_codes([1, 7, 7], BLOB), 200),
    # -- compression: every gzip member read, nothing after the data, nothing cut short
    case("compression", "gzip-then-junk", DECODE, gz(OK) + b"junk", 400, "after the end of the gzip data",
         content_encoding="gzip"),
    case("compression", "gzip-then-zeros", DECODE, gz(OK) + bytes(64), 400, "after the end of the gzip data",
         content_encoding="gzip"),
    case("compression", "gzip-truncated", DECODE, gz(OK)[:-9], 400, "truncated", content_encoding="gzip"),
    case("compression", "deflate-then-junk", DECODE, zlib.compress(OK) + b"x", 400, "after the end of the deflate",
         content_encoding="deflate"),
    case("compression", "second-member-is-read", DECODE, gz(OK) + gz(b" trailing"), 400, NOT_JSON,
         content_encoding="gzip"),
    case("compression", "member-then-junk", DECODE, gz(OK[:50]) + gz(OK[50:]) + b"\x1f", 400, "1 bytes after",
         content_encoding="gzip"),
    case("compression", "control-two-members", DECODE, gz(OK[:50]) + gz(OK[50:]), 200, content_encoding="gzip"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_v2_request(client: httpx.Client, case: Case) -> None:
    response = client.post(case.path, content=case.content, headers=case.headers, timeout=60)
    assert response.status_code == case.status, response.text[:300]
    if case.status != 200:
        error = response.json()["error"]
        assert isinstance(error, str) and case.message in error, error
        assert "Traceback" not in error and "/work" not in error


def test_the_server_logged_no_error_and_is_ready(server: ServerProcess, client: httpx.Client) -> None:
    for request in CASES:  # again, in one go, after whatever ran before
        assert client.post(request.path, content=request.content, headers=request.headers).status_code < 500
    assert "Traceback" not in server.log and "unexpected error" not in server.log
    assert client.get("/v2/health/ready").status_code == 200
