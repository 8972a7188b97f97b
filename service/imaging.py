"""Image bytes <-> pixel arrays, with Pillow used defensively.

Decoding: only the formats we vouch for (PNG, JPEG, BMP, GIF first frame, WebP, TIFF); the pixel
count is checked from the header before any pixel is decoded; Pillow's decompression-bomb guard
stays on (its warning is an error); EXIF orientation is applied; alpha is composited on black;
16-bit greyscale is scaled to 8 bits, not clipped; the result has the model's channel count.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, UndecodableImage

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
