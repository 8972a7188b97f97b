"""The quantizer seam: what every kind of quantizer offers the model, the trainer and the exporter.

After lucidrains/vector-quantize-pytorch's contract:

    quantized, indices, losses = quantizer(z_e)        # z_e (N, D, h, w) -> z_q (N, D, h, w),
                                                       # indices (N, h, w) or (N, S, h, w) for S stages
    indices = quantizer.quantize_indices(z_e)          # inference: the same indices, no statistics
    z_q = quantizer.decode_from_indices(indices)       # (N, h, w) or (N, k, h, w), k ≤ S -> (N, D, h, w)
    ties = quantizer.near_ties(z_e)                    # (N, h, w) bool: where float32 rounding may decide
    entry = quantizer.describe()                       # model.json's `quantizer` entry

`losses` are the paper's two quantizer terms, codebook ‖sg[z_e] − e‖² and commitment β‖z_e − sg[e]‖²
(zero for kinds without a codebook, such as FSQ); the model adds the reconstruction term.
A new kind is one file here with a `Quantizer` subclass and one line in kinds.py (and one in
export/graphs.py's QUANTIZER_GRAPHS).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn


class QuantizerLosses(NamedTuple):
    codebook: torch.Tensor  # ‖sg[z_e] − e‖², mean over elements (summed over stages for residual VQ)
    commitment: torch.Tensor  # β‖z_e − sg[e]‖², β already applied


def no_losses(like: torch.Tensor) -> QuantizerLosses:
    """Zero codebook and commitment terms on `like`'s device (kinds without a learned codebook)."""
    zero = like.new_zeros(())
    return QuantizerLosses(zero, zero)


class Quantizer(nn.Module, ABC):
    """One kind of quantizer; subclasses set `kind` and the three sizes in __init__."""

    kind: ClassVar[str]
    codebook_size: int  # K: codes per stage
    stages: int  # S: 1 except for residual VQ
    dim: int  # D: channels of the latent it quantizes

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any) -> Quantizer:
        """The quantizer a ModelConfig asks for."""

    @staticmethod
    @abstractmethod
    def check(cfg: Any) -> None:
        """Raise ValueError, naming the flag, for ModelConfig values this kind cannot take."""

    @abstractmethod
    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerLosses]:
        """(N, D, h, w) -> straight-through z_q (N, D, h, w), indices, losses (training statistics too)."""

    @abstractmethod
    def quantize_indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> int64 (N, h, w), or (N, S, h, w) with stages."""

    @abstractmethod
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 (N, h, w), or (N, k, h, w) with 1 ≤ k ≤ S stages -> (N, D, h, w)."""

    @abstractmethod
    def near_ties(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w) bool: positions whose index float32 rounding may legitimately flip."""

    def describe(self) -> dict[str, Any]:
        """model.json's `quantizer` entry (contract/manifest.py QuantizerSpec)."""
        return {"kind": self.kind, "codebook_size": self.codebook_size, "stages": self.stages}

    def stage_indices(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(N, h, w) or (N, S, h, w) -> one (N, h, w) grid per stage."""
        return list(indices.unbind(1)) if indices.ndim == 4 else [indices]
