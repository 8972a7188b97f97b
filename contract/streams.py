"""Binary streams of code grids: one implementation for the service and the offline codec CLI.

    stream = encode_stream(codes, Kind.ENTROPY, manifest, entropy_model)   # int (N, h, w) -> bytes
    codes = decode_stream(stream, manifest, entropy_model)                 # bytes -> int64 (N, h, w)

Layout (integers big-endian; "varint" is LEB128):

    magic    2 bytes  b"VQ"
    version  1 byte   1 (a single-stage model's grids), or 2 (a residual model's: `stages` follows `count`)
    kind     1 byte   1 = packed (fixed length), 2 = entropy-coded, 3 = coded with the learned prior
    model    1 byte length + UTF-8 name, 1 byte length + UTF-8 version
    K        varint   codebook size (per stage)
    h, w     varint   grid size
    count    varint   number of grids
    stages   varint   version 2 only: k, the first k of the model's stages, each grid (k, h, w)
    payload           packed: count·k·h·w indices of ceil(log2 K) bits, row-major (grid, stage, row,
                      column), zero-padded to a byte
                      entropy: range-coded indices (see entropy_model.py), as little-endian 32-bit words
                      prior: the prior's id, a CRC32 of the codes, range-coded words (see prior_coding.py)
    crc32    4 bytes  of everything above, so truncation and corruption never decode silently

A stream is only decoded by the model that made it (name, version and K must match). Grids are
int (N, h, w) for a single-stage model and (N, k, h, w) for a residual one (stage axis second).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from contract import ContractError
from contract.manifest import Manifest

MAGIC = b"VQ"
FORMAT_VERSION = 1  # single-stage grids: the layout every stream had before residual models
STAGED_VERSION = 2  # grids of a residual model: `stages` after `count`
MAX_GRIDS = 1 << 20
MAX_STAGES = 64


class InvalidStream(ContractError):
    """A code stream that is malformed, truncated, corrupt or from another model."""

    code = "invalid_stream"


class MissingCoder(InvalidStream):
    """The model ships no entropy model or prior for this kind of stream."""

    code = "format_unavailable"


class Kind(IntEnum):
    PACKED = 1
    ENTROPY = 2
    PRIOR = 3


@dataclass(frozen=True)
class Header:
    kind: Kind
    model: str
    version: str
    codebook_size: int
    height: int
    width: int
    count: int
    stages: int | None = None  # k stages per grid of a residual model; None: a single-stage model's grids

    @property
    def bits_per_code(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """One grid's codes: (h, w), or (k, h, w) for a residual model."""
        return (self.height, self.width) if self.stages is None else (self.stages, self.height, self.width)

    @property
    def codes(self) -> int:
        return self.count * math.prod(self.grid_shape)

    def to_bytes(self) -> bytes:
        name, version = self.model.encode(), self.version.encode()
        sizes = [self.codebook_size, self.height, self.width, self.count]
        sizes += [] if self.stages is None else [self.stages]
        layout = FORMAT_VERSION if self.stages is None else STAGED_VERSION
        return (MAGIC + bytes([layout, self.kind, len(name)]) + name + bytes([len(version)]) + version
                + b"".join(_varint(v) for v in sizes))


class PayloadCoder(Protocol):
    """A probability model with a range coder: the entropy model, or the prior (contract/prior_coding.py)."""

    def encode(self, codes: np.ndarray) -> bytes: ...

    def decode(self, header: Header, payload: bytes) -> np.ndarray: ...


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise InvalidStream(f"stream truncated in the header ({what})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = shift = 0
        while True:
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise InvalidStream(f"malformed header: {what} is not a valid varint")


def parse_header(data: bytes) -> tuple[Header, int]:
    """-> the header and the offset where the payload starts; InvalidStream (422) when malformed."""
    r = _Reader(data)
    if r.take(2, "magic") != MAGIC:
        raise InvalidStream("not a code stream: bad magic (expected a stream made by /encode with a binary "
                            "?format=)")
    version, kind = r.take(1, "version")[0], r.take(1, "kind")[0]
    if version not in (FORMAT_VERSION, STAGED_VERSION):
        raise InvalidStream(f"stream format version {version} is not supported (this server reads "
                            f"{FORMAT_VERSION} and {STAGED_VERSION})")
    if kind not in tuple(Kind):
        raise InvalidStream(f"unknown stream kind {kind}")
    try:
        model = r.take(r.take(1, "model name length")[0], "model name").decode()
        model_version = r.take(r.take(1, "model version length")[0], "model version").decode()
    except UnicodeDecodeError as exc:
        raise InvalidStream("malformed header: model name is not UTF-8") from exc
    k, h, w, count = (r.varint(what) for what in ("codebook size", "grid height", "grid width", "count"))
    stages = r.varint("stages") if version == STAGED_VERSION else None
    if not (2 <= k <= 1 << 16 and 1 <= h <= 4096 and 1 <= w <= 4096 and 1 <= count <= MAX_GRIDS):
        raise InvalidStream(f"implausible header: K={k}, grid {h}×{w}, {count} grids")
    if stages is not None and not 1 <= stages <= MAX_STAGES:
        raise InvalidStream(f"implausible header: {stages} stages")
    return Header(Kind(kind), model, model_version, k, h, w, count, stages), r.pos


def pack(codes: np.ndarray, bits: int) -> bytes:
    """int (N, h, w) in [0, 2**bits) -> bytes, each code as `bits` bits, most significant first."""
    flat = codes.reshape(-1).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bit_matrix = ((flat[:, None] >> shifts) & 1).astype(np.uint8)  # (M, bits)
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack(payload: bytes, bits: int, n: int) -> np.ndarray:
    """bytes -> (n,) int64 codes; the exact inverse of pack."""
    bit_array = np.unpackbits(np.frombuffer(payload, np.uint8))[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    return bit_array.astype(np.int64) @ weights


def seal(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def unseal(stream: bytes) -> bytes:
    """Check and strip the CRC32 trailer."""
    if len(stream) < 4 + len(MAGIC):
        raise InvalidStream(f"stream too short ({len(stream)} bytes)")
    body, crc = stream[:-4], int.from_bytes(stream[-4:], "big")
    if zlib.crc32(body) != crc:
        raise InvalidStream("stream checksum mismatch: the stream is truncated, has trailing bytes or is corrupt")
    return body


def packed_payload_size(header: Header) -> int:
    return math.ceil(header.codes * header.bits_per_code / 8)


def write_packed(header: Header, codes: np.ndarray) -> bytes:
    return seal(header.to_bytes() + pack(codes, header.bits_per_code))


def read_packed(header: Header, payload: bytes) -> np.ndarray:
    expected = packed_payload_size(header)
    if len(payload) != expected:
        raise InvalidStream(f"packed payload is {len(payload)} bytes; the header implies {expected}")
    codes = unpack(payload, header.bits_per_code, header.codes)
    if int(codes.max(initial=0)) >= header.codebook_size:
        raise InvalidStream(f"stream holds code {int(codes.max())} ≥ K={header.codebook_size}")
    return codes.reshape(header.count, *header.grid_shape)


def _coder(kind: Kind, manifest: Manifest, entropy: PayloadCoder | None, prior: PayloadCoder | None,
           doing: str) -> PayloadCoder:
    coder = entropy if kind is Kind.ENTROPY else prior
    if coder is None:
        what = "entropy model" if kind is Kind.ENTROPY else "prior"
        raise MissingCoder(f"model {manifest.name!r} ships no {what} {doing}; use format=packed")
    return coder


def stream_header(codes: np.ndarray, kind: Kind, manifest: Manifest) -> Header:
    """The header of `codes`: (N, h, w), or (N, k, h, w) for a residual model."""
    staged = manifest.quantizer.stages > 1
    if codes.ndim != (4 if staged else 3):
        raise InvalidStream(f"codes of shape {codes.shape} are not grids of model {manifest.name!r}")
    n, h, w = codes.shape[0], codes.shape[-2], codes.shape[-1]
    return Header(kind, manifest.name, manifest.version, manifest.codebook_size, h, w, n,
                  codes.shape[1] if staged else None)


def encode_stream(codes: np.ndarray, kind: Kind, manifest: Manifest, entropy: PayloadCoder | None,
                  prior: PayloadCoder | None = None) -> bytes:
    header = stream_header(codes, kind, manifest)
    if kind is Kind.PACKED:
        return write_packed(header, codes)
    return seal(header.to_bytes() + _coder(kind, manifest, entropy, prior, "to code with").encode(codes))


def decode_stream(stream: bytes, manifest: Manifest, entropy: PayloadCoder | None,
                  check: Callable[[Header], None] = lambda header: None, prior: PayloadCoder | None = None
                  ) -> np.ndarray:
    """bytes -> int64 (N, h, w), or (N, k, h, w) for a residual model; `check` sees the header (limits)
    before any payload is decoded."""
    body = unseal(stream)
    header, offset = parse_header(body)
    check(header)
    if (header.model, header.version, header.codebook_size) != (manifest.name, manifest.version,
                                                                 manifest.codebook_size):
        raise InvalidStream(
            f"this stream was made by model {header.model!r} {header.version} (K={header.codebook_size}); "
            f"it cannot be decoded by {manifest.name!r} {manifest.version} (K={manifest.codebook_size})"
        )
    stages = manifest.quantizer.stages
    if (header.stages is None) != (stages == 1) or (header.stages or 1) > stages:
        raise InvalidStream(f"the stream holds {header.stages or 1} stage(s) of codes per grid; model "
                            f"{manifest.name!r} has {stages}")
    payload = body[offset:]
    if header.kind is Kind.PACKED:
        return read_packed(header, payload)
    return _coder(header.kind, manifest, entropy, prior, "to decode this stream with").decode(header, payload)
