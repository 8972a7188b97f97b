"""Entropy coding of code grids with a static per-model probability model.

The model is fitted once, by the exporter, on the training set's codes and shipped as a small
file listed (with its sha256) in model.json:
- `positional` (h, w, K): how often each code occurs at each grid position;
- `overall` (K,): the same over all positions (for grids of other sizes);
- `left` (K, K): integer weights w[a, b] ∝ P(code b | code a on its left)^β, β fitted on held-out
  training codes. A symbol whose left neighbour is known is coded with the product
  weight(position, b) · left[a, b] (a product of experts), otherwise with the position's weights.
All runtime arithmetic is on integers, so encoder and decoder build bit-identical tables on any
machine; constriction's range coder (maintained, not ours) normalises them deterministically.

Order: position-major (every grid's position 0, then position 1, ...), so that each position is
coded for all N grids in one vectorised call, and a position's left neighbour is always decoded
before it.
"""

from __future__ import annotations

from pathlib import Path

import constriction
import numpy as np

from service.codec.formats import Header
from service.errors import InvalidStream

COUNTS_FILE = "entropy.npz"
LEFT_SCALE = 65535  # left weights are stored as uint16, each row scaled to this maximum
_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


def count_codes(codes: np.ndarray, codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    """int (N, h, w) codes -> per-position counts (h, w, K) and overall counts (K,)."""
    n, h, w = codes.shape
    flat = codes.reshape(n, h * w)
    positional = np.stack([np.bincount(flat[:, p], minlength=codebook_size) for p in range(h * w)])
    return positional.reshape(h, w, codebook_size), np.bincount(flat.reshape(-1), minlength=codebook_size)


def left_pair_counts(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """int (N, h, w) -> (K, K) counts of (left code, code) over horizontally adjacent pairs."""
    pairs = codes[:, :, :-1].reshape(-1) * codebook_size + codes[:, :, 1:].reshape(-1)
    return np.bincount(pairs, minlength=codebook_size**2).reshape(codebook_size, codebook_size)


def left_weights(pair_counts: np.ndarray, beta: float, alpha: float = 0.1) -> np.ndarray:
    """(K, K) pair counts -> uint16 weights ∝ smoothed P(b | a)^β, each row scaled to LEFT_SCALE."""
    k = pair_counts.shape[0]
    conditional = (pair_counts + alpha) / (pair_counts.sum(axis=1, keepdims=True) + alpha * k)
    powered = conditional**beta
    scaled = np.rint(powered / powered.max(axis=1, keepdims=True) * LEFT_SCALE)
    weights: np.ndarray = np.maximum(scaled, 1).astype(np.uint16)
    return weights


def save_model(path: Path, positional: np.ndarray, overall: np.ndarray, left: np.ndarray | None,
               beta: float) -> None:
    arrays = {"positional": positional.astype(np.uint32), "overall": overall.astype(np.uint32),
              "beta": np.array(beta)}  # β is for the record; decoding needs only the integer weights
    if left is not None:
        arrays["left"] = left.astype(np.uint16)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]


class EntropyModel:
    def __init__(self, positional_counts: np.ndarray, overall_counts: np.ndarray,
                 left: np.ndarray | None = None) -> None:
        self.grid = positional_counts.shape[:2]
        self.codebook_size = overall_counts.shape[0]
        # Add-one smoothing keeps every code codable; integer weights, exact in float64.
        self._positional = positional_counts.reshape(-1, self.codebook_size).astype(np.int64) + 1  # (h·w, K)
        self._overall = overall_counts.astype(np.int64) + 1  # (K,)
        self._left = None if left is None else left.astype(np.int64)  # (K, K)
        self._family = _Categorical(perfect=False)

    @classmethod
    def load(cls, path: Path) -> EntropyModel:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["positional"], data["overall"], data.get("left"))

    def _weights(self, position: int, width: int, native: bool, left: np.ndarray | None) -> np.ndarray:
        """Integer weights (N, K) for the N symbols at `position`, given their left neighbours."""
        base = self._positional[position] if native else self._overall  # (K,)
        if self._left is None or left is None or position % width == 0:
            return np.broadcast_to(base, (1 if left is None else len(left), self.codebook_size))
        product: np.ndarray = base[None, :] * self._left[left]  # (N, K), < 2**53: exact as float64
        return product

    def _table(self, n: int, position: int, width: int, native: bool, left: np.ndarray | None) -> np.ndarray:
        """The (n, K) float64 table constriction reads: C-contiguous (it ignores strides), exact integers."""
        weights = np.broadcast_to(self._weights(position, width, native, left), (n, self.codebook_size))
        return np.ascontiguousarray(weights, dtype=np.float64)

    def _columns(self, h: int, w: int) -> tuple[bool, int]:
        return (h, w) == self.grid, h * w

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, h, w) -> range-coded payload bytes."""
        n, h, w = codes.shape
        native, positions = self._columns(h, w)
        columns = codes.reshape(n, positions).astype(np.int32)
        encoder = _RangeEncoder()
        for p in range(positions):
            table = self._table(n, p, w, native, columns[:, p - 1] if p % w else None)
            encoder.encode(np.ascontiguousarray(columns[:, p]), self._family, table)
        words: np.ndarray = encoder.get_compressed()
        return words.astype("<u4").tobytes()

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, h, w); InvalidStream when it does not decode."""
        if len(payload) % 4:
            raise InvalidStream("entropy payload is not a whole number of 32-bit words")
        n, h, w = header.count, header.height, header.width
        native, positions = self._columns(h, w)
        decoder = _RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        columns: list[np.ndarray] = []
        try:
            for p in range(positions):
                table = self._table(n, p, w, native, columns[p - 1] if p % w else None)
                columns.append(np.asarray(decoder.decode(self._family, table), np.int64))
        except Exception as exc:  # constriction reports undecodable data with its own exceptions
            raise InvalidStream("entropy payload does not decode") from exc
        return np.stack(columns, axis=1).reshape(n, h, w)

    def ideal_bytes(self, codes: np.ndarray) -> float:
        """Σ −log2 p over the codes, in bytes: what a perfect coder would need with this model."""
        n, h, w = codes.shape
        native, positions = self._columns(h, w)
        columns = codes.reshape(n, positions)
        bits = 0.0
        for p in range(positions):
            table = self._table(n, p, w, native, columns[:, p - 1] if p % w else None)
            chosen = table[np.arange(n), columns[:, p]] / table.sum(axis=1)
            bits -= float(np.log2(chosen).sum())
        return bits / 8


def fit(train_codes: np.ndarray, codebook_size: int, betas: tuple[float, ...] = (0.0, 0.5, 0.7, 0.85, 1.0),
        held_out: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Choose β on held-out training codes, then refit every count on all of them.

    -> positional counts, overall counts, left weights (None when β = 0 wins), chosen β."""
    cut = int(len(train_codes) * (1 - held_out))
    fit_part, check_part = train_codes[:cut], train_codes[cut:]
    positional, overall = count_codes(fit_part, codebook_size)
    pairs = left_pair_counts(fit_part, codebook_size)
    cost = {b: EntropyModel(positional, overall, left_weights(pairs, b) if b else None).ideal_bytes(check_part)
            for b in betas}
    beta = min(cost, key=lambda b: cost[b])
    positional, overall = count_codes(train_codes, codebook_size)
    left = left_weights(left_pair_counts(train_codes, codebook_size), beta) if beta else None
    return positional, overall, left, beta
