"""Hypothesis strategies for Open Inference Protocol request bodies: mostly well-formed enough to
reach deep into the parser and the planner (a real input name, a datatype, a shape, data or binary
data), with every field also drawn from arbitrary JSON; then a header length, a binary tail and a
content encoding that may be right, wrong or hostile. Shared by the parser's in-process fuzz test
and the live server's."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

JSON_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
               | st.text(max_size=8))
ANY_JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
NAMES = st.sampled_from(["codes", "pixels", "images"]) | st.text(max_size=6)
DATATYPES = st.sampled_from(["INT64", "INT32", "UINT8", "BYTES"]) | st.sampled_from(["FP32", "int64", ""]) | ANY_JSON
DIM = st.integers(0, 9) | st.sampled_from([-1, 28, 2**31, 2**62]) | st.integers(-(2**64), 2**64)
SHAPES = st.lists(DIM, max_size=5) | ANY_JSON
FLAGS = st.booleans() | ANY_JSON
DIGITS = "0123456789\u00b2\u00b9"  # latin-1 digits int() refuses, among ASCII ones


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


DATA = (st.lists(st.integers(-2, 600), max_size=60)
        | st.lists(st.lists(st.integers(0, 511), max_size=8), max_size=8)
        | st.builds(nested, st.integers(0, 600), st.integers(0, 9))  # json.dumps itself recurses
        | st.lists(st.sampled_from(["aGk=", "", "not base64", "iVBORw0KGgo="]), max_size=4)
        | ANY_JSON)


@st.composite
def parameters(draw: st.DrawFn, size: int | None = None) -> Any:
    if draw(st.booleans()):
        return draw(ANY_JSON)  # not an object, or an object of anything
    params: dict[str, Any] = {}
    if size is not None:
        params["binary_data_size"] = draw(st.just(size) | st.integers(-5, 1000) | ANY_JSON)
    if draw(st.booleans()):
        params["binary_data"] = draw(FLAGS)
    return params


@st.composite
def tensor(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """(an input's JSON, its binary data, b"" when it is sent in JSON)."""
    spec: dict[str, Any] = {"name": draw(NAMES), "datatype": draw(DATATYPES), "shape": draw(SHAPES)}
    if draw(st.booleans()):
        blob = draw(st.binary(max_size=400))
        spec["parameters"] = draw(parameters(len(blob)))
        return spec, blob
    spec["data"] = draw(DATA)
    if draw(st.booleans()):
        spec["parameters"] = draw(parameters())
    return spec, b""


CHANNELS = {"mnist": 1, "tiny-imagenet": 3}  # the shipped models fuzzed; both fully convolutional, K = 512
MODELS = [f"{base}-{operation}" for base in CHANNELS for operation in ("encode", "decode")]


def png(pixels: bytes, height: int, width: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("L" if channels == 1 else "RGB", (width, height), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def valid_tensor(draw: st.DrawFn, model: str) -> tuple[dict[str, Any], bytes]:
    """A well-formed input for `model` (codes, pixels or PNG files; JSON or binary) -> (spec, blob)."""
    base, _, operation = model.rpartition("-")
    n, h, w, c = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), CHANNELS[base]
    values: list[Any]
    if operation == "decode":
        datatype = draw(st.sampled_from(["INT64", "INT32"]))
        values = draw(st.lists(st.integers(0, 511), min_size=n * h * w, max_size=n * h * w))
        spec = {"name": "codes", "datatype": datatype, "shape": [n, h, w]}
        blob = np.asarray(values, "<i8" if datatype == "INT64" else "<i4").tobytes()
    elif draw(st.booleans()):
        size = n * 4 * h * 4 * w * c
        blob = draw(st.binary(min_size=size, max_size=size))
        spec, values = {"name": "pixels", "datatype": "UINT8", "shape": [n, 4 * h, 4 * w, c]}, list(blob)
    else:
        files = [png(draw(st.binary(min_size=16 * h * w * c, max_size=16 * h * w * c)), 4 * h, 4 * w, c)
                 for _ in range(n)]
        spec = {"name": "images", "datatype": "BYTES", "shape": [n]}
        values = [base64.b64encode(f).decode() for f in files]
        blob = b"".join(struct.pack("<I", len(f)) + f for f in files)
    if draw(st.booleans()):
        return {**spec, "parameters": {"binary_data_size": len(blob)}}, blob
    return {**spec, "data": values}, b""


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """One field of a well-formed input made wrong: a dimension, the datatype, the parameters, the data."""
    field = draw(st.sampled_from(["shape", "datatype", "parameters", "data", "name"]))
    spec = dict(spec)
    if field == "shape":
        shape = list(spec["shape"])
        shape[draw(st.integers(0, len(shape) - 1))] = draw(DIM)
        spec["shape"] = shape
    elif field == "parameters":
        spec["parameters"] = draw(parameters(spec.get("parameters", {}).get("binary_data_size")))
    else:
        spec[field] = draw({"datatype": DATATYPES, "data": DATA, "name": NAMES}[field])
    return spec


@dataclass(frozen=True)
class V2Body:
    content: bytes
    headers: dict[str, bytes]


def _encode(content: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(content, mtime=0)
    return zlib.compress(content) if encoding == "deflate" else content


@st.composite
def _inputs(draw: st.DrawFn, model: str) -> list[tuple[dict[str, Any], bytes]]:
    """Valid for the model (half the time), valid but one field (a quarter), or anything."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.lists(tensor(), max_size=3))
    spec, blob = draw(valid_tensor(model))
    return [(draw(mutated(spec)), blob)] if kind == 1 else [(spec, blob)]


@st.composite
def v2_bodies(draw: st.DrawFn, model: str) -> V2Body:
    """A request body for `model` and its headers (content type, header length, content encoding)."""
    kind = draw(st.integers(0, 19))
    if kind == 0:  # bytes of anything
        return V2Body(draw(st.binary(max_size=300)), {"content-type": b"application/json"})
    if kind == 1:  # data nested at any depth, around and past the JSON parser's recursion limit
        depth = draw(st.integers(0, 3000))
        data = b"[" * depth + b"1" + b"]" * depth
        return V2Body(b'{"inputs": [{"name": "codes", "shape": [1, 7, 7], "datatype": "INT64", "data": ' + data
                      + b"}]}", {"content-type": b"application/json"})
    inputs = draw(_inputs(model))
    sane = kind > 5  # most bodies: the rest of the request well-formed, so the input decides the answer
    request: dict[str, Any] = {"inputs": [spec for spec, _ in inputs] if draw(st.integers(0, 9)) else draw(ANY_JSON)}
    for field in ("id", "parameters", "outputs"):
        if not sane and draw(st.booleans()):
            request[field] = draw(st.lists(st.builds(lambda n, p: {"name": n, "parameters": p}, NAMES, parameters()),
                                           max_size=3) if field == "outputs" else ANY_JSON)
    head = json.dumps(request).encode()
    tail = b"".join(blob for _, blob in inputs) + (b"" if sane else draw(st.just(b"") | st.binary(max_size=8)))
    headers = {"content-type": draw(st.sampled_from([b"application/json", b"application/octet-stream"]))}
    if tail or (not sane and draw(st.booleans())):
        headers["inference-header-content-length"] = str(len(head)).encode() if sane else draw(
            st.just(str(len(head)).encode()) | st.integers(-3, len(head) + len(tail) + 3).map(lambda n: str(n).encode())
            | st.text(DIGITS, min_size=1, max_size=30).map(lambda t: t.encode("latin-1")))
    encoding = draw(st.sampled_from(["", "gzip", "deflate"]))
    content = _encode(head + tail, encoding) + (b"" if sane else draw(st.just(b"") | st.binary(max_size=4)))
    if encoding:
        headers["content-encoding"] = encoding.encode()
    return V2Body(content, headers)
