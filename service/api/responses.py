"""The respond step of every codec route: JSON, one PNG, or a binary stream, from what the run made.

JSON of many codes is written a grid at a time, off the event loop when large: only one grid's
codes are ever Python objects (codes.tolist() of eight 2000×2000 images would be 2 million).
"""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi.responses import Response

from contract.manifest import Manifest
from service.offload import off_loop
from service.workflows.plan import RunPlan, SamplePlan
from service.workflows.run import INLINE_CODES, Encoded

# One compact encoder for every response: json.dumps(..., separators=...) builds a new one per call,
# which cost more than writing a digit's grid.
COMPACT = json.JSONEncoder(separators=(",", ":"))
UTF8_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse writes


def json_response(content: object) -> Response:
    """Starlette's JSONResponse, byte for byte, without a new encoder per response."""
    return Response(UTF8_COMPACT.encode(content).encode("utf-8"), media_type="application/json")


def codes_json(m: Manifest, codes: np.ndarray) -> bytes:
    """The encode response's JSON, written a grid at a time; a residual model's grids are [k][h][w]
    and "stages" says k."""
    fields = {"model": m.name, "version": m.version, "codebook_size": m.codebook_size,
              "grid": list(codes.shape[-2:])}
    if codes.ndim == 4:
        fields["stages"] = codes.shape[1]
    head = COMPACT.encode(fields)
    grids = ",".join(COMPACT.encode(grid.tolist()) for grid in codes)
    return f'{head[:-1]},"codes":[{grids}]}}'.encode()


async def encode_response(m: Manifest, plan: RunPlan, encoded: Encoded) -> Response:
    if encoded.stream is not None:
        return Response(encoded.stream, media_type=plan.output.media_type)
    body = await off_loop(lambda: codes_json(m, encoded.codes), encoded.codes.size > INLINE_CODES)
    return Response(body, media_type="application/json")


def base64_pngs(pngs: list[bytes]) -> list[str]:
    return [base64.b64encode(png).decode("ascii") for png in pngs]


def decode_response(m: Manifest, plan: RunPlan, pngs: list[bytes]) -> Response:
    if plan.png_response:
        return Response(pngs[0], media_type="image/png")
    return json_response({"model": m.name, "version": m.version, "images": base64_pngs(pngs)})


def sample_response(m: Manifest, plan: SamplePlan, codes: np.ndarray, pngs: list[bytes]) -> Response:
    if plan.decode.png_response:
        return Response(pngs[0], media_type="image/png", headers={"X-Seed": str(plan.seed)})
    return json_response({"model": m.name, "version": m.version, "seed": plan.seed, "codes": codes.tolist(),
                          "images": base64_pngs(pngs)})
