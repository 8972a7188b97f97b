"""The codec operations on decoded inputs, independent of HTTP: size policy, batching, PNG out.

CPU-bound throughout (Pillow, numpy, onnxruntime): routes call these off the event loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from service.errors import ImageTooLarge, UnsupportedSize
from service.imaging import decode_image, encode_png, resize_to, to_uint8
from service.manifest import Manifest
from service.payloads import ImageUpload
from service.runtime import ModelRuntime

Resize = Literal["native"] | None


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
    batch = np.stack(arrays).transpose(0, 3, 1, 2)  # (N, C, H, W) uint8
    return batch.astype(np.float32) / np.float32(255.0)


def encode_uploads(model: ModelRuntime, uploads: list[ImageUpload], resize: Resize, max_pixels: int) -> np.ndarray:
    """-> int64 codes (N, h, w)."""
    return model.encode(images_to_batch(model.manifest, uploads, resize, max_pixels))


def decode_to_png(model: ModelRuntime, grids: np.ndarray) -> list[bytes]:
    """int64 (N, h, w) -> one PNG per grid."""
    images = to_uint8(model.decode(grids))  # (N, H, W, C) uint8
    return [encode_png(image) for image in images]
