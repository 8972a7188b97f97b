"""Fitting the entropy model's tables on a model's training-set codes (export time only).

The file format and its use for coding live in contract/entropy_model.py; the service never fits.
"""

from __future__ import annotations

import numpy as np

from contract.entropy_model import NEIGHBOUR_SCALE, EntropyModel


def count_codes(codes: np.ndarray, codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    """int (N, h, w) codes -> per-position counts (h, w, K) and overall counts (K,)."""
    n, h, w = codes.shape
    flat = codes.reshape(n, h * w)
    positional = np.stack([np.bincount(flat[:, p], minlength=codebook_size) for p in range(h * w)])
    return positional.reshape(h, w, codebook_size), np.bincount(flat.reshape(-1), minlength=codebook_size)


def pair_counts(codes: np.ndarray, codebook_size: int, neighbour: str) -> np.ndarray:
    """int (N, h, w) -> (K, K) counts of (neighbour code, code); neighbour "left" or "above"."""
    if neighbour == "left":
        before, after = codes[:, :, :-1], codes[:, :, 1:]
    else:
        before, after = codes[:, :-1, :], codes[:, 1:, :]
    pairs = before.reshape(-1) * codebook_size + after.reshape(-1)
    return np.bincount(pairs, minlength=codebook_size**2).reshape(codebook_size, codebook_size)


def neighbour_weights(pairs: np.ndarray, beta: float, alpha: float = 0.1) -> np.ndarray:
    """(K, K) pair counts -> uint16 weights ∝ smoothed P(b | a)^β, each row scaled to NEIGHBOUR_SCALE."""
    k = pairs.shape[0]
    conditional = (pairs + alpha) / (pairs.sum(axis=1, keepdims=True) + alpha * k)
    powered = conditional**beta
    scaled = np.rint(powered / powered.max(axis=1, keepdims=True) * NEIGHBOUR_SCALE)
    weights: np.ndarray = np.maximum(scaled, 1).astype(np.uint16)
    return weights


BETAS = (0.0, 0.3, 0.5, 0.7, 0.85)
SIDES = ("left", "above")


NEIGHBOUR_MAX_CODES = 1024  # the (K, K) neighbour tables are fitted up to this K (16,384² would be 512 MB)


def fit(train_codes: np.ndarray, codebook_size: int, betas: tuple[float, ...] = BETAS, held_out: float = 0.1
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[float, float]]:
    """Choose (β_left, β_above) on held-out training codes, then refit every count on all of them.
    Above NEIGHBOUR_MAX_CODES codes only the positional and overall counts are fitted (β = 0).

    -> positional counts, overall counts, left and above weights (None where β = 0 wins), the βs."""
    if codebook_size > NEIGHBOUR_MAX_CODES:
        positional, overall = count_codes(train_codes, codebook_size)
        return positional, overall, None, None, (0.0, 0.0)
    cut = int(len(train_codes) * (1 - held_out))
    fit_part, check_part = train_codes[:cut], train_codes[cut:]
    positional, overall = count_codes(fit_part, codebook_size)
    pairs = {side: pair_counts(fit_part, codebook_size, side) for side in SIDES}
    experts = {(side, b): neighbour_weights(pairs[side], b) if b else None for side in SIDES for b in betas}
    cost = {(bl, ba): EntropyModel(positional, overall, experts["left", bl], experts["above", ba])
            .ideal_bytes(check_part) for bl in betas for ba in betas}
    beta_left, beta_above = min(cost, key=lambda b: cost[b])
    positional, overall = count_codes(train_codes, codebook_size)
    final = {side: neighbour_weights(pair_counts(train_codes, codebook_size, side), b) if b else None
             for side, b in zip(SIDES, (beta_left, beta_above), strict=True)}
    return positional, overall, final["left"], final["above"], (beta_left, beta_above)
