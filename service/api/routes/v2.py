"""The Open Inference Protocol (KServe v2, Triton's HTTP API): /v2, health, model metadata, infer.

Every served model appears as two v2 models, `{name}-encode` and `{name}-decode`, versioned by the
manifest's version (api/v2_protocol.py). Inference is parse -> plan -> run -> respond through the
same request scope (admission gate, memory budget, deadlines), plan and run steps, batching queue
and metrics as /encode and /decode: there is no second inference path.
Errors leave as {"error": "<message>"} (error_mapping.py) with the same statuses as elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from service.api.deps import CodecTarget, RegistryDep
from service.api.openapi import V2_INFER_BODY, V2_RESPONSES
from service.api.request_scope import admitted, http_client_gone, metered
from service.api.v2_protocol import V2_EXTENSIONS, infer_response, model_metadata, plan_v2, resolve, run_v2
from service.inference.registry import ModelRegistry
from service.inputs.v2_tensors import read_infer_request, v2_body_charge

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
ModelName = Annotated[str, Path(description="`{name}-encode` or `{name}-decode`, e.g. mnist-encode")]
Version = Annotated[str, Path(description="the model's version (its manifest's), e.g. 2.1.0")]
API_VERSION = "2"


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": "vqvae-codec", "version": request.app.version, "extensions": V2_EXTENSIONS}


@router.get("/health/live", summary="Liveness (200 while the process serves HTTP)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness (200 when every model is ready, else 503)",
            responses={503: V2_RESPONSES[503]})
async def ready(registry: RegistryDep) -> JSONResponse:
    reasons = registry.not_ready_reasons()
    if reasons:
        return JSONResponse({"error": "; ".join(reasons)}, status_code=503)
    return JSONResponse({"ready": True})


def _metadata(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    return model_metadata(resolve(registry, name, version))


@router.get("/models/{model_name}", summary="Model metadata", responses={404: V2_RESPONSES[404]})
async def metadata(model_name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    return _metadata(registry, model_name, None)


@router.get("/models/{model_name}/versions/{version}", summary="Model metadata, one version",
            responses={404: V2_RESPONSES[404]})
async def metadata_version(model_name: ModelName, version: Version, registry: RegistryDep) -> dict[str, Any]:
    return _metadata(registry, model_name, version)


def _model_ready(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    target = resolve(registry, name, version, need_ready=True)
    return {"name": name, "ready": True, "version": target.served.manifest.version}


@router.get("/models/{model_name}/ready", summary="Model readiness (200, or 503 while loading or failed)",
            responses={404: V2_RESPONSES[404], 503: V2_RESPONSES[503]})
async def model_ready(model_name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    return _model_ready(registry, model_name, None)


@router.get("/models/{model_name}/versions/{version}/ready", summary="Model readiness, one version",
            responses={404: V2_RESPONSES[404], 503: V2_RESPONSES[503]})
async def model_version_ready(model_name: ModelName, version: Version, registry: RegistryDep) -> dict[str, Any]:
    return _model_ready(registry, model_name, version)


async def infer(request: Request, name: str, version: str | None) -> Response:
    state = request.app.state
    settings, registry = state.settings, state.registry
    target = resolve(registry, name, version, need_ready=True)  # 404 / 503
    gate = CodecTarget(target.served, settings, state.admission, registry.memory, registry.work)
    async with admitted(gate, v2_body_charge(request.headers), http_client_gone(request)) as scope:
        parsed = await read_infer_request(metered(request, scope), settings.max_body_bytes, scope)  # parse
        work = plan_v2(target, parsed, settings)  # plan
        outputs = await run_v2(work, scope, settings)  # run
        return await infer_response(name, target.served.manifest.version, parsed.id, outputs)  # respond


@router.post("/models/{model_name}/infer", summary="Inference", openapi_extra=V2_INFER_BODY,
             responses=V2_RESPONSES)
async def infer_latest(request: Request, model_name: ModelName) -> Response:
    return await infer(request, model_name, None)


@router.post("/models/{model_name}/versions/{version}/infer", summary="Inference, one version",
             openapi_extra=V2_INFER_BODY, responses=V2_RESPONSES)
async def infer_version(request: Request, model_name: ModelName, version: Version) -> Response:
    return await infer(request, model_name, version)
