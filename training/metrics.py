"""Image-quality and codebook metrics in numpy (no torch), shared by evaluation and reports.

Conventions (colour images: every channel counts, so PSNR is over RGB):
- `mse` and `psnr_dataset` are on float images in [0, 1]: PSNR = 10·log10(1 / MSE over the dataset).
- `psnr_8bit_mean` is the mean of per-image PSNRs of 8-bit images (what a user saving PNGs sees).
- `ssim` is Wang et al. 2004 on 8-bit images: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03,
  population statistics, averaged over the valid region and then over images.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 100.0  # a bit-exact image has infinite PSNR; cap it so means stay finite


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 by rounding, as a PNG encoder would store them."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def mse(original: np.ndarray, recon: np.ndarray) -> float:
    """Mean squared error per pixel of float images in [0, 1]."""
    return float(np.mean((original.astype(np.float64) - recon.astype(np.float64)) ** 2))


def psnr_from_mse(value: float, peak: float = 1.0) -> float:
    if value <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, float(10 * np.log10(peak**2 / value)))


def psnr_per_image_8bit(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """(N, ...) uint8 pairs -> (N,) PSNR in dB, capped at PSNR_CAP_DB."""
    diff = original.reshape(len(original), -1).astype(np.float64) - recon.reshape(len(recon), -1)
    per_image = np.mean(diff**2, axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0**2 / per_image)
    return np.minimum(psnr, PSNR_CAP_DB)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (N, H, W) with a 1-D window along H then W."""
    k = len(window)
    rows = np.lib.stride_tricks.sliding_window_view(images, k, axis=1) @ window  # (N, H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=2) @ window  # (N, H-k+1, W-k+1)


def ssim(original: np.ndarray, recon: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) image pairs (any numeric dtype) -> (N,) SSIM, the mean over channels
    for colour; H and W must be at least 11."""
    if original.ndim == 4:
        n, h, w, c = original.shape
        per_channel = ssim(original.transpose(0, 3, 1, 2).reshape(n * c, h, w),
                           recon.transpose(0, 3, 1, 2).reshape(n * c, h, w), data_range)
        return per_channel.reshape(n, c).mean(axis=1)
    window = _gaussian_window()
    x = original.astype(np.float64)
    y = recon.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x**2
    var_y = _filter_valid(y * y, window) - mu_y**2
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(axis=(1, 2))


def code_statistics(indices: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Usage of the codebook by a set of indices (any shape of ints in [0, K))."""
    return code_statistics_from_counts(np.bincount(indices.reshape(-1), minlength=codebook_size))


def code_statistics_from_counts(counts_int: np.ndarray) -> dict[str, float]:
    """Usage of the codebook from the count of each code (K,)."""
    codebook_size = len(counts_int)
    counts = counts_int.astype(np.float64)
    p = counts / max(1.0, counts.sum())
    nonzero = p[p > 0]
    entropy_bits = float(-(nonzero * np.log2(nonzero)).sum())
    used = int((counts > 0).sum())
    return {
        "codes_used": used / codebook_size,
        "codes_used_count": used,
        "dead_codes": codebook_size - used,
        "perplexity": float(2.0**entropy_bits),
        "index_entropy_bits": entropy_bits,
    }


class QualityTally:
    """image_quality and code_statistics accumulated over chunks of images of any sizes: MSE over
    every pixel and channel of the set; per-image 8-bit PSNR and SSIM averaged over images."""

    def __init__(self, codebook_size: int) -> None:
        self.codebook_size = codebook_size
        self.squared_error, self.values, self.images = 0.0, 0, 0
        self.psnrs: list[np.ndarray] = []
        self.ssims: list[np.ndarray] = []
        self.code_counts = np.zeros(codebook_size, np.int64)

    def add(self, original_u8: np.ndarray, recon_float: np.ndarray, indices: np.ndarray) -> None:
        """uint8 (N, H, W[, C]), float in [0, 1] of the same shape, indices (N, h, w)."""
        recon_float = np.clip(recon_float, 0.0, 1.0)
        self.squared_error += float(np.sum((original_u8 / 255.0 - recon_float.astype(np.float64)) ** 2))
        self.values += original_u8.size
        self.images += len(original_u8)
        recon_u8 = to_uint8(recon_float)
        self.psnrs.append(psnr_per_image_8bit(original_u8, recon_u8))
        if min(original_u8.shape[1:3]) >= 11:
            self.ssims.append(ssim(original_u8, recon_u8))
        self.code_counts += np.bincount(indices.reshape(-1), minlength=self.codebook_size)

    def result(self) -> dict[str, float]:
        value = self.squared_error / max(1, self.values)
        return {
            "images": self.images,
            "mse": value,
            "psnr_dataset": psnr_from_mse(value),
            "psnr_8bit_mean": float(np.concatenate(self.psnrs).mean()) if self.psnrs else 0.0,
            "ssim": float(np.concatenate(self.ssims).mean()) if self.ssims else float("nan"),
            **code_statistics_from_counts(self.code_counts),
        }


def image_quality(original_u8: np.ndarray, recon_float: np.ndarray) -> dict[str, float]:
    """uint8 originals (N, H, W[, C]) and float reconstructions in [0, 1] -> MSE, both PSNRs, SSIM."""
    recon_float = np.clip(recon_float, 0.0, 1.0)
    value = mse(original_u8 / 255.0, recon_float)
    recon_u8 = to_uint8(recon_float)
    return {
        "mse": value,
        "psnr_dataset": psnr_from_mse(value),
        "psnr_8bit_mean": float(psnr_per_image_8bit(original_u8, recon_u8).mean()),
        "ssim": float(ssim(original_u8, recon_u8).mean()),
    }
