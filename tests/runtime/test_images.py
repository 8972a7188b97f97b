"""Image files <-> pixels: what the header read keeps for the decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from runtime.images import ImageUpload, decode_image, read_header


def _png(text_bytes: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text_bytes:
        info.add_itxt("XML:com.adobe.xmp", "x" * text_bytes, zip=True)  # compresses to almost nothing
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize(("text_bytes", "kept"), [(0, True), (1000, True), (1 << 20, False)])
def test_an_opened_file_is_kept_for_its_decode_only_when_its_metadata_is_small(text_bytes: int, kept: bool) -> None:
    upload = ImageUpload("a.png", _png(text_bytes))
    header = read_header(upload, 1 << 22)
    assert (header.height, header.width) == (28, 28)
    assert (upload.opened is not None) == kept  # 128 such files must not pin 128 MB of expanded text
    pixels = decode_image(upload.data, 1, 1 << 22, upload.label, upload.opened)
    assert pixels.shape == (28, 28, 1) and int(pixels.max()) == 7
