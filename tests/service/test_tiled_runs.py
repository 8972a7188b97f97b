"""Tiled runs equal whole runs, bit for bit: a real photo and odd sizes, encoded and decoded with a
run slot small enough to cut them into many tiles, against the same model with room for one run."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.server import SHIPPED_MODELS
from runtime.images import ImageUpload
from runtime.tiling import plan_tiles
from service.config import Settings
from service.inference.registry import ModelRegistry, ServedModel
from service.workflows.plan import EncodeQuery, plan_decode, plan_encode
from service.workflows.run import run_decode, run_encode, upload_loader
from tests.conftest import shared_data_dir


def registry(budget_mb: int) -> ModelRegistry:
    settings = Settings(models_dir=SHIPPED_MODELS, memory_budget_mb=budget_mb, warmup_runs=1, threads=1)
    reg = ModelRegistry(settings)
    reg.discover()
    reg.load_all()
    return reg


@pytest.fixture(scope="module")
def small_and_large() -> tuple[ServedModel, ServedModel]:
    """The MNIST model with a 16 MiB budget (about 8,000 pixels per run) and with 8 GiB (one run)."""
    return registry(16).get("mnist"), registry(8192).get("mnist")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(height: int, width: int) -> bytes:
    """A Kodak photo (test data, never trained on), cropped to height×width."""
    with Image.open(shared_data_dir() / "kodak" / "kodim23.png") as image:
        return png(np.asarray(image.convert("L"))[:height, :width].copy())


def encode(model: ServedModel, data: bytes) -> tuple[np.ndarray, bool]:
    uploads = [ImageUpload("photo", data)]
    plan = plan_encode(model, uploads, EncodeQuery(), Settings())
    load = upload_loader(model.manifest, uploads, None, plan.size, Settings().max_pixels)
    return asyncio.run(run_encode(model, plan, load)), plan.tiles is not None


def decode(model: ServedModel, grids: np.ndarray) -> tuple[list[bytes], bool]:
    plan = plan_decode(model, 0, grids.shape, png_response=False)
    pngs = asyncio.run(run_decode(model, grids, plan)).pngs
    assert pngs is not None
    return pngs, plan.tiles is not None


@pytest.mark.parametrize("height, width", [(512, 768), (500, 364), (4, 4000), (2000, 8)])
def test_tiled_encoding_equals_one_whole_run(small_and_large: tuple[ServedModel, ServedModel],
                                             height: int, width: int) -> None:
    small, large = small_and_large
    data = photo(min(height, 512), min(width, 768)) if height <= 512 and width <= 768 else \
        png(np.random.default_rng(height).integers(0, 256, (height, width), dtype=np.uint8))
    tiled, was_tiled = encode(small, data)
    whole, was_whole = encode(large, data)
    assert was_tiled and not was_whole  # the comparison is real: one side cut, the other not
    assert tiled.shape == (1, height // 4, width // 4)
    assert np.array_equal(tiled, whole)


@pytest.mark.parametrize("height, width", [(128, 192), (125, 91), (1, 600), (600, 2)])
def test_tiled_decoding_equals_one_whole_run(small_and_large: tuple[ServedModel, ServedModel],
                                             height: int, width: int) -> None:
    small, large = small_and_large
    grids = np.random.default_rng(width).integers(0, 512, (2, height, width))
    tiled, was_tiled = decode(small, grids)
    whole, was_whole = decode(large, grids)
    assert was_tiled and not was_whole
    for a, b in zip(tiled, whole, strict=True):
        pixels_a, pixels_b = (np.asarray(Image.open(io.BytesIO(p))) for p in (a, b))
        assert pixels_a.shape == (height * 4, width * 4)
        assert np.array_equal(pixels_a, pixels_b)


@pytest.mark.parametrize("height, width, max_cells, halo", [(7, 7, 100, 5), (500, 500, 14883, 5),
                                                            (10, 25000, 60000, 5), (3, 40000, 20000, 5),
                                                            (100, 100, 400, 5), (64, 64, 4096, 0)])
def test_tiles_cover_the_grid_once_within_the_run_size(height: int, width: int, max_cells: int, halo: int) -> None:
    tiles = plan_tiles(height, width, max_cells, halo)
    cover = np.zeros((height, width), int)
    for tile in tiles:
        cover[tile.core] += 1
        rows, cols = tile.outer
        assert (rows.stop - rows.start) * (cols.stop - cols.start) <= max_cells
        # the halo is there wherever the grid goes on
        assert rows.start == max(0, tile.core[0].start - halo) and rows.stop == min(height, tile.core[0].stop + halo)
    assert cover.min() == cover.max() == 1


def test_kodak_is_where_the_tests_expect_it() -> None:
    assert (shared_data_dir() / "kodak" / "kodim23.png").is_file(), Path(shared_data_dir())
