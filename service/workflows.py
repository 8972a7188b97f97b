"""The codec's two workflows, planned to fit the worker's memory budget before any work is done.

    plan = plan_encode(model, uploads, resize, settings, json_output)  # headers only: size, 4xx, bytes
    await reservation.grow_to(plan.working_bytes, plan.what)          # admission in bytes (413 / 429)
    codes = await run_encode(model, plan, upload_loader(...))           # int64 (N, h, w)

    plan = plan_decode(model, body_bytes, grids.shape, png_response)
    decoded = await run_decode(model, grids, plan)                      # PNGs and/or uint8 pixels

Images are decoded a run at a time; a run holds at most `model.run_pixels` pixels, so batches are
split by pixels, and an image or grid larger than a run is processed in tiles with the model's
halo (inference/tiling.py) and stitched: codes and pixels equal those of one whole run. A model
whose manifest has no measured halo is never tiled: its large images run whole, and the request
reserves that run's full working set on top.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from contract.manifest import Manifest
from runtime import ImageTooLarge
from runtime.images import (
    ImageUpload,
    Resize,
    check_image_size,
    encode_size,
    read_header,
    to_model_input,
    to_uint8,
)
from runtime.memory_estimates import decode_request_bytes, encode_request_bytes
from runtime.tiling import Tile, TileTooSmall, plan_tiles
from service.config import Settings
from service.inference.registry import ServedModel
from service.offload import decode_uploads, pngs_of_pixels


@dataclass(frozen=True)
class RunPlan:
    """How a request's items go through the model: `per_run` whole items at a time, or each item in
    `tiles`; and what the request will hold at most while doing it."""

    size: tuple[int, int]  # (H, W) of every image
    count: int  # images
    per_run: int
    tiles: list[Tile] | None
    working_bytes: int
    what: str  # how error messages name the request's work

    @property
    def pixels(self) -> int:
        return self.count * self.size[0] * self.size[1]

    def deadline_s(self, settings: Settings) -> float:
        """The request's deadline: the base, plus an allowance per megapixel (large images are
        legitimately slow: about 0.5 s of CPU per megapixel here, BENCHMARKS.md)."""
        return settings.request_timeout_s + settings.timeout_s_per_mpx * self.pixels / 1e6


def _runs(model: ServedModel, items: int, h: int, w: int, halo: int | None,
          bytes_per_pixel: float) -> tuple[int, list[Tile] | None, int]:
    """(whole items per run, tiles or None, bytes beyond the run slot) for `items` h×w grids."""
    ds2 = model.manifest.downsample ** 2
    run_cells = model.run_pixels // ds2
    if h * w <= run_cells:
        return max(1, min(items, run_cells // (h * w))), None, 0
    if halo is not None:
        try:
            return 1, plan_tiles(h, w, run_cells, halo), 0
        except TileTooSmall:
            pass
    return 1, None, int((h * w - run_cells) * ds2 * bytes_per_pixel)  # one oversized, whole run


def plan_encode(model: ServedModel, uploads: list[ImageUpload], resize: Resize, settings: Settings,
                json_output: bool) -> RunPlan:
    """From the images' headers alone: their size (422/413 now, before decoding), the runs, the bytes."""
    headers = [read_header(upload, settings.max_pixels) for upload in uploads]
    size = encode_size(model.manifest, headers, resize)
    return _encode_plan(model, len(uploads), size, max(header.decode_bytes for header in headers),
                        sum(len(u.data) for u in uploads), json_output)


def plan_encode_pixels(model: ServedModel, shape: tuple[int, int, int, int], settings: Settings) -> RunPlan:
    """For raw pixels (N, H, W, C) uint8 already in memory (the v2 `pixels` input)."""
    n, height, width, _ = shape
    if height * width > settings.max_pixels:
        raise ImageTooLarge(f"pixels are {height}×{width} = {height * width} per image; the limit is "
                            f"{settings.max_pixels}")
    check_image_size(model.manifest, height, width, "pixels")
    return _encode_plan(model, n, (height, width), 0, 0, json_output=False)


def _encode_plan(model: ServedModel, count: int, size: tuple[int, int], largest_decode: int, body_bytes: int,
                 json_output: bool) -> RunPlan:
    m = model.manifest
    height, width = size
    per_run, tiles, extra = _runs(model, count, height // m.downsample, width // m.downsample,
                                  model.costs.encoder_halo, model.costs.encode_bytes_per_pixel)
    needed = encode_request_bytes(body_bytes, [size] * count, largest_decode, m.input.channels, m.downsample,
                                  model.run_pixels, json_output) + extra
    return RunPlan(size, count, per_run, tiles, needed, f"encoding {count} image(s) of {height}×{width}")


def plan_decode(model: ServedModel, body_bytes: int, shape: tuple[int, int, int], png_response: bool,
                pixels_output: bool = False) -> RunPlan:
    """From the grids' shape (N, h, w) alone: the runs and the bytes (PNGs, and raw pixels if asked)."""
    m = model.manifest
    n, h, w = shape
    per_run, tiles, extra = _runs(model, n, h, w, model.costs.decoder_halo, model.costs.decode_bytes_per_pixel)
    needed = decode_request_bytes(body_bytes, n, h, w, m.input.channels, m.downsample, png_response) + extra
    if pixels_output:
        needed += n * h * w * m.downsample**2 * m.input.channels
    return RunPlan((h * m.downsample, w * m.downsample), n, per_run, tiles, needed, f"decoding {n} grid(s) of {h}×{w}")


Loader = Callable[[int, int], Awaitable[np.ndarray]]  # (start, stop) -> uint8 (stop - start, H, W, C)


def upload_loader(m: Manifest, uploads: list[ImageUpload], resize: Resize, size: tuple[int, int],
                  max_pixels: int) -> Loader:
    """Images decoded from their files a run at a time (inline when small, else in the thread pool)."""
    async def load(start: int, stop: int) -> np.ndarray:
        return await decode_uploads(m, uploads[start:stop], resize, size, max_pixels)

    return load


def array_loader(pixels: np.ndarray) -> Loader:
    async def load(start: int, stop: int) -> np.ndarray:
        return pixels[start:stop]

    return load


async def run_encode(model: ServedModel, plan: RunPlan, load: Loader) -> np.ndarray:
    """-> int64 codes (N, h, w), holding one run's images at a time."""
    m = model.manifest
    height, width = plan.size
    codes = np.empty((plan.count, height // m.downsample, width // m.downsample), np.int64)
    for start in range(0, plan.count, plan.per_run):
        pixels = await load(start, min(plan.count, start + plan.per_run))  # (k, H, W, C) uint8
        if plan.tiles is None:
            codes[start : start + len(pixels)] = await model.encode(to_model_input(pixels))
            continue
        for tile in plan.tiles:  # one image per run: its tiles in turn
            (rows, cols), _, _ = tile.in_pixels(m.downsample)
            part = await model.encode(to_model_input(pixels[:, rows, cols]))  # (1, h', w')
            core_rows, core_cols = tile.core_in_outer
            codes[start][tile.core] = part[0, core_rows, core_cols]
    return codes


@dataclass
class Decoded:
    pngs: list[bytes] | None  # one PNG per grid
    pixels: np.ndarray | None  # uint8 (N, H, W, C)


async def run_decode(model: ServedModel, grids: np.ndarray, plan: RunPlan, pngs: bool = True,
                     pixels: bool = False) -> Decoded:
    """int64 (N, h, w) -> PNGs and/or uint8 pixels, a run (or a tile) at a time."""
    m = model.manifest
    out = Decoded([] if pngs else None, np.empty((plan.count, *plan.size, m.input.channels), np.uint8)
                  if pixels else None)
    for start in range(0, len(grids), plan.per_run):
        chunk = grids[start : start + plan.per_run]
        if plan.tiles is None:
            images = to_uint8(await model.decode(chunk))  # (k, H, W, C) from (k, C, H, W) float32
        else:
            images = np.empty((1, *plan.size, m.input.channels), np.uint8)
            for tile in plan.tiles:
                part = await model.decode(np.ascontiguousarray(chunk[:, tile.outer[0], tile.outer[1]]))
                _, (rows, cols), (core_rows, core_cols) = tile.in_pixels(m.downsample)
                images[:, rows, cols] = to_uint8(part[:, :, core_rows, core_cols])
        if out.pixels is not None:
            out.pixels[start : start + len(images)] = images
        if out.pngs is not None:
            out.pngs += await pngs_of_pixels(images)
    return out
