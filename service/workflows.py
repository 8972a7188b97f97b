"""The codec's two workflows, planned to fit the worker's memory budget before any work is done.

    plan = plan_encode(model, uploads, resize, settings, json_output)  # headers only: size, 4xx, bytes
    await reservation.grow_to(plan.working_bytes, plan.what)          # admission in bytes (413 / 429)
    codes = await run_encode(model, uploads, resize, plan, settings)    # int64 (N, h, w)

    plan = plan_decode(model, body_bytes, grids, png_response)
    pngs = await run_decode(model, grids, plan)

Images are decoded a run at a time; a run holds at most `model.run_pixels` pixels, so batches are
split by pixels, and an image or grid larger than a run is processed in tiles with the model's
halo (inference/tiling.py) and stitched: codes and pixels equal those of one whole run. A model
whose manifest has no measured halo is never tiled: its large images run whole, and the request
reserves that run's full working set on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.inference.registry import ServedModel
from service.inference.tiling import Tile, TileTooSmall, plan_tiles
from service.inference.working_set import decode_request_bytes, encode_request_bytes
from service.inputs.bodies import ImageUpload
from service.inputs.images import (
    Resize,
    decode_uploads,
    encode_size,
    png_of,
    read_header,
    to_model_input,
    to_pngs,
    to_uint8,
)


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
    m = model.manifest
    headers = [read_header(upload, settings.max_pixels) for upload in uploads]
    height, width = encode_size(m, headers, resize)
    per_run, tiles, extra = _runs(model, len(uploads), height // m.downsample, width // m.downsample,
                                  model.costs.encoder_halo, model.costs.encode_bytes_per_pixel)
    needed = encode_request_bytes(sum(len(u.data) for u in uploads), [(height, width)] * len(uploads),
                                  max(header.decode_bytes for header in headers), m.input.channels, m.downsample,
                                  model.run_pixels, json_output) + extra
    return RunPlan((height, width), len(uploads), per_run, tiles, needed,
                   f"encoding {len(uploads)} image(s) of {height}×{width}")


def plan_decode(model: ServedModel, body_bytes: int, shape: tuple[int, int, int], png_response: bool) -> RunPlan:
    """From the grids' shape (N, h, w) alone: the runs and the bytes."""
    m = model.manifest
    n, h, w = shape
    per_run, tiles, extra = _runs(model, n, h, w, model.costs.decoder_halo, model.costs.decode_bytes_per_pixel)
    needed = decode_request_bytes(body_bytes, n, h, w, m.input.channels, m.downsample, png_response) + extra
    return RunPlan((h * m.downsample, w * m.downsample), n, per_run, tiles, needed, f"decoding {n} grid(s) of {h}×{w}")


async def run_encode(model: ServedModel, uploads: list[ImageUpload], resize: Resize, plan: RunPlan,
                     settings: Settings) -> np.ndarray:
    """-> int64 codes (N, h, w), decoding one run's images at a time."""
    m = model.manifest
    height, width = plan.size
    codes = np.empty((len(uploads), height // m.downsample, width // m.downsample), np.int64)
    for start in range(0, len(uploads), plan.per_run):
        chunk = uploads[start : start + plan.per_run]
        pixels = await decode_uploads(m, chunk, resize, plan.size, settings.max_pixels)  # (k, H, W, C) uint8
        if plan.tiles is None:
            codes[start : start + len(chunk)] = await model.encode(to_model_input(pixels))
            continue
        for tile in plan.tiles:  # one image per run: its tiles in turn
            (rows, cols), _, _ = tile.in_pixels(m.downsample)
            part = await model.encode(to_model_input(pixels[:, rows, cols]))  # (1, h', w')
            core_rows, core_cols = tile.core_in_outer
            codes[start][tile.core] = part[0, core_rows, core_cols]
    return codes


async def run_decode(model: ServedModel, grids: np.ndarray, plan: RunPlan) -> list[bytes]:
    """int64 (N, h, w) -> one PNG per grid, a run (or a tile) at a time."""
    m = model.manifest
    pngs: list[bytes] = []
    for start in range(0, len(grids), plan.per_run):
        chunk = grids[start : start + plan.per_run]
        if plan.tiles is None:
            pngs += await to_pngs(await model.decode(chunk))  # from (k, C, H, W) float32
            continue
        canvas = np.empty((*plan.size, m.input.channels), np.uint8)  # (H, W, C)
        for tile in plan.tiles:
            images = await model.decode(np.ascontiguousarray(chunk[:, tile.outer[0], tile.outer[1]]))  # (1, C, H', W')
            _, (rows, cols), (core_rows, core_cols) = tile.in_pixels(m.downsample)
            canvas[rows, cols] = to_uint8(images[:, :, core_rows, core_cols])[0]
        pngs.append(await png_of(canvas))
    return pngs
