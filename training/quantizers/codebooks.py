"""Codebook arithmetic shared by the vector quantizers: nearest code, near-ties, k-means, and the
all-reduce / broadcast helpers that keep every rank's codebook identical under torch.distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

# Two codes tie when their squared distances differ by less than this fraction of ‖z‖² + ‖e‖²,
# the magnitude at which float32 rounds the expanded form ‖z‖² − 2 z·e + ‖e‖².
TIE_RELATIVE_GAP = 1e-5
TIE_CHUNK_ROWS = 2048  # rows per float64 distance block: (2048, K) stays small for K = 65,536


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate equally sized (M, D) row blocks from every rank, in rank order."""
    if not distributed():
        return rows
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def broadcast(t: torch.Tensor) -> None:
    if distributed():
        dist.broadcast(t, src=0)


def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(M, D) vectors, (K, D) codebook -> (M,) int64 index of the nearest code (squared L2)."""
    distances = (
        flat.pow(2).sum(1, keepdim=True)  # (M, 1)
        - 2 * flat @ codebook.t()  # (M, K)
        + codebook.pow(2).sum(1)[None, :]  # (1, K)
    )
    return distances.argmin(dim=1)


@torch.no_grad()
def near_tie_rows(flat: torch.Tensor, codebook: torch.Tensor, gap: float = TIE_RELATIVE_GAP) -> torch.Tensor:
    """(M, D) vectors, (K, D) codebook -> (M,) bool: the two nearest codes are a float32 coin toss,
    d₂ − d₁ ≤ gap · (‖z‖² + ‖e₁‖²), with distances exact in float64 (in row blocks)."""
    if codebook.shape[0] < 2:
        return torch.zeros(flat.shape[0], dtype=torch.bool, device=flat.device)
    book = codebook.double()
    book_sq = book.pow(2).sum(1)  # (K,)
    ties = []
    for rows in flat.double().split(TIE_CHUNK_ROWS):
        distances = torch.cdist(rows, book).pow(2)  # (m, K)
        two = distances.topk(2, dim=1, largest=False)
        scale = rows.pow(2).sum(1) + book_sq[two.indices[:, 0]]
        ties.append((two.values[:, 1] - two.values[:, 0]) <= gap * scale)
    return torch.cat(ties) if ties else torch.zeros(0, dtype=torch.bool, device=flat.device)


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
