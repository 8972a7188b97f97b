"""Vector quantizer of the VQ-VAE (van den Oord et al. 2017), with the options that keep every code alive.

Contract (after lucidrains/vector-quantize-pytorch):
    quantized, indices, losses = quantizer(z_e)      # z_e (N, D, h, w)
    vectors = quantizer.decode_from_indices(indices) # (N, h, w) -> (N, D, h, w)

Nearest code: k* = argmin_k ‖z‖² − 2 z·e_k + ‖e_k‖²; this is the form that exports to a
MatMul + ArgMin in ONNX. Losses are exactly the paper's: codebook ‖sg[z_e] − e‖² and
commitment β‖z_e − sg[e]‖², with a straight-through gradient from z_q to z_e.

Options, each measured at the 10-minute budget in docs/training.md and on by default only where
it won there:
- `ema` (off: −0.7 dB): the codebook follows exponential moving averages of its assigned encoder
  outputs (paper appendix; decay 0.99, Laplace-smoothed counts) instead of the codebook loss gradient.
- `data_init` (on: +0.13 dB on Fashion-MNIST, a tie on MNIST): the codebook starts as k-means++
  centres of the first batch's encoder outputs.
- dead-code restart (on: without it a third of the codes die): codes whose smoothed usage falls
  below `restart_threshold` are re-seeded from current encoder outputs.
Under torch.distributed every statistic is all-reduced and every re-seed broadcast, so all ranks
hold the same codebook.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class QuantizerLosses(NamedTuple):
    codebook: torch.Tensor  # ‖sg[z_e] − e‖², mean over elements
    commitment: torch.Tensor  # β‖z_e − sg[e]‖², β already applied


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate equally sized (M, D) row blocks from every rank, in rank order."""
    if not _distributed():
        return rows
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def _broadcast(t: torch.Tensor) -> None:
    if _distributed():
        dist.broadcast(t, src=0)


def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(M, D) vectors, (K, D) codebook -> (M,) int64 index of the nearest code (squared L2)."""
    distances = (
        flat.pow(2).sum(1, keepdim=True)  # (M, 1)
        - 2 * flat @ codebook.t()  # (M, K)
        + codebook.pow(2).sum(1)[None, :]  # (1, K)
    )
    return distances.argmin(dim=1)


def kmeans_plus_plus_seeds(samples: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new seed drawn with probability ∝ squared distance to the nearest seed.

    `generator` must live on the samples' device (CUDA samples need a CUDA generator).
    """
    device = samples.device
    first = int(torch.randint(samples.shape[0], (1,), generator=generator, device=device))
    seeds = [first]
    nearest_sq = (samples - samples[first]).pow(2).sum(1)  # (M,)
    for _ in range(k - 1):
        if float(nearest_sq.sum()) <= 0:  # fewer distinct points than k: repeat seeds
            seeds.append(int(torch.randint(samples.shape[0], (1,), generator=generator, device=device)))
            continue
        chosen = int(torch.multinomial(nearest_sq, 1, generator=generator))
        seeds.append(chosen)
        nearest_sq = torch.minimum(nearest_sq, (samples - samples[chosen]).pow(2).sum(1))
    return samples[torch.tensor(seeds, device=device)].clone()


def kmeans(samples: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd k-means with k-means++ seeds on (M, D) samples -> (k, D) centres; empty clusters keep their seed."""
    centres = kmeans_plus_plus_seeds(samples, k, generator)
    for _ in range(iters):
        # Sums and counts by a one-hot matmul rather than index_add_/bincount: CUDA's atomic adds
        # would make the centres (and so resume) differ from run to run.
        one_hot = F.one_hot(nearest_code(samples, centres), k).to(samples.dtype)  # (M, k)
        sums = one_hot.t() @ samples  # (k, D)
        counts = one_hot.sum(0)  # (k,)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        codebook_size: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        data_init: bool = True,
        restart_threshold: float = 1.0,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.data_init = data_init
        self.restart_threshold = restart_threshold
        self.cosine = cosine

        init = torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        if ema:
            # EMA codebook: a buffer, moved by the EMA update, never by the optimiser.
            self.register_buffer("codebook", init)
            self.register_buffer("ema_embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # Smoothed per-code assignment count per batch; drives both EMA and dead-code restart.
        self.register_buffer("ema_cluster_size", torch.zeros(codebook_size))
        self.register_buffer("initialised", torch.tensor(not data_init))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    # -- inference ---------------------------------------------------------------------------

    @property
    def codes(self) -> torch.Tensor:
        """(K, D) code vectors as used: unit length with `cosine` (ViT-VQGAN's l2-normalised codes)."""
        return F.normalize(self.codebook, dim=1) if self.cosine else self.codebook

    def prepare(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) encoder output -> what is quantized (unit vectors with `cosine`)."""
        return F.normalize(z_e, dim=1) if self.cosine else z_e

    def quantize_indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) encoder output -> (N, h, w) int64 nearest-code indices."""
        n, d, h, w = z_e.shape
        flat = self.prepare(z_e).permute(0, 2, 3, 1).reshape(-1, d)  # (N*h*w, D)
        return nearest_code(flat, self.codes).view(n, h, w)

    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, D, h, w) code vectors."""
        return F.embedding(indices, self.codes).permute(0, 3, 1, 2)

    # -- training ----------------------------------------------------------------------------

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        """(N, D, h, w) -> straight-through z_q (N, D, h, w), indices (N, h, w), losses.

        Always float32, also under bf16 autocast: distances, argmin and EMA need the precision.
        """
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            return self._forward_fp32(z_e.float())

    def _forward_fp32(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        z_e = self.prepare(z_e)  # gradients flow through the normalisation to the encoder
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (M, D)
        if self.training and not bool(self.initialised):
            self._initialise_from(flat)

        indices = self.quantize_indices(z_e.detach())  # (N, h, w)
        z_q = self.decode_from_indices(indices)  # (N, D, h, w), grad reaches codebook (non-EMA)

        losses = QuantizerLosses(
            codebook=F.mse_loss(z_q, z_e.detach()),
            commitment=self.beta * F.mse_loss(z_e, z_q.detach()),
        )
        if self.training:
            self._update_statistics(flat, indices.reshape(-1))
        # Straight-through: the forward value is z_q, the gradient flows to z_e unchanged.
        quantized = z_e + (z_q - z_e).detach()
        return quantized, indices, losses

    @torch.no_grad()
    def _initialise_from(self, flat: torch.Tensor) -> None:
        samples = _all_gather_rows(flat)
        # The seed comes from the global CPU RNG (saved in checkpoints) on every device; the
        # generator itself must live where the samples are.
        seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        generator = torch.Generator(device=samples.device).manual_seed(seed)
        centres = kmeans(samples, self.codebook_size, iters=10, generator=generator)
        _broadcast(centres)
        self.codebook.data.copy_(centres)
        if self.ema:
            # Start the EMA as if every code had been seen once at its centre.
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(centres)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update_statistics(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        one_hot = F.one_hot(indices, self.codebook_size).to(flat.dtype)  # (M, K)
        counts = _all_reduce_sum(one_hot.sum(0))  # (K,) over every rank's batch
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            embed_sum = _all_reduce_sum(one_hot.t() @ flat)  # (K, D)
            self.ema_embed_sum.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
            # Laplace smoothing keeps rarely used codes from dividing by ~0.
            total = self.ema_cluster_size.sum()
            smoothed = (self.ema_cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
            self.codebook.copy_(self.ema_embed_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.ema_cluster_size < self.restart_threshold  # (K,) bool, identical on every rank
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        # Every rank contributes the same number of candidates; rank 0's choice is broadcast.
        # Random picks come from the data's device RNG (CUDA's on a GPU, saved in checkpoints too).
        device = flat.device
        pick = torch.randint(0, flat.shape[0], (min(n_dead, flat.shape[0]),), device=device)
        candidates = _all_gather_rows(flat[pick])  # (ranks*n, D)
        chosen = candidates[torch.randperm(candidates.shape[0], device=device)[:n_dead]]
        if chosen.shape[0] < n_dead:  # more dead codes than candidates: reuse with noise
            extra = chosen[torch.randint(0, chosen.shape[0], (n_dead - chosen.shape[0],), device=device)]
            chosen = torch.cat([chosen, extra + 1e-3 * torch.randn_like(extra)])
        _broadcast(chosen)
        self.codebook.data[dead] = chosen
        self.ema_cluster_size[dead] = self.restart_threshold
        if self.ema:
            self.ema_embed_sum[dead] = chosen * self.restart_threshold
        self.restarts += n_dead
