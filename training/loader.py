"""Training batches as a pure function of (seed, step), so that resume needs no loader state.

- Built-in IDX sets (mnist, fashion-mnist) sit in memory as uint8 tensors and keep their own
  order (train.BatchOrder, unchanged so that the MNIST recipe reproduces);
- image sources (training/sources.py) are decoded on the fly in DataLoader worker processes: a
  batch sampler yields, for each step, the sample indices and their augmentation seeds; workers
  decode, crop and flip; the collate function drops unreadable samples and names them.

Order: one permutation per epoch, from (seed, epoch). For tar shards the permutation is
shard-blocked (shards in a random order, each shard's samples in a random order), since a shard
is read whole: with 5,000 images a shard, every shard mixes all classes. Augmentation draws from
(seed, step, position in the batch). Under torchrun, rank r takes slice r of each global batch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from training.data import load_split
from training.sources import ImageSource, SourceError, UnreadableImage, open_source

Batch = tuple[torch.Tensor, list[str]]  # uint8 (B, C, H, W), and the samples that did not decode


def epoch_order(n: int, seed: int, epoch: int, blocks: list[range] | None = None) -> np.ndarray:
    """A permutation of range(n) for one epoch; shard-blocked when `blocks` (one range per shard)."""
    rng = np.random.default_rng([seed, epoch])
    if blocks is None:
        return rng.permutation(n)
    return np.concatenate([blocks[b].start + rng.permutation(len(blocks[b])) for b in rng.permutation(len(blocks))])


@dataclass
class StepBatches(Sampler[list[tuple[int, int, int, int]]]):
    """For steps [start, end): this rank's slice of each global batch, as (index, seed, step, slot)."""

    indices: np.ndarray  # the sample indices this order draws from
    batch_size: int  # global
    seed: int
    start: int
    end: int
    rank: int = 0
    world: int = 1
    blocks: list[range] | None = None  # over positions of `indices`

    def __post_init__(self) -> None:
        self.steps_per_epoch = max(1, len(self.indices) // self.batch_size)
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def positions(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(len(self.indices), self.seed, epoch, self.blocks)
        local = self.batch_size // self.world
        start = position * self.batch_size + self.rank * local
        return self._order[start : start + local]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        for step in range(self.start, self.end):
            yield [(int(self.indices[p]), self.seed, step, slot) for slot, p in enumerate(self.positions(step))]

    def __len__(self) -> int:
        return self.end - self.start


def random_crop(pixels: np.ndarray, crop: int, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, C) -> (C, crop, crop). An image smaller than the crop is first scaled up
    (bicubic) until its shorter side equals the crop; then a random crop, and a mirror half the time."""
    height, width, channels = pixels.shape
    if min(height, width) < crop:
        scale = crop / min(height, width)
        size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
        image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image).reshape(size[1], size[0], channels)
        height, width = pixels.shape[:2]
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    out = pixels[top : top + crop, left : left + crop]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


class CropDataset(Dataset[tuple[np.ndarray | None, str]]):
    def __init__(self, source: ImageSource, channels: int, crop: int, flip: bool) -> None:
        self.source, self.channels, self.crop, self.flip = source, channels, crop, flip

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int, int, int]) -> tuple[np.ndarray | None, str]:  # type: ignore[override]
        index, seed, step, slot = item
        try:
            pixels = self.source.decode(index, self.channels)
        except UnreadableImage as exc:
            return None, str(exc)
        return random_crop(pixels, self.crop, self.flip, np.random.default_rng([seed, step, slot])), ""


def collate(items: list[tuple[np.ndarray | None, str]]) -> Batch:
    arrays = [a for a, _ in items if a is not None]
    problems = [p for a, p in items if a is None]
    if not arrays:
        return torch.empty(0, dtype=torch.uint8), problems
    return torch.from_numpy(np.stack(arrays)), problems


def source_batches(source: ImageSource, indices: np.ndarray, channels: int, crop: int, flip: bool,
                   batches: StepBatches, workers: int, pin: bool) -> Iterator[Batch]:
    """Decoded, cropped batches from `workers` processes (0: this one), in step order."""
    # Its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG,
    # which the quantizer's restarts also draw from, and resume would no longer be exact.
    loader = DataLoader(CropDataset(source, channels, crop, flip), batch_sampler=batches, num_workers=workers,
                        collate_fn=collate, pin_memory=pin, prefetch_factor=4 if workers else None,
                        generator=torch.Generator().manual_seed(batches.seed))
    return iter(loader)


# -- what the training loop needs from a data set -------------------------------------------------


@dataclass
class TrainingData:
    """A data set as the loop sees it, built-in (IDX in memory) or an image source (streamed)."""

    channels: int
    size: int  # side of the training crops (the native size of a built-in set)
    train_count: int
    batches: Callable[[int, int], Iterator[Batch]]  # (first step, end step) -> this rank's batches
    eval_images: Callable[[int | None], Iterator[np.ndarray]]  # the first n (None: all) uint8 (H, W, C)
    eval_count: int
    record: dict[str, Any]  # what the checkpoint keeps about the data: sources, split, counts


def fit_to_grid(pixels: np.ndarray, downsample: int) -> np.ndarray:
    """Evaluation keeps whole images, cut at the bottom and right to multiples of the downsampling
    (at most 3 rows and columns of a 4× model); an image smaller than one cell is dropped."""
    height, width = (pixels.shape[0] // downsample) * downsample, (pixels.shape[1] // downsample) * downsample
    return pixels[:height, :width]


def holdout(n: int, fraction: float, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), both sorted: a fixed-seed fraction (at most `limit`)."""
    count = min(limit, max(1, math.ceil(n * fraction))) if n > 1 else 0
    held = np.sort(np.random.default_rng([seed, 4242]).permutation(n)[:count])
    return np.setdiff1d(np.arange(n), held), held


def blocks_of(source: ImageSource, indices: np.ndarray) -> list[range] | None:
    """Shard blocks over positions of `indices` (sorted), or None for a folder."""
    if not source.shards:
        return None
    shards = np.array([source.samples[i].shard for i in indices])
    starts = [0, *np.flatnonzero(np.diff(shards)) + 1]
    return [range(a, b) for a, b in zip(starts, [*starts[1:], len(indices)], strict=True)]


def source_eval_images(source: ImageSource, indices: np.ndarray, channels: int, downsample: int,
                       n: int | None) -> Iterator[np.ndarray]:
    for index in indices[:n]:
        try:
            pixels = fit_to_grid(source.decode(int(index), channels), downsample)
        except UnreadableImage as exc:
            print(f"warning: skipped in evaluation: {exc}", file=sys.stderr)
            continue
        if pixels.size:
            yield pixels


@dataclass(frozen=True)
class SourceSpec:
    """How to make training data from image sources (the trainer's flags)."""

    train: str
    val: str | None
    val_fraction: float
    val_limit: int
    channels: int  # 0: from the data
    crop: int | None  # None: the images' own size, when they share one
    flip: bool
    workers: int
    batch_size: int
    seed: int


def shared_size(source: ImageSource, indices: np.ndarray, channels: int, probe: int = 64) -> int | None:
    """The side of the (square) images when the first `probe` readable ones share one, else None."""
    sizes = set()
    for i in indices[:probe]:
        try:
            sizes.add(source.decode(int(i), channels).shape[:2])
        except UnreadableImage:
            continue
    if len(sizes) != 1 or len({*next(iter(sizes))}) != 1:
        return None
    return int(next(iter(sizes))[0])


class BatchOrder:
    """Epoch-wise permutations seeded by (seed, epoch); rank r takes slice r of each global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        local = self.batch_size // self.world
        start = position * self.batch_size + self.rank * local
        return self._perm[start : start + local]


def builtin_data(dataset: str, data_dir: str | None, channels: int, batch_size: int, seed: int, rank: int,
                 world: int) -> TrainingData:
    """MNIST or Fashion-MNIST in memory, in the trainer's original order (BatchOrder)."""
    if channels not in (0, 1):
        raise ValueError(f"{dataset} is greyscale: --model.in-channels must be 1")
    images = torch.tensor(load_split(dataset, "train", data_dir)[0]).unsqueeze(1)  # (N, 1, 28, 28) u8
    test = load_split(dataset, "test", data_dir)[0]  # (10000, 28, 28) uint8
    order = BatchOrder(len(images), batch_size, seed, rank, world)

    def batches(start: int, end: int) -> Iterator[Batch]:
        return ((images[order.indices(step)], []) for step in range(start, end))

    def eval_images(n: int | None) -> Iterator[np.ndarray]:
        return (image[..., None] for image in test[:n])

    record = {"train": dataset, "val": f"{dataset} test split", "train_images": len(images),
              "val_images": len(test), "labelled": True}
    return TrainingData(1, images.shape[-1], len(images), batches, eval_images, len(test), record)


def first_readable(source: ImageSource, indices: np.ndarray, channels: int) -> np.ndarray:
    """The first image that decodes; SourceError when none does (a source of only unreadable files)."""
    for index in indices:
        try:
            return source.decode(int(index), channels)
        except UnreadableImage:
            continue
    raise SourceError(f"{source.spec}: none of its {len(indices)} images could be read")


def source_data(spec: SourceSpec, rank: int, world: int, downsample: int, pin: bool) -> TrainingData:
    source = open_source(spec.train)
    if spec.val:
        val_source, train_idx = open_source(spec.val), np.arange(len(source))
        val_idx = np.arange(len(val_source))
    else:
        val_source = source
        train_idx, val_idx = holdout(len(source), spec.val_fraction, spec.val_limit, spec.seed)
    channels = spec.channels or (3 if source.is_colour() else 1)
    first_readable(source, train_idx, channels)
    native = shared_size(source, train_idx, channels)
    crop = spec.crop or native
    if crop is None:
        raise SourceError(f"{source.spec}: its images do not share one square size: choose a --crop")
    if crop % downsample or crop < downsample:
        raise SourceError(f"--crop {crop}: must be a positive multiple of {downsample}")
    if len(train_idx) < spec.batch_size:
        raise SourceError(f"{spec.train}: {len(train_idx)} training images, fewer than one batch of {spec.batch_size}")

    def batches(start: int, end: int) -> Iterator[Batch]:
        blocks = blocks_of(source, train_idx)
        order = StepBatches(train_idx, spec.batch_size, spec.seed, start, end, rank, world, blocks)
        return source_batches(source, train_idx, channels, crop, spec.flip, order, spec.workers, pin)

    record = {"train": spec.train, "val": spec.val or f"held out of {spec.train}", "train_images": len(train_idx),
              "native_size": native if native and native % downsample == 0 else crop,
              "val_images": len(val_idx), "val_fraction": None if spec.val else spec.val_fraction,
              "labelled": source.labelled}
    def eval_images(n: int | None) -> Iterator[np.ndarray]:
        return source_eval_images(val_source, val_idx, channels, downsample, n)

    return TrainingData(channels, crop, len(train_idx), batches, eval_images, len(val_idx), record)


# -- fixed crops for export: parity, previews and the entropy model's training codes --------------


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray | None:
    """The centre size×size of an (H, W, C) image, or None when the image is smaller."""
    height, width = pixels.shape[:2]
    if height < size or width < size:
        return None
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top : top + size, left : left + size]


def center_crops(images: Iterable[np.ndarray], size: int, count: int) -> np.ndarray:
    """Up to `count` centre crops (n, size, size, C) of the images large enough to give one."""
    crops: list[np.ndarray] = []
    for image in images:
        crop = center_crop(image, size)
        if crop is not None:
            crops.append(crop)
        if len(crops) == count:
            break
    if not crops:
        raise SourceError(f"no evaluation image is at least {size}×{size}")
    return np.stack(crops)


def training_crops(config: dict[str, Any], channels: int, size: int, count: int) -> np.ndarray:
    """Centre crops of a run's training images (as the trainer split them), the first `count`."""
    source = open_source(config["dataset"])
    indices = np.arange(len(source)) if config.get("val_dataset") else \
        holdout(len(source), config["val_fraction"], config["val_limit"], config["seed"])[0]

    def readable() -> Iterator[np.ndarray]:
        for index in indices:
            try:
                yield source.decode(int(index), channels)
            except UnreadableImage:
                continue

    return center_crops(readable(), size, count)


def upscaled(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 -> (height, width, ...) by bicubic resampling."""
    grey = pixels.ndim == 2 or pixels.shape[2] == 1
    image = Image.fromarray(pixels.reshape(pixels.shape[0], pixels.shape[1]) if grey else pixels)
    out = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out.reshape(height, width, *pixels.shape[2:])
