"""Open Inference Protocol (KServe v2) request and response bodies, with the binary tensor extension.

A request body is JSON, or JSON followed by raw tensor bytes: `Inference-Header-Content-Length`
gives the JSON's length, and each input with `parameters.binary_data_size` takes that many bytes,
in input order. Binary element layouts: fixed-size types little-endian, row-major; BYTES as each
element's 4-byte little-endian length then its bytes. In JSON, `data` is the row-major element list
(nested no deeper than the shape's rank); a BYTES element is a string: base64 (our convention,
since image files are not text). Everything malformed becomes InvalidTensor (400) naming the tensor
and the problem: `parameters` that are not objects, flags that are not JSON booleans (tritonclient
sends true/false; the string "false" is not false), a header length that is not ASCII digits, bytes
left over after the last binary tensor, a gzip body with junk after its members.
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
from runtime.memory_estimates import JSON_PARSE_BYTES_PER_BODY_BYTE, BodyCharge
from service.inputs.bodies import ReadScope
from service.offload import off_loop

NUMERIC: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("<u1"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8")}
RANGES = {"UINT8": (0, 255), "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
HEADER_LENGTH = "inference-header-content-length"
MAX_DIGITS = 18  # a byte count below 10**18: int() never sees a 5,000-digit string (ValueError past 4,300)
INFLATE_PIECE = 1 << 16  # bytes inflated at a time while counting


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
    stages: int | None = None  # the request-level parameter `stages` (residual models); None: not given


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]
    binary: bool = field(default=False)


def ascii_int(text: str) -> int | None:
    """A non-negative decimal integer of ASCII digits ("²" and "١" are digits to str.isdigit, not to
    int()), at most MAX_DIGITS long; None otherwise."""
    if not text or len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most `limit` bytes (413 beyond: a zip bomb stays small).
    Every gzip member is inflated (RFC 1952 allows several); a truncated stream, or anything after the
    last member that is not one, is a 400 rather than silently dropped."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding[:40]!r} is not accepted; use gzip, deflate or none")
    out, rest = bytearray(), body
    while True:
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"the {encoding} body does not inflate ({exc})") from exc
        if len(out) > limit:
            raise PayloadTooLarge(f"the {encoding} body inflates past the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"the {encoding} body is truncated: its compressed data ends early")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if encoding != "gzip" or not rest.startswith(b"\x1f\x8b"):
            raise BadRequest(f"{len(rest)} bytes after the end of the {encoding} data; send the compressed "
                             "body alone")


def bytes_elements(raw: bytes, name: str, expected: int) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(elements) == expected:  # stop early: a million 1-byte elements would cost 50 bytes each
            raise InvalidTensor(f"input {name!r}: more BYTES elements than its shape holds ({expected})")
        if offset + 4 > len(raw):
            raise InvalidTensor(f"input {name!r}: BYTES data ends inside an element's length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidTensor(f"input {name!r}: a BYTES element claims {length} bytes past the end of the data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _flatten(data: Any, name: str, rank: int) -> list[Any]:
    """Row-major elements of `data`, nested at most `rank` lists deep (flat is fine too). Iterative:
    a deep nest is a 400 at any depth, never a RecursionError."""
    if not isinstance(data, list):
        return [data]
    values: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(data, 1)]  # (list, its depth), walked left to right
    cursors = [0]
    while stack:
        items, depth = stack[-1]
        if cursors[-1] == len(items):
            stack.pop()
            cursors.pop()
            continue
        item = items[cursors[-1]]
        cursors[-1] += 1
        if not isinstance(item, list):
            values.append(item)
        elif depth >= max(rank, 1):
            raise InvalidTensor(f"input {name!r}: data nested deeper than its shape's {rank} dimensions")
        else:
            stack.append((item, depth + 1))
            cursors.append(0)
    return values


def _json_elements(spec: dict[str, Any], name: str, datatype: str, rank: int) -> np.ndarray | list[bytes]:
    values = _flatten(spec.get("data", []), name, rank)
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


def parameters(value: Any, where: str) -> dict[str, Any]:
    """A `parameters` field: a JSON object, or absent (null counts as absent); 400 otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidTensor(f"{where}: parameters must be a JSON object, got {type(value).__name__}")
    return value


def flag(params: dict[str, Any], name: str, where: str) -> bool:
    """A boolean parameter: JSON true or false only (the string "false" must not read as true)."""
    value = params.get(name, False)
    if type(value) is not bool:
        raise InvalidTensor(f"{where}: parameter {name!r} must be true or false, got {json.dumps(value)[:40]}")
    return value


def _binary_data(name: str, datatype: str, shape: list[int], size: Any,
                 binary: memoryview, offset: int) -> tuple[np.ndarray | list[bytes], int]:
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise InvalidTensor(f"input {name!r}: binary_data_size {str(size)[:20]} runs past the binary data sent")
    raw = bytes(binary[offset : offset + size])
    if datatype == "BYTES":
        return bytes_elements(raw, name, math.prod(shape)), offset + size
    if size % NUMERIC[datatype].itemsize:
        raise InvalidTensor(f"input {name!r}: {size} bytes is not a whole number of {datatype} elements")
    return np.frombuffer(raw, dtype=NUMERIC[datatype]), offset + size


def _input(spec: Any, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidTensor("each input must be an object with a name, shape, datatype and data")
    name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if datatype not in (*NUMERIC, "BYTES"):
        raise InvalidTensor(f"input {name!r}: datatype {str(datatype)[:20]!r} is not one of UINT8, INT32, INT64, BYTES")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 8:
        raise InvalidTensor(f"input {name!r}: shape must be a list of at most 8 non-negative integers")
    size = parameters(spec.get("parameters"), f"input {name!r}").get("binary_data_size")
    if size is not None:
        data, offset = _binary_data(name, datatype, shape, size, binary, offset)
    else:
        data = _json_elements(spec, name, datatype, len(shape))
    if len(data) != math.prod(shape):
        raise InvalidTensor(f"input {name!r}: shape {shape} holds {math.prod(shape)} elements, {len(data)} were sent")
    if isinstance(data, np.ndarray):
        data = data.reshape(shape)
    return Tensor(name, datatype, tuple(shape), data), offset


def parse_infer_request(body: bytes, header_length: str | None, max_inputs: int = 8) -> InferRequest:
    """The body of POST .../infer -> its tensors; InvalidTensor / BadRequest when malformed."""
    split = len(body) if header_length is None else ascii_int(header_length.strip())
    if split is None or split > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {str(header_length)[:20]!r} is not a byte count "
                         f"within the body's {len(body)} bytes")
    try:
        request = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the inference request is not valid JSON ({str(exc)[:100]})") from exc
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    if len(request["inputs"]) > max_inputs:
        raise InvalidTensor(f"{len(request['inputs'])} inputs; a model here takes one")
    request_parameters = parameters(request.get("parameters"), "the request")
    binary_output = flag(request_parameters, "binary_data_output", "the request")
    binary, offset, inputs = memoryview(body)[split:], 0, {}
    for spec in request["inputs"]:
        tensor, offset = _input(spec, binary, offset)
        if tensor.name in inputs:
            raise InvalidTensor(f"input {tensor.name!r} is sent twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise InvalidTensor(f"{len(binary) - offset} bytes after the last binary tensor; every byte after the "
                            "JSON must belong to an input's binary_data_size")
    return InferRequest(_request_id(request), inputs, _requested_outputs(request), binary_output,
                        _stages(request_parameters))


def _stages(request_parameters: dict[str, Any]) -> int | None:
    """The request parameter `stages`: a whole number (range-checked against the model later)."""
    value = request_parameters.get("stages")
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidTensor(f"parameter 'stages' must be a whole number ≥ 1, not {str(value)[:20]!r}")
    return value


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
    return {o["name"]: flag(parameters(o.get("parameters"), f"output {o['name']!r}"), "binary_data",
                            f"output {o['name']!r}") for o in outputs}


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


def v2_body_charge(headers: Mapping[str, str]) -> BodyCharge:
    """How a v2 body is charged (see BodyCharge): its bytes as they arrive; then, once all there, its
    JSON part's Python objects (all of it, unless the binary extension says how long it is). A
    compressed body is charged its raw bytes, then what it inflates to (`read_infer_request`)."""
    size = ascii_int(headers.get("content-length", ""))
    if headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return BodyCharge(declared=size)
    return _inflated_charge(headers, size)


def _inflated_charge(headers: Mapping[str, str], declared: int | None = None) -> BodyCharge:
    return BodyCharge(parse_per_byte=JSON_PARSE_BYTES_PER_BODY_BYTE,
                      parsed_part=ascii_int(headers.get(HEADER_LENGTH, "").strip()), declared=declared)


def inflated_size(body: bytes, encoding: str, limit: int) -> int:
    """What a gzip or deflate body inflates to, counted a piece at a time and thrown away (at most
    `limit` + 1, so a bomb stays small; 0 for a body that is not compressed, or not this way), so
    that the memory for it is reserved before `decompressed` makes it. Concatenated gzip members are
    all counted: an upper bound, whatever `decompressed` accepts."""
    if encoding not in ("gzip", "deflate"):
        return 0
    total, rest = 0, body
    try:
        while rest and total <= limit:
            inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            data = rest
            while total <= limit:
                piece = inflater.decompress(data, INFLATE_PIECE)
                total += len(piece)
                data = inflater.unconsumed_tail
                if inflater.eof or not (piece or data):  # the member ended, or the input did
                    break
            rest = inflater.unused_data if inflater.eof else b""
    except zlib.error:
        pass  # decompressed() says what is wrong with it
    return min(total, limit + 1)


async def read_infer_request(request: Request, max_body_bytes: int, scope: ReadScope) -> InferRequest:
    """The body of POST .../infer, read within the body deadline, inflated and parsed. A compressed
    body's inflated size is counted first and reserved (413 / 429) before it is made."""
    async with scope.reading():
        body = await request.body()
    encoding = request.headers.get("content-encoding", "").lower()
    size = await off_loop(lambda: inflated_size(body, encoding, max_body_bytes), heavy=True) if body else 0
    if 0 < size <= max_body_bytes:
        await scope.body_expanded(size, _inflated_charge(request.headers), f"inflating a {encoding} body")
    body = decompressed(body, encoding, max_body_bytes)
    return await off_loop(lambda: parse_infer_request(body, request.headers.get(HEADER_LENGTH)),
                          heavy=len(body) > 65536)
