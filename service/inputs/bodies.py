"""Encode request bodies -> the encoded image files they carry, and strict JSON for every body.

Encode accepts three bodies: multipart/form-data with files in the field `images`;
application/json `{"images": ["<base64>", ...]}` (data: URLs allowed); or one raw image with an
image/* content type. Everything malformed becomes a domain error naming what and where.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from starlette.requests import Request

from runtime import BadRequest, TooManyImages
from runtime.images import ImageUpload
from runtime.memory_estimates import BodyCharge
from service.errors import EmptyBody, InvalidBase64, InvalidJSON, MissingImages, UnsupportedMediaType
from service.inputs.multipart_parser import multipart_files

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/x-ms-bmp", "image/gif", "image/webp", "image/tiff")
ACCEPTED_ENCODE_TYPES = "multipart/form-data (field 'images'), application/json {\"images\": [base64]}, or " + \
    ", ".join(RAW_IMAGE_TYPES)
MAX_JSON_DEPTH = 5  # {"codes": [[[[int]]]]} (grids of a residual model) is the deepest valid body
CONTAINERS = (list, dict)  # what json.loads nests (exactly these types)


class ReadScope(Protocol):
    """What reading a body needs from its request's scope (service/api/request_scope.py). The body's
    bytes are charged to the memory budget as they arrive; an inflated body is charged here."""

    @property
    def stop(self) -> threading.Event: ...  # set when the request ends

    def reading(self) -> AbstractAsyncContextManager[None]: ...  # the body deadline (408)

    async def body_expanded(self, nbytes: int, charge: BodyCharge, what: str) -> None: ...  # 413 / 429


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _multipart_images(request: Request, max_images: int) -> list[ImageUpload]:
    files, others = await multipart_files(request.headers.get("content-type", ""), request.stream(), "images",
                                          max_images)
    if not files:
        raise MissingImages(f"no files in the multipart field 'images' (fields sent: {', '.join(others or ['none'])})")
    return [ImageUpload(f"images[{i}] ({(f.filename or '')[:64]})", bytes(f.data)) for i, f in enumerate(files)]


def parse_json(body: bytes, constants: bool = False) -> Any:
    """Strict JSON: no NaN/Infinity (unless `constants`: then as floats, for a validator to name), nesting
    bounded; InvalidJSON (400) otherwise."""
    if not body.strip():
        raise EmptyBody("the request body is empty; send a JSON object")

    def reject_constant(name: str) -> None:
        raise InvalidJSON(f"{name} is not valid JSON; use numbers")

    try:
        payload = json.loads(body, parse_constant=float if constants else reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidJSON(f"the body is not valid JSON ({str(exc)[:120]})") from exc
    if _depth(payload, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
        raise InvalidJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return payload


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of lists/objects, counting no further than `limit`: level by level, each level's
    containers gathered by one comprehension (a recursive call per number cost more than the parse)."""
    depth, level = 0, [value] if type(value) in CONTAINERS else []
    while level and depth < limit:
        depth += 1
        level = [c for v in level for c in (v.values() if type(v) is dict else v) if type(c) in CONTAINERS]
    return depth


def _json_images(payload: Any, max_images: int) -> list[ImageUpload]:
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise BadRequest('expected a JSON object {"images": ["<base64 image>", ...]}')
    items = payload["images"]
    if not items:
        raise MissingImages('"images" is empty; send at least one base64 image')
    if len(items) > max_images:
        raise TooManyImages(f"{len(items)} images in one request; the limit is {max_images}")
    uploads = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise BadRequest(f"images[{i}] is a {type(item).__name__}, expected a base64 string")
        text = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item
        try:
            uploads.append(ImageUpload(f"images[{i}]", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise InvalidBase64(f"images[{i}] is not valid base64") from exc
    return uploads


async def read_images(request: Request, max_images: int, scope: ReadScope) -> list[ImageUpload]:
    """The images of an encode request, in the order sent, read within the body deadline."""
    async with scope.reading():
        return await _read_images(request, max_images)


async def _read_images(request: Request, max_images: int) -> list[ImageUpload]:
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _multipart_images(request, max_images)
    body = await request.body()
    if kind == "application/json":
        return _json_images(parse_json(body), max_images)
    if kind in RAW_IMAGE_TYPES or kind == "application/octet-stream":
        if not body:
            raise EmptyBody("the request body is empty; send the image bytes")
        return [ImageUpload("image", body)]
    if not body and not kind:
        raise EmptyBody(f"the request body is empty; send {ACCEPTED_ENCODE_TYPES}")
    raise UnsupportedMediaType(f"content type {kind[:80]!r} is not accepted; send {ACCEPTED_ENCODE_TYPES}")
