"""FastAPI dependencies: the settings, the model registry and the model a codec request addresses.

All `async def`: they never block, and FastAPI would run a plain `def` in its thread pool (a thread
hop per dependency per request, measured at ~10 % of the CPU under load).
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Path, Request
from starlette.datastructures import State

from service.config import Settings
from service.inference.admission import AdmissionGate, MemoryBudget
from service.inference.registry import ModelRegistry, ServedModel
from service.inference.work_queue import WorkQueue


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def registry_of(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(settings_of)]
RegistryDep = Annotated[ModelRegistry, Depends(registry_of)]


ModelName = Annotated[str, Path(description="model name, e.g. mnist")]


class CodecTarget(NamedTuple):
    """What a codec request works with: the model it addresses, the settings, the admission gate,
    the worker's memory budget and its work queue. (A tuple: one is built per request.)"""

    model: ServedModel
    settings: Settings
    gate: AdmissionGate
    memory: MemoryBudget
    work: WorkQueue


def codec_target(state: State, name: str | None) -> CodecTarget:
    """The model a codec request addresses (None: the default model); 404 unknown, 503 not ready.
    Shared by FastAPI's routes and the fast path (api/fast_path.py)."""
    registry: ModelRegistry = state.registry
    settings: Settings = state.settings
    model = registry.get(name if name is not None else settings.default_model)
    return CodecTarget(model, settings, state.admission, registry.memory, registry.work)


# One dependency per route and none beneath it: FastAPI's cost per dependency (~15 µs here) is
# paid on every request.
async def named_target(request: Request, name: ModelName) -> CodecTarget:
    return codec_target(request.app.state, name)


NamedTargetDep = Annotated[CodecTarget, Depends(named_target)]
