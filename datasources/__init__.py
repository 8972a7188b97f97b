"""Data sets, opened one way: `open_dataset("mnist:test")`, a folder, tar shards, a glob or a range.

- `datasources.dataset`: `open_dataset` and the `Dataset` every reader uses (keys, labels, pixels);
- `datasources.idx_files`: the built-in MNIST-format sets (IDX files) and their downloader
  (`python -m datasources download`);
- `datasources.image_files`: folders of images and webdataset tar shards.

Numpy and Pillow only (no torch, no web framework): the trainer, the exporter, the tokenizer, the
benchmarks and DataLoader worker processes all import it.
"""
