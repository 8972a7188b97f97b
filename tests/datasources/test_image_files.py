"""Folders of images and webdataset tar shards: keys, labels, grey files as RGB, globs and ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasources import SourceError
from datasources.dataset import open_dataset
from datasources.image_files import expand, open_source


def test_a_folder_is_searched_recursively_with_labels_from_sub_folders(folder: Path) -> None:
    source = open_source(str(folder))
    assert len(source) == 61 and source.labelled
    keys = {s.key: s.label for s in source.samples}
    assert keys["cats/img000"] == 0 and keys["dogs/img001"] == 1 and keys["img002"] is None
    assert source.is_colour()
    assert source.decode(0, 3).shape == (36, 52, 3) and source.decode(0, 1).shape == (36, 52, 1)


def test_shards_by_glob_and_brace_range_with_keys_labels_and_grey_as_rgb(shards: Path) -> None:
    by_glob = open_source(str(shards / "train-*.tar.gz"))
    by_range = open_source(str(shards / "train-{0000..0001}.tar.gz"))
    assert [s.key for s in by_glob.samples] == [s.key for s in by_range.samples]
    assert len(by_glob) == 80 and by_glob.samples[5].key == "s0_5" and by_glob.samples[5].label == 5
    grey = by_glob.decode(4, 3)  # s0_4 was saved grey: three equal channels
    assert grey.shape == (32, 32, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    assert open_dataset(str(shards / "train-*.tar.gz")).blocks(np.arange(80)) == [range(0, 40), range(40, 80)]
    with pytest.raises(SourceError, match="do not exist"):
        expand(str(shards / "train-{0000..0003}.tar.gz"))


def test_real_tiny_imagenet_shards(data_dir: Path) -> None:
    source = open_source(str(data_dir / "tiny-imagenet" / "val-0000.tar.gz"))
    assert len(source) == 5000 and source.samples[0].key == "val_0" and source.samples[0].label is not None
    assert source.decode(0, 3).shape == (64, 64, 3)
