"""The model repository extension: what the models directory holds, and loading or unloading its
models while the server serves (VQVAE_MODEL_CONTROL=explicit, as Triton's --model-control-mode).

Names here are model directories (`mnist`); api/v2_protocol.py maps the v2 names onto them.

- load: the directory is read again and every check of start-up runs (runtime.load_model, in a
  thread: the server keeps serving). Only when they all pass does the new version replace the old,
  in one step under the registry's lock: requests that resolved the old model finish on its
  sessions (its batchers are retired, not closed), later ones get the new one. A model that fails
  a check is not served, with the reason: if an older version was serving, it keeps serving and the
  reason says so; if none was, the model is `unloaded` with the reason (the server stays ready: a
  bad candidate must not take a working pod out of its Service).
- unload: the model stops taking requests at once; those already admitted finish.
- One load or unload at a time. Both are refused (503) until the start-up loading has finished and
  once shutdown has begun, and (403) unless model control is explicit; the index always answers.

The memory budget is sized once at start-up (inference/registry.py): loading larger or more models
later does not shrink it, so leave headroom for them (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from contract import ContractError
from runtime import CodecError, ModelNotFound
from runtime.model_runtime import ModelRuntime, load_model
from service.errors import ModelControlDisabled, ModelLoadRejected, ModelNotReady
from service.inference.registry import ModelRegistry, model_directories

log = logging.getLogger("service.models")

# Triton's state names for the index.
STATES = {"ready": "READY", "loading": "LOADING", "failed": "UNAVAILABLE", "unloaded": "UNAVAILABLE"}
NOT_LOADED = "not loaded: found in the models directory after start-up"


@dataclass(frozen=True)
class IndexEntry:
    model: str  # the directory
    version: str  # "" when nothing is served
    state: str  # READY, LOADING, UNAVAILABLE
    reason: str


class ModelRepository:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._busy = asyncio.Lock()

    @property
    def explicit(self) -> bool:
        return self.registry.settings.model_control == "explicit"

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model the registry knows and every directory beside them, by name."""
        known = dict(self.registry.models)
        entries = []
        for name in sorted(set(known) | set(model_directories(self.registry.settings.models_dir))):
            status = known.get(name)
            if status is None:
                entry = IndexEntry(name, "", "UNAVAILABLE", NOT_LOADED)
            else:
                version = status.served.manifest.version if status.served is not None else ""
                entry = IndexEntry(name, version, STATES[status.state], status.reason)
            if entry.state == "READY" or not ready_only:
                entries.append(entry)
        return entries

    def known(self, name: str) -> bool:
        """A model the registry serves or knows, or a directory that could be loaded."""
        return name in self.registry.models or name in model_directories(self.registry.settings.models_dir)

    def allowed(self, action: str) -> None:
        """403 unless model control is explicit; 503 while the start-up loading runs and after SIGTERM."""
        if not self.explicit:
            raise ModelControlDisabled(f"{action} is off: this server was started with VQVAE_MODEL_CONTROL=none "
                                       "(the default); start it with VQVAE_MODEL_CONTROL=explicit to load and "
                                       "unload models while serving")
        if self.registry.shutting_down:
            raise ModelNotReady("the server is shutting down")
        if not self.registry.loaded:
            raise ModelNotReady("the server is still loading its models; retry once /v2/health/ready is 200")

    async def load(self, name: str) -> str:
        """(Re)load model directory `name`; -> the version now served. ModelLoadRejected (nothing
        changed but the reason) when it fails a check; ModelNotFound when there is no such directory."""
        self.allowed("loading models")
        if name not in model_directories(self.registry.settings.models_dir):
            raise ModelNotFound(f"no model directory named {name[:64]!r} in the models directory")
        async with self._busy:
            status = self.registry.models.get(name)
            old = status.served if status is not None else None
            if old is None:
                self.registry.set_state(name, "loading", "")
            try:
                runtime = await asyncio.to_thread(self._load_runtime, name)
            except BaseException as exc:
                self._record_failure(name, old.manifest.version if old else None, exc)
                if isinstance(exc, CodecError | ContractError):
                    raise ModelLoadRejected(self._rejection(name, old.manifest.version if old else None,
                                                            exc.message)) from None
                raise
            self.registry.serve(name, runtime)
            log.info("model %s %s loaded by request%s", name, runtime.manifest.version,
                     f" (replacing {old.manifest.version})" if old else "")
            return runtime.manifest.version

    def _load_runtime(self, name: str) -> ModelRuntime:
        s = self.registry.settings
        return load_model(s.models_dir / name, s.providers, self.registry.threads_per_session, s.warmup_runs,
                          s.batch_max)

    @staticmethod
    def _reason(name: str, message: str) -> str:
        return message.removeprefix(f"{name}: ")  # the checks name the model; the entry is keyed by it

    def _rejection(self, name: str, serving: str | None, message: str) -> str:
        still = f"; version {serving} still serves" if serving else ""
        return f"model {name!r} was not loaded: {self._reason(name, message)}{still}"

    def _record_failure(self, name: str, serving: str | None, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, CodecError | ContractError) else f"{type(exc).__name__}"
        reason = self._reason(name, message)
        log.error("model %s: load by request failed: %s", name, reason)
        if serving is not None:
            self.registry.set_state(name, "ready", f"the last load failed ({reason}); version {serving} serves")
        else:
            self.registry.set_state(name, "unloaded", f"load failed: {reason}")

    async def unload(self, name: str) -> None:
        """Stop serving model `name`; requests already admitted finish. Unloading an unloaded model is fine."""
        self.allowed("unloading models")
        if name not in self.registry.models:
            raise ModelNotFound(f"no model named {name[:64]!r} is loaded or known")
        async with self._busy:
            if self.registry.unload(name, "unloaded by request") is not None:
                log.info("model %s unloaded by request", name)
