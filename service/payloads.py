"""Request bodies -> what the codec works on: encoded images in, code grids out.

Encode accepts three bodies: multipart/form-data with files in the field `images`;
application/json `{"images": ["<base64>", ...]}` (data: URLs allowed); or one raw image with an
image/* content type. Decode accepts application/json `{"codes": grid | [grid, ...]}`.
Everything malformed becomes a domain error naming what and where.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.errors import (
    BadRequest,
    EmptyBody,
    InvalidBase64,
    InvalidCodes,
    InvalidJSON,
    MissingImages,
    TooManyImages,
    UnsupportedMediaType,
)

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/x-ms-bmp", "image/gif", "image/webp", "image/tiff")
ACCEPTED_ENCODE_TYPES = "multipart/form-data (field 'images'), application/json {\"images\": [base64]}, or " + \
    ", ".join(RAW_IMAGE_TYPES)
MAX_JSON_DEPTH = 4  # {"codes": [[[int]]]} is the deepest valid body


@dataclass(frozen=True)
class ImageUpload:
    label: str  # how the error messages name it: "images[2] (cat.png)"
    data: bytes


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _multipart_images(request: Request, max_images: int, max_bytes: int) -> list[ImageUpload]:
    parser = MultiPartParser(request.headers, request.stream(), max_files=max_images * 16 + 16,
                             max_fields=64, max_part_size=max_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from exc
    try:
        files = [v for k, v in form.multi_items() if k == "images" and isinstance(v, UploadFile)]
        if not files:
            fields = sorted({k for k, _ in form.multi_items()}) or ["none"]
            raise MissingImages(f"no files in the multipart field 'images' (fields sent: {', '.join(fields)})")
        if len(files) > max_images:
            raise TooManyImages(f"{len(files)} images in one request; the limit is {max_images}")
        return [ImageUpload(f"images[{i}] ({(f.filename or '')[:64]})", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()


def parse_json(body: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, nesting bounded; InvalidJSON (400) otherwise."""
    if not body.strip():
        raise EmptyBody("the request body is empty; send a JSON object")

    def reject_constant(name: str) -> None:
        raise InvalidJSON(f"{name} is not valid JSON; use numbers")

    try:
        payload = json.loads(body, parse_constant=reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidJSON(f"the body is not valid JSON ({str(exc)[:120]})") from exc
    if _depth(payload, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
        raise InvalidJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return payload


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of lists/objects, counting no further than `limit`."""
    if limit <= 0 or not isinstance(value, list | dict):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(c, limit - 1) for c in children), default=0)


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


async def read_images(request: Request, max_images: int, max_bytes: int) -> list[ImageUpload]:
    """The images of an encode request, in the order sent."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _multipart_images(request, max_images, max_bytes)
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


# -- code grids ----------------------------------------------------------------------------------


def _offending(position: str, value: Any, problem: str) -> InvalidCodes:
    shown = json.dumps(value)[:40] if not isinstance(value, float) or np.isfinite(value) else str(value)
    return InvalidCodes(f"{position} = {shown}: {problem}")


def _check_grid(grid: Any, where: str, codebook_size: int) -> tuple[int, int]:
    """Walk one grid in order; raise at the first offending position. -> (h, w)."""
    if not isinstance(grid, list) or not grid:
        raise _offending(where, grid, "expected a non-empty list of rows")
    width = len(grid[0]) if isinstance(grid[0], list) else 0
    for r, row in enumerate(grid):
        if not isinstance(row, list) or not row:
            raise _offending(f"{where}[{r}]", row, "expected a non-empty list of ints")
        if len(row) != width:
            raise InvalidCodes(f"{where}[{r}] has {len(row)} entries but {where}[0] has {width}; grids must be "
                               "rectangular")
        for c, value in enumerate(row):
            if type(value) is not int:  # bools and floats are not codes
                raise _offending(f"{where}[{r}][{c}]", value, "expected an int")
            if not 0 <= value < codebook_size:
                raise _offending(f"{where}[{r}][{c}]", value, f"codes must be in [0, {codebook_size})")
    return len(grid), width


def parse_code_grids(payload: Any, codebook_size: int, max_images: int) -> tuple[np.ndarray, bool]:
    """{"codes": grid | [grid, ...]} -> int64 (N, h, w), and whether one bare grid was sent."""
    if not isinstance(payload, dict) or "codes" not in payload:
        raise BadRequest('expected a JSON object {"codes": [[...], ...]} (one grid or a list of grids)')
    codes = payload["codes"]
    if not isinstance(codes, list) or not codes:
        raise _offending("codes", codes, "expected a non-empty grid or list of grids")
    single = not (isinstance(codes[0], list) and codes[0] and isinstance(codes[0][0], list))
    grids = [codes] if single else codes
    if len(grids) > max_images:
        raise TooManyImages(f"{len(grids)} grids in one request; the limit is {max_images}")
    shapes = [_check_grid(g, "codes" if single else f"codes[{i}]", codebook_size) for i, g in enumerate(grids)]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise InvalidCodes(f"codes[{i}] is {shape[0]}×{shape[1]} but codes[0] is {shapes[0][0]}×{shapes[0][1]}; "
                               "grids in one request must have the same size")
    return np.asarray(grids, dtype=np.int64), single
