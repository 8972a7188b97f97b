"""The prior over code grids: causal, its incremental sampling equals the full forward, trained on a
real model's MNIST codes it learns and resumes bit for bit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.pixelcnn import GatedPixelCNN
from training.prior_model import CodePrior, PriorConfig
from training.train_prior import cli, main, parse_args

ROOT = Path(__file__).resolve().parents[2]
SMALL = PriorConfig(codebook_size=16, positions=12, classes=3, width=32, layers=2, heads=2, dropout=0.0)


def small_prior() -> CodePrior:
    torch.manual_seed(0)
    return CodePrior(SMALL).eval()


def test_each_position_sees_only_the_codes_before_it() -> None:
    prior = small_prior()
    codes = torch.randint(0, 16, (2, 3, 4))  # (N, h, w): 12 positions
    labels = torch.tensor([0, 2])
    base = prior(codes, labels)  # (2, 12, 16)
    changed = codes.clone()
    changed[:, 1, 1] = (changed[:, 1, 1] + 1) % 16  # position 5
    after = prior(changed, labels)
    assert torch.equal(base[:, :6], after[:, :6])  # positions 0..5 do not read position 5
    assert not torch.allclose(base[:, 6:], after[:, 6:])
    assert not torch.allclose(prior(codes, torch.tensor([1, 1]))[:, 0], base[:, 0])  # the class matters


def test_the_gated_pixelcnn_sees_only_the_codes_before_each_position() -> None:
    torch.manual_seed(0)
    pixelcnn = GatedPixelCNN(replace(SMALL, positions=49, layers=4, arch="pixelcnn")).eval()
    codes, labels = torch.randint(0, 16, (2, 7, 7)), torch.tensor([0, 2])
    base = pixelcnn(codes, labels)  # (2, 49, 16)
    for position in (0, 6, 7, 24, 48):
        changed = codes.clone()
        changed.view(2, -1)[:, position] = (changed.view(2, -1)[:, position] + 1) % 16
        after = pixelcnn(changed, labels)
        assert torch.equal(base[:, : position + 1], after[:, : position + 1])  # no blind cheat, no look-ahead
        for reader in (position + 1, position + 7):  # the code to its right and the one below read it
            if reader < 49 and (reader == position + 7 or reader % 7):
                assert not torch.allclose(base[:, reader], after[:, reader])
    assert not torch.allclose(pixelcnn(codes, torch.tensor([1, 1]))[:, 0], base[:, 0])  # the class matters


def test_incremental_logits_equal_the_full_forward() -> None:
    prior = small_prior()
    codes = torch.randint(0, 16, (3, 3, 4))
    labels = torch.tensor([0, 1, 2])
    full = prior(codes, labels)  # (3, 12, 16)
    caches, flat, previous = prior.new_caches(), codes.flatten(1), None
    for t in range(12):
        step = prior.next_logits(t, previous, labels, caches, 3)
        torch.testing.assert_close(step, full[:, t], rtol=1e-5, atol=1e-5)
        previous = flat[:, t]


def test_sampling_is_deterministic_for_a_seed_and_in_range() -> None:
    prior = small_prior()
    draw = [prior.sample(5, (3, 4), torch.tensor([2] * 5), generator=torch.Generator().manual_seed(s))
            for s in (7, 7, 8)]
    assert draw[0].shape == (5, 3, 4) and int(draw[0].min()) >= 0 and int(draw[0].max()) < 16
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def flags(out: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["--vqvae", str(ROOT / "models" / "mnist" / "checkpoint.pt"), "--data-dir", str(data_dir),
            "--out-dir", str(out),
            "--train-images", "1000", "--test-images", "300", "--max-steps", "40", "--batch-size", "32",
            "--lr", "3e-3", "--warmup-steps", "5", "--eval-interval", "20", "--log-interval", "10",
            "--model.width", "64", "--model.layers", "2", "--progress", "false", *extra]


@pytest.mark.slow
def test_trains_on_mnist_codes_and_resumes_bit_for_bit(tmp_path: Path, data_dir: Path) -> None:
    straight = main(parse_args(flags(tmp_path / "a", data_dir)))
    assert straight["bits_per_grid"] < 49 * 9  # below a uniform code: 9 bits for each of 49 codes
    assert straight["bytes_per_image"] == pytest.approx(straight["bits_per_grid"] / 8)
    assert straight["bits_per_dim"] == pytest.approx(straight["bits_per_grid"] / 784)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [20]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [10, 20, 30, 40]
    assert main(parse_args(flags(tmp_path / "b", data_dir, "--stop-after", "25"))) == {}  # interrupted
    resumed = main(parse_args(flags(tmp_path / "b", data_dir, "--resume", "true")))
    assert {k: v for k, v in resumed.items() if k != "train_seconds"} == \
        {k: v for k, v in straight.items() if k != "train_seconds"}
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=False)["model"] for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_trains_on_the_colour_models_own_labelled_shards(tmp_path: Path, data_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the colour model records its shards relative to the project root
    argv = flags(tmp_path, data_dir, "--train-images", "300", "--test-images", "100", "--max-steps", "6",
                 "--batch-size", "8", "--eval-interval", "100")
    argv[1] = str(ROOT / "models" / "tiny-imagenet" / "checkpoint.pt")
    metrics = main(parse_args(argv))
    assert metrics["grid"] == [16, 16] and metrics["grids"] == 100  # 64×64 validation photos
    assert metrics["bits_per_dim"] == pytest.approx(metrics["bits_per_grid"] / (64 * 64 * 3))
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["config"]["model"]["classes"] == 200 and ckpt["config"]["model"]["positions"] == 256
    assert ckpt["class_names"][:2] == ["Egyptian cat", "reel"]  # from classes.txt beside the shards


def test_a_model_whose_images_are_gone_is_a_clear_error(tmp_path: Path, data_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = torch.load(ROOT / "models" / "tiny-imagenet" / "checkpoint.pt", weights_only=False)
    ckpt["config"] = {**ckpt["config"], "dataset": str(tmp_path / "gone-{0..1}.tar"), "val_dataset": None}
    torch.save(ckpt, tmp_path / "moved.pt")
    argv = flags(tmp_path / "out", data_dir)
    argv[1] = str(tmp_path / "moved.pt")
    assert cli(argv) == 1
    assert "do not exist" in capsys.readouterr().err
