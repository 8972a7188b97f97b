"""The contract between export and service: `model.json` and the ONNX files it lists.

The exporter writes manifests through these models and the service reads them back through the
same models, so both halves agree on every field.

    manifest = load_manifest(Path("models/mnist"))
    verify_files(manifest, Path("models/mnist"))  # raises IntegrityError on any tampered file
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    codebook_size: int = Field(ge=2)
    code_dim: int = Field(ge=1)
    downsample: int = Field(ge=1)
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

    def file(self, graph: str) -> FileSpec:
        spec: FileSpec = getattr(self.files, graph)
        return spec

    def metadata(self, graph: str) -> dict[str, str]:
        """The key facts written into each ONNX file's metadata_props and checked when loading."""
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
