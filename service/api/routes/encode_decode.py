"""POST /encode, /decode and their per-model forms /v1/models/{name}/encode|decode.

Thin: admission (a place, then bytes of the memory budget), then the inputs layer parses and
checks the body, the workflows plan and run it through the model's batcher, and the response is
built here. Errors are raised as domain errors and mapped in error_mapping.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from contract.manifest import Manifest
from contract.prior_coding import CHUNK_GRIDS
from contract.streams import Kind, encode_stream
from runtime.images import Resize
from runtime.memory_estimates import body_bytes
from runtime.prior_sampler import require_prior
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
from service.config import Settings
from service.inputs.bodies import media_type, read_images
from service.inputs.grids import read_grids
from service.offload import off_loop
from service.workflows import plan_decode, plan_encode, run_decode, run_encode, upload_loader

router = APIRouter(tags=["codec"])

ResizeQuery = Annotated[
    Resize, Query(description="`native`: resize every image to the model's native size before encoding")
]
OutputFormat = Literal["json", "packed", "entropy", "prior"]
FormatQuery = Annotated[OutputFormat, Query(
    description="`json` (default): lists of ints; `packed`: ceil(log2 K) bits per code; `entropy`: range-coded "
                "with the static model; `prior`: range-coded with the learned prior's conditionals (models that "
                "ship a prior, native-size grids). The binary formats are application/octet-stream streams that "
                "/decode accepts")]
STREAM_KINDS = {"packed": Kind.PACKED, "entropy": Kind.ENTROPY, "prior": Kind.PRIOR}
INLINE_CODES = 64 * 49  # responses of up to 64 digits' codes are written on the event loop
WATCH_PIXELS = 4 * 28 * 28  # requests larger than a few digits are cancelled when their client leaves


def codes_json(m: Manifest, codes: np.ndarray) -> bytes:
    """The encode response's JSON, written a grid at a time: only one grid's codes are ever Python
    objects (codes.tolist() of eight 2000×2000 images would be 2 million of them)."""
    head = json.dumps({"model": m.name, "version": m.version, "codebook_size": m.codebook_size,
                       "grid": list(codes.shape[1:])}, separators=(",", ":"))
    grids = ",".join(json.dumps(grid.tolist(), separators=(",", ":")) for grid in codes)
    return f'{head[:-1]},"codes":[{grids}]}}'.encode()


def declared_body_bytes(request: Request, settings: Settings) -> int:
    """Content-Length when it is given (the body-size middleware holds the client to it), else the limit."""
    declared = request.headers.get("content-length", "")
    return min(int(declared), settings.max_body_bytes) if declared.isdigit() else settings.max_body_bytes


async def encode(request: Request, target: CodecTarget, resize: Resize, output: OutputFormat) -> Response:
    model, settings, m = target.model, target.settings, target.model.manifest
    reading = body_bytes(media_type(request), declared_body_bytes(request, settings))
    stop = threading.Event()
    with target.gate.admit():  # 429 before the body is read when too many requests are in progress
        async with target.memory.hold(reading, "reading the request body") as held:
            async with body_deadline(settings.body_timeout_s):
                uploads = await read_images(request, settings.max_images)
            plan = plan_encode(model, uploads, resize, settings, json_output=output == "json")  # headers: 4xx now
            walk = 0
            if output == "prior":  # 422 now, before any work, for a model without a prior or another grid size
                prior = require_prior(m, model.runtime.prior, for_streams=True)
                prior.check_grid(plan.size[0] // m.downsample, plan.size[1] // m.downsample)
                walk = prior.shape.working_bytes(min(len(uploads), CHUNK_GRIDS))  # its coder's cache
            await held.grow_to(plan.working_bytes + walk, plan.what)
            work = run_encode(model, plan, upload_loader(m, uploads, resize, plan.size, settings.max_pixels))
            codes = await for_client(request, work, plan.deadline_s(settings), plan.pixels > WATCH_PIXELS)  # (N, h, w)
            # An entropy coder or JSON writer taking long runs off the loop; the prior always does (a walk
            # through its graph for every position).
            heavy = codes.size > INLINE_CODES or output == "prior"
            if output != "json":
                coder = model.runtime.prior.coder.bound(stop) if model.runtime.prior else None
                coding = off_loop(lambda: encode_stream(codes, STREAM_KINDS[output], m, model.runtime.entropy, coder),
                                  heavy)
                try:  # the prior's coder is inference too: under the deadline, stopped when the client leaves
                    stream = await (for_client(request, coding, plan.deadline_s(settings)) if output == "prior"
                                    else coding)
                finally:
                    stop.set()
                return Response(stream, media_type="application/octet-stream")
            return Response(await off_loop(lambda: codes_json(m, codes), heavy), media_type="application/json")


async def decode(request: Request, target: CodecTarget) -> Response:
    model, settings, m = target.model, target.settings, target.model.manifest
    reading = body_bytes(media_type(request), declared_body_bytes(request, settings))
    png_wanted = prefers_png(request.headers.get("accept", ""))
    stop = threading.Event()
    with target.gate.admit():  # 429 before the body is read when too many requests are in progress
        async with target.memory.hold(reading, "reading the request body") as held:
            async with body_deadline(settings.body_timeout_s):
                runtime = model.runtime
                body = await read_grids(request, m, runtime.entropy, settings, held.grow_to,
                                        runtime.prior.coder.bound(stop) if runtime.prior else None)
            single = body.single
            plan = plan_decode(model, body.size, body.shape, png_response=single and png_wanted)
            await held.grow_to(plan.working_bytes, plan.what)

            async def work() -> list[bytes]:
                decoded = await run_decode(model, await body.grids(), plan)  # grids: (N, h, w) int64
                assert decoded.pngs is not None
                return decoded.pngs

            try:
                pngs = await for_client(request, work(), plan.deadline_s(settings), plan.pixels > WATCH_PIXELS)
            finally:
                stop.set()  # a prior stream's decoder left behind by a 504 or a gone client stops
            if single and png_wanted:
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
