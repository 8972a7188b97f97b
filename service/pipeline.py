"""The codec operations on decoded inputs, independent of HTTP: size policy, image batches, PNG out.

Small inputs are handled on the event loop (a thread hop costs more than decoding a 28×28 PNG);
large ones go to the thread pool so that the loop keeps serving.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.errors import ImageTooLarge, UnsupportedSize
from service.imaging import decode_image, encode_png, resize_to, to_uint8
from service.manifest import Manifest
from service.payloads import ImageUpload

Resize = Literal["native"] | None
INLINE_BYTES = 64 * 1024  # encoded input bytes handled on the event loop
INLINE_PIXELS = 16 * 28 * 28  # output pixels turned into PNGs on the event loop


def accepted_sizes(m: Manifest) -> str:
    if m.fully_convolutional:
        return (f"sides that are multiples of {m.downsample} (e.g. {m.input.height}×{m.input.width}, "
                f"giving a (H/{m.downsample})×(W/{m.downsample}) grid)")
    return f"exactly {m.input.height}×{m.input.width}"


def check_image_size(m: Manifest, height: int, width: int, label: str) -> None:
    if m.fully_convolutional:
        ok = height % m.downsample == 0 and width % m.downsample == 0
    else:
        ok = (height, width) == (m.input.height, m.input.width)
    if not ok:
        raise UnsupportedSize(
            f"{label} is {height}×{width}; model {m.name!r} accepts {accepted_sizes(m)}. "
            f"Add ?resize=native to resize images to {m.input.height}×{m.input.width} first"
        )


def check_grid_size(m: Manifest, height: int, width: int, max_pixels: int) -> None:
    if not m.fully_convolutional and (height, width) != (m.grid.height, m.grid.width):
        raise UnsupportedSize(f"grids are {height}×{width}; model {m.name!r} decodes exactly "
                              f"{m.grid.height}×{m.grid.width} grids")
    pixels = height * width * m.downsample**2
    if pixels > max_pixels:
        raise ImageTooLarge(f"a {height}×{width} grid decodes to {pixels} pixels; the limit is {max_pixels}")


def images_to_batch(m: Manifest, uploads: list[ImageUpload], resize: Resize, max_pixels: int) -> np.ndarray:
    """Encoded images -> float32 (N, C, H, W) in [0, 1]; every image must end up the same size."""
    arrays: list[np.ndarray] = []
    for upload in uploads:
        pixels = decode_image(upload.data, m.input.channels, max_pixels, upload.label)  # (H, W, C) uint8
        if resize == "native":
            pixels = resize_to(pixels, m.input.height, m.input.width)
        check_image_size(m, pixels.shape[0], pixels.shape[1], upload.label)
        if arrays and pixels.shape != arrays[0].shape:
            raise UnsupportedSize(
                f"{upload.label} is {pixels.shape[0]}×{pixels.shape[1]} but {uploads[0].label} is "
                f"{arrays[0].shape[0]}×{arrays[0].shape[1]}; images in one request must share a size "
                "(or add ?resize=native)"
            )
        arrays.append(pixels)
    stacked = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # (N, H, W, C) uint8
    return stacked.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)  # (N, C, H, W)


async def decode_uploads(m: Manifest, uploads: list[ImageUpload], resize: Resize, max_pixels: int) -> np.ndarray:
    if sum(len(u.data) for u in uploads) <= INLINE_BYTES:
        return images_to_batch(m, uploads, resize, max_pixels)
    return await run_in_threadpool(images_to_batch, m, uploads, resize, max_pixels)


def pngs_of(images: np.ndarray) -> list[bytes]:
    """float (N, C, H, W) in [0, 1] -> one PNG per image."""
    return [encode_png(image) for image in to_uint8(images)]


async def to_pngs(images: np.ndarray) -> list[bytes]:
    if images.shape[0] * images.shape[2] * images.shape[3] <= INLINE_PIXELS:
        return pngs_of(images)
    return await run_in_threadpool(pngs_of, images)
