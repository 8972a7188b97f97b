"""The codec routes served straight from ASGI, without FastAPI's routing and dependency injection.

POST /encode, /decode and /v1/models/{name}/encode|decode carry nearly all the traffic, and for a
single digit FastAPI's per-request machinery (its middleware layers, routing, dependency and query
validation: ~25 % of a worker's CPU per request, py-spy, BENCHMARKS.md) cost more than inference.
This layer matches paths against the codec routes' one table (api/routes/codec.py) and calls the
same `serve` as FastAPI's routes (target lookup, query validation, handlers), maps errors with
the same function (error_mapping.response_for) and labels the request metrics with the same route
templates. Every other path, and the OpenAPI description of these four, is FastAPI's. It sits
inside the middleware stack (metrics, header and body limits, API key, CORS all apply), directly
in front of the FastAPI application; VQVAE_FAST_PATH=off leaves every request to FastAPI.
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.error_mapping import response_for
from service.api.routes.codec import match, serve


class RouteTemplate(NamedTuple):
    """What RequestMetrics reads from scope["route"] (as it reads a Starlette route): the template."""

    path: str


class CodecFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, name = matched
        scope["route"] = RouteTemplate(route.path)  # RequestMetrics labels by the template, never the raw path
        request = Request(scope, receive)
        try:
            # Starlette puts the application in the scope before any middleware runs.
            response = await serve(request, request.app.state, route, name)
        except Exception as exc:  # mapped exactly as FastAPI's handlers map it
            response = response_for(exc, "POST", scope["path"])
        await response(scope, receive, send)
