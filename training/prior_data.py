"""The prior's data: a trained VQ-VAE's code grids of its own training and test images, and labels.

The images are the ones the VQ-VAE trained and was evaluated on (training/run_data.py: a built-in
set's splits, its `--val-dataset`, or the same held-out images), centre-cropped to the model's
native size (smaller ones are skipped, counted in a warning). Labels and class names come from the
data set (datasources: the built-in sets' names; `.cls` members or sub-folders, with a
`classes.txt` beside the shards naming them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datasources.dataset import Dataset
from training.checkpoint import CheckpointError, model_from_checkpoint
from training.model import VQVAE
from training.run_data import labelled_crops, run_split


@dataclass
class CodeSet:
    codes: torch.Tensor  # (N, h, w) int64
    labels: torch.Tensor | None  # (N,) int64


@dataclass
class PriorData:
    train: CodeSet
    test: CodeSet
    dataset: str  # the built-in set's name, or the source spec
    class_names: list[str]  # empty when the images have no labels
    channels: int
    codebook_size: int  # K of the VQ-VAE's quantizer (fsq: the product of its levels)
    downsample: int  # pixels per code along each side


@torch.no_grad()
def grids_of(vqvae: VQVAE, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> the VQ-VAE's codes (N, H/f, W/f) int64 (f: its downsampling)."""
    parts = []
    for start in range(0, len(images), batch):
        x = torch.tensor(images[start : start + batch], dtype=torch.float32).div(255)  # (B, H, W[, C])
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W)
        parts.append(vqvae.encode_to_indices(x))
    return torch.cat(parts)


def code_set(vqvae: VQVAE, dataset: Dataset, indices: np.ndarray, channels: int,
             size: int) -> tuple[CodeSet, list[int | None]]:
    images, labels = labelled_crops(dataset, indices, channels, size)  # (N, size, size, C)
    return CodeSet(grids_of(vqvae, images), None), labels


def _limited(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices[:limit] if limit is not None else indices


def prior_data(ckpt: dict[str, Any], data_dir: str | None, limits: tuple[int | None, int | None],
               conditional: bool) -> PriorData:
    """The code grids of the VQ-VAE checkpoint's own training and test images (`limits`: the first N of
    each), centre-cropped to its native size, with their labels and the classes' names."""
    vqvae = model_from_checkpoint(ckpt)
    if vqvae.quantizer.stages > 1:  # a grid per stage: the prior models one grid per image
        raise CheckpointError(f"a prior models single-stage code grids; this VQ-VAE has {vqvae.quantizer.stages} "
                              "residual stages")
    config, channels = ckpt["config"], vqvae.cfg.in_channels or 1
    size = int((ckpt.get("data") or {}).get("native_size") or config.get("crop") or 28)
    split = run_split(config, data_dir)
    (train, train_labels), (test, test_labels) = (
        code_set(vqvae, dataset, _limited(indices, limit), channels, size)
        for dataset, indices, limit in ((split.train, split.train_indices, limits[0]),
                                        (split.test, split.test_indices, limits[1])))
    every_label = train_labels + test_labels  # a test label may not be in the training subset
    names = [] if any(label is None for label in every_label) else \
        split.train.class_names(max((label for label in every_label if label is not None), default=-1) + 1)
    if conditional and names:
        train = CodeSet(train.codes, torch.tensor(train_labels, dtype=torch.long))
        test = CodeSet(test.codes, torch.tensor(test_labels, dtype=torch.long))
    else:
        names = []
    return PriorData(train, test, config["dataset"], names, channels, vqvae.quantizer.codebook_size,
                     vqvae.cfg.downsample)
