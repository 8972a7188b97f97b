"""The VQ-VAE: encoder x -> z_e, quantizer z_e -> z_q, decoder z_q -> x̂.

Fully convolutional with a total stride f = `downsample` (4, 8 or 16: two, three or four stride-2
stages), so with f = 4 a 28×28 digit becomes a 7×7 grid of codes and any image whose sides are
multiples of f becomes a proportional grid. The quantizer is one of the kinds in
training/quantizers/ (vq, fsq, rvq), all behind one seam (quantizers/seam.py).

Contract:
    recon, indices, losses = model(x)          # x (N, C, H, W) in [0, 1]
    indices = model.encode_to_indices(x)       # (N, H/f, W/f) int64, or (N, S, H/f, W/f) for rvq
    image = model.decode_from_indices(indices) # (N, C, H, W), clamped to [0, 1]; rvq: any first k stages
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.quantizers.kinds import build_quantizer, check_quantizer_config

DOWNSAMPLES = (4, 8, 16)  # total strides: two, three or four stride-2 stages


@dataclass
class ModelConfig:
    in_channels: int = 0  # 1 grey, 3 RGB; 0: from the data (the trainer records what it chose)
    hidden: int = 64  # channels of the convolutional trunk
    res_blocks: int = 2  # residual blocks on each side of the bottleneck
    res_hidden: int = 32  # bottleneck width inside a residual block
    code_dim: int = 64  # D
    codebook_size: int = 512  # K
    beta: float = 0.25
    ema: bool = False  # EMA codebook: measured worse than the codebook loss here (docs/training.md)
    ema_decay: float = 0.99
    data_init: bool = True  # k-means++ start: +0.13 dB on Fashion-MNIST, a tie on MNIST (docs/training.md)
    restart_threshold: float = 1.0  # smoothed uses per batch below which a code is re-seeded
    center: bool = False  # the networks see pixels - 0.5 and predict reconstructions - 0.5
    cosine: bool = False  # l2-normalised latents and codes: nearest code by cosine (ViT-VQGAN)
    downsample: int = 4  # total stride f: 4, 8 or 16 (a 64×64 image -> 16×16, 8×8 or 4×4 codes)
    quantizer: str = "vq"  # vq (the paper's), fsq (finite scalar), rvq (residual): training/quantizers/
    lookup_dim: int = 0  # vq: nearest code searched in a d-dim l2-normalised projection (factorised codes); 0 off
    fsq_levels: str = ""  # fsq: levels per latent channel, e.g. "8,8,8,6,5" (K = their product)
    stages: int = 1  # rvq: residual stages of codebook_size codes each
    rvq_dropout: str = "batch"  # rvq quantizer dropout: k stages drawn per step (batch), per image (sample), none
    rvq_full_fraction: float = 0.0  # rvq with per-image dropout: share of images that always get all stages
    rvq_stage_weights: str = ""  # rvq dropout: relative odds of drawing k = 1..S (e.g. 3,2,1,2); empty: uniform

    def __post_init__(self) -> None:
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"--model.downsample must be 4, 8 or 16, not {self.downsample}")
        check_quantizer_config(self)


class ModelLosses(NamedTuple):
    reconstruction: torch.Tensor  # ‖x − x̂‖², mean per pixel
    codebook: torch.Tensor
    commitment: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.reconstruction + self.codebook + self.commitment


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))) — the paper's residual block."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def extra_stages(downsample: int) -> int:
    """Stride-2 stages beyond the first two: 0 for f = 4, 1 for 8, 2 for 16."""
    return downsample.bit_length() - 3


class Encoder(nn.Module):
    """(N, C, H, W) -> (N, D, H/f, W/f). With f = 4 the layers (and state-dict keys) of the
    original model; each further factor of 2 adds a stride-2 convolution at the trunk's width."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        deeper = [layer for _ in range(extra_stages(cfg.downsample))
                  for layer in (nn.Conv2d(h, h, 4, stride=2, padding=1), nn.ReLU())]  # (N, h, H/8, W/8) ...
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels or 1, h // 2, 4, stride=2, padding=1),  # (N, h/2, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1),  # (N, h, H/4, W/4)
            nn.ReLU(),
            *deeper,  # (N, h, H/f, W/f)
            nn.Conv2d(h, h, 3, padding=1),
            *[ResidualBlock(h, cfg.res_hidden) for _ in range(cfg.res_blocks)],
            nn.ReLU(),
            nn.Conv2d(h, cfg.code_dim, 1),  # (N, D, H/f, W/f)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(N, D, h, w) -> (N, C, f·h, f·w), unclamped; the encoder's mirror image."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        deeper = [layer for _ in range(extra_stages(cfg.downsample))
                  for layer in (nn.ConvTranspose2d(h, h, 4, stride=2, padding=1), nn.ReLU())]  # (N, h, f/4·h, f/4·w)
        self.net = nn.Sequential(
            nn.Conv2d(cfg.code_dim, h, 3, padding=1),  # (N, h, h, w)
            *[ResidualBlock(h, cfg.res_hidden) for _ in range(cfg.res_blocks)],
            nn.ReLU(),
            *deeper,
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1),  # (N, h/2, f/2·h, f/2·w)
            nn.ReLU(),
            nn.ConvTranspose2d(h // 2, cfg.in_channels or 1, 4, stride=2, padding=1),  # (N, C, f·h, f·w)
        )

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.net(z_q)


class VQVAE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = build_quantizer(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ModelLosses]:
        """(N, C, H, W) in [0, 1] -> recon (N, C, H, W), indices (N, [S,] H/f, W/f), losses."""
        z_e = self.encoder(x - self.offset)  # (N, D, H/f, W/f)
        z_q, indices, q_losses = self.quantizer(z_e)
        recon = self.decoder(z_q).float() + self.offset  # (N, C, H, W); float32 also when the decoder ran in bf16
        losses = ModelLosses(F.mse_loss(recon, x), q_losses.codebook, q_losses.commitment)
        return recon, indices, losses

    @property
    def downsample(self) -> int:
        """f: image pixels per grid cell along each side."""
        return self.cfg.downsample

    @property
    def offset(self) -> float:
        """Subtracted from pixels before the encoder, added to the decoder's output."""
        return 0.5 if self.cfg.center else 0.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> the encoder's output (N, D, H/f, W/f), before quantization."""
        latent: torch.Tensor = self.encoder(x - self.offset)
        return latent

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, H/f, W/f) int64, or (N, S, H/f, W/f) for rvq."""
        return self.quantizer.quantize_indices(self.encode(x))

    @torch.no_grad()
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64, or (N, k, h, w) for rvq (the first k ≤ S stages) -> (N, C, f·h, f·w) in [0, 1]."""
        return (self.decoder(self.quantizer.decode_from_indices(indices)) + self.offset).clamp(0, 1)
