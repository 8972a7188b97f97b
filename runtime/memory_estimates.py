"""How much memory a request will need, estimated before the work: from image headers before any
pixel is decoded, and from grid sizes before any code is decoded. Pure arithmetic, no I/O.

A request holds its body, the decoded pixels of the image or run in hand, and its outputs; the
onnxruntime runs themselves are bounded by `run_pixels` per run (large images and grids are tiled)
and draw on one run slot of the budget, since this worker runs one inference at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from contract.manifest import Manifest

# Without measured resources in the manifest: a deliberately high guess, and no tiling.
FALLBACK_BYTES_PER_PIXEL = 1024.0
# One grid's codes as Python objects while it is written as JSON (a list slot and an int per code),
# and the JSON text of every grid (up to 4 digits and a comma), held twice while joined.
JSON_OBJECT_BYTES_PER_CODE = 48
JSON_TEXT_BYTES_PER_CODE = 12
# Parsing a JSON /decode body: the text as str, a list slot per code and an int object for codes
# above 256, then the int64 array beside the lists. Measured with tracemalloc on 7 grids of
# 500×500: 8.9× the body for codes 300-511, 5.5× for 0-9 (more digits per code, fewer codes per
# byte); compact JSON ("1,": 2 bytes a code) is the worst case, about 10×.
JSON_PARSE_BYTES_PER_BODY_BYTE = 11
# A PNG of C-channel pixels is at most the raw bytes plus filter bytes and zlib framing; the JSON
# response carries it base64-encoded (4/3), built once as bytes and once as text.
PNG_OVERHEAD = 1.02
PNG_FIXED_BYTES = 1024
BASE64_COPIES = 2 * 4 / 3
MIN_RUN_PIXELS = 64 * 64


@dataclass(frozen=True)
class GraphCosts:
    """One model's per-pixel working memory and tiling halos (None: the model cannot be tiled)."""

    encode_bytes_per_pixel: float
    decode_bytes_per_pixel: float
    encoder_halo: int | None
    decoder_halo: int | None

    @classmethod
    def of(cls, manifest: Manifest) -> GraphCosts:
        r = manifest.resources
        if r is None:
            return cls(FALLBACK_BYTES_PER_PIXEL, FALLBACK_BYTES_PER_PIXEL, None, None)
        return cls(r.encode_bytes_per_pixel, r.decode_bytes_per_pixel, r.encoder_halo, r.decoder_halo)

    def run_pixels(self, run_slot_bytes: int) -> int:
        """Pixels per onnxruntime run so that the larger graph's working set fits the run slot."""
        per_pixel = max(self.encode_bytes_per_pixel, self.decode_bytes_per_pixel)
        return max(MIN_RUN_PIXELS, int(run_slot_bytes / per_pixel))


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def encode_request_bytes(body_bytes: int, sizes: list[tuple[int, int]], largest_decode: int,
                         channels: int, downsample: int, run_pixels: int, json_output: bool, stages: int = 1) -> int:
    """An /encode request: its body, decoding its costliest image (`largest_decode`, from the
    headers), the pixels of the run in hand (uint8 and float32), and its codes (JSON or a stream;
    `stages` grids of codes per image for a residual model).

    sizes: the (H, W) each image is encoded at."""
    largest = max((h * w for h, w in sizes), default=0) * stages
    in_hand = max(largest // stages, min(run_pixels, sum(h * w for h, w in sizes))) * channels * (1 + 4)
    codes = sum(h * w for h, w in sizes) // downsample**2 * stages
    if json_output:
        outputs = codes * (8 + JSON_TEXT_BYTES_PER_CODE) + largest // downsample**2 * JSON_OBJECT_BYTES_PER_CODE
    else:
        outputs = codes * (8 + 2)
    return body_bytes + largest_decode + in_hand + outputs


@dataclass(frozen=True)
class BodyCharge:
    """What a request body costs in memory, charged from the bytes that really arrived, never from a
    size a header promises: one copy of every byte while it arrives, then, once the body is all
    there, its parsing (JSON becomes Python objects; multipart parts are copied out of the stream,
    and may spill to /tmp, a tmpfs in the container: memory too).

    `declared` (a Content-Length) reserves nothing; it only lets a body whose cost could never fit
    be refused before it is read."""

    copies: int = 1  # copies of the whole body held while it is parsed
    parse_per_byte: int = 0  # bytes of parsed objects per parsed byte
    parsed_part: int | None = None  # bytes that are parsed (v2's binary extension: its JSON header); None: all
    declared: int | None = None

    def complete(self, size: int) -> int:
        """A body of `size` bytes, all arrived, while it is parsed."""
        parsed = size if self.parsed_part is None else min(size, self.parsed_part)
        return size * self.copies + parsed * self.parse_per_byte


def charge_for_media(media_type: str, declared: int | None = None) -> BodyCharge:
    """The charge for a body of this media type (see BodyCharge)."""
    if media_type == "application/json":
        return BodyCharge(parse_per_byte=JSON_PARSE_BYTES_PER_BODY_BYTE, declared=declared)
    if media_type == "multipart/form-data":
        return BodyCharge(copies=2, declared=declared)
    return BodyCharge(declared=declared)


def stream_decode_bytes(count: int, height: int, width: int, entropy: bool, prior_walk: int = 0, stages: int = 1,
                        codebook_size: int = 512) -> int:
    """Decoding a packed, entropy or prior stream of `count` h×w grids (`stages` each) into int64
    codes. The entropy decoder keeps one small array per grid position until it stacks them, builds
    one position's (count, K) float64 table at a time, and re-encodes to check; the prior's decoder
    holds its walk's cache (`prior_walk` bytes, PriorShape.working_bytes)."""
    cells = count * height * width * stages
    per_position = (160 * height * width * stages + 8 * cells + 16 * count * codebook_size) if entropy else 0
    return 2 * cells * 8 + per_position + prior_walk


def decode_request_bytes(body_bytes: int, count: int, height: int, width: int, channels: int,
                         downsample: int, png_response: bool, stages: int = 1) -> int:
    """A /decode request after its grids are parsed: body, codes, one image being assembled, and
    every PNG (and, for JSON, its base64 text) held until the response is sent."""
    image_pixels = height * width * downsample**2
    png = image_pixels * channels * PNG_OVERHEAD + PNG_FIXED_BYTES
    response = count * png * (1 if png_response else 1 + BASE64_COPIES)
    codes = count * stages * height * width * 8
    return body_bytes + codes + image_pixels * channels * (1 + 4) + math.ceil(response)
