"""Optional API key and CORS.

With VQVAE_API_KEY set, every request must carry `Authorization: Bearer <key>`, compared in constant
time; route groups named in VQVAE_AUTH_EXEMPT (probes, metrics, docs) are served without it. CORS
is off unless VQVAE_CORS_ORIGINS lists origins.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.responses import error_response

ROUTE_GROUPS = {
    "probes": ("/livez", "/healthz", "/readyz"),
    "metrics": ("/metrics",),
    "docs": ("/docs", "/redoc", "/openapi.json", "/static/docs/"),
    "demo": ("/", "/demo/"),
}


def exempt_prefixes(groups: set[str]) -> tuple[str, ...]:
    unknown = groups - set(ROUTE_GROUPS)
    if unknown:
        raise ValueError(f"VQVAE_AUTH_EXEMPT: unknown groups {sorted(unknown)}; known: {sorted(ROUTE_GROUPS)}")
    return tuple(prefix for g in sorted(groups) for prefix in ROUTE_GROUPS[g])


class ApiKeyAuth:
    """Pure ASGI: 401 before the body is read unless the bearer token matches (or the path is exempt)."""

    def __init__(self, app: ASGIApp, key: str, exempt: tuple[str, ...]) -> None:
        self.app, self.expected, self.exempt = app, f"Bearer {key}".encode(), exempt

    def _exempt(self, path: str) -> bool:
        """Exact paths, and prefixes for entries ending in "/" ("/" itself is exact: the demo page)."""
        return any(path == p or (len(p) > 1 and p.endswith("/") and path.startswith(p)) for p in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(presented, self.expected):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "unauthorized", "missing or invalid API key; send Authorization: Bearer <key>",
                                  headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

