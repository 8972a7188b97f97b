"""Running a plan: the work of a request, a run (or a tile) at a time through the model's batchers,
in its turn, with its memory reserved first and inside its deadline.

    encoded = await run_encode_request(model, plan, uploads, scope, settings)   # codes, and a stream if asked
    pngs = await run_decode_request(model, plan, body, scope, settings)
    codes, pngs = await run_sample_request(model, plan, scope, settings)

`scope` is the request's (service/api/request_scope.py): `running(plan.work(...))` waits for the
work's turn (429 at once when it cannot start before its deadline, service/inference/work_queue.py)
and reserves its memory (413/429); `within` holds the deadline (504) and cancels the work when the
client leaves; its `stop` event ends a prior's walk left behind in a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from contract.manifest import Manifest
from contract.streams import encode_stream
from runtime.images import ImageUpload, Resize, to_model_input, to_uint8
from service.config import Settings
from service.inference.registry import ServedModel
from service.inference.statistics import GraphStats
from service.inference.work_queue import Work
from service.inputs.grids import GridBody
from service.offload import decode_uploads, off_loop, pngs_of_pixels
from service.workflows.plan import RunPlan, SamplePlan

T = TypeVar("T")
WATCH_PIXELS = 4 * 28 * 28  # requests larger than a few digits are cancelled when their client leaves
INLINE_CODES = 64 * 49  # codes of up to 64 digits are coded as a stream on the event loop


class RunScope(Protocol):
    @property
    def stop(self) -> threading.Event: ...  # set when the request ends

    def running(self, work: Work) -> AbstractAsyncContextManager[None]: ...

    async def within(self, work: Awaitable[T], watch: bool = True) -> T: ...

    def count_in(self, stats: GraphStats, items: int) -> None: ...


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
    """-> int64 codes (N, h, w), or (N, k, h, w) of a residual model's first k = plan.stages stages,
    holding one run's images at a time."""
    m = model.manifest
    height, width = plan.size
    stage_axis = () if m.quantizer.stages == 1 else (m.quantizer.stages,)  # quantizer.onnx gives every stage
    codes = np.empty((plan.count, *stage_axis, height // m.downsample, width // m.downsample), np.int64)
    for start in range(0, plan.count, plan.per_run):
        pixels = await load(start, min(plan.count, start + plan.per_run))  # (n, H, W, C) uint8
        if plan.tiles is None:
            codes[start : start + len(pixels)] = await model.encode(to_model_input(pixels))
            continue
        for tile in plan.tiles:  # one image per run: its tiles in turn
            (rows, cols), _, _ = tile.in_pixels(m.downsample)
            part = await model.encode(to_model_input(pixels[:, rows, cols]))  # (1, [S,] h', w')
            core_rows, core_cols = tile.core_in_outer
            codes[start][(..., *tile.core)] = part[0][..., core_rows, core_cols]
    return codes if plan.stages is None or plan.stages == m.quantizer.stages else codes[:, : plan.stages]


@dataclass
class Decoded:
    pngs: list[bytes] | None  # one PNG per grid
    pixels: np.ndarray | None  # uint8 (N, H, W, C)


async def run_decode(model: ServedModel, grids: np.ndarray, plan: RunPlan, pngs: bool = True,
                     pixels: bool = False) -> Decoded:
    """int64 (N, h, w) or (N, k, h, w) -> PNGs and/or uint8 pixels, a run (or a tile) at a time."""
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
                part = await model.decode(np.ascontiguousarray(chunk[..., tile.outer[0], tile.outer[1]]))
                _, (rows, cols), (core_rows, core_cols) = tile.in_pixels(m.downsample)
                images[:, rows, cols] = to_uint8(part[:, :, core_rows, core_cols])
        if out.pixels is not None:
            out.pixels[start : start + len(images)] = images
        if out.pngs is not None:
            out.pngs += await pngs_of_pixels(images)
    return out


# -- whole requests: in turn, memory reserved, within the deadline ---------------------------------


@dataclass
class Encoded:
    codes: np.ndarray  # int64 (N, h, w)
    stream: bytes | None  # the codes as the plan's binary stream; None for JSON


async def run_encode_request(model: ServedModel, plan: RunPlan, uploads: list[ImageUpload], resize: Resize,
                             scope: RunScope, settings: Settings) -> Encoded:
    scope.count_in(model.stats["encode"], plan.count)
    async with scope.running(plan.work(settings)):
        work = run_encode(model, plan, upload_loader(model.manifest, uploads, resize, plan.size, settings.max_pixels))
        codes = await scope.within(work, plan.pixels > WATCH_PIXELS)  # (N, h, w)
        kind = plan.output.stream_kind
        if kind is None:
            return Encoded(codes, None)
        runtime = model.runtime
        prior = runtime.prior.coder.bound(scope.stop) if runtime.prior else None
        # A stream of many codes is coded off the loop; a prior stream always is (its graph runs once per
        # position), and it is inference too: under the deadline, stopped when the client leaves.
        heavy = codes.size > INLINE_CODES or plan.output.requires == "prior"
        coding = off_loop(lambda: encode_stream(codes, kind, model.manifest, runtime.entropy, prior), heavy)
        stream = await (scope.within(coding) if plan.output.requires == "prior" else coding)
        return Encoded(codes, stream)


async def run_decode_request(model: ServedModel, plan: RunPlan, body: GridBody, scope: RunScope,
                             settings: Settings) -> list[bytes]:
    """A decode request's grids (a stream is decoded now, under the deadline) -> one PNG per grid."""
    scope.count_in(model.stats["decode"], plan.count)
    async def work() -> list[bytes]:
        decoded = await run_decode(model, await body.grids(), plan)  # grids: (N, h, w) int64
        assert decoded.pngs is not None
        return decoded.pngs

    async with scope.running(plan.work(settings)):
        return await scope.within(work(), plan.pixels > WATCH_PIXELS)


async def run_sample_request(model: ServedModel, plan: SamplePlan, scope: RunScope,
                             settings: Settings) -> tuple[np.ndarray, list[bytes]]:
    """Grids drawn from the prior (in a thread: a walk through its positions), then decoded."""
    scope.count_in(model.stats["decode"], plan.count)  # the decoder's work; the prior's walk is no v2 model
    prior = model.runtime.prior
    assert prior is not None  # plan_sample refused a model without one

    async def work() -> tuple[np.ndarray, list[bytes]]:
        codes = await off_loop(lambda: prior.sample(plan.count, plan.label, plan.rule, plan.seed, scope.stop),
                               heavy=True)  # (count, h, w)
        decoded = await run_decode(model, codes, plan.decode)
        assert decoded.pngs is not None
        return codes, decoded.pngs

    async with scope.running(plan.decode.work(settings)):
        return await scope.within(work())
