"""Training on your own images: folders (any format, sizes, sub-folders, a corrupt file) and tar
shards (keys, labels, grey JPEGs as RGB), exact resume, the order as a function of seed and step."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import export.pipeline as pipeline
from contract.manifest import load_manifest
from tests.conftest import photo_like
from training.batches import StepBatches, epoch_order, random_crop
from training.model import ModelConfig
from training.run_data import holdout
from training.train import TrainConfig, cli, main

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64)


def config(source: str, out: Path, **overrides: object) -> TrainConfig:
    base = TrainConfig(dataset=source, out_dir=str(out), max_steps=12, batch_size=8, warmup_steps=2, crop=32,
                       eval_interval=1000, eval_images=20, checkpoint_interval=1000, log_interval=2, threads=1,
                       workers=2, progress=False, model=SMALL)
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.mark.slow
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


@pytest.mark.slow
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
