"""The paper's prior, as a small causal transformer over a code grid read in raster order.

A grid (h, w) of codes in [0, K) is the sequence c_1 … c_{h·w}. The model reads a start token (the
class, or "no class") followed by c_1 … c_{n-1} and gives, at every position t, the distribution of
c_t given everything before it: p(grid) = Π p(c_t | c_<t, class). That one product is what sampling
draws from and what an arithmetic coder codes with.

A transformer rather than the paper's gated PixelCNN: both are exact autoregressive models; the
transformer's causal mask is one line, it conditions on the whole prefix rather than a blind-spot-free
receptive field, and it samples incrementally with a key/value cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PriorConfig:
    codebook_size: int = 512  # K of the VQ-VAE whose grids this models
    positions: int = 49  # h·w of the grid (7×7 for the 28×28 digits)
    classes: int = 0  # class labels the prior is conditioned on; 0: unconditional
    width: int = 128
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0  # 0.1 measured worse at this budget (the model underfits) and slower (docs/training.md)
    arch: str = "transformer"  # or "pixelcnn": the paper's gated PixelCNN (training/pixelcnn.py), for comparison


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP."""

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))
        self.dropout = cfg.dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)  # (N, heads, T, d/heads)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x (N, T, D). With `cache` ([keys, values] of the earlier positions, or empty), x holds only
        the new positions, and the cache is extended in place."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)  # (N, heads, T, d/heads)
        causal = True
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
                causal = q.shape[2] > 1  # one new position sees every cached one
            cache[:] = [k, v]
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=drop)  # (N, heads, T, d/h)
        n, _, t, _ = attended.shape
        x = x + F.dropout(self.proj(attended.transpose(1, 2).reshape(n, t, -1)), drop, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), drop, self.training)


class CodePrior(nn.Module):
    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.codes = nn.Embedding(cfg.codebook_size, cfg.width)
        self.starts = nn.Embedding(cfg.classes + 1, cfg.width)  # index `classes`: no class given
        self.position = nn.Parameter(torch.zeros(cfg.positions, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.codebook_size)
        nn.init.normal_(self.position, std=0.02)

    def start_index(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """(N,) class labels, or None for "no class" -> (N,) rows of the start embedding."""
        if labels is None:
            return torch.full((n,), self.cfg.classes, dtype=torch.long, device=self.position.device)
        return labels.long()

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """codes (N, h, w) int -> logits (N, h·w, K): position t's distribution given codes before it."""
        flat = codes.flatten(1)  # (N, T)
        n, t = flat.shape
        start = self.starts(self.start_index(labels, n))[:, None]  # (N, 1, D)
        x = torch.cat([start, self.codes(flat[:, :-1])], dim=1) + self.position[:t]  # (N, T, D)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits

    def bits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """codes (N, h, w) -> (N,) the grids' code length under the model, −log2 p(grid), in bits."""
        logits = self.forward(codes, labels)  # (N, T, K)
        nll = F.cross_entropy(logits.transpose(1, 2), codes.flatten(1), reduction="none")  # (N, T) nats
        return nll.sum(dim=1) / math.log(2)

    @torch.no_grad()
    def sample(self, n: int, grid: tuple[int, int], labels: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """-> (n, h, w) codes drawn one position at a time, each step reusing the keys and values of
        the positions before it (one new position through the network per step)."""
        h, w = grid
        caches = self.new_caches()
        out = torch.empty((n, h * w), dtype=torch.long, device=self.position.device)
        previous: torch.Tensor | None = None
        for t in range(h * w):
            logits = self.next_logits(t, previous, labels, caches, n) / max(temperature, 1e-6)  # (n, K)
            previous = out[:, t] = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)[:, 0]
        return out.view(n, h, w)

    def new_caches(self) -> list[list[torch.Tensor]]:
        return [[] for _ in self.blocks]

    def next_logits(self, t: int, previous: torch.Tensor | None, labels: torch.Tensor | None,
                    caches: list[list[torch.Tensor]], n: int) -> torch.Tensor:
        """Position t's logits (n, K), given the code at t − 1 (`previous`, (n,); None at t = 0) and the
        caches holding positions before it, which this extends."""
        # Position 0 reads the start token (the class); every later one the code before it. (n, 1, D)
        token = self.starts(self.start_index(labels, n)) if previous is None else self.codes(previous)
        x = token[:, None] + self.position[t : t + 1]
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache)
        logits: torch.Tensor = self.head(self.norm(x[:, -1]))
        return logits
