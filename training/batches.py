"""Training batches as a pure function of (seed, step), so that resume needs no loader state.

Any data set opens the same way (datasources.open_dataset); what differs is only how its images
are held:
- a set held in memory whole (the built-in IDX sets: `Dataset.arrays`) is batched from uint8
  tensors in its own order (BatchOrder, unchanged so that the MNIST recipe reproduces), whole
  images, no augmentation;
- a set decoded file by file (folders, tar shards) is decoded on the fly in DataLoader worker
  processes: a batch sampler yields, for each step, the sample indices and their augmentation
  seeds; workers decode, crop and flip; the collate function drops unreadable samples and names them.

Order: one permutation per epoch, from (seed, epoch). For tar shards the permutation is
shard-blocked (shards in a random order, each shard's samples in a random order), since a shard
is read whole: with 5,000 images a shard, every shard mixes all classes. Augmentation draws from
(seed, step, position in the batch). Under torchrun, rank r takes slice r of each global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from datasources import SourceError, UnreadableImage
from datasources.dataset import Dataset
from training.run_data import RunSplit, eval_images, run_split

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


class CropDataset(TorchDataset[tuple[np.ndarray | None, str]]):
    def __init__(self, source: Dataset, channels: int, crop: int, flip: bool) -> None:
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


def source_batches(source: Dataset, indices: np.ndarray, channels: int, crop: int, flip: bool,
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
    """A data set as the loop sees it: batches by step, and its evaluation images."""

    channels: int
    size: int  # side of the training crops (the images' own size for a set held in memory)
    crop: int | None  # the crop the run trains on; None: whole images (a set held in memory)
    train_count: int
    batches: Callable[[int, int], Iterator[Batch]]  # (first step, end step) -> this rank's batches
    eval_images: Callable[[int | None], Iterator[np.ndarray]]  # the first n (None: all) uint8 (H, W, C)
    eval_count: int
    record: dict[str, Any]  # what the checkpoint keeps about the data: sources, split, counts


@dataclass(frozen=True)
class DataSpec:
    """How to make training data (the trainer's flags)."""

    train: str  # datasources spelling: a built-in name, a folder, shards, a glob or a brace range
    val: str | None
    val_fraction: float
    val_limit: int
    data_dir: str | None
    channels: int  # 0: from the data
    crop: int | None  # None: the images' own size, when they share one
    flip: bool
    workers: int
    batch_size: int
    seed: int

    def split(self) -> RunSplit:
        return run_split({"dataset": self.train, "val_dataset": self.val, "val_fraction": self.val_fraction,
                          "val_limit": self.val_limit, "seed": self.seed}, self.data_dir)


def shared_size(source: Dataset, indices: np.ndarray, channels: int, probe: int = 64) -> int | None:
    """The side of the (square) images when the first `probe` readable ones share one, else None."""
    sizes = {pixels.shape[:2] for _, pixels in source.readable(indices[:probe], channels)}
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


def split_record(spec: DataSpec, split: RunSplit) -> dict[str, Any]:
    return {"train": spec.train, "val": spec.val or (f"held out of {spec.train}" if split.held_out
                                                     else f"{spec.train} test split"),
            "train_images": len(split.train_indices), "val_images": len(split.test_indices),
            "labelled": split.train.labelled}


def in_memory_data(spec: DataSpec, split: RunSplit, rank: int, world: int, downsample: int) -> TrainingData:
    """A set held in memory whole (the built-in IDX sets): whole images in the trainer's original
    order (BatchOrder), no augmentation."""
    assert split.train.arrays is not None
    if spec.channels not in (0, 1):
        raise ValueError(f"{spec.train} is greyscale: --model.in-channels must be 1")
    images = torch.tensor(split.train.arrays[0][split.train_indices]).unsqueeze(1)  # (N, 1, 28, 28) u8
    order = BatchOrder(len(images), spec.batch_size, spec.seed, rank, world)

    def batches(start: int, end: int) -> Iterator[Batch]:
        return ((images[order.indices(step)], []) for step in range(start, end))

    def evaluation(n: int | None) -> Iterator[np.ndarray]:
        return eval_images(split.test, split.test_indices, 1, downsample, n)

    return TrainingData(1, images.shape[-1], None, len(images), batches, evaluation, len(split.test_indices),
                        split_record(spec, split))


def streamed_data(spec: DataSpec, split: RunSplit, rank: int, world: int, downsample: int,
                  pin: bool) -> TrainingData:
    """A set decoded file by file: random crops and flips decoded in DataLoader workers."""
    source, train_idx = split.train, split.train_indices
    channels = spec.channels or (3 if source.is_colour() else 1)
    if next(source.readable(train_idx, channels), None) is None:
        raise SourceError(f"{source.spec}: none of its {len(train_idx)} images could be read")
    native = shared_size(source, train_idx, channels)
    crop = spec.crop or native
    if crop is None:
        raise SourceError(f"{source.spec}: its images do not share one square size: choose a --crop")
    if crop % downsample or crop < downsample:
        raise SourceError(f"--crop {crop}: must be a positive multiple of {downsample}")
    if len(train_idx) < spec.batch_size:
        raise SourceError(f"{spec.train}: {len(train_idx)} training images, fewer than one batch of {spec.batch_size}")

    def batches(start: int, end: int) -> Iterator[Batch]:
        blocks = source.blocks(train_idx)
        order = StepBatches(train_idx, spec.batch_size, spec.seed, start, end, rank, world, blocks)
        return source_batches(source, train_idx, channels, crop, spec.flip, order, spec.workers, pin)

    def evaluation(n: int | None) -> Iterator[np.ndarray]:
        return eval_images(split.test, split.test_indices, channels, downsample, n)

    record = {**split_record(spec, split), "native_size": native if native and native % downsample == 0 else crop,
              "val_fraction": spec.val_fraction if split.held_out else None}
    return TrainingData(channels, crop, crop, len(train_idx), batches, evaluation, len(split.test_indices), record)


def training_data(spec: DataSpec, rank: int, world: int, downsample: int, pin: bool) -> TrainingData:
    """The run's data, however the set is held (see the module docstring)."""
    split = spec.split()
    if split.train.arrays is not None:
        return in_memory_data(spec, split, rank, world, downsample)
    return streamed_data(spec, split, rank, world, downsample, pin)
