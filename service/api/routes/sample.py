"""POST /v1/models/{name}/sample: new images drawn from the model's learned prior.

The grids are drawn position by position from the prior (contract/prior_coding.py, deterministic
for a seed) and decoded by the model's decoder, through the same admission gate, memory budget,
body deadline and deadline as /decode. One PNG with `Accept: image/png` and count 1, else JSON
with codes and PNGs. parse -> plan -> run -> respond, as every codec route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.deps import NamedTargetDep
from service.api.openapi import ERROR_RESPONSES, SAMPLE_BODY, SampleResponse
from service.api.request_scope import admitted, body_charge, http_client_gone, metered, prefers_png
from service.api.responses import sample_response
from service.inputs.sample_body import read_sample_request
from service.workflows.plan import SampleQuery, plan_sample
from service.workflows.run import run_sample_request

router = APIRouter(tags=["codec"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "JSON, or one PNG for count 1 with Accept: image/png"},
    **{status: ERROR_RESPONSES[status] for status in (400, 404, 408, 413, 415, 422, 429, 503, 504)},
}


@router.post("/v1/models/{name}/sample", response_model=SampleResponse, responses=RESPONSES,
             openapi_extra=SAMPLE_BODY, summary="Draw new images from the model's learned prior")
async def sample(request: Request, target: NamedTargetDep) -> Response:
    model, settings = target.model, target.settings
    async with admitted(target, body_charge(request), http_client_gone(request)) as scope:
        body = await read_sample_request(metered(request, scope), scope)
        query = SampleQuery(body.count, body.label, body.temperature, body.guidance, body.top_k, body.top_p, body.seed)
        plan = plan_sample(model, query, settings,
                           png_response=body.count == 1 and prefers_png(request.headers.get("accept", "")))
        codes, pngs = await run_sample_request(model, plan, scope, settings)
        return sample_response(model.manifest, plan, codes, pngs)
