"""The default training command on a CUDA device: steps, evaluation, recon grid, checkpoint,
bit-for-bit resume, bf16 autocast, export, and two NCCL ranks. Skipped, visibly, without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import export.pipeline as pipeline
from training.checkpoint import load_checkpoint
from training.train import TrainConfig, main

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[2]


def default_config(data_dir: Path, out: Path, **overrides: object) -> TrainConfig:
    """The default TrainConfig and ModelConfig (device auto, k-means++ init, restarts), shortened."""
    cfg = TrainConfig(data_dir=str(data_dir), out_dir=str(out), max_steps=60, eval_interval=20,
                      eval_images=500, checkpoint_interval=20, progress=False)
    return replace(cfg, **overrides)  # type: ignore[arg-type]


def test_default_command_trains_evaluates_resumes_and_exports_on_cuda(data_dir: Path, tmp_path: Path) -> None:
    straight = main(default_config(data_dir, tmp_path / "straight"))
    assert next(straight.model.parameters()).device.type == "cuda"  # --device auto chose the GPU
    assert straight.metrics["images"] == 10000 and straight.metrics["psnr"] > 12
    out = tmp_path / "straight"
    assert {"recon_step000020.png", "recon_step000040.png", "recon_step000060.png", "eval.json"} <= {
        p.name for p in out.iterdir()}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [row["step"] for row in evals] == [20, 40, 60]  # periodic and final evaluations ran

    resumed_cfg = default_config(data_dir, tmp_path / "resumed")
    main(replace(resumed_cfg, stop_after=40))
    assert load_checkpoint(tmp_path / "resumed" / "ckpt.pt")["cuda_rng"] is not None
    resumed = main(replace(resumed_cfg, resume=True)).model
    a, b = straight.model.state_dict(), resumed.state_dict()
    assert not [k for k in a if not torch.equal(a[k], b[k])]

    models = tmp_path / "models" / "mnist"
    pipeline.export_checkpoint(out / "ckpt.pt", models, version="0.0.1", data_dir=str(data_dir), parity_images=500)
    assert (models / "model.json").is_file() and (models / "decoder.onnx").is_file()


def test_bf16_autocast_trains_on_cuda_with_a_float32_quantizer(data_dir: Path, tmp_path: Path) -> None:
    result = main(default_config(data_dir, tmp_path, max_steps=40, amp=True))
    assert result.model.quantizer.codebook.dtype == torch.float32
    assert result.metrics["psnr"] > 12


def test_two_nccl_ranks_hold_the_same_codebook(data_dir: Path, tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL needs a GPU per rank; this machine has {torch.cuda.device_count()}")
    overrides = {"data_dir": str(data_dir), "out_dir": str(tmp_path), "max_steps": 25, "batch_size": 64,
                 "eval_interval": 1000, "eval_images": 200, "checkpoint_interval": 1000, "progress": False,
                 "device": "cuda", "model.restart_threshold": 2.0}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).with_name("ddp_worker.py")), json.dumps(overrides)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", map_location="cpu") for r in (0, 1))
    assert int(rank0["quantizer.restarts"]) > 0
    assert not [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
