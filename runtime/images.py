"""Image bytes <-> pixel arrays and model batches, with Pillow used defensively.

Decoding: only the formats we vouch for (PNG, JPEG, BMP, GIF first frame, WebP, TIFF); the pixel
count is checked from the header before any pixel is decoded; Pillow's decompression-bomb guard
stays on (its warning is an error); EXIF orientation is applied; alpha is composited on black;
16-bit greyscale is scaled to 8 bits, not clipped; the result has the model's channel count.

Shared by the service, the tokenizer, the codec CLI and the benchmarks; synchronous (the service
decides what runs on its event loop and what in its thread pool: service/offload.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract.manifest import Manifest
from runtime import ImageTooLarge, UndecodableImage, UnsupportedSize

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION = 0x0112  # the EXIF tag
XMP = "XML:com.adobe.xmp"  # Pillow also reads an orientation from XMP
# Pillow's decompression-bomb warning is an error here, for the whole process, set once: a
# warnings.catch_warnings() around every decode cost about a fifth of a digit's decode, and is not
# thread-safe besides (decodes run in the thread pool).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@dataclass
class ImageUpload:
    """One encoded image file as it arrived, not decoded yet."""

    label: str  # how the error messages name it: "images[2] (cat.png)"
    data: bytes
    # The file as opened for its header (nothing decoded yet), kept so that decoding does not parse
    # the header again; taken (set back to None) by the decode.
    opened: Image.Image | None = field(default=None, compare=False, repr=False)


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
    wanted = "L" if channels == 1 else "RGB"
    if image.mode != wanted:  # convert() copies even when the mode is already right
        image = image.convert(wanted)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode_image(data: bytes, channels: int, max_pixels: int, label: str = "image",
                 opened: Image.Image | None = None) -> np.ndarray:
    """Encoded image bytes (or the file already `opened` from them by read_header) -> uint8 pixels
    (H, W, channels). Raises UndecodableImage / ImageTooLarge."""
    image = opened if opened is not None else _open(data, max_pixels, label)
    try:
        image.seek(0)  # animated GIF / multi-page TIFF: the first frame
        if _orientation(image) != 1:
            image = ImageOps.exif_transpose(image) or image
        return _to_channels(image, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{label} is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
        raise UndecodableImage(f"{label} could not be decoded: the data is truncated or corrupt") from exc


def _orientation(image: Image.Image) -> int:
    """What exif_transpose looks at, without its copy. A PNG's EXIF may follow its pixels, so it is
    loaded first; once loaded, a PNG with neither EXIF nor XMP has no orientation (getexif would
    parse nothing, at a cost comparable to the digit's decode)."""
    if image.format == "PNG":
        image.load()
        if "exif" not in image.info and XMP not in image.info:
            return 1
    return int(image.getexif().get(ORIENTATION, 1))


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


def accepted_sizes(m: Manifest) -> str:
    if m.fully_convolutional:
        return (f"sides that are multiples of {m.downsample} (e.g. {m.input.height}×{m.input.width}, "
                f"giving a (H/{m.downsample})×(W/{m.downsample}) grid)")
    return f"exactly {m.input.height}×{m.input.width}"


def check_image_size(m: Manifest, height: int, width: int, label: str) -> None:
    if m.fully_convolutional:  # a side of 0 is a multiple of anything, but no image
        ok = height > 0 and width > 0 and height % m.downsample == 0 and width % m.downsample == 0
    else:
        ok = (height, width) == (m.input.height, m.input.width)
    if not ok:
        raise UnsupportedSize(
            f"{label} is {height}×{width}; model {m.name!r} accepts {accepted_sizes(m)}. "
            f"Add ?resize=native to resize images to {m.input.height}×{m.input.width} first"
        )


# What decoding holds at its peak, per pixel, by the file's mode: Pillow's image (1 byte per pixel
# for L, P and 1; 2 for 16-bit; 4 for every other mode), a copy for EXIF rotation, then the steps
# of _to_channels: float64 for 16-bit, the black background and alpha composite, the conversion and
# the final array.
DECODE_BYTES_PER_PIXEL = {"1": 4, "L": 4, "P": 20, "I;16": 22, "I;16B": 22, "I;16L": 22, "I;16N": 22, "I": 24,
                          "F": 24, "RGBA": 28, "LA": 28, "PA": 28}
DECODE_BYTES_OTHER_MODES = 16  # RGB, YCbCr, CMYK, LAB, HSV: 4-byte pixels, one conversion, the array


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image says about itself before any pixel is decoded."""

    label: str
    height: int  # as decoded: EXIF orientation applied where the header carries it
    width: int
    mode: str  # Pillow's mode of the decoded file, e.g. "L", "RGB", "I;16"

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def decode_bytes(self) -> int:
        """The most decoding this file holds at once (before any resize)."""
        return self.pixels * DECODE_BYTES_PER_PIXEL.get(self.mode, DECODE_BYTES_OTHER_MODES)


KEEP_OPENED_METADATA_BYTES = 64 * 1024  # an opened file kept for its decode holds at most this much text


def _metadata_bytes(image: Image.Image) -> int:
    """What the opened file holds besides its header: PNG text chunks (expanded), EXIF, ICC, XMP."""
    return sum(len(v) for v in image.info.values() if isinstance(v, str | bytes))


def read_header(upload: ImageUpload, max_pixels: int) -> ImageHeader:
    """Size from the header alone (413 over max_pixels, 400 when unreadable); nothing is decoded, and
    the opened file stays with the upload for its decode. A PNG's EXIF may follow its pixel data,
    and reading it would decode them: a PNG's orientation is read only when the header already has
    it (a rotation swaps H and W, not their product)."""
    image = _open(upload.data, max_pixels, upload.label)
    width, height = image.size
    try:
        exif_in_header = image.format != "PNG" or "exif" in image.info
        if exif_in_header and image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # a quarter turn
            width, height = height, width
    except (OSError, ValueError, SyntaxError):
        pass  # an unreadable EXIF block: decoding will say so, or ignore it as exif_transpose does
    if _metadata_bytes(image) <= KEEP_OPENED_METADATA_BYTES:
        upload.opened = image  # else dropped now: only the image being decoded holds its metadata
    return ImageHeader(upload.label, height, width, image.mode)


def encode_size(m: Manifest, headers: list[ImageHeader], resize: Resize) -> tuple[int, int]:
    """The one (H, W) every image of the request is encoded at; 422 before any decoding otherwise."""
    size: tuple[int, int] | None = None
    for header in headers:
        this = (m.input.height, m.input.width) if resize == "native" else (header.height, header.width)
        check_image_size(m, *this, header.label)
        if size is not None and this != size:
            raise UnsupportedSize(f"{header.label} is {this[0]}×{this[1]} but {headers[0].label} is "
                                  f"{size[0]}×{size[1]}; images in one request must share a size "
                                  "(or add ?resize=native)")
        size = this
    if size is None:
        raise UnsupportedSize("no images to encode")
    return size


def decode_at(m: Manifest, upload: ImageUpload, resize: Resize, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """One encoded image -> uint8 (H, W, C) at the request's size (the header's promise, checked)."""
    opened, upload.opened = upload.opened, None  # the decode below is the opened file's only use
    pixels = decode_image(upload.data, m.input.channels, max_pixels, upload.label, opened)  # (H, W, C) uint8
    if resize == "native":
        pixels = resize_to(pixels, m.input.height, m.input.width)
    if pixels.shape[:2] != size:
        raise UnsupportedSize(f"{upload.label} is {pixels.shape[0]}×{pixels.shape[1]} once decoded, but the request's "
                              f"images are {size[0]}×{size[1]}; images in one request must share a size")
    return pixels


def decode_many(m: Manifest, uploads: list[ImageUpload], resize: Resize, size: tuple[int, int],
                max_pixels: int) -> np.ndarray:
    """Encoded images -> uint8 (N, H, W, C), one at a time (only one image's decode transients live)."""
    out = np.empty((len(uploads), *size, m.input.channels), np.uint8)
    for i, upload in enumerate(uploads):
        out[i] = decode_at(m, upload, resize, size, max_pixels)
    return out


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
