"""Pure ASGI middleware: request metrics, header and body size limits, the optional API key.

Pure ASGI rather than BaseHTTPMiddleware: no per-request task or body buffering. Order (outermost
first, set in app.py): metrics, header limit, CORS, API key, body limit, then the routes.

With VQVAE_API_KEY set, every request must carry `Authorization: Bearer <key>` (the scheme in any
case, as HTTP auth schemes are case-insensitive: RFC 9110 §11.1), the key compared in constant time;
route groups named in VQVAE_AUTH_EXEMPT (probes, metrics, docs, demo) are served without it.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import PayloadTooLarge
from service.api.error_mapping import error_response
from service.errors import HeadersTooLarge
from service.telemetry import IN_FLIGHT, LATENCY, REQUESTS


class RequestMetrics:
    """Pure ASGI middleware: count, time and gauge every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Each label set's children, looked up once: prometheus_client's labels() costs more than the
        # increment. Bounded as the labels are (route templates × methods × statuses).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _record(self, template: str, method: str, status: int, seconds: float) -> None:
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (REQUESTS.labels(template, method, str(status)), LATENCY.labels(template))
        count, latency = series
        count.inc()
        latency.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            IN_FLIGHT.dec()
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"  # never the raw URL: bounded labels
            self._record(template, scope["method"], status, time.perf_counter() - started)


class HeaderSizeLimit:
    """Pure ASGI: 431 when a request's headers (names and values) total more than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.max_bytes:
                message = f"request headers total {size} bytes; the limit is {self.max_bytes} (VQVAE_MAX_HEADER_BYTES)"
                await error_response(431, HeadersTooLarge.code, message, path=scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Pure ASGI: 413 for a declared Content-Length over the limit before reading; a streamed
    (chunked or lying) body is counted as it arrives and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, PayloadTooLarge.code, self._message(), path=scope["path"])(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_bytes} bytes"


ROUTE_GROUPS = {
    "probes": ("/livez", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"),  # the KServe probes too
    "metrics": ("/metrics",),
    "docs": ("/docs", "/redoc", "/openapi.json", "/static/docs/"),
    "demo": ("/", "/demo/"),
}


def exempt_prefixes(groups: set[str]) -> tuple[str, ...]:
    unknown = groups - set(ROUTE_GROUPS)
    if unknown:
        raise ValueError(f"VQVAE_AUTH_EXEMPT: unknown groups {sorted(unknown)}; known: {sorted(ROUTE_GROUPS)}")
    return tuple(prefix for g in sorted(groups) for prefix in ROUTE_GROUPS[g])


def bearer_token(authorization: bytes) -> bytes:
    """The credentials of `Bearer <token>`, the scheme in any case and spaces after it; b"" for any
    other scheme (the token itself is compared whole: no prefix or case tricks)."""
    scheme, _, token = authorization.partition(b" ")
    return token.lstrip(b" ") if scheme.lower() == b"bearer" else b""


class ApiKeyAuth:
    """Pure ASGI: 401 before the body is read unless the bearer token matches (or the path is exempt)."""

    def __init__(self, app: ASGIApp, key: str, exempt: tuple[str, ...]) -> None:
        self.app, self.expected, self.exempt = app, key.encode(), exempt

    def _exempt(self, path: str) -> bool:
        """Exact paths, and prefixes for entries ending in "/" ("/" itself is exact: the demo page)."""
        return any(path == p or (len(p) > 1 and p.endswith("/") and path.startswith(p)) for p in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if hmac.compare_digest(bearer_token(dict(scope["headers"]).get(b"authorization", b"")), self.expected):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "unauthorized", "missing or invalid API key; send Authorization: Bearer <key>",
                                  path=scope["path"],
                                  headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
