"""Training on your own images: folders (any format, sizes, sub-folders, a corrupt file) and tar
shards (keys, labels, grey JPEGs as RGB), exact resume, the order as a function of seed and step."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import export.pipeline as pipeline
from contract.manifest import load_manifest
from training.loader import StepBatches, blocks_of, epoch_order, holdout, random_crop
from training.model import ModelConfig
from training.sources import SourceError, expand, open_source
from training.train import TrainConfig, cli, main

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64)


def photo_like(rng: np.random.Generator, height: int, width: int, grey: bool = False) -> np.ndarray:
    """Smooth random images (low-frequency noise upscaled): something a codec can learn a little of."""
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 1 if grey else 3), dtype=np.uint8)
    image = Image.fromarray(small[..., 0] if grey else small).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RGB and grey files in six formats, mixed sizes, two class sub-folders, one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("tif", "TIFF"), ("gif", "GIF")]
    for i in range(60):
        sub = root / ("cats" if i % 3 == 0 else "dogs" if i % 3 == 1 else "")
        sub.mkdir(exist_ok=True)
        extension, fmt = formats[i % len(formats)]
        height, width = (48, 40) if i % 2 else (36, 52)  # odd sizes: not all multiples of 4
        Image.fromarray(photo_like(rng, height, width, grey=i % 5 == 0)).save(sub / f"img{i:03d}.{extension}",
                                                                             format=fmt)
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a header and nothing
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two webdataset shards: <key>.jpg + <key>.cls, some JPEGs grey."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    for shard in range(2):
        with tarfile.open(root / f"train-{shard:04d}.tar.gz", "w:gz") as tar:
            for i in range(40):
                buffer = io.BytesIO()
                Image.fromarray(photo_like(rng, 32, 32, grey=i % 4 == 0)).save(buffer, format="JPEG", quality=90)
                members = ((f"s{shard}_{i}.jpg", buffer.getvalue()), (f"s{shard}_{i}.cls", str(i % 7).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def config(source: str, out: Path, **overrides: object) -> TrainConfig:
    base = TrainConfig(dataset=source, out_dir=str(out), max_steps=12, batch_size=8, warmup_steps=2, crop=32,
                       eval_interval=1000, eval_images=20, checkpoint_interval=1000, log_interval=2, threads=1,
                       workers=2, progress=False, model=SMALL)
    return replace(base, **overrides)  # type: ignore[arg-type]


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
    assert blocks_of(by_glob, np.arange(80)) == [range(0, 40), range(40, 80)]
    with pytest.raises(SourceError, match="do not exist"):
        expand(str(shards / "train-{0000..0003}.tar.gz"))


def test_real_tiny_imagenet_shards(data_dir: Path) -> None:
    source = open_source(str(data_dir / "tiny-imagenet" / "val-0000.tar.gz"))
    assert len(source) == 5000 and source.samples[0].key == "val_0" and source.samples[0].label is not None
    assert source.decode(0, 3).shape == (64, 64, 3)


def test_a_folder_trains_skips_the_corrupt_file_once_and_exports(folder: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = main(config(str(folder), tmp_path / "run", max_steps=24))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "broken.png" in line]
    assert len(warnings) == 1, warnings  # one warning naming it, however often it is drawn
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-2]["kind"] == "train" and rows[-2]["skipped_images"] >= 1
    assert result.model.cfg.in_channels == 3 and result.metrics["images"] in (3, 4)  # 5 % of 61 held out
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert ckpt["config"]["crop"] == 32 and ckpt["data"]["val_images"] == 4 and ckpt["data"]["labelled"]
    manifest = pipeline.export_checkpoint(tmp_path / "run" / "ckpt.pt", tmp_path / "models" / "photos", version="0.0.1")
    assert manifest.input.channels == 3 and (manifest.input.height, manifest.grid.height) == (32, 8)
    assert load_manifest(tmp_path / "models" / "photos").parity["images"] > 3  # native and Kodak-sized images


def test_resume_on_a_folder_is_exact(folder: Path, tmp_path: Path) -> None:
    straight = main(config(str(folder), tmp_path / "straight", checkpoint_interval=5)).model
    resumed_cfg = config(str(folder), tmp_path / "resumed", checkpoint_interval=5)
    main(replace(resumed_cfg, stop_after=5))
    resumed = main(replace(resumed_cfg, resume=True)).model
    a, b = straight.state_dict(), resumed.state_dict()
    assert not [k for k in a if not torch.equal(a[k], b[k])]


def test_grey_only_data_trains_a_grey_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(20):
        Image.fromarray(photo_like(rng, 32, 32, grey=True)).save(tmp_path / f"{i}.png")
    result = main(config(str(tmp_path), tmp_path / "run", max_steps=2))
    assert result.model.cfg.in_channels == 1


def test_sources_with_nothing_readable_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(b"not a jpeg")
    for source in ("empty", "bad", "nowhere"):
        argv = ["--dataset", str(tmp_path / source), "--out-dir", str(tmp_path / "out"), "--max-steps", "2",
                "--batch-size", "1", "--progress", "false", "--workers", "0"]
        assert cli(argv) == 1
        assert "error:" in capsys.readouterr().err


def test_the_order_is_a_function_of_seed_and_step_and_covers_each_epoch() -> None:
    indices = np.arange(100, 200)
    blocks = [range(0, 50), range(50, 100)]
    a = StepBatches(indices, 10, seed=3, start=0, end=20, blocks=blocks)
    b = StepBatches(indices, 10, seed=3, start=7, end=20, blocks=blocks)  # resumed at step 7
    assert list(a)[7:] == list(b)
    epoch = np.concatenate([a.positions(s) for s in range(10)])
    assert sorted(epoch) == list(range(100))
    first = epoch_order(100, 3, 0, blocks)
    assert set(first[:50]) in (set(range(50)), set(range(50, 100)))  # shard-blocked
    assert not np.array_equal(epoch_order(100, 3, 0), epoch_order(100, 3, 1))
    ranks = [StepBatches(indices, 10, 3, 0, 4, rank=r, world=2, blocks=blocks) for r in (0, 1)]
    assert np.array_equal(np.concatenate([r.positions(2) for r in ranks]), a.positions(2))


def test_crops_scale_small_images_up_and_holdout_is_fixed() -> None:
    rng = np.random.default_rng(0)
    crop = random_crop(np.zeros((20, 50, 3), np.uint8), 32, True, rng)
    assert crop.shape == (3, 32, 32)
    train, held = holdout(1000, 0.05, 30, seed=4)
    assert len(held) == 30 and len(train) == 970 and not set(train) & set(held)
    assert np.array_equal(held, holdout(1000, 0.05, 30, seed=4)[1])
