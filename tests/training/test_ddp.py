"""Two CPU ranks under torchrun (gloo) end with identical codebooks and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # a training on two ranks


WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ema", [True, False])
def test_two_ranks_hold_the_same_codebook(data_dir: Path, tmp_path: Path, ema: bool) -> None:
    overrides = {
        "data_dir": str(data_dir), "out_dir": str(tmp_path), "max_steps": 25, "batch_size": 64,
        "warmup_steps": 5, "eval_interval": 1000, "eval_images": 200, "checkpoint_interval": 1000,
        "threads": 1, "progress": False, "model.hidden": 32, "model.res_hidden": 16, "model.code_dim": 16,
        "model.codebook_size": 128, "model.ema": ema, "model.restart_threshold": 2.0,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), json.dumps(overrides)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert bool(rank0["quantizer.initialised"]) and int(rank0["quantizer.restarts"]) > 0  # both paths ran
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not different, different
    assert (tmp_path / "eval.json").is_file()  # rank 0 evaluated at the end
