"""The contract between export and service: `model.json` and the ONNX files it lists.

The exporter writes manifests through these models and the service reads them back through the
same models, so both halves agree on every field.

    manifest = load_manifest(Path("models/mnist"))
    verify_files(manifest, Path("models/mnist"))  # raises IntegrityError on any tampered file
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from contract import ContractError

MANIFEST_NAME = "model.json"
FORMAT_VERSION: Literal[1] = 1
GRAPHS = ("encoder", "quantizer", "decoder")
PRIOR_GRAPH = "prior"


def prior_io(layers: int) -> tuple[list[str], list[str]]:
    """prior.onnx's input and output names, in order (export/prior_graph.py documents the tensors)."""
    cache = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    new = [f"{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    return ["previous", "position", "label", *cache], ["logits", *new]


# The tensor names each graph must expose, fixed by the export contract.
GRAPH_IO: dict[str, tuple[str, str]] = {
    "encoder": ("image", "latent"),
    "quantizer": ("latent", "indices"),
    "decoder": ("indices", "image"),
}
METADATA_PREFIX = "vqvae."


class ManifestError(ContractError):
    """model.json is missing, not JSON, or does not match the schema."""

    code = "manifest_invalid"


class IntegrityError(ContractError):
    """A listed file is missing or its sha256 differs from the manifest's: it must not be used."""

    code = "integrity_check_failed"


class _Strict(BaseModel):
    # Unknown keys are ignored so that newer exporters stay readable by older services.
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputSpec(_Strict):
    channels: int = Field(ge=1, le=4)
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    scale: Literal["pixel/255"] = "pixel/255"


class GridSpec(_Strict):
    height: int = Field(ge=1)
    width: int = Field(ge=1)


class FileSpec(_Strict):
    path: str = Field(pattern=r"^[A-Za-z0-9._-]+$")  # a plain file name inside the model directory
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FilesSpec(_Strict):
    encoder: FileSpec
    quantizer: FileSpec
    decoder: FileSpec


class TrainingSpec(_Strict):
    command: str
    seed: int
    steps: int
    seconds: float
    dataset: str


class ResourceSpec(_Strict):
    """What serving the graphs takes, measured by the exporter (export/resources.py).

    Working memory per pixel of one onnxruntime run (every intermediate tensor, none reused: an
    upper bound), and the halo in grid cells that makes a tile, run alone and cropped, equal to the
    same cells of a whole-image run (receptive field; the exporter checks it on the graphs)."""

    encode_bytes_per_pixel: float = Field(gt=0, description="encoder + quantizer, per input pixel")
    decode_bytes_per_pixel: float = Field(gt=0, description="decoder, per output pixel")
    encoder_halo: int = Field(ge=0, le=1024)
    decoder_halo: int = Field(ge=0, le=1024)


class QuantizerSpec(_Strict):
    """How grid cells become codes (training/quantizers/). `codebook_size` is K per stage.

    - vq: the paper's nearest code among K (lookup_dim d: searched in a d-dimensional
      l2-normalised projection of the latent, "factorised codes");
    - fsq: finite scalar quantization, one of `levels[i]` values per latent channel; the index is
      the mixed-radix number of the digits, first level least significant; K = Π levels;
    - rvq: `stages` residual stages of K codes; quantizer.onnx gives [N, S, h, w] (all stages),
      decoder.onnx takes [N, k, h, w] for any 1 ≤ k ≤ S and sums the first k stages' vectors.
    A model.json without this entry is plain vq with one stage of K = codebook_size codes."""

    kind: Literal["vq", "fsq", "rvq"]
    codebook_size: int = Field(ge=2)
    stages: int = Field(default=1, ge=1, le=64)
    levels: list[int] | None = Field(default=None, min_length=1, max_length=16)
    lookup_dim: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> QuantizerSpec:
        if (self.levels is not None) != (self.kind == "fsq"):
            raise ValueError("levels are given for kind fsq, and only for it")
        if self.levels is not None and (min(self.levels) < 2 or math.prod(self.levels) != self.codebook_size):
            raise ValueError(f"fsq levels {self.levels} must each be ≥ 2, their product codebook_size "
                             f"{self.codebook_size}")
        if self.lookup_dim is not None and self.kind != "vq":
            raise ValueError("lookup_dim is for kind vq only")
        if (self.stages > 1) != (self.kind == "rvq"):
            raise ValueError(f"kind {self.kind} with {self.stages} stages: only rvq has (and needs) several")
        return self

    @model_serializer(mode="wrap")
    def _without_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """levels and lookup_dim appear only where they apply (not as null)."""
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}

    @property
    def plain(self) -> bool:
        """The paper's single-stage VQ without factorised lookup: what every model was before kinds."""
        return self.kind == "vq" and self.lookup_dim is None

    def tag(self) -> str:
        """Short form for ONNX metadata: "vq:512", "vq:16384/8", "fsq:8,8,8,6,5", "rvq:512x4"."""
        if self.kind == "fsq":
            return "fsq:" + ",".join(map(str, self.levels or []))
        if self.kind == "rvq":
            return f"rvq:{self.codebook_size}x{self.stages}"
        return f"vq:{self.codebook_size}" + (f"/{self.lookup_dim}" if self.lookup_dim else "")


class SamplingSpec(_Strict):
    """How the prior samples when a request does not say (contract/guided_sampling.py), chosen by
    measurement for this prior (bench.prior_samples)."""

    temperature: float = Field(1.0, ge=0, le=10)
    guidance: float = Field(0.0, ge=0, le=100)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    chosen_by: str = ""  # the command and figures that chose them


class PriorSpec(FileSpec):
    """prior.onnx (export/prior_graph.py): an autoregressive model of the code grids, for sampling and
    for streams coded with its conditionals (contract/prior_coding.py). Optional: a model without one
    serves everything else."""

    layers: int = Field(ge=1, le=64)
    heads: int = Field(ge=1, le=64)
    head_dim: int = Field(ge=1, le=1024)
    classes: int = Field(ge=0, le=100_000, description="class labels it is conditioned on; 0: none")
    class_names: list[str] = Field(default_factory=list, description="the name of each class, in label order")
    metrics: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    sampling: SamplingSpec | None = None  # the API's defaults for this prior; None: plain sampling

    @model_validator(mode="after")
    def _names_match_classes(self) -> PriorSpec:
        if self.class_names and len(self.class_names) != self.classes:
            raise ValueError(f"prior lists {len(self.class_names)} class names for {self.classes} classes")
        return self

    @property
    def prior_id(self) -> bytes:
        """The 4 bytes that tie a prior-coded stream to this prior."""
        return bytes.fromhex(self.sha256[:8])


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: str = Field(min_length=1, max_length=32)
    codebook_size: int = Field(ge=2)  # K per stage
    code_dim: int = Field(ge=1)  # D: channels of encoder.onnx's latent
    downsample: int = Field(ge=1)  # f: image pixels per grid cell along each side (4, 8 or 16)
    # Absent in a model.json from before quantizer kinds: plain vq, one stage of codebook_size codes.
    quantizer: QuantizerSpec
    fully_convolutional: bool
    input: InputSpec
    grid: GridSpec
    files: FilesSpec
    metrics: dict[str, Any]
    training: TrainingSpec
    parity: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, str] = Field(default_factory=dict)
    # Code frequencies over the training set, for entropy-coded streams (served; verified like the graphs).
    entropy_model: FileSpec | None = None
    # The PyTorch weights the graphs were exported from (research, benchmarks); never served.
    pytorch: FileSpec | None = None
    # Memory per pixel and tiling halos; without it the service neither tiles nor trusts a guess.
    resources: ResourceSpec | None = None
    # The learned prior over code grids (sampling, ?format=prior streams); verified like the graphs.
    prior: PriorSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_vq_when_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quantizer") is None and "codebook_size" in data:
            return {**data, "quantizer": {"kind": "vq", "codebook_size": data["codebook_size"], "stages": 1}}
        return data

    @model_validator(mode="after")
    def _codebook_sizes_agree(self) -> Manifest:
        if self.quantizer.codebook_size != self.codebook_size:
            raise ValueError(f"quantizer.codebook_size {self.quantizer.codebook_size} differs from codebook_size "
                             f"{self.codebook_size}")
        return self

    def file(self, graph: str) -> FileSpec:
        spec: FileSpec = getattr(self.files, graph)
        return spec

    def metadata(self, graph: str) -> dict[str, str]:
        """The key facts written into each ONNX file's metadata_props and checked when loading; a
        quantizer other than plain vq adds `vqvae.quantizer` (QuantizerSpec.tag), so plain models'
        files keep exactly the keys they always had."""
        kind = {} if self.quantizer.plain else {f"{METADATA_PREFIX}quantizer": self.quantizer.tag()}
        return {
            f"{METADATA_PREFIX}name": self.name,
            f"{METADATA_PREFIX}version": self.version,
            f"{METADATA_PREFIX}graph": graph,
            f"{METADATA_PREFIX}codebook_size": str(self.codebook_size),
            f"{METADATA_PREFIX}code_dim": str(self.code_dim),
            f"{METADATA_PREFIX}downsample": str(self.downsample),
            f"{METADATA_PREFIX}input": f"{self.input.channels}x{self.input.height}x{self.input.width}",
            f"{METADATA_PREFIX}grid": f"{self.grid.height}x{self.grid.width}",
            f"{METADATA_PREFIX}scale": self.input.scale,
            **kind,
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> Manifest:
    """Read and validate <model_dir>/model.json; raises ManifestError saying what is wrong."""
    path = model_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{model_dir.name}: {MANIFEST_NAME} not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{model_dir.name}: {MANIFEST_NAME} is not valid JSON ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ManifestError(f"{model_dir.name}: {MANIFEST_NAME} does not match the contract: {problems}") from exc
    if manifest.name != model_dir.name:
        raise ManifestError(f"{model_dir.name}: {MANIFEST_NAME} names the model {manifest.name!r}")
    return manifest


def served_files(manifest: Manifest) -> dict[str, FileSpec]:
    """Every file the service reads: the three graphs and, when shipped, the entropy model and the prior."""
    files = {graph: manifest.file(graph) for graph in GRAPHS}
    if manifest.entropy_model is not None:
        files["entropy model"] = manifest.entropy_model
    if manifest.prior is not None:
        files["prior"] = manifest.prior
    return files


def verify_files(manifest: Manifest, model_dir: Path) -> None:
    """Check every served file exists and matches its sha256; raises IntegrityError otherwise."""
    for role, spec in served_files(manifest).items():
        path = model_dir / spec.path
        if not path.is_file():
            raise IntegrityError(f"{manifest.name}: {role} file {spec.path} is missing")
        found = sha256_of(path)
        if found != spec.sha256:
            raise IntegrityError(
                f"{manifest.name}: {spec.path} has sha256 {found[:12]}…, manifest says {spec.sha256[:12]}…; "
                "the file was modified or corrupted, re-export the model"
            )
