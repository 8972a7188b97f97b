"""GET /metrics: Prometheus text exposition (aggregated over workers in multiprocess mode)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.telemetry import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)
