"""Kubernetes probes. Plain `async def` on the event loop: never queued behind inference threads."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RegistryDep
from service.api.openapi import Liveness, NotReady, Readiness

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=Liveness, summary="Liveness: the process serves HTTP")
@router.get("/healthz", response_model=Liveness, summary="Liveness (alias of /livez)")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": NotReady}},
            summary="Readiness: every model loaded, verified, warmed up, on the requested provider")
async def readyz(registry: RegistryDep) -> JSONResponse:
    models = {
        name: {"state": s.state, "provider": s.provider, "reason": s.reason}
        for name, s in registry.models.items()
    }
    reasons = registry.not_ready_reasons()
    if reasons:
        error = {"code": "not_ready", "message": "; ".join(reasons)}
        return JSONResponse({"error": error, "models": models}, status_code=503)
    return JSONResponse({"status": "ready", "models": models})
