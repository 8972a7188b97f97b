"""The codec routes served straight from ASGI, without FastAPI's routing and dependency injection.

POST /encode, /decode and /v1/models/{name}/encode|decode carry nearly all the traffic, and for a
single digit FastAPI's per-request machinery (its middleware layers, routing, dependency and query
validation: ~25 % of a worker's CPU per request, py-spy, BENCHMARKS.md) cost more than inference.
This layer matches those four routes itself and calls the very same handlers
(api/routes/encode_decode.py: admission, memory budget, deadlines, validation, workflows), maps
errors with the same function (error_mapping.response_for) and labels the request metrics with
the same route templates. Every other path, and the OpenAPI description of these four, is
FastAPI's. It sits inside the middleware stack (metrics, header and body limits, API key, CORS
all apply), directly in front of the FastAPI application.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import CodecTarget
from service.api.error_mapping import error_response, response_for
from service.api.routes.encode_decode import STREAM_KINDS, decode, encode

PREFIX, ENCODE, DECODE = "/v1/models/", "/encode", "/decode"
FORMATS = ("json", *STREAM_KINDS)


class RouteTemplate(NamedTuple):
    """What RequestMetrics reads from scope["route"] (as it reads a Starlette route): the template."""

    path: str


class CodecFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _match(self, path: str) -> tuple[str, str | None] | None:
        """path -> (operation, model name or None for the default), or None for everything else."""
        if path in (ENCODE, DECODE):
            return path[1:], None
        if path.startswith(PREFIX):
            name, _, operation = path[len(PREFIX):].partition("/")
            if name and operation in ("encode", "decode"):
                return operation, name
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        operation, name = matched
        template = (PREFIX + "{name}/" if name is not None else "/") + operation
        scope["route"] = RouteTemplate(template)  # RequestMetrics labels by the template, never the raw path
        request = Request(scope, receive)
        try:
            response = await self._handle(request, operation, name)
        except Exception as exc:  # mapped exactly as FastAPI's handlers map it
            response = response_for(exc, "POST", scope["path"])
        await response(scope, receive, send)

    async def _handle(self, request: Request, operation: str, name: str | None) -> Response:
        state = request.app.state  # Starlette puts the application in the scope before any middleware
        registry, settings = state.registry, state.settings
        model = registry.get(name if name is not None else settings.default_model)  # 404 / 503
        target = CodecTarget(model, settings, state.admission, registry.memory)
        if operation == "decode":
            return await decode(request, target)
        # As FastAPI validates them: a blank value is not the default, and every problem is named.
        query = dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        resize, output = query.get("resize"), query.get("format", "json")
        problems = ([] if resize in (None, "native") else ["query.resize: Input should be 'native'"]) + \
            ([] if output in FORMATS else ["query.format: Input should be " + ", ".join(f"'{f}'" for f in FORMATS)])
        if problems:
            return error_response(422, "invalid_parameter", "; ".join(problems))
        return await encode(request, target, resize, output)
