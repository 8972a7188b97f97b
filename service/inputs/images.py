"""Image bytes <-> pixel arrays and model batches, with Pillow used defensively.

Decoding: only the formats we vouch for (PNG, JPEG, BMP, GIF first frame, WebP, TIFF); the pixel
count is checked from the header before any pixel is decoded; Pillow's decompression-bomb guard
stays on (its warning is an error); EXIF orientation is applied; alpha is composited on black;
16-bit greyscale is scaled to 8 bits, not clipped; the result has the model's channel count.

Small inputs are handled on the event loop (a thread hop costs more than decoding a 28×28 PNG);
large ones go to the thread pool so that the loop keeps serving.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from contract.manifest import Manifest
from service.errors import ImageTooLarge, UndecodableImage, UnsupportedSize
from service.inputs.bodies import ImageUpload

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION = 0x0112  # the EXIF tag


def _open(data: bytes, max_pixels: int, label: str) -> Image.Image:
    if not data:
        raise UndecodableImage(f"{label} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise UndecodableImage(
            f"{label} is not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{label} is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "malformed header"
        raise UndecodableImage(f"{label} could not be read: malformed image header") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{label} is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")
    return image


def _to_channels(image: Image.Image, channels: int) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, channels); alpha composited on black."""
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)  # (H, W) in 0..65535
        grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode_image(data: bytes, channels: int, max_pixels: int, label: str = "image") -> np.ndarray:
    """Encoded image bytes -> uint8 pixels (H, W, channels). Raises UndecodableImage / ImageTooLarge."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data, max_pixels, label)
        try:
            image.seek(0)  # animated GIF / multi-page TIFF: the first frame
            if image.getexif().get(ORIENTATION, 1) != 1:  # what exif_transpose looks at, without its copy
                image = ImageOps.exif_transpose(image) or image
            return _to_channels(image, channels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"{label} is too large: {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
            raise UndecodableImage(f"{label} could not be decoded: the data is truncated or corrupt") from exc


def resize_to(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) -> (height, width, C), area-averaged when shrinking (Pillow's BOX/LANCZOS)."""
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    resized = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = np.asarray(resized, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W, C) with C in {1, 3} -> PNG bytes."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # small images: favour speed over a few bytes
    return buffer.getvalue()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), rounded as PNG stores it."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


# -- model batches ---------------------------------------------------------------------------


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
