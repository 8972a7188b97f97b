"""Code grids in: JSON bodies or code streams -> int64 (N, h, w), checked against the model.

Decode accepts application/json `{"codes": grid | [grid, ...]}` or an application/octet-stream
stream from /encode?format=... (contract/formats.py). Every malformed grid becomes a domain error
naming the first offending position.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request

from contract.formats import STREAM_FORMAT_NAMES
from contract.manifest import Manifest
from contract.prior_coding import CHUNK_GRIDS, PriorCoder
from contract.streams import Header, Kind, MissingCoder, PayloadCoder, decode_stream, parse_header, unseal
from runtime import BadRequest, ImageTooLarge, InvalidCodes, TooManyImages, UnsupportedSize
from runtime.memory_estimates import stream_decode_bytes
from runtime.model_runtime import ModelRuntime
from runtime.work_estimates import entropy_seconds, prior_seconds
from service.config import Settings
from service.errors import UnsupportedMediaType
from service.inputs.bodies import ReadScope, media_type, parse_json
from service.offload import off_loop


def check_grid_size(m: Manifest, height: int, width: int, max_pixels: int) -> None:
    if height < 1 or width < 1:  # a v2 tensor may say so; there is nothing to decode (and no run to plan)
        raise UnsupportedSize(f"grids are {height}×{width}; a grid is at least 1×1")
    if not m.fully_convolutional and (height, width) != (m.grid.height, m.grid.width):
        raise UnsupportedSize(f"grids are {height}×{width}; model {m.name!r} decodes exactly "
                              f"{m.grid.height}×{m.grid.width} grids")
    pixels = height * width * m.downsample**2
    if pixels > max_pixels:
        raise ImageTooLarge(f"a {height}×{width} grid decodes to {pixels} pixels; the limit is {max_pixels}")


def _offending(position: str, value: Any, problem: str) -> InvalidCodes:
    shown = json.dumps(value)[:40] if not isinstance(value, float) or np.isfinite(value) else str(value)
    return InvalidCodes(f"{position} = {shown}: {problem}")


def _check_grid(grid: Any, where: str, codebook_size: int) -> tuple[int, int]:
    """Walk one grid in order; raise at the first offending position. -> (h, w)."""
    if not isinstance(grid, list) or not grid:
        raise _offending(where, grid, "expected a non-empty list of rows")
    width = len(grid[0]) if isinstance(grid[0], list) else 0
    for r, row in enumerate(grid):
        if not isinstance(row, list) or not row:
            raise _offending(f"{where}[{r}]", row, "expected a non-empty list of ints")
        if len(row) != width:
            raise InvalidCodes(f"{where}[{r}] has {len(row)} entries but {where}[0] has {width}; grids must be "
                               "rectangular")
        for c, value in enumerate(row):
            if type(value) is not int:  # bools and floats are not codes
                raise _offending(f"{where}[{r}][{c}]", value, "expected an int")
            if not 0 <= value < codebook_size:
                raise _offending(f"{where}[{r}][{c}]", value, f"codes must be in [0, {codebook_size})")
    return len(grid), width


def _check_stages(grid: Any, where: str, codebook_size: int, stages: int) -> tuple[int, int, int]:
    """One grid of a residual model: [k][h][w] with 1 ≤ k ≤ S, stage grids of one size. -> (k, h, w)."""
    if not isinstance(grid, list) or not grid:
        raise _offending(where, grid, f"expected a non-empty list of stages (1 to {stages}), each a grid")
    if len(grid) > stages:
        raise InvalidCodes(f"{where} holds {len(grid)} stages; this model has {stages}: send 1 to {stages} stages")
    shapes = [_check_grid(g, f"{where}[{s}]", codebook_size) for s, g in enumerate(grid)]
    if any(shape != shapes[0] for shape in shapes):
        raise InvalidCodes(f"the stages of {where} differ in size; every stage covers the same grid")
    return len(grid), *shapes[0]


def parse_code_grids(payload: Any, codebook_size: int, max_images: int, stages: int = 1) -> tuple[np.ndarray, bool]:
    """{"codes": grid | [grid, ...]} -> int64 (N, h, w), and whether one bare grid was sent. For a
    residual model (S stages) a grid is [k][h][w], its first k stages, and the result (N, k, h, w)."""
    if not isinstance(payload, dict) or "codes" not in payload:
        raise BadRequest('expected a JSON object {"codes": [[...], ...]} (one grid or a list of grids)')
    codes = payload["codes"]
    if not isinstance(codes, list) or not codes:
        raise _offending("codes", codes, "expected a non-empty grid or list of grids")
    depth = _leading_depth(codes)  # 2: one grid of ints; 3: a list of them (or one staged grid); 4: staged list
    if stages > 1 and depth < 3:
        raise InvalidCodes(f"this model has {stages} stages: send each grid as [k][h][w], its first k stages "
                           f"(1 ≤ k ≤ {stages})")
    single = depth == (2 if stages == 1 else 3)
    grids = [codes] if single else codes
    if len(grids) > max_images:
        raise TooManyImages(f"{len(grids)} grids in one request; the limit is {max_images}")
    where = ["codes" if single else f"codes[{i}]" for i in range(len(grids))]
    shapes = [_check_grid(g, at, codebook_size) if stages == 1 else _check_stages(g, at, codebook_size, stages)
              for g, at in zip(grids, where, strict=True)]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise InvalidCodes(f"codes[{i}] is {'×'.join(map(str, shape))} but codes[0] is "
                               f"{'×'.join(map(str, shapes[0]))}; grids in one request must have the same size")
    return np.asarray(grids, dtype=np.int64), single


def _leading_depth(value: Any, limit: int = 4) -> int:
    """How many lists open at the start of `value` (at most `limit`)."""
    depth = 0
    while isinstance(value, list) and value and depth < limit:
        value, depth = value[0], depth + 1
    return depth


def _check_stream_header(header: Header, m: Manifest, settings: Settings) -> None:
    if header.count > settings.max_images:
        raise TooManyImages(f"{header.count} grids in the stream; the limit is {settings.max_images}")
    check_grid_size(m, header.height, header.width, settings.max_pixels)


INLINE_BODY_BYTES = 64 * 1024  # bodies parsed on the event loop; larger ones in the thread pool


@dataclass(frozen=True)
class GridBody:
    """A decode request's body, read and checked: its grids (JSON, parsed) or a stream whose header
    is checked and whose payload is decoded only when `grids()` is awaited (inside the request's
    deadline, in the thread pool when large: an entropy stream of large grids takes seconds).
    Decoding a stream costs `decode_bytes` of memory and about `decode_s` estimated seconds; the
    plan counts both (service/workflows/plan.py), nothing is reserved here."""

    shape: tuple[int, ...]  # (N, h, w), or (N, k, h, w) for a residual model
    single: bool  # one bare grid was sent: one PNG may be answered
    size: int  # bytes of body
    parsed: np.ndarray | None = None
    stream: Callable[[], np.ndarray] | None = None
    heavy: bool = False  # decoded in the thread pool whatever the body's size
    decode_bytes: int = 0  # decoding the stream: its codes, the coder's working set
    decode_s: float = 0.0  # decoding the stream: estimated seconds (runtime/work_estimates.py)

    @property
    def parsed_bytes(self) -> int:
        """What the parsed body holds besides its bytes."""
        return self.parsed.nbytes if self.parsed is not None else 0

    async def grids(self) -> np.ndarray:
        if self.parsed is not None:
            return self.parsed
        assert self.stream is not None
        return await off_loop(self.stream, heavy=self.heavy or self.size > INLINE_BODY_BYTES)


def _stream_body(body: bytes, m: Manifest, entropy: PayloadCoder | None, prior: PriorCoder | None,
                 settings: Settings) -> GridBody:
    header, _ = parse_header(unseal(body))
    _check_stream_header(header, m, settings)
    n, h, w = header.count, header.height, header.width
    walk, seconds = 0, 0.0
    if header.kind is Kind.PRIOR:  # 422 before any work: no prior here, or a grid it does not model
        if prior is None:
            raise MissingCoder(f"model {m.name!r} ships no prior to decode this stream with")
        prior.check_grid(h, w)
        walk = prior.shape.working_bytes(min(n, CHUNK_GRIDS))
        seconds = prior_seconds(n, h * w, CHUNK_GRIDS)
    elif header.kind is Kind.ENTROPY:
        seconds = entropy_seconds(n, h, w)

    def decode() -> np.ndarray:
        return decode_stream(body, m, entropy, lambda h: _check_stream_header(h, m, settings), prior)

    # A prior stream is decoded in the thread pool whatever its size: its graph runs once per position.
    return GridBody((n, *header.grid_shape), n == 1, len(body), stream=decode, heavy=header.kind is Kind.PRIOR,
                    decode_bytes=len(body) + stream_decode_bytes(n, h, w, header.kind is Kind.ENTROPY, walk,
                                                                 header.stages or 1, header.codebook_size),
                    decode_s=seconds)


STREAMS = "an application/octet-stream stream from /encode?format=" + "|".join(STREAM_FORMAT_NAMES)


async def read_grids(request: Request, model: ModelRuntime, settings: Settings, scope: ReadScope) -> GridBody:
    """The code grids of a decode request (JSON or a stream), read within the body deadline and
    checked against the model and its limits. The scope charges the body as it arrives; a stream's
    decoding is planned and reserved with the rest of the work."""
    async with scope.reading():
        return await _read_grids(request, model, settings, scope)


async def _read_grids(request: Request, model: ModelRuntime, settings: Settings, scope: ReadScope) -> GridBody:
    m, kind = model.manifest, media_type(request)
    if kind not in ("application/octet-stream", "application/json"):
        raise UnsupportedMediaType(f'send application/json {{"codes": [[...], ...]}} or {STREAMS}')
    body = await request.body()
    if kind == "application/octet-stream":
        prior = model.prior.coder.bound(scope.stop) if model.prior else None
        grid_body = _stream_body(body, m, model.entropy, prior, settings)
    else:
        def parse() -> tuple[np.ndarray, bool]:
            return parse_code_grids(parse_json(body), m.codebook_size, settings.max_images, m.quantizer.stages)

        grids, single = await off_loop(parse, heavy=len(body) > INLINE_BODY_BYTES)
        grid_body = GridBody(grids.shape, single, len(body), parsed=grids)
    check_grid_size(m, grid_body.shape[-2], grid_body.shape[-1], settings.max_pixels)
    return grid_body
