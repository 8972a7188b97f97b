"""`--init-from`: a run starts from another run's weights; a single-stage checkpoint seeds the first
stage of a residual model (the recipe of models/tiny-imagenet-rvq), and a different architecture is
refused by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError, save_checkpoint, warm_start
from training.model import VQVAE, ModelConfig

SMALL = ModelConfig(in_channels=3, hidden=32, res_hidden=16, code_dim=16, codebook_size=64)


def saved(model: VQVAE, path: Path) -> Path:
    save_checkpoint(path, {"config": {"model": vars(model.cfg)}, "model": model.state_dict()})
    return path


def test_a_single_stage_checkpoint_seeds_the_first_residual_stage(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = VQVAE(SMALL)
    source.train()(torch.rand(4, 3, 16, 16))  # k-means start: the codebook is data, not its init
    torch.manual_seed(1)
    target = VQVAE(replace(SMALL, quantizer="rvq", stages=3))
    fresh = warm_start(target, saved(source, tmp_path / "vq.pt"))

    assert all(name.startswith(("quantizer.layers.1.", "quantizer.layers.2.")) for name in fresh) and fresh
    assert torch.equal(target.quantizer.layers[0].codes, source.quantizer.codes)
    for name, tensor in source.state_dict().items():
        if name.startswith(("encoder.", "decoder.")):
            assert torch.equal(target.state_dict()[name], tensor), name
    x = torch.rand(2, 3, 16, 16)
    first = target.eval().encode_to_indices(x)[:, 0]  # (2, 4, 4): stage 1 is the source's quantizer
    assert torch.equal(first, source.eval().encode_to_indices(x))


def test_the_same_kind_copies_everything(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = VQVAE(SMALL)
    target = VQVAE(SMALL)
    assert warm_start(target, saved(source, tmp_path / "vq.pt")) == []
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    source = saved(VQVAE(SMALL), tmp_path / "vq.pt")
    with pytest.raises(CheckpointError, match=r"encoder\..*does not match this model's architecture"):
        warm_start(VQVAE(replace(SMALL, hidden=64)), source)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        warm_start(VQVAE(SMALL), tmp_path / "missing.pt")
