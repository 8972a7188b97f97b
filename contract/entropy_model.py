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
from typing import Any

import constriction
import numpy as np

from contract.streams import Header, InvalidStream

COUNTS_FILE = "entropy.npz"
NEIGHBOUR_SCALE = 65535  # neighbour weights are stored as uint16, each row scaled to this maximum
_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


Tables = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[float, float]]


def _arrays(tables: Tables, suffix: str = "") -> dict[str, np.ndarray]:
    positional, overall, left, above, betas = tables
    arrays = {"positional" + suffix: positional.astype(np.uint32), "overall" + suffix: overall.astype(np.uint32),
              "betas" + suffix: np.array(betas)}  # (β_left, β_above) for the record; decoding needs the weights
    for name, weights in (("left", left), ("above", above)):
        if weights is not None:
            arrays[name + suffix] = weights.astype(np.uint16)
    return arrays


def save_model(path: Path, positional: np.ndarray, overall: np.ndarray, left: np.ndarray | None,
               above: np.ndarray | None, betas: tuple[float, float]) -> None:
    with path.open("wb") as f:
        np.savez_compressed(f, **_arrays((positional, overall, left, above, betas)))  # type: ignore[arg-type]


def save_staged_model(path: Path, stages: list[Tables]) -> None:
    """A residual model's: one set of tables per stage (key suffix _0, _1, ...) and their count."""
    arrays = {"stages": np.array(len(stages))}
    for s, tables in enumerate(stages):
        arrays |= _arrays(tables, f"_{s}")
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

    @property
    def stages(self) -> None:
        return None  # a single-stage model's grids

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

    def encode_into(self, encoder: Any, codes: np.ndarray) -> None:
        """int (N, h, w) into a range encoder (one of several models may share it, in turn)."""
        n, h, w = codes.shape
        native, positions = self._columns(h, w)
        columns = np.ascontiguousarray(codes.reshape(n, positions).T, dtype=np.int32)  # (h·w, N)
        for p in range(positions):
            encoder.encode(columns[p], self._family, self._table(n, p, w, native, columns))

    def decode_from(self, decoder: Any, n: int, h: int, w: int) -> np.ndarray:
        """int64 (n, h, w) from a range decoder, in the order encode_into wrote them."""
        native, positions = self._columns(h, w)
        columns: list[np.ndarray] = []
        try:
            for p in range(positions):
                table = self._table(n, p, w, native, columns)
                columns.append(np.asarray(decoder.decode(self._family, table), np.int64))
        except Exception as exc:  # constriction reports undecodable data with its own exceptions
            raise InvalidStream("entropy payload does not decode") from exc
        return np.stack(columns, axis=1).reshape(n, h, w)

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, h, w) -> range-coded payload bytes."""
        encoder = _RangeEncoder()
        self.encode_into(encoder, codes)
        return _words(encoder)

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, h, w); InvalidStream when it does not decode, or when it is not
        exactly the encoding of what it decodes to: a range decoder reads missing words as zeros, so
        a cut or altered payload would otherwise decode, silently, to other codes."""
        codes = self.decode_from(_decoder(payload), header.count, header.height, header.width)
        return _checked(codes, self.encode(codes), payload)

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


def _words(encoder: Any) -> bytes:
    words: np.ndarray = encoder.get_compressed()
    return words.astype("<u4").tobytes()


def _decoder(payload: bytes) -> Any:
    if len(payload) % 4:
        raise InvalidStream("entropy payload is not a whole number of 32-bit words")
    return _RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))


def _checked(codes: np.ndarray, again: bytes, payload: bytes) -> np.ndarray:
    if again != payload:
        raise InvalidStream("entropy payload does not decode: it is cut short, extended or altered")
    return codes


class StagedEntropyModel:
    """A residual model's entropy model: one static model per stage; a grid's first k stages are
    coded stage after stage into one range coder (stage 0's positions for every grid, then stage 1's)."""

    def __init__(self, models: list[EntropyModel]) -> None:
        self.models = models
        self.grid, self.codebook_size = models[0].grid, models[0].codebook_size

    @property
    def stages(self) -> int:
        return len(self.models)

    @classmethod
    def load(cls, path: Path) -> StagedEntropyModel:
        with np.load(path, allow_pickle=False) as data:
            return cls([EntropyModel(data[f"positional_{s}"], data[f"overall_{s}"], data.get(f"left_{s}"),
                                     data.get(f"above_{s}")) for s in range(int(data["stages"]))])

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, k, h, w), k ≤ the model's stages -> payload bytes."""
        encoder = _RangeEncoder()
        for stage in range(codes.shape[1]):
            self.models[stage].encode_into(encoder, np.ascontiguousarray(codes[:, stage]))
        return _words(encoder)

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, k, h, w); InvalidStream as EntropyModel.decode."""
        k = header.stages or 1
        if k > self.stages:
            raise InvalidStream(f"the stream holds {k} stages; this entropy model codes {self.stages}")
        decoder = _decoder(payload)
        codes = np.stack([self.models[s].decode_from(decoder, header.count, header.height, header.width)
                          for s in range(k)], axis=1)
        return _checked(codes, self.encode(codes), payload)


def load_entropy_model(path: Path) -> EntropyModel | StagedEntropyModel:
    """The file's model: one set of tables, or one per stage (a residual model's)."""
    with np.load(path, allow_pickle=False) as data:
        staged = "stages" in data.files
    return StagedEntropyModel.load(path) if staged else EntropyModel.load(path)
