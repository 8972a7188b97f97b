"""The Open Inference Protocol (KServe v2, Triton's HTTP API): /v2, health, model metadata, infer.

Every served model appears as two v2 models, `{name}-encode` and `{name}-decode`, versioned by the
manifest's version. Inference goes through the same admission gate, memory budget, workflows,
batching queue, deadlines and metrics as /encode and /decode: there is no second inference path.
Errors leave as {"error": "<message>"} (error_mapping.py) with the same statuses as elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from runtime.memory_estimates import JSON_PARSE_BYTES_PER_BODY_BYTE
from service.api.deps import RegistryDep
from service.api.openapi import V2_INFER_BODY, V2_RESPONSES
from service.api.request_scope import body_deadline
from service.api.v2_inference import V2_EXTENSIONS, V2Target, model_metadata, resolve, run_v2_decode, run_v2_encode
from service.inference.registry import ModelRegistry
from service.inputs.v2_tensors import HEADER_LENGTH, InferRequest, decompressed, infer_response, parse_infer_request
from service.offload import off_loop

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
    target: V2Target = resolve(registry, name, version, need_ready=True)
    with state.admission.admit():
        async with registry.memory.hold(reading_bytes(request, settings.max_body_bytes), "reading the request") as held:
            async with body_deadline(settings.body_timeout_s):
                body = await request.body()
            body = decompressed(body, request.headers.get("content-encoding", "").lower(), settings.max_body_bytes)
            parsed: InferRequest = await off_loop(
                lambda: parse_infer_request(body, request.headers.get(HEADER_LENGTH)), heavy=len(body) > 65536)
            run = run_v2_encode if target.operation == "encode" else run_v2_decode
            outputs = await run(request, target, parsed, settings, held)
            content, headers = await off_loop(lambda: infer_response(
                name, target.served.manifest.version, parsed.id, outputs), heavy=_size(outputs) > 65536)
            return Response(content, headers=headers)


def reading_bytes(request: Request, max_body_bytes: int) -> int:
    """Reading and parsing a v2 body: the body (inflated, at most the limit when compressed), and the
    JSON part's Python objects (all of it, unless the binary extension says how long it is)."""
    compressed = request.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    body = max_body_bytes if compressed else min(max_body_bytes, int(request.headers.get("content-length") or
                                                                     max_body_bytes))
    header = request.headers.get(HEADER_LENGTH, "")
    json_part = min(body, int(header)) if header.isdigit() else body
    return body + json_part * JSON_PARSE_BYTES_PER_BODY_BYTE


def _size(outputs: list[Any]) -> int:
    return sum(o.data.nbytes if isinstance(o.data, np.ndarray) else sum(map(len, o.data)) for o in outputs)


@router.post("/models/{model_name}/infer", summary="Inference", openapi_extra=V2_INFER_BODY,
             responses=V2_RESPONSES)
async def infer_latest(request: Request, model_name: ModelName) -> Response:
    return await infer(request, model_name, None)


@router.post("/models/{model_name}/versions/{version}/infer", summary="Inference, one version",
             openapi_extra=V2_INFER_BODY, responses=V2_RESPONSES)
async def infer_version(request: Request, model_name: ModelName, version: Version) -> Response:
    return await infer(request, model_name, version)
