"""The paper's prior: a class-conditional gated PixelCNN (van den Oord et al. 2016) over a code grid.

Measured against the transformer (training/prior_model.py) with the same trainer, data and steps
(docs/training.md, "The prior over code grids"); the better one is the shipped prior. Same
interface as CodePrior: forward(codes, labels) -> logits (N, h·w, K) in raster order, bits().

Two stacks without a blind spot: the vertical stack sees the rows above, the horizontal stack the
codes to the left in the current row plus the vertical stack. The first layer masks the current
position out of both (mask "A"); later layers may read it, since it only holds what came before.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.prior_model import PriorConfig


class GatedLayer(nn.Module):
    def __init__(self, width: int, kernel: int, classes: int, first: bool) -> None:
        super().__init__()
        self.first = first
        half = kernel // 2
        self.vertical = nn.Conv2d(width, 2 * width, (half + 1, kernel), padding=(half, half))
        self.horizontal = nn.Conv2d(width, 2 * width, (1, half + 1), padding=(0, half))
        self.vertical_to_horizontal = nn.Conv2d(2 * width, 2 * width, 1)
        self.residual = nn.Conv2d(width, width, 1)
        self.condition = nn.Embedding(classes + 1, 2 * width)  # index `classes`: no class
        if first:  # mask "A": the last kernel row (the current row) and column (the current code)
            self.register_buffer("vertical_mask", torch.ones_like(self.vertical.weight))
            self.vertical_mask[:, :, -1] = 0
            self.register_buffer("horizontal_mask", torch.ones_like(self.horizontal.weight))
            self.horizontal_mask[:, :, :, -1] = 0

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v, h (N, D, H, W); start (N,) class indices -> the next v, h."""
        rows, cols = v.shape[2], v.shape[3]
        cond = self.condition(start)[:, :, None, None]  # (N, 2D, 1, 1)
        vertical_w = self.vertical.weight * self.vertical_mask if self.first else self.vertical.weight
        horizontal_w = self.horizontal.weight * self.horizontal_mask if self.first else self.horizontal.weight
        # Padding on all sides, then keeping the first rows/columns: row i reads rows i − k/2 … i.
        v_conv = F.conv2d(v, vertical_w, self.vertical.bias, padding=self.vertical.padding)[:, :, :rows]
        h_conv = F.conv2d(h, horizontal_w, self.horizontal.bias, padding=self.horizontal.padding)[:, :, :, :cols]
        v_out = self.gate(v_conv + cond)
        # Row i of v_conv already holds rows < i only (mask "A" in the first layer, and every later
        # layer reads what that made), so it feeds the horizontal stack unshifted.
        h_gated = self.gate(self.vertical_to_horizontal(v_conv) + h_conv + cond)
        h_out = self.residual(h_gated) + (0 if self.first else h)
        return v_out, h_out


class GatedPixelCNN(nn.Module):
    def __init__(self, cfg: PriorConfig, kernel: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.codes = nn.Embedding(cfg.codebook_size, cfg.width)
        self.layers = nn.ModuleList(GatedLayer(cfg.width, kernel, cfg.classes, first=i == 0)
                                    for i in range(cfg.layers))
        self.head = nn.Sequential(nn.Conv2d(cfg.width, 4 * cfg.width, 1), nn.ReLU(),
                                  nn.Conv2d(4 * cfg.width, cfg.codebook_size, 1))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """codes (N, h, w) -> logits (N, h·w, K)."""
        n = codes.shape[0]
        start = labels.long() if labels is not None else torch.full((n,), self.cfg.classes, dtype=torch.long,
                                                                    device=codes.device)
        x = self.codes(codes).permute(0, 3, 1, 2)  # (N, D, h, w)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, start)
        logits: torch.Tensor = self.head(h).flatten(2).transpose(1, 2)  # (N, h·w, K)
        return logits

    def bits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.forward(codes, labels)
        nll = F.cross_entropy(logits.transpose(1, 2), codes.flatten(1), reduction="none")  # (N, T) nats
        return nll.sum(dim=1) / math.log(2)
