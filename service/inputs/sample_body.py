"""The body of POST /v1/models/{name}/sample: strict JSON (400 otherwise), then strict fields (422
naming the field: "5" is not a count, true is not a class), read within the body deadline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from runtime import InvalidParameter
from service.errors import InvalidJSON, UnsupportedMediaType
from service.inputs.bodies import ReadScope, media_type, parse_json


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "5" is not a count, true is not a class

    count: int = Field(1, ge=1, description="grids to draw (at most VQVAE_MAX_IMAGES)")
    label: int | str | None = Field(None, alias="class",
                                    description="class index or name (GET /v1/models/{name}: prior.class_names); "
                                                "omit for no class")
    temperature: float | None = Field(None, ge=0, le=10, allow_inf_nan=False,
                                      description="softmax temperature; 0 takes the likeliest code; omitted: the "
                                                  "model's default (GET /v1/models/{name}: prior.sampling)")
    guidance: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                   description="classifier-free guidance g: logits = uncond + (1 + g)·(cond − uncond); "
                                               "0 is off; omitted: the model's default, chosen by measurement")
    top_k: int | None = Field(None, ge=1, description="draw among the k likeliest codes only (k ≤ the codebook size)")
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                description="draw among the likeliest codes whose probabilities reach p (nucleus)")
    seed: int | None = Field(None, ge=0, lt=1 << 63, description="the same seed draws the same grids; "
                                                               "omitted: a random one, returned in the response")


def validated(payload: object) -> SampleRequest:
    try:
        return SampleRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"body.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                             for e in exc.errors()[:3])
        raise InvalidParameter(problems[:500]) from None


async def read_sample_request(request: Request, scope: ReadScope) -> SampleRequest:
    """An empty body asks for the defaults (one grid, no class)."""
    kind = media_type(request)
    if kind not in ("application/json", "") and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"content type {kind[:80]!r} is not accepted; send application/json")
    async with scope.reading():
        body = await request.body()
    # NaN and infinities are let through the JSON parser here, so that validation names their field.
    payload = parse_json(body, constants=True) if body.strip() else {}
    if not isinstance(payload, dict):  # the body is one JSON object, as for every JSON route here
        raise InvalidJSON(f"the body is a JSON {type(payload).__name__}; send a JSON object such as {{\"count\": 4}}")
    return validated(payload)
