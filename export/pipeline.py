"""Checkpoint -> encoder.onnx, quantizer.onnx, decoder.onnx + model.json, behind the parity gate.

Everything is built in a scratch directory beside the output: export, metadata, onnx.checker,
parity against PyTorch on real test images, test-set metrics. Only when every check has passed
are the files moved into the output directory, manifest last, so a failed export leaves the
output directory as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from contract.entropy_model import COUNTS_FILE, save_model, save_staged_model
from contract.manifest import (
    GRAPHS,
    MANIFEST_NAME,
    FileSpec,
    FilesSpec,
    GridSpec,
    InputSpec,
    Manifest,
    QuantizerSpec,
    ResourceSpec,
    TrainingSpec,
    sha256_of,
)
from export.entropy_fit import fit
from export.graphs import OPSET, Upsample, export_graph, graph_specs, write_metadata
from export.parity import ParityReport, check_parity
from export.resources import measure_resources
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.evaluate import evaluate_set, reconstruct, save_reconstruction_grid
from training.model import VQVAE
from training.run_data import RunSplit, center_crops, eval_images, readable_images, run_split, upscaled

PLACEHOLDER_SHA = "0" * 64
GRID_PREVIEW = "reconstructions.png"
WEIGHTS = "checkpoint.pt"


def native_size(ckpt: dict[str, Any]) -> int:
    """The model's native image side (the manifest's input size, what ?resize=native means): the
    training images' own size when they share one, else the training crop; 28 for the built-in sets."""
    recorded = (ckpt.get("data") or {}).get("native_size")
    return int(recorded or ckpt["config"].get("crop") or 28)


def draft_manifest(ckpt: dict[str, Any], model: VQVAE, name: str, version: str) -> Manifest:
    """Every manifest field but the final sha256s and measurements."""
    cfg, train, f = model.cfg, ckpt["config"], model.downsample
    placeholder = FileSpec(path="x.onnx", sha256=PLACEHOLDER_SHA)
    size = native_size(ckpt)
    return Manifest(
        name=name, version=version, codebook_size=model.quantizer.codebook_size, code_dim=cfg.code_dim,
        downsample=f, quantizer=QuantizerSpec(**model.quantizer.describe()), fully_convolutional=True,
        input=InputSpec(channels=cfg.in_channels or 1, height=size, width=size),
        grid=GridSpec(height=size // f, width=size // f),
        files=FilesSpec(encoder=placeholder, quantizer=placeholder, decoder=placeholder),
        metrics={},
        training=TrainingSpec(command=ckpt.get("command", ""), seed=train["seed"], steps=ckpt["step"],
                              seconds=round(float(ckpt["seconds"]), 1), dataset=train["dataset"]),
        producer={"torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)},
    )


def build_graphs(model: VQVAE, draft: Manifest, scratch: Path, upsample: Upsample = "transpose") -> dict[str, Path]:
    """Export the three graphs into `scratch` with their metadata; onnx.checker must pass on each."""
    paths: dict[str, Path] = {}
    for spec in graph_specs(model, upsample):
        path = scratch / f"{spec.name}.onnx"
        export_graph(spec, path, model.downsample)
        write_metadata(path, draft.metadata(spec.name))
        onnx.checker.check_model(str(path), full_check=True)
        paths[spec.name] = path
    return paths


@torch.no_grad()
def fit_entropy_model(model: VQVAE, train_images: np.ndarray, path: Path) -> None:
    """The static probability model for entropy-coded streams, fitted on the training set's codes:
    one model for a single-stage quantizer, one per stage for residual VQ (neighbour tables only
    where K is small enough: export/entropy_fit.py)."""
    _, codes = reconstruct(model, train_images)  # (N, h, w), or (N, S, h, w), at the native size
    k = model.quantizer.codebook_size
    if codes.ndim == 3:
        save_model(path, *fit(codes, k))
    else:
        save_staged_model(path, [fit(np.ascontiguousarray(codes[:, s]), k) for s in range(codes.shape[1])])


def save_weights(ckpt: dict[str, Any], path: Path) -> None:
    """The checkpoint without optimiser and RNG state: enough to rebuild the exact PyTorch model."""
    keep = ("format_version", "config", "data", "model", "step", "seconds", "command", "metrics")
    torch.save({k: ckpt[k] for k in keep if k in ckpt}, path)


def file_spec(path: Path) -> FileSpec:
    return FileSpec(path=path.name, sha256=sha256_of(path))


def finalise_manifest(draft: Manifest, paths: dict[str, Path], scratch: Path, report: ParityReport,
                      metrics: dict[str, Any], resources: ResourceSpec) -> Manifest:
    files = FilesSpec(**{g: file_spec(paths[g]) for g in GRAPHS})
    entropy = file_spec(scratch / COUNTS_FILE) if (scratch / COUNTS_FILE).exists() else None
    return draft.model_copy(update={"files": files, "metrics": metrics, "parity": report.as_dict(),
                                    "entropy_model": entropy,
                                    "pytorch": file_spec(scratch / WEIGHTS), "resources": resources})


def publish(scratch: Path, out_dir: Path, manifest: Manifest) -> None:
    """Move the checked files into out_dir; the manifest goes last so readers never see a half model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(scratch.iterdir()):
        os.replace(item, out_dir / item.name)
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST_NAME)


@dataclass
class ExportData:
    """The images export measures with: test images at the native size (parity, preview), two
    Kodak-sized ones (parity at a larger size), all test images (metrics) and training crops
    (the entropy model)."""

    native: np.ndarray  # (N, S, S) or (N, S, S, C) uint8
    large: np.ndarray  # (2, 512, 768[, C]) uint8
    test: Callable[[], Iterable[np.ndarray]]
    train: np.ndarray  # (M, S, S[, C]) uint8
    dataset: str
    split: RunSplit


def export_data(ckpt: dict[str, Any], data_dir: str | None, channels: int, parity_images: int,
                fit_images: int = 20000) -> ExportData:
    config = ckpt["config"]
    size, dataset = native_size(ckpt), config.get("val_dataset") or config["dataset"]
    split = run_split(config, data_dir)

    def all_test() -> Iterator[np.ndarray]:
        return eval_images(split.test, split.test_indices, channels, int(config["model"].get("downsample", 4)))

    native = center_crops(all_test(), size, parity_images)
    # A set held in memory is fitted whole (reading it costs nothing); one decoded file by file, its
    # first `fit_images` training images (more of Tiny ImageNet's JPEGs buy nothing measurable).
    fit_count = None if split.train.arrays is not None else fit_images
    train = center_crops(readable_images(split.train, split.train_indices, channels), size, fit_count)
    large = np.stack([upscaled(image, 512, 768) for image in native[:2]])
    return ExportData(native, large, all_test, train, dataset, split)


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str | None = None, version: str = "1.0.0",
                      data_dir: str | None = None, parity_images: int = 10000,
                      upsample: Upsample = "transpose", entropy_images: int | None = None) -> Manifest:
    """The whole export; raises ParityError (writing nothing) when ONNX and PyTorch disagree.
    `entropy_images`: fit entropy.npz on the first N training images only (quick exports in tests;
    default: all of them)."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    data = export_data(ckpt, data_dir, model.cfg.in_channels or 1, parity_images)
    draft = draft_manifest(ckpt, model, name or out_dir.name, version)
    draft = draft.model_copy(update={"producer": {**draft.producer, "decoder_upsampling": upsample}})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        paths = build_graphs(model, draft, scratch, upsample)
        report = check_parity(model, paths, data.native, data.large)
        resources = measure_resources(model, paths, model.downsample)  # raises ParityError if tiles are not exact
        measured = evaluate_set(model, data.split.test, data.split.test_indices, model.cfg.in_channels or 1)
        metrics = {"dataset": data.dataset, "split": "test", **measured}
        recon, _ = reconstruct(model, data.native[:64])
        save_reconstruction_grid(data.native[:64], recon, scratch / GRID_PREVIEW)
        save_weights(ckpt, scratch / WEIGHTS)
        fit_entropy_model(model, data.train[:entropy_images], scratch / COUNTS_FILE)
        manifest = finalise_manifest(draft, paths, scratch, report, metrics, resources)
        publish(scratch, out_dir, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest
