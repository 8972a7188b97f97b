"""POST /encode, /decode and their per-model forms /v1/models/{name}/encode|decode."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.codec import Resize, check_grid_size, decode_to_png, encode_uploads
from service.deps import DefaultModelDep, NamedModelDep, SettingsDep
from service.errors import UnsupportedMediaType
from service.payloads import RAW_IMAGE_TYPES, media_type, parse_code_grids, parse_json, read_images
from service.runtime import ModelRuntime
from service.schemas import ERROR_RESPONSES, DecodeResponse, EncodeResponse

router = APIRouter(tags=["codec"])

ResizeQuery = Annotated[
    Resize, Query(description="`native`: resize every image to the model's native size before encoding")
]

_binary = {"type": "string", "format": "binary"}
ENCODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": _binary}}},
            },
            "application/json": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": {"type": "string", "format": "byte"},
                                                     "description": "base64 images (data: URLs allowed)"}}},
            },
            **{kind: {"schema": _binary} for kind in RAW_IMAGE_TYPES},
        },
    }
}
_grid = {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}
DECODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["codes"], "properties": {
                    "codes": {"oneOf": [_grid, {"type": "array", "items": _grid}],
                              "description": "one h×w grid of code indices, or a list of grids"}}},
            }
        },
    }
}
DECODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": _binary}},
          "description": "JSON with base64 PNGs; the PNG itself for one grid sent with `Accept: image/png`"},
    **ERROR_RESPONSES,
}


async def encode(request: Request, model: ModelRuntime, settings: SettingsDep, resize: Resize) -> JSONResponse:
    uploads = await read_images(request, settings.max_images, settings.max_body_bytes)
    codes = await run_in_threadpool(encode_uploads, model, uploads, resize, settings.max_pixels)
    m = model.manifest
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


async def decode(request: Request, model: ModelRuntime, settings: SettingsDep) -> Response:
    if media_type(request) != "application/json":
        raise UnsupportedMediaType('send the codes as application/json {"codes": [[...], ...]}')
    m = model.manifest
    grids, single = parse_code_grids(parse_json(await request.body()), m.codebook_size, settings.max_images)
    check_grid_size(m, grids.shape[1], grids.shape[2], settings.max_pixels)
    pngs = await run_in_threadpool(decode_to_png, model, grids)
    if single and prefers_png(request.headers.get("accept", "")):
        return Response(pngs[0], media_type="image/png")
    return JSONResponse({"model": m.name, "version": m.version,
                         "images": [base64.b64encode(png).decode("ascii") for png in pngs]})


@router.post("/encode", response_model=EncodeResponse, responses=ERROR_RESPONSES, openapi_extra=ENCODE_BODY,
             summary="Encode images to code grids with the default model")
async def encode_default(request: Request, model: DefaultModelDep, settings: SettingsDep,
                         resize: ResizeQuery = None) -> JSONResponse:
    return await encode(request, model, settings, resize)


@router.post("/v1/models/{name}/encode", response_model=EncodeResponse, responses=ERROR_RESPONSES,
             openapi_extra=ENCODE_BODY, summary="Encode images to code grids with a named model")
async def encode_named(request: Request, model: NamedModelDep, settings: SettingsDep,
                       resize: ResizeQuery = None) -> JSONResponse:
    return await encode(request, model, settings, resize)


@router.post("/decode", response_model=DecodeResponse, responses=DECODE_RESPONSES, openapi_extra=DECODE_BODY,
             summary="Decode code grids to PNG images with the default model")
async def decode_default(request: Request, model: DefaultModelDep, settings: SettingsDep) -> Response:
    return await decode(request, model, settings)


@router.post("/v1/models/{name}/decode", response_model=DecodeResponse, responses=DECODE_RESPONSES,
             openapi_extra=DECODE_BODY, summary="Decode code grids to PNG images with a named model")
async def decode_named(request: Request, model: NamedModelDep, settings: SettingsDep) -> Response:
    return await decode(request, model, settings)
