"""The judge of prior samples: a small CNN trained on a built-in set's training images (seeded), and
what bench.prior_samples measures with it.

- recognised: the share of samples the judge classifies as the class they were drawn for;
- distinct: the share of distinct code grids among the samples;
- spread: the mean pairwise pixel distance of samples within a class over that of real test images
  of the class (1.0: as varied as real digits; a collapse to a few prototypes shows as a small spread);
- Fréchet distance: between Gaussians fitted to the judge's penultimate features (128-d) of the
  samples and of real test images (the FID recipe, with this judge instead of Inception).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasources.idx_files import load_split


class Judge(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.classes = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classes(self.features(x))


def as_input(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(images, dtype=torch.float32).div(255)[:, None]  # (N, 1, 28, 28)


def train_judge(dataset: str, data_dir: str | None, epochs: int = 5, seed: int = 0) -> Judge:
    torch.manual_seed(seed)
    images, labels = load_split(dataset, "train", data_dir)
    x, y = as_input(images), torch.from_numpy(labels.astype(np.int64))
    net = Judge()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(128):
            loss = nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def classify(net: Judge, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N,) classes."""
    return torch.cat([net(as_input(images[i : i + 1000])).argmax(1) for i in range(0, len(images), 1000)]).numpy()


@torch.no_grad()
def features(net: Judge, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 128) float64 penultimate activations."""
    parts = [net.features(as_input(images[i : i + 1000])) for i in range(0, len(images), 1000)]
    return torch.cat(parts).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Between Gaussians fitted to two (N, D) feature sets: |μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((Σa Σb)^½) is the sum of the square roots of Σa Σb's eigenvalues (real and ≥ 0 for two
    # covariance matrices, up to rounding).
    eigen = np.linalg.eigvals(cov_a @ cov_b)
    trace_root = np.sqrt(np.clip(eigen.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance between every two images (N, 28, 28), pixels in [0, 1]."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255
    squared = (flat**2).sum(1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * flat @ flat.T, 0)
    upper = np.triu_indices(len(images), k=1)
    return float(np.sqrt(d2[upper]).mean())


def distinct_share(codes: np.ndarray) -> float:
    """The share of distinct grids among (N, h, w) codes."""
    return len({grid.tobytes() for grid in codes}) / len(codes)
