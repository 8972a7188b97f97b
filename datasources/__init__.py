"""Data sets, opened one way: `open_dataset("mnist:test")`, a folder, tar shards, a glob or a range.

- `datasources.dataset`: `open_dataset` and the `Dataset` every reader uses (keys, labels, pixels);
- `datasources.idx_files`: the built-in MNIST-format sets (IDX files) and their downloader
  (`python -m datasources download`);
- `datasources.image_files`: folders of images and webdataset tar shards.

What can go wrong is defined below: DatasetError (DataError for the IDX files, SourceError for
folders and shards), and UnreadableImage for one file that does not decode. Numpy and Pillow only
(no torch, no web framework): the trainer, the exporter, the tokenizer, the benchmarks and
DataLoader worker processes all import it.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set that cannot be used: missing or malformed files, nothing readable, a bad spelling."""


class DataError(DatasetError):
    """A built-in set's IDX file is missing or malformed."""


class SourceError(DatasetError):
    """A folder or tar-shard source that cannot be used: nothing there, or nothing readable."""


class UnreadableImage(Exception):
    """One file that does not decode; readers skip it with a warning naming it."""
