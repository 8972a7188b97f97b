"""Code grids as compact bytes: bit-packed or entropy-coded streams (see formats.py, entropy.py).

    stream = encode_stream(codes, Kind.ENTROPY, manifest, entropy_model)   # int (N, h, w) -> bytes
    codes = decode_stream(stream, manifest, entropy_model)                 # bytes -> int64 (N, h, w)

Shared by the service (/encode?format=..., /decode with application/octet-stream) and the CLI
(python -m service.codec).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.codec.entropy import EntropyModel
from service.codec.formats import Header, Kind, parse_header, read_packed, seal, unseal, write_packed
from service.errors import InvalidStream
from service.manifest import Manifest

__all__ = ["EntropyModel", "Header", "Kind", "decode_stream", "encode_stream"]


def encode_stream(codes: np.ndarray, kind: Kind, manifest: Manifest, entropy: EntropyModel | None) -> bytes:
    n, h, w = codes.shape
    header = Header(kind, manifest.name, manifest.version, manifest.codebook_size, h, w, n)
    if kind is Kind.PACKED:
        return write_packed(header, codes)
    if entropy is None:
        raise InvalidStream(f"model {manifest.name!r} ships no entropy model; use format=packed")
    return seal(header.to_bytes() + entropy.encode(codes))


def decode_stream(stream: bytes, manifest: Manifest, entropy: EntropyModel | None,
                  check: Callable[[Header], None] = lambda header: None) -> np.ndarray:
    """bytes -> int64 (N, h, w); `check` sees the header (limits) before any payload is decoded."""
    body = unseal(stream)
    header, offset = parse_header(body)
    check(header)
    if (header.model, header.version, header.codebook_size) != (manifest.name, manifest.version,
                                                                 manifest.codebook_size):
        raise InvalidStream(
            f"this stream was made by model {header.model!r} {header.version} (K={header.codebook_size}); "
            f"it cannot be decoded by {manifest.name!r} {manifest.version} (K={manifest.codebook_size})"
        )
    payload = body[offset:]
    if header.kind is Kind.PACKED:
        return read_packed(header, payload)
    if entropy is None:
        raise InvalidStream(f"model {manifest.name!r} ships no entropy model to decode this stream")
    return entropy.decode(header, payload)
