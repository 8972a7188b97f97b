"""POST /v1/models/{name}/sample: new images drawn from the model's learned prior.

The grids are drawn position by position from the prior (contract/prior.py, deterministic for a
seed) and decoded by the model's decoder, through the same admission gate, memory budget and
deadline as /decode. One PNG with `Accept: image/png` and count 1, else JSON with codes and PNGs.
"""

from __future__ import annotations

import base64
import secrets
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from contract.prior_coding import CHUNK_GRIDS
from runtime import TooManyImages
from runtime.prior_sampler import require_prior
from service.api.deps import NamedTargetDep
from service.api.openapi import ERROR_RESPONSES, SampleRequest, SampleResponse
from service.api.request_scope import for_client, prefers_png
from service.offload import off_loop
from service.workflows import plan_decode, run_decode

router = APIRouter(tags=["codec"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "JSON, or one PNG for count 1 with Accept: image/png"},
    **{status: ERROR_RESPONSES[status] for status in (400, 404, 413, 422, 429, 503, 504)},
}


@router.post("/v1/models/{name}/sample", response_model=SampleResponse, responses=RESPONSES,
             summary="Draw new images from the model's learned prior")
async def sample(request: Request, target: NamedTargetDep, body: SampleRequest) -> Any:
    model, settings, m = target.model, target.settings, target.model.manifest
    prior = require_prior(m, model.runtime.prior)  # 404 for a model without one
    label = prior.label_of(body.label)  # 422 for a class it does not have
    if body.count > settings.max_images:
        raise TooManyImages(f"count {body.count} is over this server's limit of {settings.max_images} per request")
    seed = body.seed if body.seed is not None else secrets.randbits(53)  # exact in a JavaScript number too
    png_only = body.count == 1 and prefers_png(request.headers.get("accept", ""))
    plan = plan_decode(model, 0, (body.count, *prior.shape.grid), png_response=png_only)
    walk = prior.shape.working_bytes(min(body.count, CHUNK_GRIDS))
    stop = threading.Event()  # set when the request ends: a walk left behind by a 504 or a gone client stops
    with target.gate.admit():  # 429 when too many requests are in progress
        async with target.memory.hold(plan.working_bytes + walk, f"sampling {body.count} grid(s)"):

            async def work() -> tuple[Any, list[bytes]]:
                codes = await off_loop(lambda: prior.sample(body.count, label, body.temperature, seed, stop), True)
                decoded = await run_decode(model, codes, plan)  # (count, h, w) -> PNGs
                assert decoded.pngs is not None
                return codes, decoded.pngs

            try:
                codes, pngs = await for_client(request, work(), plan.deadline_s(settings))
            finally:
                stop.set()
    if png_only:
        return Response(pngs[0], media_type="image/png", headers={"X-Seed": str(seed)})
    return {"model": m.name, "version": m.version, "seed": seed, "codes": codes.tolist(),
            "images": [base64.b64encode(png).decode("ascii") for png in pngs]}
