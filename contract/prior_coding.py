"""The prior's arithmetic on top of its step graph (prior.onnx): walking its positions, and range
coding of code grids with its conditional probabilities. One implementation for the exporter's
parity gate, the service and the offline codec CLI; the graph is run by whoever holds a session
(a `Step`).

    coder = PriorCoder(step, shape, prior_id)      # a payload coder for Kind.PRIOR streams
    payload = coder.encode(codes)                  # int (N, h, w) -> bytes
    codes = coder.decode(header, payload)          # -> int64 (N, h, w)

Sampling (temperature, guidance, filters) is contract/guided_sampling.py, on the same `walk`.

Grids go through the graph `CHUNK_GRIDS` at a time, position by position: the encoder and the
decoder make the same calls with the same shapes, so they compute the same probabilities bit for
bit on the same kind of machine (the graph runs on onnxruntime's CPU provider, one thread).
Payload: the prior's id (4 bytes of its sha256), a CRC32 of each chunk's codes, then the range
coder's 32-bit little-endian words. The CRCs make a stream decoded with other probabilities
(another prior, or a CPU whose floats round differently) fail loudly, after its first bad chunk,
instead of decoding to other codes.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np

from contract import ContractError
from contract.manifest import prior_io
from contract.streams import Header, InvalidStream

# (previous (N,) int64, position t, labels (N,) int64, cache) -> (logits (N, K) float32, position t's keys
# and values [(N, heads, dh)] * 2·layers); the cache is [(N, heads, T, dh)] * 2·layers (key, value per layer).
Step = Callable[[np.ndarray, int, np.ndarray, list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]
CHUNK_GRIDS = 64  # grids per walk through the positions; part of the stream format (see above)
GREEDY_BELOW = 1e-3  # temperatures below this sample greedily
ID_BYTES = 4
_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


@dataclass(frozen=True)
class PriorShape:
    """What the step graph's cache and outputs look like (from model.json's prior entry)."""

    layers: int
    heads: int
    head_dim: int
    grid: tuple[int, int]  # (h, w): the prior models grids of exactly this size, in raster order
    codebook_size: int
    classes: int  # 0: unconditional; label `classes` means "no class"

    @property
    def positions(self) -> int:
        return self.grid[0] * self.grid[1]

    def empty_cache(self, n: int) -> list[np.ndarray]:
        return [np.zeros((n, self.heads, self.positions, self.head_dim), np.float32) for _ in range(2 * self.layers)]

    def working_bytes(self, n: int) -> int:
        """What a walk of n grids holds: the cache, plus a few (n, K) float64 tables."""
        return 2 * self.layers * n * self.heads * self.positions * self.head_dim * 4 + 4 * n * self.codebook_size * 8


def session_step(session: Any, layers: int) -> Step:
    """The Step of an onnxruntime InferenceSession over prior.onnx (duck-typed: no onnxruntime here)."""
    inputs, outputs = prior_io(layers)

    def step(previous: np.ndarray, t: int, labels: np.ndarray, cache: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = dict(zip(inputs, [previous, np.array([t], np.int64), labels, *cache], strict=True))
        logits, *new = session.run(outputs, feed)
        return logits, new

    return step


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """logits (N, K) -> float64 (N, K), C-contiguous (constriction ignores strides)."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return np.ascontiguousarray(weights / weights.sum(axis=1, keepdims=True))


class WalkStopped(ContractError):
    """A walk was stopped from outside (its request timed out or its client left)."""

    code = "stopped"


def walk(step: Step, shape: PriorShape, labels: np.ndarray, choose: Callable[[int, np.ndarray], np.ndarray],
         stop: threading.Event | None = None) -> None:
    """Step len(labels) sequences through every position; `choose(t, logits)` returns the codes at t
    (N,): the true ones when coding, draws when sampling. WalkStopped once `stop` is set."""
    cache = shape.empty_cache(len(labels))
    previous = np.zeros(len(labels), np.int64)
    for t in range(shape.positions):
        if stop is not None and stop.is_set():
            raise WalkStopped("stopped")
        logits, new = step(previous, t, labels, cache)
        for slots, written in zip(cache, new, strict=True):
            slots[:, :, t] = written  # (N, heads, dh) into slot t
        previous = np.ascontiguousarray(choose(t, logits), dtype=np.int64)


class PriorCoder:
    """Range coding with the prior's conditionals (constriction's coder, as for entropy streams).
    `bound(stop)` gives a coder whose walks end (WalkStopped) once `stop` is set: a request that
    timed out or whose client left must not keep the CPU."""

    def __init__(self, step: Step, shape: PriorShape, prior_id: bytes, stop: threading.Event | None = None) -> None:
        self.step, self.shape, self.prior_id, self.stop = step, shape, prior_id[:ID_BYTES], stop
        self._family = _Categorical(perfect=False)

    def bound(self, stop: threading.Event) -> PriorCoder:
        return PriorCoder(self.step, self.shape, self.prior_id, stop)

    def check_grid(self, h: int, w: int) -> None:
        if (h, w) != self.shape.grid:
            h0, w0 = self.shape.grid
            raise InvalidStream(f"the prior codes grids of {h0}×{w0} only, not {h}×{w}; use format=entropy for those")

    def encode(self, codes: np.ndarray) -> bytes:
        """int (N, h, w) -> payload: id, one CRC32 per chunk of grids, the range coder's words."""
        n, h, w = codes.shape
        self.check_grid(h, w)
        flat = np.ascontiguousarray(codes.reshape(n, h * w), dtype=np.int32)
        encoder, crcs = _RangeEncoder(), []
        for start in range(0, n, CHUNK_GRIDS):
            chunk = flat[start : start + CHUNK_GRIDS]

            def code(t: int, logits: np.ndarray, chunk: np.ndarray = chunk) -> np.ndarray:
                encoder.encode(np.ascontiguousarray(chunk[:, t]), self._family, probabilities(logits))
                return chunk[:, t]

            walk(self.step, self.shape, np.full(len(chunk), self.shape.classes, np.int64), code, self.stop)
            crcs.append(_crc(chunk))
        words: np.ndarray = encoder.get_compressed()
        return self.prior_id + b"".join(crcs) + words.astype("<u4").tobytes()

    def decode(self, header: Header, payload: bytes) -> np.ndarray:
        """payload -> int64 (N, h, w); InvalidStream when it is not this prior's, or when a chunk does
        not decode to the codes it was made from (found after that chunk, not after the whole stream)."""
        self.check_grid(header.height, header.width)
        prefix = ID_BYTES + 4 * math.ceil(header.count / CHUNK_GRIDS)
        if len(payload) <= prefix or (len(payload) - prefix) % 4:
            raise InvalidStream("prior payload is truncated or not a whole number of 32-bit words")
        if payload[:ID_BYTES] != self.prior_id:
            raise InvalidStream("this stream was coded with another prior (its id differs from this model's prior)")
        decoder = _RangeDecoder(np.frombuffer(payload[prefix:], "<u4").astype(np.uint32))
        chunks = []
        for number, start in enumerate(range(0, header.count, CHUNK_GRIDS)):
            rows = np.empty((min(CHUNK_GRIDS, header.count - start), self.shape.positions), np.int32)

            def code(t: int, logits: np.ndarray, rows: np.ndarray = rows) -> np.ndarray:
                try:
                    rows[:, t] = decoder.decode(self._family, probabilities(logits))
                except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's undecodable data
                    raise InvalidStream("prior payload does not decode") from exc
                return rows[:, t]

            walk(self.step, self.shape, np.full(len(rows), self.shape.classes, np.int64), code, self.stop)
            if _crc(rows) != payload[ID_BYTES + 4 * number : ID_BYTES + 4 * number + 4]:
                raise InvalidStream("prior payload does not decode to the codes it was made from: the stream is "
                                    "altered, or this machine computes the prior's probabilities differently")
            chunks.append(rows)
        return np.concatenate(chunks).astype(np.int64).reshape(header.count, *self.shape.grid)


def _crc(flat: np.ndarray) -> bytes:
    return zlib.crc32(np.ascontiguousarray(flat, dtype="<u4").tobytes()).to_bytes(4, "big")
