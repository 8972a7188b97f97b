"""What runs on the event loop and what in the thread pool.

Small work runs inline (a thread hop costs more than decoding a 28×28 PNG or coding a digit's
codes); large work goes to the thread pool (Pillow, numpy and onnxruntime release the GIL), so
that the loop keeps serving probes and other requests meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from contract.manifest import Manifest
from runtime.images import ImageUpload, Resize, decode_many, encode_png

T = TypeVar("T")
INLINE_BYTES = 64 * 1024  # encoded input bytes decoded on the event loop, at most
INLINE_DECODE_PIXELS = 4 * 28 * 28  # and decoded pixels: a few digits (a thread hop costs more than they do)
INLINE_PIXELS = 16 * 28 * 28  # output pixels turned into PNGs on the event loop


async def off_loop(work: Callable[[], T], heavy: bool) -> T:
    """Run `work` on the event loop when light (a thread hop costs more), else in the thread pool,
    so that probes and other requests are served meanwhile."""
    return await run_in_threadpool(work) if heavy else work()


async def decode_uploads(m: Manifest, uploads: list[ImageUpload], resize: Resize, size: tuple[int, int],
                         max_pixels: int) -> np.ndarray:
    """decode_many on the event loop for a few small images, else in the thread pool."""
    # The files' own sizes (a resize may shrink them), known when their headers were read.
    pixels = sum(u.opened.size[0] * u.opened.size[1] if u.opened is not None else INLINE_DECODE_PIXELS + 1
                 for u in uploads)
    light = pixels <= INLINE_DECODE_PIXELS and sum(len(u.data) for u in uploads) <= INLINE_BYTES
    return await off_loop(lambda: decode_many(m, uploads, resize, size, max_pixels), heavy=not light)


async def pngs_of_pixels(pixels: np.ndarray) -> list[bytes]:
    """uint8 (N, H, W, C) -> one PNG per image, in the thread pool unless small."""
    light = pixels.shape[0] * pixels.shape[1] * pixels.shape[2] <= INLINE_PIXELS
    return await off_loop(lambda: [encode_png(image) for image in pixels], heavy=not light)
