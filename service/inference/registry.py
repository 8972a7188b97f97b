"""The set of served models and the service's readiness.

Every directory under models_dir is a configured model. Each is loaded (runtime.load_model) and
ends either ready or failed with a reason; the service is ready only when every configured model
is ready, the default model is among them, and shutdown has not begun. A ready model is served
through two micro-batchers (encode, decode) that share the process's single inference thread.

Once every model is loaded, the worker's memory budget is sized: VQVAE_MEMORY_BUDGET_MB, else its
share of the container's (or machine's) memory less what the loaded process already holds. A
third of it is the run slot that bounds one onnxruntime run (and so each model's pixels per run);
the rest is shared by the requests' own working sets (admission.MemoryBudget).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from contract import ContractError
from contract.manifest import Manifest
from runtime import CodecError, ModelNotFound
from runtime.host_limits import process_rss, release_freed_memory, threads_per_worker, worker_memory_share
from runtime.memory_estimates import GraphCosts
from runtime.model_runtime import ModelRuntime, load_model
from service.config import Settings
from service.errors import ModelNotReady
from service.inference.admission import MemoryBudget
from service.inference.batching import BatchPolicy, MicroBatcher, PixelsOf, RunFn, padded, spatial_pixels
from service.inference.statistics import GraphStats
from service.inference.work_queue import WorkQueue
from service.telemetry import MEMORY_BUDGET, BatchMetrics, model_ready

log = logging.getLogger("service.models")

# unloaded: by the repository extension (inference/repository.py), or a load it asked for failed;
# unlike failed at start-up, it does not make the server not ready.
State = Literal["loading", "ready", "failed", "unloaded"]


MiB = 1 << 20
MEMORY_HEADROOM = 0.8  # of the worker's share: the rest absorbs the allocator's and Python's drift
RUN_SHARE = 1 / 3  # of the budget: one onnxruntime run at a time (plus the small inline ones)
MIN_BUDGET = 48 * MiB


def model_directories(root: Path) -> list[str]:
    """The configured models: every directory under the models directory but hidden ones."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class ServedModel:
    runtime: ModelRuntime
    encoder: MicroBatcher  # images (N, C, H, W) -> codes (N, h, w): encoder + quantizer graphs
    decoder: MicroBatcher  # codes (N, h, w) -> images (N, C, H, W)
    costs: GraphCosts  # working memory per pixel and tiling halos
    run_pixels: int  # pixels per onnxruntime run: larger batches are split, larger images tiled
    stats: dict[str, GraphStats]  # "encode", "decode" -> the v2 statistics of {name}-encode, {name}-decode
    manifest: Manifest = field(init=False)  # the runtime's, as a plain attribute (read on every request)

    def __post_init__(self) -> None:
        self.manifest = self.runtime.manifest

    async def encode(self, images: np.ndarray) -> np.ndarray:
        return await self.encoder.submit(images)

    async def decode(self, codes: np.ndarray) -> np.ndarray:
        return await self.decoder.submit(codes)


@dataclass
class ModelStatus:
    state: State = "loading"
    reason: str = ""
    served: ServedModel | None = None

    @property
    def provider(self) -> str | None:
        return self.served.runtime.provider if self.served else None

    def not_served(self) -> str:
        """Why a model is not served, to end "model 'x' ..." in an error."""
        if self.state == "unloaded":
            return f"is unloaded ({self.reason})" if self.reason else "is unloaded"
        return "is still loading" if self.state == "loading" else "failed to load and is not served"


@dataclass
class ModelRegistry:
    settings: Settings
    models: dict[str, ModelStatus] = field(default_factory=dict)
    problem: str = ""  # a service-wide reason not to be ready (e.g. no models directory)
    loaded: bool = False
    shutting_down: bool = False
    # One inference thread: sessions already use every usable CPU; two runs at once would only contend.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference"))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    memory: MemoryBudget = field(default_factory=lambda: MemoryBudget(0, 0.0))  # sized by load_all
    run_slot_bytes: int = 0
    requests_in_progress: Callable[[], int] | None = None  # the admission gate's count, for the batchers
    work: WorkQueue = field(init=False)  # heavy requests in turn (service/inference/work_queue.py)

    def __post_init__(self) -> None:
        # Light work runs at once: even every admitted request at this size together, on one CPU,
        # stays inside half the base deadline.
        self.work = WorkQueue(heavy_s=self.settings.request_timeout_s / (2 * self.settings.max_in_flight))

    @property
    def threads_per_session(self) -> int:
        return self.settings.threads or threads_per_worker(self.settings.workers)

    def discover(self) -> None:
        root = self.settings.models_dir
        if not root.is_dir():
            self.problem = f"models directory {root.name!r} not found (set VQVAE_MODELS_DIR)"
            log.error("models directory %s not found", root)
            return
        names = model_directories(root)
        if not names:
            self.problem = f"no models in {root.name!r}"
        self.models = {name: ModelStatus() for name in names}

    def _serve(self, runtime: ModelRuntime) -> ServedModel:
        s = self.settings
        costs = GraphCosts.of(runtime.manifest)
        run_pixels = costs.run_pixels(self.run_slot_bytes)
        policy = BatchPolicy(coalesce=s.batching == "on", max_batch=s.batch_max, max_wait=s.batch_wait_ms / 1000,
                             max_queue=s.queue_max_items, inline_max=s.batch_inline_max, max_pixels=run_pixels)
        downsample = runtime.manifest.downsample
        # Statistics per v2 model ({name}-encode, {name}-decode: api/v2_protocol.py) and version.
        stats = {graph: GraphStats(f"{runtime.name}-{graph}", runtime.manifest.version)
                 for graph in ("encode", "decode")}

        def batcher(run: RunFn, graph: str, pixels_of: PixelsOf) -> MicroBatcher:
            return MicroBatcher(padded(run, s.batch_max, pixels_of, run_pixels), self.executor, policy,
                                BatchMetrics(runtime.name, graph, stats[graph]), pixels_of, self.requests_in_progress)

        def output_pixels(grid: tuple[int, ...]) -> int:  # a decode run's cost grows with the image it makes
            return spatial_pixels(grid) * downsample**2

        return ServedModel(runtime, batcher(runtime.encode, "encode", spatial_pixels),
                           batcher(runtime.decode, "decode", output_pixels), costs, run_pixels, stats)

    def serve(self, name: str, runtime: ModelRuntime) -> ServedModel | None:
        """Serve a freshly loaded runtime as model `name` (a reload): -> the model it replaced, if any.
        Requests that resolved the old one finish on it; its batchers are retired, not closed."""
        served = self._serve(runtime)
        with self._lock:
            status = self.models.setdefault(name, ModelStatus())
            old = status.served
            status.state, status.reason, status.served = "ready", "", served
        model_ready(name, runtime.manifest.version, runtime.provider)
        if old is not None:
            old.encoder.retire()
            old.decoder.retire()
        return old

    def set_state(self, name: str, state: State, reason: str) -> None:
        with self._lock:
            status = self.models.setdefault(name, ModelStatus())
            status.state, status.reason = state, reason

    def unload(self, name: str, reason: str) -> ServedModel | None:
        """Stop serving `name` (requests already holding it finish): -> the model it served, if any."""
        with self._lock:
            status = self.models[name]
            old = status.served
            status.state, status.reason, status.served = "unloaded", reason, None
        if old is not None:
            old.encoder.retire()
            old.decoder.retire()
        return old

    def _size_memory(self) -> None:
        """The budget once the loaded process's own memory is known (see the module docstring)."""
        s = self.settings
        if s.memory_budget_mb is not None:
            total = s.memory_budget_mb * MiB
        else:
            total = max(MIN_BUDGET, int(worker_memory_share(s.workers) * MEMORY_HEADROOM) - process_rss())
        self.run_slot_bytes = int(total * RUN_SHARE)
        self.memory = MemoryBudget(total - self.run_slot_bytes, s.memory_wait_s)
        MEMORY_BUDGET.set(total)
        log.info("memory budget %d MiB per worker (%d MiB for one run, the rest for requests, half of that at "
                 "most for bodies still arriving)", total // MiB, self.run_slot_bytes // MiB)

    def _load(self, name: str, status: ModelStatus) -> ModelRuntime | None:
        try:
            return load_model(Path(self.settings.models_dir) / name, self.settings.providers,
                              self.threads_per_session, self.settings.warmup_runs, self.settings.batch_max)
        except (CodecError, ContractError) as exc:  # a model that fails any check is not served
            # The checks name the model ("mnist: model.json ..."); the status is already keyed by it.
            reason = exc.message.removeprefix(f"{name}: ")
            log.error("model %s not served: %s", name, reason)
            with self._lock:
                status.state, status.reason = "failed", reason
            return None

    def load_all(self) -> None:
        """Load every discovered model (a failure marks that model failed and never serves it), size
        the memory budget, then serve the loaded models."""
        runtimes = {name: runtime for name, status in self.models.items()
                    if (runtime := self._load(name, status)) is not None}
        release_freed_memory()  # what loading and warm-up freed, before the baseline is read
        self._size_memory()
        for name, runtime in runtimes.items():
            with self._lock:
                self.models[name].state, self.models[name].served = "ready", self._serve(runtime)
            model_ready(name, runtime.manifest.version, runtime.provider)
        # Everything alive now (framework, sessions, manifests) lives as long as the process: move it
        # out of the cyclic collector's sight so that collections triggered by requests stay short.
        gc.freeze()
        self.loaded = True

    async def close(self) -> None:
        for status in self.models.values():
            if status.served:
                await status.served.encoder.close()
                await status.served.decoder.close()
        self.executor.shutdown(wait=True)

    def begin_shutdown(self) -> None:
        self.shutting_down = True

    def failures(self) -> list[str]:
        return [f"{name}: {s.reason}" for name, s in self.models.items() if s.state == "failed"]

    def not_ready_reasons(self) -> list[str]:
        if self.shutting_down:
            return ["shutting down"]
        if self.problem:
            return [self.problem]
        if not self.loaded:
            return ["loading and warming up models"]
        reasons = self.failures()
        if self.settings.default_model not in self.models:
            reasons.append(f"default model {self.settings.default_model!r} is not among the models")
        return reasons

    def status(self, name: str) -> ModelStatus:
        """The status of `name`; ModelNotFound (404) when no such model is configured."""
        status = self.models.get(name)
        if status is None:
            known = ", ".join(self.models) or "none"
            raise ModelNotFound(f"no model named {name[:64]!r}; available models: {known}")
        return status

    def get(self, name: str) -> ServedModel:
        """The served model `name`; ModelNotFound (404) or ModelNotReady (503) otherwise."""
        status = self.status(name)
        if status.served is None:
            raise ModelNotReady(f"model {name!r} {status.not_served()}; see /readyz")
        return status.served
