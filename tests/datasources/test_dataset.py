"""One spelling for every data set: built-in names and splits, folders, shards, globs and ranges, all
read through the same Dataset (keys, labels, pixels, class names) whatever they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from datasources import DataError, SourceError, UnreadableImage
from datasources.dataset import open_dataset, training_parts
from datasources.idx_files import load_split


def test_a_built_in_set_has_its_splits_and_keys(data_dir: Path) -> None:
    whole = open_dataset("mnist", data_dir)
    assert len(whole) == 70000 and set(whole.splits) == {"train", "test"}
    assert whole.key(0) == "train/00000" and whole.key(60000) == "test/00000"
    train, test = training_parts(whole)
    assert (len(train), len(test)) == (60000, 10000) and test is not None
    images, labels = load_split("mnist", "test", data_dir)
    one = open_dataset("mnist:test", data_dir)
    assert one.spec == "mnist:test" and one.splits == {} and len(one) == 10000
    assert np.array_equal(one.decode(7, 1)[..., 0], images[7]) and one.label(7) == int(labels[7])
    assert one.decode(7, 3).shape == (28, 28, 3) and not one.is_colour()
    assert one.class_names()[:3] == ["0", "1", "2"] and one.arrays is not None
    assert open_dataset("fashion-mnist:test", data_dir).class_names()[0] == "T-shirt/top"


@pytest.mark.parametrize("spec", ["mnist:valid", "mnist:"])
def test_a_built_in_name_with_an_unknown_split_is_refused(spec: str, data_dir: Path) -> None:
    with pytest.raises(DataError, match="'train' or 'test'"):
        open_dataset(spec, data_dir)


def test_folders_and_shards_read_through_the_same_interface(folder: Path, shards: Path) -> None:
    photos = open_dataset(str(folder))
    assert photos.splits == {} and photos.arrays is None and photos.labelled
    assert photos.key(0) == "cats/img000" and photos.label(0) == 0 and photos.decode(0, 3).shape == (36, 52, 3)
    assert photos.class_names() == [] and photos.is_colour()  # some files sit in no class folder
    broken = next(i for i in range(len(photos)) if photos.key(i) == "dogs/broken")
    with pytest.raises(UnreadableImage, match=r"broken\.png"):
        photos.decode(broken, 3)
    assert [i for i, _ in photos.readable(np.array([broken, 0]), 3)] == [0]
    by_range = open_dataset(str(shards / "train-{0000..0001}.tar.gz"))
    assert len(by_range) == 80 and by_range.key(5) == "s0_5" and by_range.label(5) == 5
    assert by_range.class_names() == [str(i) for i in range(7)]  # no classes.txt: the label numbers


def test_class_names_come_from_sub_folders(tmp_path: Path, folder: Path) -> None:
    for name in ("cats", "dogs"):
        shutil.copytree(folder / name, tmp_path / name)
    assert open_dataset(str(tmp_path)).class_names() == ["cats", "dogs"]


def test_class_names_come_from_classes_txt_beside_real_shards(data_dir: Path) -> None:
    val = open_dataset(str(data_dir / "tiny-imagenet" / "val-0000.tar.gz"))
    names = val.class_names()
    assert len(names) == 200 and all(names) and names != [str(i) for i in range(200)]


def test_nothing_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        open_dataset(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="no images there"):
        open_dataset(str(tmp_path))
