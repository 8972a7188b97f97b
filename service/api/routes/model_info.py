"""GET /v1/models and /v1/models/{name}: what each model is, how good it is, where it runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from service.api.deps import RegistryDep, SettingsDep
from service.api.openapi import ERROR_RESPONSES, ModelInfo, ModelList
from service.inference.registry import ModelStatus

router = APIRouter(prefix="/v1/models", tags=["models"])


def describe(name: str, status: ModelStatus) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "state": status.state, "reason": status.reason}
    if status.served is not None:
        m = status.served.manifest
        info |= {
            "version": m.version, "codebook_size": m.codebook_size, "code_dim": m.code_dim,
            "downsample": m.downsample, "quantizer": m.quantizer.model_dump(),
            "fully_convolutional": m.fully_convolutional,
            "grid": m.grid.model_dump(), "input": m.input.model_dump(), "metrics": m.metrics,
            "provider": status.provider,
        }
        prior = status.served.runtime.prior
        if m.prior is not None and prior is not None:
            info["prior"] = {"classes": m.prior.classes, "class_names": m.prior.class_names, "metrics": m.prior.metrics,
                             "sampling": asdict(prior.defaults)}
    return info


@router.get("", response_model=ModelList, summary="List the served models")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    return {"default": settings.default_model,
            "models": [describe(name, status) for name, status in registry.models.items()]}


@router.get("/{name}", response_model=ModelInfo, responses={404: ERROR_RESPONSES[404]}, summary="Describe one model")
async def get_model(name: str, registry: RegistryDep) -> dict[str, Any]:
    return describe(name, registry.status(name))
