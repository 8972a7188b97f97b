"""The training loop on real MNIST: it learns, it resumes bit for bit, its CLI and outputs work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.batches import BatchOrder
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import ModelConfig
from training.train import TrainConfig, cli, learning_rate, main, parse_args

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64)


def small_config(data_dir: Path, out: Path, **overrides: object) -> TrainConfig:
    base = TrainConfig(data_dir=str(data_dir), out_dir=str(out), max_steps=30, batch_size=32, warmup_steps=5,
                       eval_interval=1000, eval_images=500, checkpoint_interval=1000, log_interval=5,
                       threads=1, progress=False, model=SMALL)
    return replace(base, **overrides)  # type: ignore[arg-type]


def read_rows(out: Path, kind: str) -> list[dict]:  # type: ignore[type-arg]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_a_few_steps_on_real_digits_lower_the_loss(data_dir: Path, tmp_path: Path, device: str) -> None:
    result = main(small_config(data_dir, tmp_path, max_steps=40, device=device))
    train = read_rows(tmp_path, "train")
    assert [r["step"] for r in train] == list(range(5, 41, 5))
    assert train[-1]["reconstruction"] < 0.6 * train[0]["reconstruction"], train
    assert result.metrics["images"] == 10000 and 0 < result.metrics["mse"] < 0.1
    assert json.loads((tmp_path / "eval.json").read_text()) == result.metrics
    assert (tmp_path / "recon_step000040.png").is_file()


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(data_dir: Path, tmp_path: Path, device: str) -> None:
    straight = main(small_config(data_dir, tmp_path / "straight", checkpoint_interval=7, device=device)).model
    interrupted_cfg = small_config(data_dir, tmp_path / "resumed", checkpoint_interval=7, device=device)
    main(replace(interrupted_cfg, stop_after=14))
    assert load_checkpoint(tmp_path / "resumed" / "ckpt.pt")["step"] == 14
    resumed = main(replace(interrupted_cfg, resume=True)).model
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    assert int(resumed.quantizer.restarts) == int(straight.quantizer.restarts)


def test_device_cuda_without_a_gpu_is_a_clear_error(data_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    argv = ["--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--max-steps", "2", "--device", "cuda"]
    assert cli(argv) == 1
    assert "no CUDA device" in capsys.readouterr().err
    assert cli([*argv[:-1], "tpu"]) == 1
    assert "auto, cpu or cuda" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_refuses_a_different_config(data_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(data_dir, tmp_path, max_steps=6)
    main(cfg)
    with pytest.raises(Exception, match="different config"):
        main(replace(cfg, resume=True, lr=0.5))


def test_checkpoint_alone_rebuilds_the_model(data_dir: Path, tmp_path: Path) -> None:
    trained = main(small_config(data_dir, tmp_path, max_steps=5)).model.eval()
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "ckpt.pt"))
    assert rebuilt.cfg == replace(SMALL, in_channels=1)  # the trainer records what the data decided
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(rebuilt.encode_to_indices(x), trained.encode_to_indices(x))


@pytest.mark.slow
def test_cli_overrides_and_outputs(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_args(["--model.hidden", "48", "--model.ema", "false", "--lr", "1e-3", "--stop-after", "3"])
    assert cfg.model.hidden == 48 and cfg.model.ema is False and cfg.lr == 1e-3 and cfg.stop_after == 3
    assert cfg.model.code_dim == ModelConfig().code_dim  # untouched fields keep their defaults
    argv = ["--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--max-steps", "4", "--batch-size", "16",
            "--model.hidden", "16", "--model.res-hidden", "8", "--progress", "false", "--threads", "1"]
    assert cli(argv) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert cli([*argv[2:], "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "download" in capsys.readouterr().err


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.01)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 60) == pytest.approx(0.505)
    assert learning_rate(cfg, 110) == pytest.approx(0.01)


def test_batch_order_splits_each_global_batch_across_ranks() -> None:
    single = BatchOrder(100, 8, seed=3)
    ranks = [BatchOrder(100, 8, seed=3, rank=r, world=2) for r in (0, 1)]
    for step in (0, 5, 12, 13):  # 12 steps per epoch: 12 and 13 are in the second epoch
        assert torch.equal(torch.cat([o.indices(step) for o in ranks]), single.indices(step))
    assert not torch.equal(single.indices(0), single.indices(12))  # a new permutation each epoch
