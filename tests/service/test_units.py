"""Small pure pieces of the service, with their edge cases."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from service.api.request_scope import prefers_png
from service.errors import BadRequest, InvalidCodes, TooManyImages
from service.inference.runtime import CPU, CUDA, provider_list
from service.inputs.bodies import ImageUpload, parse_json
from service.inputs.grids import parse_code_grids
from service.inputs.images import decode_image, read_header


@pytest.mark.parametrize(
    "choice, available, expected",
    [("cpu", [CUDA, CPU], [CPU]), ("auto", [CUDA, CPU], [CUDA, CPU]), ("auto", [CPU], [CPU]),
     ("cuda", [CPU], [CUDA, CPU]), ("cuda", [CUDA, CPU], [CUDA, CPU])],
)
def test_provider_list_is_explicit(choice: str, available: list[str], expected: list[str]) -> None:
    assert provider_list(choice, available) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "accept, png",
    [("image/png", True), ("application/json", False), ("", False), ("*/*", False),
     ("image/png, application/json", True), ("application/json, image/png;q=0.5", False),
     ("image/png;q=0", False), ("image/png;q=bogus", False), ("text/html, image/png;q=0.9", True)],
)
def test_prefers_png(accept: str, png: bool) -> None:
    assert prefers_png(accept) is png


def test_one_grid_or_many() -> None:
    grid = [[1, 2], [3, 4]]
    one, single = parse_code_grids({"codes": grid}, 8, 10)
    many, plural = parse_code_grids({"codes": [grid, grid]}, 8, 10)
    assert single and not plural
    assert one.shape == (1, 2, 2) and many.shape == (2, 2, 2) and one.dtype == np.int64


@pytest.mark.parametrize(
    "codes, message",
    [([[1, 2], [3, 8]], r"codes\[1\]\[1\] = 8: codes must be in \[0, 8\)"),
     ([[[1, 2]], [[3, True]]], r"codes\[1\]\[0\]\[1\] = true: expected an int"),
     ([[1, 2], 3], r"codes\[1\] = 3: expected a non-empty list of ints"),
     ([[1, 2], [3]], r"codes\[1\] has 1 entries but codes\[0\] has 2")],
)
def test_the_first_offending_position_is_named(codes: object, message: str) -> None:
    with pytest.raises(InvalidCodes, match=message):
        parse_code_grids({"codes": codes}, 8, 10)


def test_limits_and_shapes_of_json() -> None:
    with pytest.raises(TooManyImages):
        parse_code_grids({"codes": [[[1]]] * 11}, 8, 10)
    with pytest.raises(BadRequest):
        parse_code_grids([1], 8, 10)
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json(b"[" * 50 + b"]" * 50)
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(b"[" * 100000 + b"]" * 100000)


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
