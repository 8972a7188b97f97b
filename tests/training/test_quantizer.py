"""Invariants of the vector quantizer on every available device: nearest code, gradients, EMA,
initialisation, restarts, and that every tensor it makes lives on the data's device."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from training.quantizers.codebooks import kmeans, nearest_code
from training.quantizers.vq import VectorQuantizer


def brute_force_nearest(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    distances = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)  # (M, K) by explicit differences
    return distances.argmin(1)


def quantizer(device: str, **options: Any) -> VectorQuantizer:
    return VectorQuantizer(**options).to(device)


@pytest.mark.parametrize("k, d, m", [(512, 64, 300), (16, 3, 1000), (2, 1, 10), (1024, 8, 50)])
@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_code_equals_brute_force(k: int, d: int, m: int, seed: int, device: str) -> None:
    g = torch.Generator().manual_seed(seed)
    flat, codebook = torch.randn(m, d, generator=g).to(device), torch.randn(k, d, generator=g).to(device)
    assert torch.equal(nearest_code(flat, codebook), brute_force_nearest(flat, codebook))


@pytest.mark.parametrize("ema", [True, False])
def test_forward_contract_and_decode_from_indices(ema: bool, device: str) -> None:
    torch.manual_seed(0)
    q = quantizer(device, codebook_size=32, dim=4, ema=ema, data_init=False, restart_threshold=0).eval()
    z = torch.randn(3, 4, 5, 6, device=device)  # (N, D, h, w)
    quantized, indices, losses = q(z)
    assert quantized.shape == z.shape and indices.shape == (3, 5, 6) and indices.dtype == torch.int64
    assert indices.device == z.device and quantized.device == z.device
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(indices.reshape(-1), brute_force_nearest(flat, q.codebook))
    assert torch.allclose(quantized, q.decode_from_indices(indices), atol=1e-6)  # forward value is z_q (+ rounding)
    assert torch.allclose(losses.commitment, 0.25 * losses.codebook)  # same distance, β = 0.25


def _grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, tensors, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors, strict=True)]


def test_codebook_loss_moves_only_codebook_and_commitment_only_encoder(device: str) -> None:
    torch.manual_seed(0)
    q = quantizer(device, codebook_size=8, dim=4, ema=False, data_init=False, restart_threshold=0)
    z = torch.randn(2, 4, 3, 3, device=device, requires_grad=True)  # stands for the encoder output
    _, _, losses = q(z)
    g_code, g_z = _grads(losses.codebook, q.codebook, z)
    assert g_code.abs().sum() > 0 and g_z.abs().sum() == 0
    g_code, g_z = _grads(losses.commitment, q.codebook, z)
    assert g_code.abs().sum() == 0 and g_z.abs().sum() > 0


def test_reconstruction_gradient_reaches_encoder_straight_through(device: str) -> None:
    torch.manual_seed(0)
    q = quantizer(device, codebook_size=8, dim=4, ema=False, data_init=False, restart_threshold=0)
    z = torch.randn(2, 4, 3, 3, device=device, requires_grad=True)
    quantized, _, _ = q(z)
    upstream = torch.randn_like(quantized)  # what a decoder would send back
    (g_z,) = torch.autograd.grad((quantized * upstream).sum(), z)
    assert torch.equal(g_z, upstream)  # identity gradient: the straight-through estimator


def test_quantizer_stays_float32_under_bf16_autocast(device: str) -> None:
    torch.manual_seed(0)
    q = quantizer(device, codebook_size=16, dim=4, data_init=True, restart_threshold=1.0).train()
    z = torch.randn(2, 4, 5, 5, device=device).bfloat16()  # what a bf16 encoder hands over
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        quantized, _, losses = q(z)
    assert quantized.dtype == torch.float32 and losses.codebook.dtype == torch.float32
    assert q.codebook.dtype == torch.float32


def test_ema_update_on_hand_made_case(device: str) -> None:
    q = quantizer(device, codebook_size=2, dim=1, ema=True, decay=0.5, eps=0.0, data_init=False, restart_threshold=0)
    q.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    q.ema_embed_sum.copy_(torch.tensor([[0.0], [10.0]]))
    q.ema_cluster_size.copy_(torch.tensor([1.0, 1.0]))
    z = torch.tensor([1.0, 2.0, 9.0], device=device).view(1, 1, 1, 3)  # two vectors near code 0, one near code 1
    q.train()(z)
    # counts: (0.5·1 + 0.5·2, 0.5·1 + 0.5·1) = (1.5, 1); sums: (0.5·0 + 0.5·3, 0.5·10 + 0.5·9) = (1.5, 9.5)
    assert torch.allclose(q.ema_cluster_size.cpu(), torch.tensor([1.5, 1.0]))
    assert torch.allclose(q.codebook.cpu(), torch.tensor([[1.0], [9.5]]))


def test_ema_codebook_is_not_trained_by_the_optimiser() -> None:
    q = VectorQuantizer(codebook_size=4, dim=2, ema=True)
    assert "codebook" not in dict(q.named_parameters())
    assert "codebook" in dict(q.named_buffers())


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_restart_reseeds_unused_codes_from_encoder_outputs(ema: bool, device: str) -> None:
    torch.manual_seed(0)
    q = quantizer(device, codebook_size=3, dim=2, ema=ema, data_init=False, restart_threshold=0.5)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0]]))  # 1, 2 never chosen
        q.ema_cluster_size.copy_(torch.tensor([5.0, 0.0, 0.0]))
        if ema:
            q.ema_embed_sum.copy_(q.codebook * q.ema_cluster_size[:, None])
    z = torch.tensor([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [0.0, 0.4]], device=device).t().reshape(1, 2, 1, 4)
    q.train()(z)
    batch = z.reshape(2, 4).t()
    for code in (1, 2):  # each dead code now sits on one of this batch's vectors
        assert torch.isclose(q.codebook[code], batch, atol=1e-6).all(dim=1).any()
    assert int(q.restarts) == 2
    assert (q.ema_cluster_size >= 0.5).all()


def test_data_init_places_codes_on_the_data(device: str) -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [0.0, -5.0], [8.0, -8.0]])
    points = (centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 2)).to(device)
    q = quantizer(device, codebook_size=4, dim=2, data_init=True, restart_threshold=0)
    assert not bool(q.initialised)
    q.train()(points.t().reshape(1, 2, 1, 200))
    assert bool(q.initialised)
    found = torch.cdist(centres, q.codebook.cpu()).min(dim=1).values
    assert (found < 0.5).all(), found  # every true cluster got a code


def test_kmeans_recovers_separated_clusters(device: str) -> None:
    g = torch.Generator(device=device).manual_seed(3)
    centres = torch.tensor([[0.0, 10.0], [10.0, 0.0], [-10.0, -10.0]], device=device)
    points = centres.repeat_interleave(30, 0) + 0.1 * torch.randn(90, 2, generator=g, device=device)
    found = kmeans(points, 3, iters=10, generator=g)
    assert found.device == points.device
    assert (torch.cdist(centres, found).min(dim=1).values < 0.2).all()


class DevicesOfResults(TorchDispatchMode):
    """Records the device type of every tensor any op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.seen |= {t.device.type for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        return out


@pytest.mark.parametrize("data_init", [True, False])
@pytest.mark.parametrize("ema", [True, False])
def test_every_tensor_the_quantizer_makes_lives_on_the_datas_device(ema: bool, data_init: bool) -> None:
    """With "meta" as the default device, a tensor or generator made without the data's device
    would land on meta (or fail to mix with it): the same bug that crashed the trainer on CUDA."""
    torch.manual_seed(0)
    q = VectorQuantizer(codebook_size=16, dim=4, ema=ema, data_init=data_init, restart_threshold=5.0).train()
    z = torch.randn(2, 4, 3, 3)  # (N, D, h, w) on the CPU: 18 vectors for 16 codes, so restarts happen
    recorder = DevicesOfResults()
    with torch.device("meta"), recorder:
        for _ in range(3):  # k-means++ initialisation (with data_init), steps with dead-code restarts
            q(z)
    assert bool(q.initialised) and int(q.restarts) > 0  # the random paths ran
    assert recorder.seen == {"cpu"}, recorder.seen
