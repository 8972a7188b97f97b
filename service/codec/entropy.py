"""Entropy coding of code grids with a static per-model probability model.

The exporter counts how often each code occurs over the training set, at each grid position and
overall, and ships the counts as a small file listed (with its sha256) in model.json. Grids of the
model's native size are coded with the per-position tables, other sizes with the overall one.
Coding uses constriction's range coder (a maintained coder; we write none of our own).

Order: position-major (every grid's position 0, then position 1, ...), so that each position's
model codes all N grids in one vectorised call.
"""

from __future__ import annotations

from pathlib import Path

import constriction
import numpy as np

from service.codec.formats import Header
from service.errors import InvalidStream

COUNTS_FILE = "entropy.npz"
_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


def probabilities(counts: np.ndarray) -> np.ndarray:
    """Counts -> float64 probabilities with add-one smoothing: a code never seen in training stays codable."""
    smoothed = counts.astype(np.float64) + 1.0
    normalised: np.ndarray = smoothed / smoothed.sum(axis=-1, keepdims=True)
    return normalised


def save_counts(path: Path, positional: np.ndarray, overall: np.ndarray) -> None:
    """positional (h, w, K) and overall (K,) uint32 counts -> the file shipped with the model."""
    with path.open("wb") as f:
        np.savez_compressed(f, positional=positional.astype(np.uint32), overall=overall.astype(np.uint32))


def count_codes(codes: np.ndarray, codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    """int (N, h, w) codes -> per-position counts (h, w, K) and overall counts (K,)."""
    n, h, w = codes.shape
    flat = codes.reshape(n, h * w)
    positional = np.stack([np.bincount(flat[:, p], minlength=codebook_size) for p in range(h * w)])
    return positional.reshape(h, w, codebook_size), np.bincount(flat.reshape(-1), minlength=codebook_size)


class EntropyModel:
    def __init__(self, positional_counts: np.ndarray, overall_counts: np.ndarray) -> None:
        self.grid = positional_counts.shape[:2]
        self.codebook_size = overall_counts.shape[0]
        table = probabilities(positional_counts).reshape(-1, self.codebook_size)  # (h·w, K)
        self._positional = [_Categorical(row, perfect=False) for row in table]
        self._overall = _Categorical(probabilities(overall_counts), perfect=False)

    @classmethod
    def load(cls, path: Path) -> EntropyModel:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["positional"], data["overall"])

    def _models(self, height: int, width: int) -> list[object]:
        if (height, width) == self.grid:
            return list(self._positional)
        return [self._overall] * (height * width)

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, h, w) -> range-coded payload bytes."""
        n, h, w = codes.shape
        columns = codes.reshape(n, h * w).astype(np.int32)
        encoder = _RangeEncoder()
        for position, model in enumerate(self._models(h, w)):
            encoder.encode(np.ascontiguousarray(columns[:, position]), model)
        words: np.ndarray = encoder.get_compressed()
        return words.astype("<u4").tobytes()

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, h, w); InvalidStream when it does not decode to in-range codes."""
        if len(payload) % 4:
            raise InvalidStream("entropy payload is not a whole number of 32-bit words")
        decoder = _RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        n, h, w = header.count, header.height, header.width
        try:
            columns = [decoder.decode(model, n) for model in self._models(h, w)]
        except Exception as exc:  # constriction reports undecodable data with its own exceptions
            raise InvalidStream("entropy payload does not decode") from exc
        return np.stack(columns, axis=1).astype(np.int64).reshape(n, h, w)
