"""POST /encode, /decode and their per-model forms /v1/models/{name}/encode|decode.

Thin: admission, then the inputs layer parses and checks the body, the model's batcher runs it,
and the response is built here. Errors are raised as domain errors and mapped in error_mapping.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from contract.streams import Kind, encode_stream
from service.api.deps import CodecTarget, DefaultTargetDep, NamedTargetDep
from service.api.openapi import (
    DECODE_BODY,
    DECODE_RESPONSES,
    ENCODE_BODY,
    ENCODE_RESPONSES,
    DecodeResponse,
    EncodeResponse,
)
from service.api.request_scope import body_deadline, for_client, prefers_png
from service.inputs.bodies import read_images
from service.inputs.grids import read_grids
from service.inputs.images import Resize, decode_uploads, to_pngs

router = APIRouter(tags=["codec"])

ResizeQuery = Annotated[
    Resize, Query(description="`native`: resize every image to the model's native size before encoding")
]
OutputFormat = Literal["json", "packed", "entropy"]
FormatQuery = Annotated[OutputFormat, Query(
    description="`json` (default): lists of ints; `packed`: ceil(log2 K) bits per code; `entropy`: range-coded. "
                "Both binary formats are application/octet-stream streams that /decode accepts")]
STREAM_KINDS = {"packed": Kind.PACKED, "entropy": Kind.ENTROPY}


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


async def decode(request: Request, target: CodecTarget) -> Response:
    model, settings, m = target.model, target.settings, target.model.manifest
    with target.gate.admit():  # 429 before the body is read when too many requests are in progress
        async with body_deadline(settings.body_timeout_s):
            grids, single = await read_grids(request, m, model.runtime.entropy, settings)  # (N, h, w) int64
        images = await for_client(request, model.decode(grids), settings.request_timeout_s)  # (N, C, H, W)
        pngs = await to_pngs(images)
    if single and prefers_png(request.headers.get("accept", "")):
        return Response(pngs[0], media_type="image/png")
    return JSONResponse({"model": m.name, "version": m.version,
                         "images": [base64.b64encode(png).decode("ascii") for png in pngs]})


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
