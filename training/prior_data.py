"""The prior's data: a trained VQ-VAE's code grids of its own training and test images, and labels.

Built-in sets (MNIST, Fashion-MNIST) come with their labels and class names. An image source (the
VQ-VAE's `--dataset`, e.g. Tiny ImageNet's tar shards) gives its training images; the test images
are its `--val-dataset`, else the same held-out images the VQ-VAE was evaluated on. Images are
centre-cropped to the model's native size (smaller ones are skipped, counted in a warning). Labels
come from the source (`.cls` members, or sub-folders); class names from a `classes.txt` beside the
shards (`index<TAB>id<TAB>name`), else the sub-folder names, else the label numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.checkpoint import model_from_checkpoint
from training.data import DATASETS, load_split
from training.loader import center_crop, holdout
from training.model import VQVAE
from training.sources import ImageSource, UnreadableImage, expand, open_source

BUILTIN_CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


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


@torch.no_grad()
def grids_of(vqvae: VQVAE, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> the VQ-VAE's codes (N, H/4, W/4) int64."""
    parts = []
    for start in range(0, len(images), batch):
        x = torch.tensor(images[start : start + batch], dtype=torch.float32).div(255)  # (B, H, W[, C])
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W)
        parts.append(vqvae.encode_to_indices(x))
    return torch.cat(parts)


def source_images(source: ImageSource, indices: np.ndarray, channels: int,
                  size: int) -> tuple[np.ndarray, list[int | None]]:
    """-> uint8 (N, size, size, C) centre crops and each one's label (None when unlabelled)."""
    images, labels, skipped = [], [], 0
    for index in indices:
        try:
            pixels = center_crop(source.decode(int(index), channels), size)
        except UnreadableImage as exc:
            print(f"warning: skipped {exc}", file=sys.stderr)
            continue
        if pixels is None:
            skipped += 1
            continue
        images.append(pixels)
        labels.append(source.samples[int(index)].label)
    if skipped:
        print(f"warning: skipped {skipped} images smaller than {size}×{size}", file=sys.stderr)
    return np.stack(images), labels


def source_class_names(spec: str, source: ImageSource, labels: list[int | None]) -> list[str]:
    if any(label is None for label in labels):
        return []
    count = max(label for label in labels if label is not None) + 1
    listing = expand(spec)[0].parent / "classes.txt"
    if listing.is_file():
        rows = [line.split("\t") for line in listing.read_text().splitlines() if line.strip()]
        names = {int(row[0]): row[-1].split(",")[0].strip() for row in rows if row[0].isdigit()}
        return [names.get(i, str(i)) for i in range(max(count, len(names)))]
    folders = {s.label: s.key.split("/")[0] for s in source.samples if s.shard < 0 and "/" in s.key}
    return [str(folders.get(i, i)) for i in range(count)]


def _limited(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices[:limit] if limit is not None else indices


def from_source(vqvae: VQVAE, config: dict[str, Any], size: int, limits: tuple[int | None, int | None]
                ) -> tuple[CodeSet, CodeSet, list[str]]:
    channels = vqvae.cfg.in_channels or 1
    train_source = open_source(config["dataset"])
    if config.get("val_dataset"):
        train_idx, test_source = np.arange(len(train_source)), open_source(config["val_dataset"])
        test_idx = np.arange(len(test_source))
    else:
        train_idx, test_idx = holdout(len(train_source), config["val_fraction"], config["val_limit"], config["seed"])
        test_source = train_source
    splits = [source_images(source, _limited(indices, limit), channels, size)
              for source, indices, limit in ((train_source, train_idx, limits[0]), (test_source, test_idx, limits[1]))]
    every_label = splits[0][1] + splits[1][1]  # the classes of both splits: a test label may not be in the train subset
    names = source_class_names(config["dataset"], train_source, every_label)
    sets = [CodeSet(grids_of(vqvae, images), torch.tensor(labels, dtype=torch.long) if names else None)
            for images, labels in splits]
    return sets[0], sets[1], names


def prior_data(ckpt: dict[str, Any], data_dir: str | None, limits: tuple[int | None, int | None],
               conditional: bool) -> PriorData:
    """The code grids of the VQ-VAE checkpoint's own training and test images (`limits`: the first N of each)."""
    vqvae = model_from_checkpoint(ckpt)
    config, dataset = ckpt["config"], ckpt["config"]["dataset"]
    if dataset in DATASETS:
        sets = []
        for split, limit in zip(("train", "test"), limits, strict=True):
            images, labels = load_split(dataset, split, data_dir)
            sets.append(CodeSet(grids_of(vqvae, images[:limit]), torch.from_numpy(labels[:limit].astype(np.int64))))
        train, test, names = sets[0], sets[1], BUILTIN_CLASS_NAMES[dataset]
    else:
        size = int((ckpt.get("data") or {}).get("native_size") or config.get("crop") or 28)
        train, test, names = from_source(vqvae, config, size, limits)
    if not conditional or not names:
        train, test, names = CodeSet(train.codes, None), CodeSet(test.codes, None), []
    return PriorData(train, test, dataset, names, vqvae.cfg.in_channels or 1)
