"""Residual vector quantization (SoundStream, Zeghidour et al. 2021, Algorithm 1) with quantizer dropout.

S stages of K codes each; stage s quantizes what the stages before it left over:

    r_1 = z_e,   e_s = nearest code of stage s to r_s,   r_{s+1} = r_s − e_s,   z_q(k) = Σ_{s ≤ k} e_s

Each stage is a VectorQuantizer (vq.py): the paper's two terms on its own residual,
‖sg[r_s] − e_s‖² + β‖r_s − sg[e_s]‖², summed over stages; k-means++ start of stage s from the
residuals r_s of the first batch, and dead-code restart per stage. The decoder sees
z_q = z_e + sg[z_q(k) − z_e] (straight-through) with k drawn per step or per image ("quantizer
dropout"), so the first k stages decode for every k ≤ S; `full_fraction` of the images always get
all S. Every stage is quantized and trained on every image whatever k is drawn; only what the
decoder sees is cut. Indices are (N, S, h, w): the stage axis second.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from training.quantizers.codebooks import near_tie_rows
from training.quantizers.seam import Quantizer, QuantizerLosses
from training.quantizers.vq import VectorQuantizer

if TYPE_CHECKING:
    from training.model import ModelConfig

DROPOUT_MODES = ("batch", "sample", "none")


def stage_weights(cfg: ModelConfig) -> tuple[float, ...]:
    """--model.rvq-stage-weights "3,2,1,2" -> (3.0, 2.0, 1.0, 2.0); () when not given."""
    if not cfg.rvq_stage_weights:
        return ()
    try:
        odds = tuple(float(w) for w in cfg.rvq_stage_weights.split(","))
    except ValueError:
        odds = ()
    if len(odds) != cfg.stages or not all(0 <= w < math.inf for w in odds) or not sum(odds) > 0:  # NaN fails too
        raise ValueError(f"--model.rvq-stage-weights must be {cfg.stages} finite non-negative numbers, not all 0 "
                         f"(the odds of k = 1..{cfg.stages}), not {cfg.rvq_stage_weights!r}")
    return odds


class ResidualVectorQuantizer(Quantizer):
    kind = "rvq"

    def __init__(self, stages: int, codebook_size: int, dim: int, dropout: str = "batch", full_fraction: float = 0.0,
                 stage_weights: tuple[float, ...] = (), **vq_options: float | bool) -> None:
        super().__init__()
        self.codebook_size, self.stages, self.dim = codebook_size, stages, dim
        self.dropout, self.full_fraction = dropout, full_fraction
        self.stage_odds = torch.tensor(stage_weights or (1.0,) * stages, dtype=torch.float64)  # (S,): odds of k = 1..S
        self.layers = nn.ModuleList(VectorQuantizer(codebook_size, dim, **vq_options) for _ in range(stages))  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ResidualVectorQuantizer:
        return cls(cfg.stages, cfg.codebook_size, cfg.code_dim, cfg.rvq_dropout, cfg.rvq_full_fraction,
                   stage_weights(cfg), beta=cfg.beta, ema=cfg.ema, decay=cfg.ema_decay, data_init=cfg.data_init,
                   restart_threshold=cfg.restart_threshold)

    @staticmethod
    def check(cfg: ModelConfig) -> None:
        if cfg.stages < 2:
            raise ValueError(f"--model.stages must be at least 2 for rvq (one stage is --model.quantizer vq), "
                             f"not {cfg.stages}")
        if cfg.codebook_size < 2:
            raise ValueError(f"--model.codebook-size must be at least 2, not {cfg.codebook_size}")
        if cfg.rvq_dropout not in DROPOUT_MODES:
            raise ValueError(f"--model.rvq-dropout must be one of {', '.join(DROPOUT_MODES)}, not {cfg.rvq_dropout!r}")
        if not 0.0 <= cfg.rvq_full_fraction <= 1.0:
            raise ValueError(f"--model.rvq-full-fraction must be in [0, 1], not {cfg.rvq_full_fraction}")
        stage_weights(cfg)  # ValueError naming the flag
        if cfg.lookup_dim or cfg.cosine:
            raise ValueError("--model.lookup-dim and --model.cosine are for --model.quantizer vq, not rvq")

    # -- inference ---------------------------------------------------------------------------

    def quantize_indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, S, h, w) int64, stage by stage on the residuals."""
        residual, indices = z_e, []
        for layer in self.layers:
            chosen = layer.quantize_indices(residual)  # (N, h, w)
            residual = residual - layer.decode_from_indices(chosen)  # r_{s+1} = r_s − e_s
            indices.append(chosen)
        return torch.stack(indices, 1)

    def codebook_table(self) -> torch.Tensor:
        """(S·K, D): every stage's codebook, stage s at rows [s·K, (s+1)·K)."""
        return torch.cat([layer.codes for layer in self.layers])

    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, k, h, w) int64, 1 ≤ k ≤ S -> (N, D, h, w) = Σ_{s<k} e_s (one gather and a sum: exports
        with a dynamic k). A (N, h, w) grid is read as k = 1."""
        if indices.ndim == 3:
            indices = indices[:, None]
        k = indices.shape[1]
        offsets = torch.arange(k, device=indices.device).view(1, k, 1, 1) * self.codebook_size  # (1, k, 1, 1)
        vectors = nn.functional.embedding(indices + offsets, self.codebook_table())  # (N, k, h, w, D)
        return vectors.sum(1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def near_ties(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w): a near-tie at any stage along PyTorch's path (a flipped code
        there changes every later residual, so the whole position is excused)."""
        n, d, h, w = z_e.shape
        residual, ties = z_e, torch.zeros(n, h, w, dtype=torch.bool, device=z_e.device)
        for layer in self.layers:
            ties |= near_tie_rows(residual.permute(0, 2, 3, 1).reshape(-1, d), layer.codes).view(n, h, w)
            residual = residual - layer.decode_from_indices(layer.quantize_indices(residual))
        return ties

    # -- training ----------------------------------------------------------------------------

    def stage_counts(self, n: int, device: torch.device) -> torch.Tensor:
        """(N,) stages each image's decoder input sums: all S in eval; in training drawn from 1..S
        (uniformly, or at --model.rvq-stage-weights' odds) per step ("batch") or per image ("sample"),
        `full_fraction` of images keeping S.
        Drawn from the global CPU generator, which checkpoints save (resume stays exact)."""
        full = torch.full((n,), self.stages, dtype=torch.long)
        if not self.training or self.dropout == "none" or self.stages == 1:
            return full.to(device)
        if self.dropout == "batch":
            return self.draw_counts(1).expand(n).to(device)
        drawn = self.draw_counts(n)
        keep_all = torch.rand(n) < self.full_fraction
        return torch.where(keep_all, full, drawn).to(device)

    def draw_counts(self, n: int) -> torch.Tensor:
        """(n,) stage counts k in 1..S at the configured odds (uniform: the draw of earlier versions)."""
        if bool((self.stage_odds == self.stage_odds[0]).all()):
            return torch.randint(1, self.stages + 1, (n,))
        return torch.multinomial(self.stage_odds, n, replacement=True) + 1

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        """(N, D, h, w) -> straight-through z_q (N, D, h, w) of each image's k stages, indices
        (N, S, h, w), losses summed over the S stages."""
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z_e = z_e.float()
            counts = self.stage_counts(z_e.shape[0], z_e.device)  # (N,)
            residual, total = z_e, torch.zeros_like(z_e)
            indices, codebook, commitment = [], z_e.new_zeros(()), z_e.new_zeros(())
            for s, layer in enumerate(self.layers):
                quantized, chosen, losses = layer(residual)  # quantized: value e_s, gradient to r_s
                e = quantized.detach()
                used = (counts > s).to(e.dtype).view(-1, 1, 1, 1)  # (N, 1, 1, 1): stage s in this image's k
                total = total + used * e
                residual = residual - e  # r_{s+1} = r_s − e_s (gradient reaches z_e through r_s)
                indices.append(chosen)
                codebook, commitment = codebook + losses.codebook, commitment + losses.commitment
            quantized_sum = z_e + (total - z_e).detach()  # straight-through over the k stages
        return quantized_sum, torch.stack(indices, 1), QuantizerLosses(codebook, commitment)
