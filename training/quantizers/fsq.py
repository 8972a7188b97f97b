"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE Made Simple").

Each of the d = len(levels) latent channels is bounded and rounded to one of L_i values; the code
is the tuple of values, its index the mixed-radix number of the digits (first level least
significant), so K = Π L_i and there is no codebook, no codebook loss and no commitment loss:

    b_i = tanh(z_i + s_i) · h_i − o_i,   h_i = (L_i − 1)(1 + ε)/2,  o_i = 0.5 for even L_i else 0,
                                         s_i = atanh(o_i / h_i),    ε = 1e-3
    ẑ_i = round_ste(b_i) / ⌊L_i/2⌋        (straight-through rounding: value rounded, gradient of b)
    index = Σ_i (round(b_i) + ⌊L_i/2⌋) · Π_{j<i} L_j

The same arithmetic as vector-quantize-pytorch's FSQ (tests/training/test_oracles.py checks
indices and outputs against it). When the latent has D ≠ d channels, 1×1 projections W_in (D -> d)
and W_out (d -> D) surround it, as in that library.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from training.quantizers.seam import Quantizer, QuantizerLosses, no_losses

if TYPE_CHECKING:
    from training.model import ModelConfig

BOUND_EPS = 1e-3
# A value b_i within this many float32 roundings of a .5 boundary may round either way in another
# runtime (its tanh and projection round differently): a near-tie.
TIE_ULPS = 64.0


def parse_levels(text: str) -> tuple[int, ...]:
    """"8,5,5,5" -> (8, 5, 5, 5); a clear ValueError for anything else."""
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--model.fsq-levels {text!r}: expected comma-separated integers such as 8,5,5,5") from None
    if any(level < 2 for level in levels):
        raise ValueError(f"--model.fsq-levels {text!r}: every level must be at least 2")
    if math.prod(levels) > 2**24:
        raise ValueError(f"--model.fsq-levels {text!r}: {math.prod(levels)} codes, more than 2**24")
    return levels


class FiniteScalarQuantizer(Quantizer):
    kind = "fsq"
    levels_: torch.Tensor
    basis: torch.Tensor
    half_level: torch.Tensor
    offset: torch.Tensor
    shift: torch.Tensor
    half_width: torch.Tensor

    def __init__(self, levels: tuple[int, ...], dim: int | None = None) -> None:
        super().__init__()
        self.levels = levels
        self.codebook_size, self.stages, self.dim = math.prod(levels), 1, dim or len(levels)
        d = len(levels)
        as_tensor = torch.tensor(levels, dtype=torch.int32)
        half_level = (as_tensor - 1) * (1 + BOUND_EPS) / 2  # h_i, float32 as the library computes it
        offset = torch.where(as_tensor % 2 == 0, 0.5, 0.0)
        for name, value in (("levels_", as_tensor.long()), ("half_level", half_level), ("offset", offset),
                            ("shift", (offset / half_level).atanh()), ("half_width", (as_tensor // 2).float()),
                            ("basis", torch.cumprod(torch.tensor([1, *levels[:-1]]), 0))):
            self.register_buffer(name, value.view(1, d, 1, 1), persistent=False)  # (1, d, 1, 1)
        self.project_in = nn.Conv2d(self.dim, d, 1) if self.dim != d else None
        self.project_out = nn.Conv2d(d, self.dim, 1) if self.dim != d else None

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> FiniteScalarQuantizer:
        return cls(parse_levels(cfg.fsq_levels), cfg.code_dim)

    @staticmethod
    def check(cfg: ModelConfig) -> None:
        if not cfg.fsq_levels:
            raise ValueError("--model.quantizer fsq needs --model.fsq-levels, e.g. 8,5,5,5")
        parse_levels(cfg.fsq_levels)
        if cfg.lookup_dim:
            raise ValueError("--model.lookup-dim is for --model.quantizer vq, not fsq")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "levels": list(self.levels)}

    def bound(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> b (N, d, h, w): each channel in (−L_i/2, L_i/2), rounded values the codes."""
        z = z_e if self.project_in is None else self.project_in(z_e)
        return (z + self.shift).tanh() * self.half_level - self.offset

    def quantize_indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w) int64: Σ_i digit_i · Π_{j<i} L_j."""
        digits = (self.bound(z_e).round() + self.half_width).long()  # (N, d, h, w) in [0, L_i)
        return (digits * self.basis).sum(1)

    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, D, h, w): digits (index // Π_{j<i} L_j) mod L_i, centred and scaled."""
        digits = torch.remainder(torch.div(indices[:, None], self.basis, rounding_mode="floor"), self.levels_)
        codes = (digits.float() - self.half_width) / self.half_width  # (N, d, h, w) in [−1, 1]
        return codes if self.project_out is None else self.project_out(codes)

    @torch.no_grad()
    def near_ties(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w): some channel's b_i lies within float rounding of a .5 boundary.

        The rounding of b_i = tanh(z_i + s_i)·h_i − o_i is bounded by TIE_ULPS float32 epsilons of
        h_i · (1 + Σ|terms| of the pre-activation), tanh's slope being at most 1."""
        z = z_e if self.project_in is None else self.project_in(z_e)
        terms = z_e.abs() if self.project_in is None else nn.functional.conv2d(
            z_e.abs(), self.project_in.weight.abs(), self.project_in.bias.abs() if self.project_in.bias is not None
            else None)  # (N, d, h, w): Σ_j |W_ij||z_j| + |b_i|, the size the float sums round at
        slack = TIE_ULPS * torch.finfo(torch.float32).eps * self.half_level * (1 + terms + self.shift.abs())
        b = ((z.double() + self.shift.double()).tanh() * self.half_level.double() - self.offset.double())
        distance = (b - b.floor() - 0.5).abs()  # 0 on a .5 boundary
        return (distance <= slack.double()).any(1)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        """(N, D, h, w) -> ẑ (N, D, h, w) with a straight-through round, indices (N, h, w), zero losses."""
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            b = self.bound(z_e.float())  # (N, d, h, w)
            rounded = b.round()
            codes = (b + (rounded - b).detach()) / self.half_width  # round_ste(b) / ⌊L/2⌋
            indices = ((rounded + self.half_width).long() * self.basis).sum(1)  # (N, h, w)
            quantized = codes if self.project_out is None else self.project_out(codes)
        return quantized, indices, no_losses(quantized)
