"""The VQ-VAE's shapes and contract: forward, encode_to_indices, decode_from_indices."""

from __future__ import annotations

import pytest
import torch

from training.model import VQVAE, ModelConfig


@pytest.fixture(scope="module")
def model() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64)).eval()


@pytest.mark.parametrize("height, width", [(28, 28), (32, 48), (4, 4), (64, 8)])
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_follow_a_total_stride_of_four(model: VQVAE, height: int, width: int, batch: int) -> None:
    x = torch.rand(batch, 1, height, width)
    recon, indices, losses = model(x)
    assert recon.shape == x.shape
    assert indices.shape == (batch, height // 4, width // 4) and indices.dtype == torch.int64
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses)
    assert torch.isclose(losses.total, losses.reconstruction + losses.codebook + losses.commitment)


def test_encode_and_decode_from_indices_agree_with_forward(model: VQVAE) -> None:
    x = torch.rand(5, 1, 28, 28)
    recon, indices, _ = model(x)
    assert torch.equal(model.encode_to_indices(x), indices)
    decoded = model.decode_from_indices(indices)
    assert torch.allclose(decoded, recon.clamp(0, 1), atol=1e-5)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_indices_stay_inside_the_codebook(model: VQVAE) -> None:
    indices = model.encode_to_indices(torch.rand(16, 1, 28, 28) * 4 - 2)
    assert int(indices.min()) >= 0 and int(indices.max()) < model.cfg.codebook_size
