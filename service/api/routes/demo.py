"""The demo page at / and its assets under /demo/ (VQVAE_DEMO=off turns both off).

Plain HTML, CSS and JavaScript shipped in the package: no CDN, no build step. The page talks to
the service only through its public API, so it doubles as living documentation of it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parents[2] / "static" / "demo"

router = APIRouter(tags=["demo"])


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    return FileResponse(ASSETS / "index.html", media_type="text/html")


def install_demo(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/demo", StaticFiles(directory=ASSETS), name="demo-assets")
