"""The FastAPI application: `create_app()` builds it; the lifespan loads the models into app.state.

    uvicorn --factory service.api.app:create_app     # or: python -m service
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from service.api.error_mapping import install_error_handlers
from service.api.fast_path import CodecFastPath
from service.api.middleware import ApiKeyAuth, BodySizeLimit, HeaderSizeLimit, RequestMetrics, exempt_prefixes
from service.api.routes import codec, model_info, probes, prometheus, sample, v2, v2_extensions
from service.api.routes.demo import install_demo
from service.api.sigterm import install_sigterm_drain
from service.config import Settings, get_settings
from service.grpc_api.endpoint import start_grpc
from service.inference.admission import AdmissionGate
from service.inference.registry import ModelRegistry
from service.inference.repository import ModelRepository
from service.telemetry import forget_dead_workers

API_VERSION = "1.0.0"
log = logging.getLogger("service")
DOCS_ASSETS = "/static/docs"


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
    registry = ModelRegistry(settings, requests_in_progress=lambda: app.state.admission.in_progress)
    registry.discover()
    app.state.registry = registry
    app.state.repository = ModelRepository(registry)
    dead = forget_dead_workers()  # a worker replacing one that died: its live gauges go with it
    if dead:
        log.warning("replacing worker process(es) %s, which died; their live gauges dropped", dead)
    # gRPC in this process, on this loop: the same registry, gate, budget and batchers as HTTP.
    grpc_endpoint = await start_grpc(app.state, settings, app.version) if settings.grpc_port else None
    restore_signals = install_sigterm_drain(registry.begin_shutdown, settings.drain_seconds,
                                            grpc_endpoint.stop_soon if grpc_endpoint else None)
    loading: asyncio.Future[Any] | None = None
    if settings.on_model_error == "exit":  # load before serving; any failure fails start-up
        registry.load_all()
        if registry.problem or registry.failures():
            raise RuntimeError("start-up aborted, VQVAE_ON_MODEL_ERROR=exit: "
                               + "; ".join([registry.problem, *registry.failures()]).strip("; "))
    elif settings.workers > 1:
        # Load before taking connections: the workers share one listening socket, so the others take
        # every connection meanwhile, and a worker replacing one that died never answers 503 while
        # the service as a whole is ready.
        await asyncio.to_thread(registry.load_all)
    else:  # serve /livez at once; /readyz turns 200 when loading and warm-up are done
        loading = asyncio.ensure_future(asyncio.to_thread(registry.load_all))
    yield
    registry.begin_shutdown()
    restore_signals()
    if grpc_endpoint is not None:  # HTTP's requests have finished; gRPC's finish here
        await grpc_endpoint.stopped()
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
    # v2_extensions before v2: /v2/models/stats is not the metadata of a model named "stats".
    for router in (probes.router, model_info.router, codec.router, sample.router, prometheus.router,
                   v2_extensions.router, v2.router):
        app.include_router(router)
    if settings.demo == "on":
        install_demo(app)
    # Last added runs first: metrics, header limit, CORS (preflights carry no credentials), auth, body limit,
    # then the codec routes' fast path (api/fast_path.py), then FastAPI's own layers and router.
    if settings.fast_path == "on":
        app.add_middleware(CodecFastPath)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyAuth, key=settings.api_key.get_secret_value(),
                           exempt=exempt_prefixes(settings.exempt_groups))
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"], max_age=600)
    app.add_middleware(HeaderSizeLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(RequestMetrics)  # outermost: counts every response, 401s, 413s and 431s included
    return app
