"""One way to open any data set, with one spelling: a built-in name, a folder, tar shards, a glob or
a brace range. Training, evaluation, export, the prior, the tokenizer and the benchmarks all open
their images here, and none of them asks which kind of set it got.

    data = open_dataset("mnist:test", data_dir)       # a built-in set's split (IDX files)
    data = open_dataset("mnist")                       # the whole set; data.splits["train"] / ["test"]
    data = open_dataset("../shared/data/tiny-imagenet/val-{0000..0001}.tar.gz")
    len(data), data.key(i), data.label(i)             # "test/00042", 7
    pixels = data.decode(i, channels=3)                # uint8 (H, W, 3); UnreadableImage if it is not

- `splits`: a set's named parts ("train", "test") when it defines them (the built-in sets); a
  trainer trains on "train" and evaluates on "test". Folders and shards define none.
- `arrays`: the images and labels as arrays when the set is held in memory whole (the built-in
  sets: 28×28 grey); None for sets decoded file by file.
- `blocks(indices)`: the shard blocks of a tar source (a shard is read whole, so orders that visit
  it shard by shard read each once); None otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from datasources import DataError, UnreadableImage
from datasources.idx_files import BUILTIN_CLASS_NAMES, DATASETS, SPLIT_PREFIX, load_split
from datasources.image_files import MAX_FILE_BYTES, ImageSource, open_source

SPLIT_SEPARATOR = ":"


class Dataset:
    """Images by index, with their keys and labels (see the module docstring)."""

    spec: str
    splits: dict[str, Dataset]
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # (images (N, H, W) uint8, labels (N,)) in memory

    def __len__(self) -> int:
        raise NotImplementedError

    def key(self, index: int) -> str:
        raise NotImplementedError

    def label(self, index: int) -> int | None:
        raise NotImplementedError

    def decode(self, index: int, channels: int) -> np.ndarray:
        """uint8 (H, W, channels); UnreadableImage naming the file when it does not decode."""
        raise NotImplementedError

    @property
    def labelled(self) -> bool:
        raise NotImplementedError

    def class_names(self, count: int = 0) -> list[str]:
        """A name for each class label, at least `count` of them; empty when the set has no labels."""
        raise NotImplementedError

    def is_colour(self, probe: int = 64) -> bool:
        raise NotImplementedError

    def blocks(self, indices: np.ndarray) -> list[range] | None:
        return None

    def readable(self, indices: np.ndarray, channels: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, pixels) of the images at `indices` that decode, in order; the others are skipped."""
        for index in indices:
            try:
                yield int(index), self.decode(int(index), channels)
            except UnreadableImage:
                continue


class IdxDataset(Dataset):
    """A built-in set (MNIST-format IDX files), one split or both, held in memory as arrays."""

    def __init__(self, name: str, splits: tuple[str, ...], data_dir: str | os.PathLike[str] | None) -> None:
        self.name, self.data_dir = name, data_dir
        self.spec = name if len(splits) > 1 else f"{name}{SPLIT_SEPARATOR}{splits[0]}"
        parts = [(split, *load_split(name, split, data_dir)) for split in splits]
        images = np.concatenate([images for _, images, _ in parts])  # (N, 28, 28)
        labels = np.concatenate([labels for _, _, labels in parts])
        self.arrays = images, labels
        self._keys = [f"{split}/{i:05d}" for split, part, _ in parts for i in range(len(part))]
        self.splits = {split: IdxDataset(name, (split,), data_dir) for split in splits} if len(splits) > 1 else {}

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, index: int) -> str:
        return self._keys[index]

    def label(self, index: int) -> int | None:
        assert self.arrays is not None
        return int(self.arrays[1][index])

    def decode(self, index: int, channels: int) -> np.ndarray:
        assert self.arrays is not None
        grey = self.arrays[0][index][:, :, None]  # (28, 28, 1)
        return grey if channels == 1 else np.repeat(grey, channels, axis=2)

    @property
    def labelled(self) -> bool:
        return True

    def class_names(self, count: int = 0) -> list[str]:
        names = BUILTIN_CLASS_NAMES[self.name]
        return names + [str(i) for i in range(len(names), count)]

    def is_colour(self, probe: int = 64) -> bool:
        return False


class SourceDataset(Dataset):
    """A folder of images or tar shards (datasources/image_files.py), decoded file by file."""

    def __init__(self, source: ImageSource) -> None:
        self.source, self.spec, self.splits = source, source.spec, {}

    def __len__(self) -> int:
        return len(self.source)

    def key(self, index: int) -> str:
        return self.source.samples[index].key

    def label(self, index: int) -> int | None:
        return self.source.samples[index].label

    def decode(self, index: int, channels: int) -> np.ndarray:
        return self.source.decode(index, channels)

    @property
    def labelled(self) -> bool:
        return self.source.labelled

    def class_names(self, count: int = 0) -> list[str]:
        """From a `classes.txt` beside the shards (`index<TAB>id<TAB>name`), else the sub-folders'
        names, else the label numbers; empty when some image has no label."""
        labels = [s.label for s in self.source.samples]
        if not labels or any(label is None for label in labels):
            return []
        count = max(count, max(label for label in labels if label is not None) + 1)
        listing = self.source.listing_dir / "classes.txt"
        if listing.is_file():
            rows = [line.split("\t") for line in listing.read_text().splitlines() if line.strip()]
            indexed = [row for row in rows if row[0].isascii() and row[0].isdigit() and len(row[0]) < 10]  # data
            names = {int(row[0]): row[-1].split(",")[0].strip() for row in indexed}
            return [names.get(i, str(i)) for i in range(max(count, len(names)))]
        folders = {s.label: s.key.split("/")[0] for s in self.source.samples if s.shard < 0 and "/" in s.key}
        return [str(folders.get(i, i)) for i in range(count)]

    def is_colour(self, probe: int = 64) -> bool:
        return self.source.is_colour(probe)

    def blocks(self, indices: np.ndarray) -> list[range] | None:
        """Shard blocks over positions of `indices` (sorted), or None for a folder."""
        if not self.source.shards:
            return None
        shards = np.array([self.source.samples[i].shard for i in indices])
        starts = [0, *np.flatnonzero(np.diff(shards)) + 1]
        return [range(a, b) for a, b in zip(starts, [*starts[1:], len(indices)], strict=True)]


def builtin_name(spec: str) -> str | None:
    """The built-in set a spec names ("mnist", "mnist:test"), or None for a path or pattern."""
    name, separator, split = spec.partition(SPLIT_SEPARATOR)
    return name if name in DATASETS and (not separator or split in SPLIT_PREFIX) else None


def open_dataset(spec: str, data_dir: str | os.PathLike[str] | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> Dataset:
    """Any data set by its one spelling (see the module docstring); DataError / SourceError when it
    cannot be opened, naming what is wrong. Image files over `max_file_bytes` read as UnreadableImage."""
    name = builtin_name(spec)
    if name is not None:
        split = spec.partition(SPLIT_SEPARATOR)[2]
        return IdxDataset(name, (split,) if split else tuple(SPLIT_PREFIX), data_dir)
    if SPLIT_SEPARATOR in spec and spec.partition(SPLIT_SEPARATOR)[0] in DATASETS:
        raise DataError(f"{spec!r}: a built-in set's split is 'train' or 'test' (e.g. mnist:test)")
    return SourceDataset(open_source(spec, max_file_bytes))


def training_parts(dataset: Dataset) -> tuple[Dataset, Dataset | None]:
    """(what to train on, what to evaluate on): a set's "train" and "test" splits when it has them;
    else the whole set and None (the trainer holds part of it out)."""
    return dataset.splits.get("train", dataset), dataset.splits.get("test")

