"""Open Inference Protocol (KServe v2) request and response bodies, with the binary tensor extension.

A request body is JSON, or JSON followed by raw tensor bytes: `Inference-Header-Content-Length`
gives the JSON's length, and each input with `parameters.binary_data_size` takes that many bytes,
in input order. Binary element layouts: fixed-size types little-endian, row-major; BYTES as each
element's 4-byte little-endian length then its bytes. In JSON, `data` is the row-major element list
(nesting allowed); a BYTES element is a string: base64 (our convention, since image files are not
text). Everything malformed becomes InvalidTensor (400) naming the tensor and the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request

from runtime import BadRequest, PayloadTooLarge
from runtime.memory_estimates import JSON_PARSE_BYTES_PER_BODY_BYTE
from service.inputs.bodies import ReadScope
from service.offload import off_loop

NUMERIC: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("<u1"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8")}
RANGES = {"UINT8": (0, 255), "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
HEADER_LENGTH = "inference-header-content-length"


class InvalidTensor(BadRequest):
    code = "invalid_tensor"


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]  # numeric array of `shape`, or the BYTES elements in order


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: dict[str, bool] | None  # requested output -> binary?; None: every output
    binary_output: bool  # the request-level default (tritonclient's binary_data_output)


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]
    binary: bool = field(default=False)


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most `limit` bytes (413 beyond: a zip bomb stays small)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding[:40]!r} is not accepted; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the {encoding} body does not inflate ({exc})") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"the {encoding} body inflates past the limit of {limit} bytes")
    return out


def bytes_elements(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidTensor(f"input {name!r}: BYTES data ends inside an element's length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidTensor(f"input {name!r}: a BYTES element claims {length} bytes past the end of the data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _json_elements(spec: dict[str, Any], name: str, datatype: str) -> np.ndarray | list[bytes]:
    values = _flatten(spec.get("data", []))
    if datatype == "BYTES":
        try:
            return [base64.b64decode(v, validate=True) for v in values]
        except (binascii.Error, TypeError, ValueError) as exc:
            raise InvalidTensor(f"input {name!r}: BYTES elements in JSON must be base64 strings") from exc
    if any(type(v) is not int for v in values):  # bools and floats are not integers here
        raise InvalidTensor(f"input {name!r}: {datatype} data must be integers")
    low, high = RANGES[datatype]
    if values and not (low <= min(values) and max(values) <= high):
        raise InvalidTensor(f"input {name!r}: values outside the range of {datatype}")
    array: np.ndarray = np.asarray(values, dtype=NUMERIC[datatype])
    return array


def _input(spec: Any, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidTensor("each input must be an object with a name, shape, datatype and data")
    name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if datatype not in (*NUMERIC, "BYTES"):
        raise InvalidTensor(f"input {name!r}: datatype {str(datatype)[:20]!r} is not one of UINT8, INT32, INT64, BYTES")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 8:
        raise InvalidTensor(f"input {name!r}: shape must be a list of non-negative integers")
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise InvalidTensor(f"input {name!r}: binary_data_size {size} runs past the binary data sent")
        raw = bytes(binary[offset : offset + size])
        offset += size
        if datatype == "BYTES":
            data: np.ndarray | list[bytes] = bytes_elements(raw, name)
        elif size % NUMERIC[datatype].itemsize:
            raise InvalidTensor(f"input {name!r}: {size} bytes is not a whole number of {datatype} elements")
        else:
            data = np.frombuffer(raw, dtype=NUMERIC[datatype])
    else:
        data = _json_elements(spec, name, datatype)
    if len(data) != math.prod(shape):
        raise InvalidTensor(f"input {name!r}: shape {shape} holds {math.prod(shape)} elements, {len(data)} were sent")
    if isinstance(data, np.ndarray):
        data = data.reshape(shape)
    return Tensor(name, datatype, tuple(shape), data), offset


def parse_infer_request(body: bytes, header_length: str | None, max_inputs: int = 8) -> InferRequest:
    """The body of POST .../infer -> its tensors; InvalidTensor / BadRequest when malformed."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length[:20]!r} does not fit the body")
        split = int(header_length)
    else:
        split = len(body)
    try:
        request = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the inference request is not valid JSON ({str(exc)[:100]})") from exc
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    if len(request["inputs"]) > max_inputs:
        raise InvalidTensor(f"{len(request['inputs'])} inputs; a model here takes one")
    binary, offset, inputs = memoryview(body)[split:], 0, {}
    for spec in request["inputs"]:
        tensor, offset = _input(spec, binary, offset)
        inputs[tensor.name] = tensor
    return InferRequest(_request_id(request), inputs, _requested_outputs(request),
                        bool((request.get("parameters") or {}).get("binary_data_output", False)))


def _request_id(request: dict[str, Any]) -> str | None:
    value = request.get("id")
    return value if isinstance(value, str) else None


def _requested_outputs(request: dict[str, Any]) -> dict[str, bool] | None:
    outputs = request.get("outputs")
    if outputs is None:
        return None
    well_formed = isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs)
    if not well_formed:
        raise BadRequest('"outputs" must be a list of {"name": ..., "parameters": {...}} objects')
    return {o["name"]: bool((o.get("parameters") or {}).get("binary_data", False)) for o in outputs}


def binary_of(output: OutputTensor) -> bytes:
    """An output's raw bytes: the binary extension's layout, and gRPC's raw_output_contents."""
    if output.datatype == "BYTES":
        assert isinstance(output.data, list)
        return b"".join(struct.pack("<I", len(e)) + e for e in output.data)
    assert isinstance(output.data, np.ndarray)
    blob: bytes = np.ascontiguousarray(output.data, dtype=NUMERIC[output.datatype]).tobytes()
    return blob


def encode_infer_response(model: str, version: str, request_id: str | None,
                          outputs: list[OutputTensor]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an inference response; binary outputs after the JSON, in output order."""
    described, blobs = [], []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.binary:
            blob = binary_of(output)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            assert isinstance(output.data, np.ndarray)
            entry["data"] = output.data.reshape(-1).tolist()
        described.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return text, {"content-type": "application/json"}
    return text + b"".join(blobs), {"content-type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(text))}


def v2_reading_bytes(headers: Mapping[str, str], max_body_bytes: int) -> int:
    """Reading and parsing a v2 body: the body (inflated, at most the limit when compressed), and the
    JSON part's Python objects (all of it, unless the binary extension says how long it is)."""
    compressed = headers.get("content-encoding", "identity").lower() not in ("", "identity")
    declared = headers.get("content-length", "")
    body = max_body_bytes if compressed or not declared.isdigit() else min(max_body_bytes, int(declared))
    header = headers.get(HEADER_LENGTH, "")
    json_part = min(body, int(header)) if header.isdigit() else body
    return body + json_part * JSON_PARSE_BYTES_PER_BODY_BYTE


async def read_infer_request(request: Request, max_body_bytes: int, scope: ReadScope) -> InferRequest:
    """The body of POST .../infer, read within the body deadline, inflated and parsed."""
    async with scope.reading():
        body = await request.body()
    body = decompressed(body, request.headers.get("content-encoding", "").lower(), max_body_bytes)
    return await off_loop(lambda: parse_infer_request(body, request.headers.get(HEADER_LENGTH)),
                          heavy=len(body) > 65536)
