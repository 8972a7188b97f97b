"""Each quantizer kind, trained a few steps and exported, served through every path once: a real
server's /encode (JSON, packed, entropy) and /decode, the v2 tensors, the tokenizer and its
detokenized round trip, the offline codec CLI — a factorised-lookup VQ at 16×, FSQ at 8× and a
residual VQ at 4× (the shipped models of each kind: tests/service/api/test_model_family.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import export.pipeline as pipeline
from codec.__main__ import main as codec
from harness.server import ServerProcess, service_process
from tests.conftest import shared_data_dir
from tokenizer.__main__ import main as tokenize
from tokenizer.detokenize import main as detokenize
from training.model import ModelConfig
from training.train import TrainConfig, main

pytestmark = pytest.mark.slow  # trainings and exports

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64, center=True)
KINDS = {
    "vq-f16": replace(SMALL, downsample=16, codebook_size=2048, lookup_dim=4),
    "fsq-f8": replace(SMALL, downsample=8, quantizer="fsq", fsq_levels="8,8,8,6,5", codebook_size=15360),
    "rvq-f4": replace(SMALL, quantizer="rvq", stages=3),
}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 photo tiles of 64×64 cut from Kodak images (test data, PNG files)."""
    root = tmp_path_factory.mktemp("tiles")
    for photo in ("kodim01", "kodim05", "kodim14", "kodim23"):
        pixels = np.asarray(Image.open(shared_data_dir() / "kodak" / f"{photo}.png").convert("RGB"))
        for i in range(24):
            top, left = 64 * (i // 6), 64 * (i % 6) + 96
            Image.fromarray(pixels[top : top + 64, left : left + 64]).save(root / f"{photo}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def models(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name, cfg in KINDS.items():
        run = tmp_path_factory.mktemp(f"run-{name}")
        main(TrainConfig(dataset=str(tiles), out_dir=str(run), max_steps=20, batch_size=16, warmup_steps=5, crop=32,
                         eval_interval=1000, checkpoint_interval=1000, threads=1, workers=0, progress=False,
                         lr=2e-3, model=cfg))
        pipeline.export_checkpoint(run / "ckpt.pt", root / name, version="0.1.0")
    return root


@pytest.fixture(scope="module")
def served(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with service_process(tmp_path_factory.mktemp("logs"), models_dir=models, default_model="rvq-f4") as server:
        server.wait("/readyz")
        yield server


def photo(height: int, width: int) -> bytes:
    with Image.open(shared_data_dir() / "kodak" / "kodim05.png") as image:
        pixels = np.asarray(image.convert("RGB"))[:height, :width]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(KINDS))
def test_every_route_serves_every_kind(served: ServerProcess, name: str) -> None:
    f = KINDS[name].downsample
    grid = (96 // f, 128 // f)
    with served.client() as client:
        image = photo(96, 128)
        codes = client.post(f"/v1/models/{name}/encode", content=image, headers={"content-type": "image/png"})
        body = codes.json()
        stage_axis = [KINDS[name].stages] if KINDS[name].stages > 1 else []
        assert np.array(body["codes"]).shape == (1, *stage_axis, *grid)
        images = client.post(f"/v1/models/{name}/decode", json={"codes": body["codes"]}).json()["images"]
        for fmt in ("packed", "entropy"):
            stream = client.post(f"/v1/models/{name}/encode?format={fmt}", content=image,
                                 headers={"content-type": "image/png"})
            assert stream.status_code == 200, stream.text
            back = client.post(f"/v1/models/{name}/decode", content=stream.content,
                               headers={"content-type": "application/octet-stream"})
            assert back.json()["images"] == images
        pixels = np.asarray(Image.open(io.BytesIO(image)))[None]
        v2 = client.post(f"/v2/models/{name}-encode/infer", json={"inputs": [{
            "name": "pixels", "shape": list(pixels.shape), "datatype": "UINT8", "data": pixels.reshape(-1).tolist()}]})
        assert v2.json()["outputs"][0]["shape"] == [1, *stage_axis, *grid]
        assert np.array_equal(np.array(v2.json()["outputs"][0]["data"]), np.array(body["codes"]).reshape(-1))


@pytest.mark.parametrize("name", list(KINDS))
def test_the_tokenizer_and_the_codec_cli_take_every_kind(models: Path, tiles: Path, tmp_path: Path,
                                                         name: str) -> None:
    out = tmp_path / "tokens"
    assert tokenize([str(tiles), "--model", str(models / name), "--out", str(out), "--shard-size", "50",
                     "--progress", "off"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    row = pq.read_table(out / manifest["shards"][0]["file"]).slice(0, 1).to_pylist()[0]
    stages = KINDS[name].stages
    assert len(row["codes"]) == stages * row["height"] * row["width"] and row.get("stages", 1) == stages
    assert detokenize([str(out), "--out", str(tmp_path / "restored"), "--model", str(models / name)]) == 0
    assert len(list((tmp_path / "restored").glob("*.png"))) == 96
    stream = tmp_path / "tiles.vqc"
    assert codec(["--models-dir", str(models), "compress", str(tiles), str(stream), "--model", name]) == 0
    assert codec(["--models-dir", str(models), "decompress", str(stream), str(tmp_path / "back")]) == 0
    assert len(list((tmp_path / "back").glob("*.png"))) == 96
