"""Entropy coding of code grids with a static per-model probability model.

The model is fitted once, by the exporter (export/entropy_fit.py), on the training set's codes and
shipped as a small file listed (with its sha256) in model.json:
- `positional` (h, w, K): how often each code occurs at each grid position;
- `overall` (K,): the same over all positions (for grids of other sizes);
- `left` (K, K): integer weights w[a, b] ∝ P(code b | code a on its left)^β_left, and
- `above` (K, K): the same for the code above, ^β_above; both βs fitted on held-out training codes.
  A symbol is coded with the product weight(position, b) · left[a, b] · above[c, b] of the experts
  whose neighbour exists (a product of experts); the first row has no `above`, the first column no
  `left`. Measured on the MNIST test codes of model 2.0: position alone 43.6 bytes per digit, with
  `left` (model 2.0.0's file) 40.5, with `left` and `above` (2.1.0) 39.5 (`python -m
  bench.compression_report`).
All runtime arithmetic is on integers, so encoder and decoder build bit-identical tables on any
machine; constriction's range coder (maintained, not ours) normalises them deterministically.

Order: position-major (every grid's position 0, then position 1, ...), so that each position is
coded for all N grids in one vectorised call, and a position's left and upper neighbours are always
decoded before it.
"""

from __future__ import annotations

from pathlib import Path

import constriction
import numpy as np

from contract.streams import Header, InvalidStream

COUNTS_FILE = "entropy.npz"
NEIGHBOUR_SCALE = 65535  # neighbour weights are stored as uint16, each row scaled to this maximum
_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


def save_model(path: Path, positional: np.ndarray, overall: np.ndarray, left: np.ndarray | None,
               above: np.ndarray | None, betas: tuple[float, float]) -> None:
    arrays = {"positional": positional.astype(np.uint32), "overall": overall.astype(np.uint32),
              "betas": np.array(betas)}  # (β_left, β_above) for the record; decoding needs only the weights
    for name, weights in (("left", left), ("above", above)):
        if weights is not None:
            arrays[name] = weights.astype(np.uint16)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]


def _exact_with(weights: np.ndarray, headroom: int) -> np.ndarray:
    """Integer weights halved as often as needed (never below 1) so that weight · headroom < 2**53.
    The shipped models never need it (largest product about 2**49); a degenerate fit might."""
    shift = max(0, (int(weights.max()) * headroom).bit_length() - 53)
    scaled: np.ndarray = np.maximum(weights >> shift, 1)
    return scaled


class EntropyModel:
    def __init__(self, positional_counts: np.ndarray, overall_counts: np.ndarray,
                 left: np.ndarray | None = None, above: np.ndarray | None = None) -> None:
        self.grid = positional_counts.shape[:2]
        self.codebook_size = overall_counts.shape[0]
        self._left = None if left is None else left.astype(np.int64)  # (K, K)
        self._above = None if above is None else above.astype(np.int64)  # (K, K)
        # Add-one smoothing keeps every code codable. Every table entry is a product of integers and
        # must stay below 2**53 to be exact in float64 (so both ends build identical tables).
        headroom = int(1 if left is None else left.max()) * int(1 if above is None else above.max())
        positional = positional_counts.reshape(-1, self.codebook_size).astype(np.int64) + 1  # (h·w, K)
        self._positional = _exact_with(positional, headroom)
        self._overall = _exact_with(overall_counts.astype(np.int64) + 1, headroom)  # (K,)
        self._family = _Categorical(perfect=False)

    @classmethod
    def load(cls, path: Path) -> EntropyModel:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["positional"], data["overall"], data.get("left"), data.get("above"))

    def _weights(self, position: int, width: int, native: bool, columns: list[np.ndarray] | np.ndarray,
                 n: int) -> np.ndarray:
        """Integer weights (n, K) for the n symbols at `position`, given the columns decoded so far
        (column p: every grid's code at position p)."""
        weights = (self._positional[position] if native else self._overall)[None, :]  # (1, K)
        if self._left is not None and position % width:
            weights = weights * self._left[columns[position - 1]]  # (n, K)
        if self._above is not None and position >= width:
            weights = weights * self._above[columns[position - width]]
        return np.broadcast_to(weights, (n, self.codebook_size))

    def _table(self, n: int, position: int, width: int, native: bool,
               columns: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """The (n, K) float64 table constriction reads: C-contiguous (it ignores strides), exact integers."""
        return np.ascontiguousarray(self._weights(position, width, native, columns, n), dtype=np.float64)

    def _columns(self, h: int, w: int) -> tuple[bool, int]:
        return (h, w) == self.grid, h * w

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, h, w) -> range-coded payload bytes."""
        n, h, w = codes.shape
        native, positions = self._columns(h, w)
        columns = np.ascontiguousarray(codes.reshape(n, positions).T, dtype=np.int32)  # (h·w, N)
        encoder = _RangeEncoder()
        for p in range(positions):
            encoder.encode(columns[p], self._family, self._table(n, p, w, native, columns))
        words: np.ndarray = encoder.get_compressed()
        return words.astype("<u4").tobytes()

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, h, w); InvalidStream when it does not decode, or when it is not
        exactly the encoding of what it decodes to: a range decoder reads missing words as zeros, so
        a cut or altered payload would otherwise decode, silently, to other codes."""
        if len(payload) % 4:
            raise InvalidStream("entropy payload is not a whole number of 32-bit words")
        n, h, w = header.count, header.height, header.width
        native, positions = self._columns(h, w)
        decoder = _RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        columns: list[np.ndarray] = []
        try:
            for p in range(positions):
                table = self._table(n, p, w, native, columns)
                columns.append(np.asarray(decoder.decode(self._family, table), np.int64))
        except Exception as exc:  # constriction reports undecodable data with its own exceptions
            raise InvalidStream("entropy payload does not decode") from exc
        codes = np.stack(columns, axis=1).reshape(n, h, w)
        if self.encode(codes) != payload:
            raise InvalidStream("entropy payload does not decode: it is cut short, extended or altered")
        return codes

    def ideal_bytes(self, codes: np.ndarray) -> float:
        """Σ −log2 p over the codes, in bytes: what a perfect coder would need with this model."""
        n, h, w = codes.shape
        native, positions = self._columns(h, w)
        columns = codes.reshape(n, positions).T  # (h·w, N)
        bits = 0.0
        for p in range(positions):
            table = self._table(n, p, w, native, columns)
            chosen = table[np.arange(n), columns[p]] / table.sum(axis=1)
            bits -= float(np.log2(chosen).sum())
        return bits / 8
