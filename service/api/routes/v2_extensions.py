"""Triton's extensions of the v2 HTTP API: model configuration, statistics and the model repository.

    GET  /v2/models/stats                                  every served v2 model's statistics
    GET  /v2/models/{m}[/versions/{v}]/stats               one model's (Triton's `model_stats` schema)
    GET  /v2/models/{m}[/versions/{v}]/config              its configuration (model_config.proto's fields)
    POST /v2/repository/index                              {"ready": bool}? -> [{name, version, state, reason}]
    POST /v2/repository/models/{m}/load | /unload          VQVAE_MODEL_CONTROL=explicit only (403 otherwise)

Included before api/routes/v2.py's router, so that /v2/models/stats is not read as the metadata of a
model named "stats". The work is protocol-neutral (api/v2_protocol.py, inference/repository.py):
gRPC serves the same answers (service/grpc_api/). The API key guards these as every other route.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from runtime import BadRequest
from service.api.deps import RegistryDep
from service.api.openapi import V2_RESPONSES
from service.api.v2_protocol import (
    model_config,
    repository_index,
    repository_model,
    repository_parameters,
    resolve,
    statistics,
)
from service.inference.repository import ModelRepository

router = APIRouter(prefix="/v2", tags=["v2 (Triton extensions)"])
ModelName = Annotated[str, Path(description="`{name}-encode` or `{name}-decode`, e.g. mnist-encode")]
RepoModel = Annotated[str, Path(description="a model directory (mnist) or either of its v2 models (mnist-encode)")]
Version = Annotated[str, Path(description="the model's version (its manifest's), e.g. 2.1.0")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: V2_RESPONSES[404], 503: V2_RESPONSES[503]}


def _error(text: str) -> dict[str, Any]:
    return {**V2_RESPONSES[400], "description": text}


REPOSITORY: dict[int | str, dict[str, Any]] = {
    200: {"description": "Done (an empty body, as Triton answers)"},
    400: _error("Malformed body, or load parameters this service does not take (config, file: overrides)"),
    403: _error("Model control is off (VQVAE_MODEL_CONTROL=none, the default)"),
    404: _error("No such model directory"),
    503: _error("The start-up loading has not finished, or shutdown has begun"),
}


@router.get("/models/stats", summary="Statistics of every served v2 model")
async def all_stats(registry: RegistryDep) -> dict[str, Any]:
    return statistics(registry, None, None)


@router.get("/models/{model_name}/stats", summary="Statistics of one model", responses=NOT_FOUND)
async def model_stats(model_name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    return statistics(registry, model_name, None)


@router.get("/models/{model_name}/versions/{version}/stats", summary="Statistics of one model version",
            responses=NOT_FOUND)
async def version_stats(model_name: ModelName, version: Version, registry: RegistryDep) -> dict[str, Any]:
    return statistics(registry, model_name, version)


@router.get("/models/{model_name}/config", summary="Model configuration", responses=NOT_FOUND)
async def config(model_name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    return model_config(resolve(registry, model_name, None))


@router.get("/models/{model_name}/versions/{version}/config", summary="Model configuration, one version",
            responses=NOT_FOUND)
async def config_version(model_name: ModelName, version: Version, registry: RegistryDep) -> dict[str, Any]:
    return model_config(resolve(registry, model_name, version))


async def _json_object(request: Request) -> dict[str, Any]:
    """An optional JSON object body (tritonclient sends none, or {"parameters": {...}})."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({str(exc)[:100]})") from exc
    if not isinstance(parsed, dict):
        raise BadRequest("the request body must be a JSON object")
    return parsed


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    return parameters


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


@router.post("/repository/index", summary="The models of the repository, with their state",
             responses={400: _error("Malformed body")})
async def index(request: Request) -> JSONResponse:
    ready = (await _json_object(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest('"ready" must be true or false')
    return JSONResponse(repository_index(_repository(request), ready))


@router.post("/repository/models/{model_name}/load", summary="Load or reload a model (VQVAE_MODEL_CONTROL=explicit)",
             response_class=Response,
             responses={**REPOSITORY, 422: _error("The model fails its checks; nothing changed but its reason")})
async def load(request: Request, model_name: RepoModel) -> Response:
    repository = _repository(request)
    repository.allowed("loading models")
    repository_parameters(_parameters(await _json_object(request)), "load")
    await repository.load(repository_model(repository, model_name))
    return Response(status_code=200)


@router.post("/repository/models/{model_name}/unload", summary="Unload a model (VQVAE_MODEL_CONTROL=explicit)",
             response_class=Response, responses=REPOSITORY)
async def unload(request: Request, model_name: RepoModel) -> Response:
    repository = _repository(request)
    repository.allowed("unloading models")
    repository_parameters(_parameters(await _json_object(request)), "unload")
    await repository.unload(repository_model(repository, model_name))
    return Response(status_code=200)
