"""Vector quantizer of the VQ-VAE (van den Oord et al. 2017), with the options that keep every code alive.

Contract (quantizers/seam.py, after lucidrains/vector-quantize-pytorch):
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
- `cosine`: l2-normalised latents and codes (ViT-VQGAN).
- `lookup_dim` d > 0 (factorised codes, ViT-VQGAN / LlamaGen): the nearest code is searched for
  z = l2norm(W_in z_e) in d dimensions among l2-normalised codes, and z_q = W_out e_k*; the two
  loss terms are taken in that d-dimensional space. Keeps large codebooks (K = 16,384) alive.
Under torch.distributed every statistic is all-reduced and every re-seed broadcast, so all ranks
hold the same codebook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from training.quantizers.codebooks import (
    all_gather_rows,
    all_reduce_sum,
    broadcast,
    kmeans,
    near_tie_rows,
    nearest_code,
)
from training.quantizers.seam import Quantizer, QuantizerLosses

if TYPE_CHECKING:
    from training.model import ModelConfig


class VectorQuantizer(Quantizer):
    kind = "vq"

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
        lookup_dim: int = 0,
    ) -> None:
        super().__init__()
        self.codebook_size, self.stages, self.dim = codebook_size, 1, dim
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.data_init = data_init
        self.restart_threshold = restart_threshold
        self.lookup_dim = lookup_dim
        self.cosine = cosine or lookup_dim > 0  # factorised codes are always l2-normalised
        code_dim = lookup_dim or dim
        # W_in (D -> d) and W_out (d -> D) as 1×1 convolutions; absent without lookup_dim, so the
        # default model keeps its state-dict keys.
        self.project_in = nn.Conv2d(dim, code_dim, 1) if lookup_dim else None
        self.project_out = nn.Conv2d(code_dim, dim, 1) if lookup_dim else None

        init = torch.empty(codebook_size, code_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
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

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> VectorQuantizer:
        return cls(codebook_size=cfg.codebook_size, dim=cfg.code_dim, beta=cfg.beta, ema=cfg.ema,
                   decay=cfg.ema_decay, data_init=cfg.data_init, restart_threshold=cfg.restart_threshold,
                   cosine=cfg.cosine, lookup_dim=cfg.lookup_dim)

    @staticmethod
    def check(cfg: ModelConfig) -> None:
        """Clear errors for flag values this kind cannot take."""
        if cfg.codebook_size < 2:
            raise ValueError(f"--model.codebook-size must be at least 2, not {cfg.codebook_size}")
        if cfg.lookup_dim < 0 or cfg.lookup_dim > cfg.code_dim:
            raise ValueError(f"--model.lookup-dim {cfg.lookup_dim}: must be between 1 and --model.code-dim "
                             f"({cfg.code_dim}), or 0 for no factorised lookup")

    def describe(self) -> dict[str, Any]:
        entry = super().describe()
        return {**entry, "lookup_dim": self.lookup_dim} if self.lookup_dim else entry

    # -- inference ---------------------------------------------------------------------------

    @property
    def codes(self) -> torch.Tensor:
        """(K, d) code vectors as used: unit length with `cosine` (ViT-VQGAN's l2-normalised codes)."""
        return F.normalize(self.codebook, dim=1) if self.cosine else self.codebook

    def prepare(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) encoder output -> what is quantized (N, d, h, w): l2norm(W_in z_e) with
        lookup_dim, unit vectors with `cosine`, else z_e itself."""
        if self.project_in is not None:
            z_e = self.project_in(z_e)
        return F.normalize(z_e, dim=1) if self.cosine else z_e

    def quantize_indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) encoder output -> (N, h, w) int64 nearest-code indices."""
        z = self.prepare(z_e)
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N*h*w, d)
        return nearest_code(flat, self.codes).view(n, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, d, h, w) code vectors in the lookup space."""
        return F.embedding(indices, self.codes).permute(0, 3, 1, 2)

    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, D, h, w) code vectors (W_out e_k with lookup_dim)."""
        vectors = self.lookup(indices)
        return vectors if self.project_out is None else self.project_out(vectors)

    def near_ties(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w): the two nearest codes are within TIE_RELATIVE_GAP (codebooks.py)."""
        z = self.prepare(z_e)
        n, d, h, w = z.shape
        return near_tie_rows(z.permute(0, 2, 3, 1).reshape(-1, d), self.codes).view(n, h, w)

    # -- training ----------------------------------------------------------------------------

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        """(N, D, h, w) -> straight-through z_q (N, D, h, w), indices (N, h, w), losses.

        Always float32, also under bf16 autocast: distances, argmin and EMA need the precision.
        """
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            return self._forward_fp32(z_e.float())

    def _forward_fp32(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        z = self.prepare(z_e)  # (N, d, h, w); gradients flow through projection and normalisation
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (M, d)
        if self.training and not bool(self.initialised):
            self._initialise_from(flat)

        indices = nearest_code(flat, self.codes).view(z.shape[0], *z.shape[2:])  # (N, h, w)
        e = self.lookup(indices)  # (N, d, h, w), grad reaches codebook (non-EMA)

        losses = QuantizerLosses(
            codebook=F.mse_loss(e, z.detach()),  # ‖sg[z_e] − e‖²
            commitment=self.beta * F.mse_loss(z, e.detach()),  # β‖z_e − sg[e]‖²
        )
        if self.training:
            self._update_statistics(flat, indices.reshape(-1))
        # Straight-through: the forward value is e, the gradient flows to z unchanged.
        quantized = z + (e - z).detach()
        if self.project_out is not None:
            quantized = self.project_out(quantized)  # (N, D, h, w) = W_out e_k*
        return quantized, indices, losses

    @torch.no_grad()
    def _initialise_from(self, flat: torch.Tensor) -> None:
        samples = all_gather_rows(flat)
        # The seed comes from the global CPU RNG (saved in checkpoints) on every device; the
        # generator itself must live where the samples are.
        seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        generator = torch.Generator(device=samples.device).manual_seed(seed)
        centres = kmeans(samples, self.codebook_size, iters=10, generator=generator)
        broadcast(centres)
        self.codebook.data.copy_(centres)
        if self.ema:
            # Start the EMA as if every code had been seen once at its centre.
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(centres)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update_statistics(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        # Counts by bincount on the CPU (exact integers, deterministic there, no (M, K) one-hot for a
        # 16,384-code book); on CUDA by a one-hot sum, whose result does not depend on atomics' order.
        one_hot = F.one_hot(indices, self.codebook_size).to(flat.dtype) if self.ema or flat.is_cuda else None  # (M, K)
        local = one_hot.sum(0) if one_hot is not None else torch.bincount(indices, minlength=self.codebook_size)
        counts = all_reduce_sum(local.to(flat.dtype))  # (K,) over every rank's batch
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema and one_hot is not None:
            embed_sum = all_reduce_sum(one_hot.t() @ flat)  # (K, d)
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
        candidates = all_gather_rows(flat[pick])  # (ranks*n, d)
        chosen = candidates[torch.randperm(candidates.shape[0], device=device)[:n_dead]]
        if chosen.shape[0] < n_dead:  # more dead codes than candidates: reuse with noise
            extra = chosen[torch.randint(0, chosen.shape[0], (n_dead - chosen.shape[0],), device=device)]
            chosen = torch.cat([chosen, extra + 1e-3 * torch.randn_like(extra)])
        broadcast(chosen)
        self.codebook.data[dead] = chosen
        self.ema_cluster_size[dead] = self.restart_threshold
        if self.ema:
            self.ema_embed_sum[dead] = chosen * self.restart_threshold
        self.restarts += n_dead
