"""One served model: three onnxruntime sessions behind the manifest contract.

Loading runs every check before a model may serve: manifest valid, every sha256 right, each
ONNX file's metadata equal to the manifest's facts, tensor names and ranks as the contract says,
the requested execution provider really active (onnxruntime falls back to CPU silently), and
warm-up inferences whose output shapes match what the manifest promises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from contract.entropy_model import EntropyModel, StagedEntropyModel, load_entropy_model
from contract.manifest import GRAPH_IO, GRAPHS, MANIFEST_NAME, METADATA_PREFIX, Manifest, load_manifest, verify_files
from runtime import ModelLoadError, ModelNotFound, ProviderError
from runtime.host_limits import release_freed_memory
from runtime.prior_sampler import PRIOR_THREADS, PriorRuntime, load_prior

log = logging.getLogger("runtime.models")
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"  # the models this checkout ships

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ProviderChoice = Literal["auto", "cpu", "cuda"]


def provider_list(choice: ProviderChoice, available: list[str]) -> list[str]:
    """The explicit provider list for a session; `auto` means CUDA when this onnxruntime offers it."""
    if choice == "cpu" or (choice == "auto" and CUDA not in available):
        return [CPU]
    return [CUDA, CPU]  # CPU stays as the fallback for ops CUDA lacks; the active check catches a full fallback


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between runs: spinning threads starve the event loop on small machines (on 2 cores
    # it cut /encode p99 at concurrency 1 from 6.9 ms to 1.3 ms and raised throughput; BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # onnxruntime's own warnings go to our log only as errors
    # No arena: onnxruntime's CPU arena keeps every byte a large run made it grow (a 1024² encode left
    # the process at 274 MB instead of 115 MB), for ~3-5 % on tiny runs (docs/reliability.md).
    options.enable_cpu_mem_arena = False
    return options


def _check_metadata(manifest: Manifest, graph: str, session: ort.InferenceSession) -> None:
    found = session.get_modelmeta().custom_metadata_map
    expected = manifest.metadata(graph)
    wrong = sorted(k for k, v in expected.items() if found.get(k) != v)
    if wrong:
        detail = ", ".join(f"{k.removeprefix(METADATA_PREFIX)}={found.get(k)!r} vs {expected[k]!r}" for k in wrong)
        raise ModelLoadError(f"{manifest.name}: {graph}.onnx metadata disagrees with model.json ({detail})")


def _check_io(manifest: Manifest, graph: str, session: ort.InferenceSession) -> None:
    input_name, output_name = GRAPH_IO[graph]
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [input_name] or [o.name for o in outputs] != [output_name]:
        raise ModelLoadError(
            f"{manifest.name}: {graph}.onnx has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in outputs]}; the contract is {input_name} -> {output_name}"
        )


# Batches up to this size run on a single-threaded session: waking a second intra-op thread for a
# handful of 7×7 convolutions costs more than it saves (batch 1 on 2 cores: 4,463 encodes/s on one
# thread, 3,140 on two), and in the service the other core is busy with HTTP. From 4 on, two win.
SMALL_BATCH = 2


TRIM_AFTER_PIXELS = 512 * 512  # a run this large hands its freed heap back to the OS afterwards


def _trim_after(pixels: int) -> None:
    if pixels >= TRIM_AFTER_PIXELS:
        release_freed_memory()


@dataclass
class GraphSession:
    """One graph and the sessions that run it: `wide` uses every thread this worker may use; `narrow`,
    present when that is more than one thread on CPU, takes the small batches."""

    wide: ort.InferenceSession
    narrow: ort.InferenceSession | None = None

    def run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        batch = len(next(iter(feed.values())))
        session = self.narrow if self.narrow is not None and batch <= SMALL_BATCH else self.wide
        result: np.ndarray = session.run([output], feed)[0]
        return result


@dataclass
class ModelRuntime:
    manifest: Manifest
    sessions: dict[str, GraphSession]
    provider: str  # the provider onnxruntime really runs, e.g. CPUExecutionProvider
    entropy: EntropyModel | StagedEntropyModel | None = None  # for entropy-coded streams, when shipped
    prior: PriorRuntime | None = None  # sampling and prior-coded streams, when the model ships one

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def stages(self) -> int:
        """S: code grids per image (1 unless the model is residual)."""
        return self.manifest.quantizer.stages

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """One native image's codes: (h, w), or (S, h, w) for a residual model (stage axis first)."""
        hw = (self.manifest.grid.height, self.manifest.grid.width)
        return hw if self.stages == 1 else (self.stages, *hw)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) in [0, 1] -> int64 indices (N, H/f, W/f), or (N, S, H/f, W/f) for a
        residual model (every stage)."""
        latent = self.sessions["encoder"].run("latent", {"image": images})  # (N, D, h, w)
        indices = self.sessions["quantizer"].run("indices", {"latent": latent})
        del latent
        _trim_after(images.shape[0] * images.shape[2] * images.shape[3])
        return indices

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """int64 (N, h, w), or (N, k, h, w) with 1 ≤ k ≤ S -> float32 images (N, C, fh, fw) in [0, 1]."""
        images = self.sessions["decoder"].run("image", {"indices": indices})
        _trim_after(images.shape[0] * images.shape[2] * images.shape[3])
        return images

    def warm_up(self, runs: int, max_batch: int) -> None:
        """Run the native size end to end, at every batch bucket once (so memory reaches its steady
        state before serving) and `runs` times at batch 1; shapes must be the manifest's."""
        m = self.manifest
        sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch] + [max_batch] + [1] * runs
        for n in sizes:
            blank = np.zeros((n, m.input.channels, m.input.height, m.input.width), np.float32)
            indices = self.encode(blank)  # (n, h, w)
            images = self.decode(indices)  # (n, C, H, W)
            expected_grid = (n, *self.grid_shape)
            expected_image = (n, m.input.channels, m.input.height, m.input.width)
            if indices.shape != expected_grid or images.shape != expected_image:
                raise ModelLoadError(
                    f"{m.name}: model.json promises grid {expected_grid[1:]} and images {expected_image[1:]} "
                    f"for a batch of {n}, the graphs produce {indices.shape} and {images.shape}"
                )
        if indices.dtype != np.int64 or images.dtype != np.float32:
            raise ModelLoadError(f"{m.name}: graphs produce {indices.dtype} indices and {images.dtype} images")


def _load_entropy(manifest: Manifest, model_dir: Path) -> EntropyModel | StagedEntropyModel | None:
    if manifest.entropy_model is None:
        return None
    try:
        model = load_entropy_model(model_dir / manifest.entropy_model.path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{manifest.name}: {manifest.entropy_model.path} is not a valid entropy model") from exc
    stages = manifest.quantizer.stages
    if model.codebook_size != manifest.codebook_size or model.grid != (manifest.grid.height, manifest.grid.width) \
            or (model.stages or 1) != stages or (model.stages is None) != (stages == 1):
        raise ModelLoadError(f"{manifest.name}: the entropy model's shape disagrees with model.json")
    return model


def _open_session(manifest: Manifest, graph: str, path: Path, threads: int,
                  providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelLoadError(f"{manifest.name}: {graph}.onnx is not a loadable ONNX model") from exc


def model_names(models_dir: Path) -> list[str]:
    """The models a directory holds: its sub-folders with a model.json."""
    if not models_dir.is_dir():
        raise ModelNotFound(f"models directory {models_dir} not found")
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())


def named_model_dir(models_dir: Path, name: str) -> Path:
    """The folder of the model called `name` (a name read from a stream or a tokens manifest: data):
    only one of the directory's own model folders, never `name` joined to it as a path."""
    names = model_names(models_dir)
    if name not in names:
        raise ModelNotFound(f"no model named {name[:64]!r} in {models_dir}; the models there are "
                            f"{', '.join(names) or 'none'}")
    return models_dir / names[names.index(name)]


def load_model(model_dir: Path, providers: ProviderChoice, threads: int, warmup_runs: int,
               max_batch: int = 64) -> ModelRuntime:
    """Every check in order; raises a ModelLoadError subclass naming the first failure."""
    manifest = load_manifest(model_dir)
    verify_files(manifest, model_dir)
    wanted = provider_list(providers, ort.get_available_providers())
    sessions: dict[str, GraphSession] = {}
    for graph in GRAPHS:
        path = model_dir / manifest.file(graph).path
        wide = _open_session(manifest, graph, path, threads, wanted)
        _check_metadata(manifest, graph, wide)
        _check_io(manifest, graph, wide)
        narrow = _open_session(manifest, graph, path, 1, wanted) if threads > 1 and wanted == [CPU] else None
        sessions[graph] = GraphSession(wide, narrow)
    active = sessions["encoder"].wide.get_providers()[0]
    if providers == "cuda" and active != CUDA:
        raise ProviderError(
            f"{manifest.name}: VQVAE_PROVIDERS=cuda but onnxruntime runs {active} "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu and expose a GPU"
        )
    runtime = ModelRuntime(manifest=manifest, sessions=sessions, provider=active,
                           entropy=_load_entropy(manifest, model_dir),
                           prior=load_prior(manifest, model_dir, session_options(PRIOR_THREADS)))
    try:
        runtime.warm_up(warmup_runs, max_batch)
    except ModelLoadError:
        raise
    except Exception as exc:  # a graph that loads but cannot run the native size
        raise ModelLoadError(f"{manifest.name}: warm-up inference failed ({type(exc).__name__})") from exc
    log.info("model %s %s ready on %s (%d threads)", manifest.name, manifest.version, active, threads)
    return runtime
