"""The FastAPI application: `create_app()` builds it; the lifespan loads the models into app.state.

    uvicorn --factory service.main:create_app     # or: python -m service
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admission import AdmissionGate
from service.config import Settings, get_settings
from service.errors import CodecError, PayloadTooLarge
from service.metrics import RequestMetrics
from service.registry import ModelRegistry
from service.responses import error_response
from service.routes import codec, health, metrics, models
from service.routes.demo import install_demo
from service.security import ApiKeyAuth, exempt_prefixes
from service.shutdown import install_sigterm_drain

log = logging.getLogger("service")
API_VERSION = "1.0.0"
DOCS_ASSETS = "/static/docs"


# -- errors: every failure leaves as {"error": {"code", "message"}} -------------------------------


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 503: "unavailable"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CodecError)
    async def on_codec_error(request: Request, exc: CodecError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers or None)

    @app.exception_handler(HTTPException)
    async def on_http_exception(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "no such endpoint; see /docs"
        return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), message,
                              headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        return error_response(422, "invalid_parameter", problems[:500])

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client closed the connection mid-body: nobody will read this; not a server fault.
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client closed the connection before the body ended")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "unexpected server error; it has been logged")


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
            await error_response(413, PayloadTooLarge.code, self._message())(scope, receive, send)
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


# -- docs served from local assets (FastAPI's defaults load them from a CDN) ---------------------


def install_docs(app: FastAPI) -> None:
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


# -- lifespan ------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    registry = ModelRegistry(settings)
    registry.discover()
    app.state.registry = registry
    restore_signals = install_sigterm_drain(registry.begin_shutdown, settings.drain_seconds)
    loading: asyncio.Future[Any] | None = None
    if settings.on_model_error == "exit":  # load before serving; any failure fails start-up
        registry.load_all()
        if registry.problem or registry.failures():
            raise RuntimeError("start-up aborted, VQVAE_ON_MODEL_ERROR=exit: "
                               + "; ".join([registry.problem, *registry.failures()]).strip("; "))
    else:  # serve /livez at once; /readyz turns 200 when loading and warm-up are done
        loading = asyncio.ensure_future(asyncio.to_thread(registry.load_all))
    yield
    registry.begin_shutdown()
    restore_signals()
    if loading is not None:
        await loading
    await registry.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="vqvae-codec", version=API_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A VQ-VAE image codec: images to grids of code indices, and back.")
    app.state.settings = settings
    app.state.admission = AdmissionGate(settings.max_in_flight)
    install_error_handlers(app)
    install_docs(app)
    for router in (health.router, models.router, codec.router, metrics.router):
        app.include_router(router)
    if settings.demo == "on":
        install_demo(app)
    # Last added runs first: metrics, CORS (preflights carry no credentials), auth, body limit, app.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyAuth, key=settings.api_key.get_secret_value(),
                           exempt=exempt_prefixes(settings.exempt_groups))
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"], max_age=600)
    app.add_middleware(RequestMetrics)  # outermost: counts every response, 401s and 413s included
    return app
