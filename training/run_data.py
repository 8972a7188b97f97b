"""Which images a run trains and is evaluated on, for the trainer, evaluation, the prior and export.

    split = run_split(config, data_dir)            # a checkpoint's config (or TrainConfig as a dict)
    split.train, split.train_indices               # what it trains on
    split.test, split.test_indices                 # what it is evaluated on

A set with named splits (the built-in sets) trains on "train" and is evaluated on "test"; a
`--val-dataset` is evaluated on whole; otherwise a fixed-seed fraction of the training set is held
out (`holdout`). Every reader opens its data through datasources.open_dataset: nothing here asks
which kind of set it is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from datasources import SourceError, UnreadableImage
from datasources.dataset import Dataset, open_dataset, training_parts


@dataclass(frozen=True)
class RunSplit:
    train: Dataset
    train_indices: np.ndarray  # (n,) sorted
    test: Dataset
    test_indices: np.ndarray  # (m,) sorted
    held_out: bool  # the test images are a held-out part of the training set


def holdout(n: int, fraction: float, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), both sorted: a fixed-seed fraction (at most `limit`)."""
    count = min(limit, max(1, math.ceil(n * fraction))) if n > 1 else 0
    held = np.sort(np.random.default_rng([seed, 4242]).permutation(n)[:count])
    return np.setdiff1d(np.arange(n), held), held


def run_split(config: dict[str, Any], data_dir: str | None) -> RunSplit:
    """The split of a run's config: `dataset`, `val_dataset`, `val_fraction`, `val_limit`, `seed`."""
    train, test = training_parts(open_dataset(config["dataset"], data_dir))
    if config.get("val_dataset"):
        test = open_dataset(config["val_dataset"], data_dir)
    if test is not None:
        return RunSplit(train, np.arange(len(train)), test, np.arange(len(test)), held_out=False)
    train_indices, held = holdout(len(train), config["val_fraction"], config["val_limit"], config["seed"])
    return RunSplit(train, train_indices, train, held, held_out=True)


def evaluation_set(spec: str, data_dir: str | None) -> Dataset:
    """What "evaluate on SPEC" means: its test split when it has one (mnist), else all of it."""
    whole = open_dataset(spec, data_dir)
    return training_parts(whole)[1] or whole


# -- images as the readers want them ------------------------------------------------------------


def fit_to_grid(pixels: np.ndarray, downsample: int) -> np.ndarray:
    """Evaluation keeps whole images, cut at the bottom and right to multiples of the downsampling
    (at most 3 rows and columns of a 4× model); an image smaller than one cell is dropped."""
    height, width = (pixels.shape[0] // downsample) * downsample, (pixels.shape[1] // downsample) * downsample
    return pixels[:height, :width]


def eval_images(dataset: Dataset, indices: np.ndarray, channels: int, downsample: int,
                n: int | None = None) -> Iterator[np.ndarray]:
    """The first n (None: all) readable images at `indices`, fitted to the grid; (H, W, C) uint8."""
    for index in indices[:n]:
        try:
            pixels = fit_to_grid(dataset.decode(int(index), channels), downsample)
        except UnreadableImage as exc:
            print(f"warning: skipped in evaluation: {exc}", file=sys.stderr)
            continue
        if pixels.size:
            yield pixels


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray | None:
    """The centre size×size of an (H, W, C) image, or None when the image is smaller."""
    height, width = pixels.shape[:2]
    if height < size or width < size:
        return None
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top : top + size, left : left + size]


def center_crops(images: Iterable[np.ndarray], size: int, count: int | None) -> np.ndarray:
    """Up to `count` (None: all) centre crops (n, size, size, C) of the images large enough to give one."""
    crops: list[np.ndarray] = []
    for image in images:
        crop = center_crop(image, size)
        if crop is not None:
            crops.append(crop)
        if len(crops) == count:
            break
    if not crops:
        raise SourceError(f"no image is at least {size}×{size}")
    return np.stack(crops)


def readable_images(dataset: Dataset, indices: np.ndarray, channels: int) -> Iterator[np.ndarray]:
    """The images at `indices` that decode, in order (H, W, C) uint8; the others are skipped."""
    return (pixels for _, pixels in dataset.readable(indices, channels))


def labelled_crops(dataset: Dataset, indices: np.ndarray, channels: int,
                   size: int) -> tuple[np.ndarray, list[int | None]]:
    """-> uint8 (N, size, size, C) centre crops and each one's label; unreadable and smaller images
    are skipped, with a warning naming (or counting) them."""
    images, labels, skipped = [], [], 0
    for index in indices:
        try:
            pixels = center_crop(dataset.decode(int(index), channels), size)
        except UnreadableImage as exc:
            print(f"warning: skipped {exc}", file=sys.stderr)
            continue
        if pixels is None:
            skipped += 1
            continue
        images.append(pixels)
        labels.append(dataset.label(int(index)))
    if skipped:
        print(f"warning: skipped {skipped} images smaller than {size}×{size}", file=sys.stderr)
    return np.stack(images), labels


def upscaled(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 -> (height, width, ...) by bicubic resampling."""
    grey = pixels.ndim == 2 or pixels.shape[2] == 1
    image = Image.fromarray(pixels.reshape(pixels.shape[0], pixels.shape[1]) if grey else pixels)
    out = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out.reshape(height, width, *pixels.shape[2:])
