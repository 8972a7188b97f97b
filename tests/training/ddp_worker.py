"""Run by torchrun from test_ddp.py: train a few steps, then save this rank's whole model state."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from training.cli import build_config
from training.train import TrainConfig, main

if __name__ == "__main__":
    cfg = build_config(TrainConfig, json.loads(sys.argv[1]))
    result = main(cfg)
    torch.save(result.model.state_dict(), Path(cfg.out_dir) / f"rank{os.environ['RANK']}.pt")
