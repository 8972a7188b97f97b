"""The VQ-VAE: encoder x -> z_e, vector quantizer z_e -> z_q, decoder z_q -> x̂.

Fully convolutional with a total stride of 4, so a 28×28 digit becomes a 7×7 grid of codes and
any image whose sides are multiples of 4 becomes a proportional grid.

Contract:
    recon, indices, losses = model(x)          # x (N, C, H, W) in [0, 1]
    indices = model.encode_to_indices(x)       # (N, H/4, W/4) int64
    image = model.decode_from_indices(indices) # (N, C, H, W), clamped to [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.quantizer import VectorQuantizer

DOWNSAMPLE = 4  # two stride-2 stages


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


class Encoder(nn.Module):
    """(N, C, H, W) -> (N, D, H/4, W/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels or 1, h // 2, 4, stride=2, padding=1),  # (N, h/2, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1),  # (N, h, H/4, W/4)
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            *[ResidualBlock(h, cfg.res_hidden) for _ in range(cfg.res_blocks)],
            nn.ReLU(),
            nn.Conv2d(h, cfg.code_dim, 1),  # (N, D, H/4, W/4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(N, D, h, w) -> (N, C, 4h, 4w), unclamped."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(cfg.code_dim, h, 3, padding=1),  # (N, h, h, w)
            *[ResidualBlock(h, cfg.res_hidden) for _ in range(cfg.res_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1),  # (N, h/2, 2h, 2w)
            nn.ReLU(),
            nn.ConvTranspose2d(h // 2, cfg.in_channels or 1, 4, stride=2, padding=1),  # (N, C, 4h, 4w)
        )

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.net(z_q)


class VQVAE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(
            codebook_size=cfg.codebook_size,
            dim=cfg.code_dim,
            beta=cfg.beta,
            ema=cfg.ema,
            decay=cfg.ema_decay,
            data_init=cfg.data_init,
            restart_threshold=cfg.restart_threshold,
            cosine=cfg.cosine,
        )
        self.decoder = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ModelLosses]:
        """(N, C, H, W) in [0, 1] -> recon (N, C, H, W), indices (N, H/4, W/4), losses."""
        z_e = self.encoder(x - self.offset)  # (N, D, H/4, W/4)
        z_q, indices, q_losses = self.quantizer(z_e)
        recon = self.decoder(z_q).float() + self.offset  # (N, C, H, W); float32 also when the decoder ran in bf16
        losses = ModelLosses(F.mse_loss(recon, x), q_losses.codebook, q_losses.commitment)
        return recon, indices, losses

    @property
    def offset(self) -> float:
        """Subtracted from pixels before the encoder, added to the decoder's output."""
        return 0.5 if self.cfg.center else 0.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> the encoder's output (N, D, H/4, W/4), before quantization."""
        latent: torch.Tensor = self.encoder(x - self.offset)
        return latent

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, H/4, W/4) int64."""
        return self.quantizer.quantize_indices(self.encode(x))

    @torch.no_grad()
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, C, 4h, 4w) clamped to [0, 1]."""
        return (self.decoder(self.quantizer.decode_from_indices(indices)) + self.offset).clamp(0, 1)
