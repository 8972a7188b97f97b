"""quantizer.onnx for the kinds other than plain VQ (whose one-Gemm graph is export/graphs.py's
QuantizerGraph). Each takes the latent [N, D, h, w] and returns int64 indices: [N, h, w] for one
stage, [N, S, h, w] for residual VQ (all S stages, the stage axis second)."""

from __future__ import annotations

import torch
from torch import nn

from training.model import VQVAE
from training.quantizers.rvq import ResidualVectorQuantizer
from training.quantizers.seam import Quantizer


class IndicesGraph(nn.Module):
    """The training quantizer's own inference path (FSQ: bound, round, mixed-radix digits)."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.quantizer: Quantizer = model.quantizer

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        indices: torch.Tensor = self.quantizer.quantize_indices(latent)  # (N, D, h, w) -> (N, h, w)
        return indices


class ResidualQuantizerGraph(nn.Module):
    """Residual VQ, stage by stage: k*_s = argmin_k ‖e_k‖² − 2 r_s·e_k (one Gemm and one ArgMin per
    stage, as the plain VQ graph), r_{s+1} = r_s − e_{k*_s}; -> (N, S, h, w)."""

    codebooks: torch.Tensor  # (S, K, D)
    scaled_codebooks_t: torch.Tensor  # (S, D, K): −2 eᵀ
    code_norms: torch.Tensor  # (S, K): ‖e‖²

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        quantizer = model.quantizer
        if not isinstance(quantizer, ResidualVectorQuantizer):
            raise ValueError(f"ResidualQuantizerGraph needs a residual quantizer, not {type(quantizer).__name__}")
        books = quantizer.codebook_table().detach().view(quantizer.stages, quantizer.codebook_size, -1)  # (S, K, D)
        self.register_buffer("codebooks", books)
        self.register_buffer("scaled_codebooks_t", (-2 * books).transpose(1, 2).contiguous())  # (S, D, K)
        self.register_buffer("code_norms", books.pow(2).sum(2))  # (S, K)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        n, d, h, w = latent.shape
        residual = latent.permute(0, 2, 3, 1).reshape(-1, d)  # (N*h*w, D)
        stages = []
        for s in range(self.codebooks.shape[0]):
            scores = torch.addmm(self.code_norms[s], residual, self.scaled_codebooks_t[s])  # (N*h*w, K)
            chosen = scores.argmin(1)  # (N*h*w,)
            residual = residual - self.codebooks[s][chosen]
            stages.append(chosen.reshape(n, h, w))
        return torch.stack(stages, 1)  # (N, S, h, w) int64
