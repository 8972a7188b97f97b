"""POST /encode, /decode and their per-model forms /v1/models/{name}/encode|decode, defined once.

The table below is the one definition of the four codec routes: FastAPI's router is built from it
(OpenAPI, and every request when the fast path is off), and the fast path (api/fast_path.py)
matches paths against it and calls `serve` — the same target lookup, the same query validation,
the same handlers, so both give the same statuses, bodies and metric labels.

Each handler only wires the four steps, each in its own module and entered once:
parse (service/inputs) -> plan (service/workflows/plan.py) -> run (service/workflows/run.py) ->
respond (api/responses.py), inside the request's scope (api/request_scope.py: admission, memory
budget, deadlines). Errors are domain errors, mapped once in api/error_mapping.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import State

from contract.formats import FORMAT_NAMES, describe_formats, output_format, quoted
from runtime import InvalidParameter
from runtime.images import Resize
from service.api.deps import CodecTarget, codec_target
from service.api.openapi import (
    DECODE_BODY,
    DECODE_RESPONSES,
    ENCODE_BODY,
    ENCODE_RESPONSES,
    DecodeResponse,
    EncodeResponse,
)
from service.api.request_scope import admitted, body_charge, http_client_gone, metered, prefers_png
from service.api.responses import decode_response, encode_response
from service.inputs.bodies import read_images
from service.inputs.grids import read_grids
from service.workflows.plan import EncodeQuery, plan_decode, plan_encode
from service.workflows.run import run_decode_request, run_encode_request

Operation = Literal["encode", "decode"]


@dataclass(frozen=True)
class QueryParam:
    name: str
    choices: tuple[str, ...] | None  # None: a whole number ≥ 1
    description: str

    def problem(self, value: str) -> str | None:
        if self.choices is None:
            return None if value.isascii() and value.isdigit() and int(value) >= 1 else \
                f"query.{self.name}: Input should be a whole number ≥ 1"
        return None if value in self.choices else f"query.{self.name}: Input should be {quoted(self.choices)}"

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1} if self.choices is None else {"type": "string",
                                                                              "enum": list(self.choices)}


@dataclass(frozen=True)
class CodecRoute:
    path: str  # the route template, also the metric label
    operation: Operation
    summary: str

    @property
    def named(self) -> bool:
        return "{name}" in self.path


ENCODE_QUERY = (
    QueryParam("resize", ("native",), "`native`: resize every image to the model's native size before encoding"),
    QueryParam("format", FORMAT_NAMES, describe_formats()),
    QueryParam("stages", None, "residual models (GET /v1/models/{name}: quantizer.stages = S): return the first k "
                               "stages of every grid, 1 ≤ k ≤ S (default: all); the fewer, the coarser and smaller"),
)
QUERY: dict[Operation, tuple[QueryParam, ...]] = {"encode": ENCODE_QUERY, "decode": ()}
MODELS = "/v1/models/"
ROUTES = (
    CodecRoute("/encode", "encode", "Encode images to code grids with the default model"),
    CodecRoute(MODELS + "{name}/encode", "encode", "Encode images to code grids with a named model"),
    CodecRoute("/decode", "decode", "Decode code grids to PNG images with the default model"),
    CodecRoute(MODELS + "{name}/decode", "decode", "Decode code grids to PNG images with a named model"),
)
DEFAULT_ROUTES = {route.path: route for route in ROUTES if not route.named}
NAMED_ROUTES = {route.operation: route for route in ROUTES if route.named}


def match(path: str) -> tuple[CodecRoute, str | None] | None:
    """A request path -> (its route, the model name or None for the default), or None."""
    if path in DEFAULT_ROUTES:
        return DEFAULT_ROUTES[path], None
    if path.startswith(MODELS):
        name, _, operation = path[len(MODELS):].partition("/")
        if name and operation in NAMED_ROUTES:
            return NAMED_ROUTES[operation], name
    return None


def parse_query(route: CodecRoute, query_string: bytes) -> dict[str, str | None]:
    """The route's query parameters, validated (a blank value is not the default); every problem
    is named in one 422. Parameters the route does not take are ignored."""
    given = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)) if query_string else {}
    values: dict[str, str | None] = {}
    problems = []
    for param in QUERY[route.operation]:
        value = given.get(param.name)
        problem = param.problem(value) if value is not None else None
        if problem:
            problems.append(problem)
        values[param.name] = value
    if problems:
        raise InvalidParameter("; ".join(problems))
    return values


async def encode(request: Request, target: CodecTarget, query: EncodeQuery) -> Response:
    model, settings = target.model, target.settings
    async with admitted(target, body_charge(request), http_client_gone(request)) as scope:
        uploads = await read_images(metered(request, scope), settings.max_images, scope)  # parse
        plan = plan_encode(model, uploads, query, settings)  # plan: headers only, 4xx before any work
        encoded = await run_encode_request(model, plan, uploads, query.resize, scope, settings)  # run
        return await encode_response(model.manifest, plan, encoded)  # respond


async def decode(request: Request, target: CodecTarget) -> Response:
    model, settings = target.model, target.settings
    async with admitted(target, body_charge(request), http_client_gone(request)) as scope:
        body = await read_grids(metered(request, scope), model.runtime, settings, scope)  # parse
        png = body.single and prefers_png(request.headers.get("accept", ""))
        plan = plan_decode(model, body.size, body.shape, png_response=png, stream=body,
                           parsed_bytes=body.parsed_bytes)  # plan
        pngs = await run_decode_request(model, plan, body, scope, settings)  # run
        return decode_response(model.manifest, plan, pngs)  # respond


async def serve(request: Request, state: State, route: CodecRoute, name: str | None) -> Response:
    """One codec request, however it was routed."""
    target = codec_target(state, name)  # 404 / 503
    query = parse_query(route, request.scope.get("query_string", b""))
    if route.operation == "decode":
        return await decode(request, target)
    resize: Resize = "native" if query["resize"] == "native" else None
    stages = int(query["stages"]) if query["stages"] is not None else None
    return await encode(request, target, EncodeQuery(resize, output_format(query["format"] or "json"), stages))


# -- FastAPI's routes, from the same table -------------------------------------------------------


def _parameters(route: CodecRoute) -> list[dict[str, Any]]:
    params = [{"name": p.name, "in": "query", "required": False, "description": p.description,
               "schema": p.schema()} for p in QUERY[route.operation]]
    if route.named:
        params.insert(0, {"name": "name", "in": "path", "required": True, "description": "model name, e.g. mnist",
                          "schema": {"type": "string"}})
    return params


def _endpoint(route: CodecRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await serve(request, request.app.state, route, request.path_params.get("name"))

    endpoint.__name__ = f"{route.operation}_{'named' if route.named else 'default'}"
    return endpoint


router = APIRouter(tags=["codec"])
for _route in ROUTES:
    _body, _responses, _model = ((ENCODE_BODY, ENCODE_RESPONSES, EncodeResponse) if _route.operation == "encode"
                                 else (DECODE_BODY, DECODE_RESPONSES, DecodeResponse))
    router.add_api_route(_route.path, _endpoint(_route), methods=["POST"], summary=_route.summary,
                         response_model=_model, responses=_responses,
                         openapi_extra={**_body, "parameters": _parameters(_route)})
