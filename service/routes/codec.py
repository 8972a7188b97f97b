"""POST /encode, /decode and their per-model forms /v1/models/{name}/encode|decode."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from service.codec import Header, Kind, decode_stream, encode_stream
from service.config import Settings
from service.deps import CodecTarget, DefaultTargetDep, NamedTargetDep
from service.errors import BodyTimeout, DeadlineExceeded, TooManyImages, UnsupportedMediaType
from service.payloads import RAW_IMAGE_TYPES, media_type, parse_code_grids, parse_json, read_images
from service.pipeline import Resize, check_grid_size, decode_uploads, to_pngs
from service.registry import ServedModel
from service.schemas import ERROR_RESPONSES, DecodeResponse, EncodeResponse

router = APIRouter(tags=["codec"])

ResizeQuery = Annotated[
    Resize, Query(description="`native`: resize every image to the model's native size before encoding")
]
OutputFormat = Literal["json", "packed", "entropy"]
FormatQuery = Annotated[OutputFormat, Query(
    description="`json` (default): lists of ints; `packed`: ceil(log2 K) bits per code; `entropy`: range-coded. "
                "Both binary formats are application/octet-stream streams that /decode accepts")]
STREAM_KINDS = {"packed": Kind.PACKED, "entropy": Kind.ENTROPY}

_binary = {"type": "string", "format": "binary"}
ENCODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": _binary, "minItems": 1}}},
            },
            "application/json": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": {"type": "string", "format": "byte"},
                                                     "minItems": 1,
                                                     "description": "base64 images (data: URLs allowed)"}}},
            },
            **{kind: {"schema": _binary} for kind in RAW_IMAGE_TYPES},
        },
    }
}
_grid = {"type": "array", "minItems": 1, "description": "rows of equal length; codes in [0, codebook_size)",
         "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}}
DECODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["codes"], "properties": {
                    "codes": {"oneOf": [_grid, {"type": "array", "items": _grid}],
                              "description": "one h×w grid of code indices, or a list of grids"}}},
            },
            "application/octet-stream": {"schema": _binary},
        },
    }
}
ENCODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": _binary}},
          "description": "JSON codes; a binary stream with ?format=packed or ?format=entropy"},
    **ERROR_RESPONSES,
}
DECODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": _binary}},
          "description": "JSON with base64 PNGs; the PNG itself for one grid sent with `Accept: image/png`"},
    **ERROR_RESPONSES,
}


T = TypeVar("T")


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read; only disconnect messages remain)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def for_client(request: Request, work: Awaitable[T], seconds: float) -> T:
    """Await `work` within the deadline (504 after it). If the client disconnects first, the work is
    cancelled, so its queued inference is skipped rather than run for nobody."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    watcher.add_done_callback(lambda _: task.cancel())  # fires on disconnect (and harmlessly on cleanup)
    try:
        async with asyncio.timeout(seconds):
            return await task
    except TimeoutError:
        raise DeadlineExceeded(f"the request did not finish within {seconds:g} s; the server is busy, "
                               "retry later or send fewer images per request") from None
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientDisconnect() from None
        raise
    finally:
        watcher.cancel()


@asynccontextmanager
async def body_deadline(seconds: float) -> AsyncIterator[None]:
    """Reading (and parsing) the body within `seconds`, else 408: a slow upload must not hold one of
    the admission gate's places for ever."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {seconds:g} s") from None


async def encode(request: Request, target: CodecTarget, resize: Resize, output: OutputFormat) -> Response:
    model, settings, m = target.model, target.settings, target.model.manifest
    with target.gate.admit():  # 429 before the body is read when too many requests are in progress
        async with body_deadline(settings.body_timeout_s):
            uploads = await read_images(request, settings.max_images, settings.max_body_bytes)
        images = await decode_uploads(m, uploads, resize, settings.max_pixels)  # (N, C, H, W) float32
        codes = await for_client(request, model.encode(images), settings.request_timeout_s)  # (N, h, w) int64
    if output != "json":
        stream = encode_stream(codes, STREAM_KINDS[output], m, model.runtime.entropy)
        return Response(stream, media_type="application/octet-stream")
    return JSONResponse({"model": m.name, "version": m.version, "codebook_size": m.codebook_size,
                         "grid": list(codes.shape[1:]), "codes": codes.tolist()})


def prefers_png(accept: str) -> bool:
    """True when Accept names image/png explicitly with q > 0 and at least application/json's q."""
    quality: dict[str, float] = {}
    for part in accept.lower().split(","):
        kind, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        quality[kind.strip()] = q
    return quality.get("image/png", 0.0) > 0 and quality["image/png"] >= quality.get("application/json", 0.0)


def grids_from_stream(body: bytes, model: ServedModel, settings: Settings) -> np.ndarray:
    m = model.manifest

    def within_limits(header: Header) -> None:
        if header.count > settings.max_images:
            raise TooManyImages(f"{header.count} grids in the stream; the limit is {settings.max_images}")
        check_grid_size(m, header.height, header.width, settings.max_pixels)

    return decode_stream(body, m, model.runtime.entropy, within_limits)


async def decode(request: Request, target: CodecTarget) -> Response:
    with target.gate.admit():  # 429 before the body is read when too many requests are in progress
        async with body_deadline(target.settings.body_timeout_s):
            grids, single = await read_grids(request, target)  # (N, h, w) int64
        images = await for_client(request, target.model.decode(grids), target.settings.request_timeout_s)
        pngs = await to_pngs(images)  # images: (N, C, H, W) float32
    m = target.model.manifest
    if single and prefers_png(request.headers.get("accept", "")):
        return Response(pngs[0], media_type="image/png")
    return JSONResponse({"model": m.name, "version": m.version,
                         "images": [base64.b64encode(png).decode("ascii") for png in pngs]})


async def read_grids(request: Request, target: CodecTarget) -> tuple[np.ndarray, bool]:
    """The code grids of a decode request (JSON or a packed/entropy stream), checked against the model."""
    model, settings, m = target.model, target.settings, target.model.manifest
    kind = media_type(request)
    if kind == "application/octet-stream":
        grids = grids_from_stream(await request.body(), model, settings)
        single = len(grids) == 1
    elif kind == "application/json":
        grids, single = parse_code_grids(parse_json(await request.body()), m.codebook_size, settings.max_images)
    else:
        raise UnsupportedMediaType('send application/json {"codes": [[...], ...]} or an application/octet-stream '
                                   "stream from /encode?format=packed|entropy")
    check_grid_size(m, grids.shape[1], grids.shape[2], settings.max_pixels)
    return grids, single


@router.post("/encode", response_model=EncodeResponse, responses=ENCODE_RESPONSES, openapi_extra=ENCODE_BODY,
             summary="Encode images to code grids with the default model")
async def encode_default(request: Request, target: DefaultTargetDep, resize: ResizeQuery = None,
                         format: FormatQuery = "json") -> Response:
    return await encode(request, target, resize, format)


@router.post("/v1/models/{name}/encode", response_model=EncodeResponse, responses=ENCODE_RESPONSES,
             openapi_extra=ENCODE_BODY, summary="Encode images to code grids with a named model")
async def encode_named(request: Request, target: NamedTargetDep, resize: ResizeQuery = None,
                       format: FormatQuery = "json") -> Response:
    return await encode(request, target, resize, format)


@router.post("/decode", response_model=DecodeResponse, responses=DECODE_RESPONSES, openapi_extra=DECODE_BODY,
             summary="Decode code grids to PNG images with the default model")
async def decode_default(request: Request, target: DefaultTargetDep) -> Response:
    return await decode(request, target)


@router.post("/v1/models/{name}/decode", response_model=DecodeResponse, responses=DECODE_RESPONSES,
             openapi_extra=DECODE_BODY, summary="Decode code grids to PNG images with a named model")
async def decode_named(request: Request, target: NamedTargetDep) -> Response:
    return await decode(request, target)
