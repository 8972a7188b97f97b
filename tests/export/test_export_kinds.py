"""Every quantizer kind and downsampling trains a few steps on real photos and exports through the
parity gate: model.json's quantizer entry and metadata, the graphs' shapes (rvq: [N, S, h, w] codes,
any first k stages decoded), fewer stages equal to PyTorch's, and exact tiling halos at 8× and 16×."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import export.pipeline as pipeline
from contract.manifest import GRAPHS, Manifest, load_manifest
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import ModelConfig
from training.train import TrainConfig, main

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=64, center=True)
KINDS = {
    "vq-f8": (replace(SMALL, downsample=8), None),
    "vq-lookup-f16": (replace(SMALL, downsample=16, codebook_size=512, lookup_dim=4), "vq:512/4"),
    "fsq-f8": (replace(SMALL, downsample=8, quantizer="fsq", fsq_levels="8,5,5,5"), "fsq:8,5,5,5"),
    "rvq-f4": (replace(SMALL, quantizer="rvq", stages=3), "rvq:64x3"),
}


@pytest.fixture(scope="module")
def tiles(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 real 64×64 photo tiles, cut from four Kodak images and saved as PNG files."""
    root = tmp_path_factory.mktemp("tiles")
    for photo in ("kodim01", "kodim05", "kodim14", "kodim23"):
        pixels = np.asarray(Image.open(data_dir / "kodak" / f"{photo}.png").convert("RGB"))
        for i in range(24):
            top, left = 64 * (i // 6), 64 * (i % 6) + 96
            Image.fromarray(pixels[top : top + 64, left : left + 64]).save(root / f"{photo}_{i:02d}.png")
    return root


@pytest.fixture(scope="module", params=list(KINDS))
def exported(request: pytest.FixtureRequest, tiles: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, Path, Path]:
    name = request.param
    run = tmp_path_factory.mktemp(f"run-{name}")
    main(TrainConfig(dataset=str(tiles), out_dir=str(run), max_steps=30, batch_size=16, warmup_steps=5, crop=32,
                     eval_interval=1000, checkpoint_interval=1000, threads=1, workers=0, progress=False,
                     lr=2e-3, model=KINDS[name][0]))
    out = tmp_path_factory.mktemp("models") / name
    pipeline.export_checkpoint(run / "ckpt.pt", out, version="0.1.0")  # raises if the parity gate fails
    return name, run / "ckpt.pt", out


def sessions(model_dir: Path) -> dict[str, ort.InferenceSession]:
    return {g: ort.InferenceSession(str(model_dir / f"{g}.onnx"), providers=["CPUExecutionProvider"]) for g in GRAPHS}


@pytest.mark.slow
def test_manifest_describes_the_quantizer_and_the_downsampling(exported: tuple[str, Path, Path]) -> None:
    name, _, out = exported
    cfg, tag = KINDS[name]
    manifest = load_manifest(out)
    assert manifest.downsample == cfg.downsample and manifest.grid.height == 64 // cfg.downsample
    assert manifest.quantizer.kind == cfg.quantizer and manifest.code_dim == cfg.code_dim
    assert manifest.quantizer.stages == (cfg.stages if cfg.quantizer == "rvq" else 1)
    assert manifest.quantizer.codebook_size == manifest.codebook_size
    if cfg.quantizer == "fsq":
        assert manifest.quantizer.levels == [8, 5, 5, 5] and manifest.codebook_size == 1000
    assert manifest.quantizer.lookup_dim == (cfg.lookup_dim or None)
    for graph, session in sessions(out).items():
        meta = session.get_modelmeta().custom_metadata_map
        assert meta == manifest.metadata(graph) and meta.get("vqvae.quantizer") == tag
        assert meta["vqvae.downsample"] == str(cfg.downsample)
    assert manifest.parity["decoder_stage_counts"] == manifest.quantizer.stages
    assert manifest.parity["mismatches_outside_ties"] == 0 and manifest.parity["large_images"] == 2
    assert manifest.resources is not None  # tiles with its halos equal a whole run (checked at export)
    assert manifest.entropy_model is not None  # every kind: one static model per stage, no K×K tables past 1,024


@pytest.mark.slow
def test_graph_shapes_and_every_stage_count(exported: tuple[str, Path, Path]) -> None:
    name, checkpoint, out = exported
    cfg, _ = KINDS[name]
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    run = sessions(out)
    f, stages = cfg.downsample, model.quantizer.stages
    image = np.random.default_rng(0).random((3, 3, 2 * f * 3, f * 5), dtype=np.float32)  # (N, C, H, W)
    latent = run["encoder"].run(None, {"image": image})[0]
    codes = run["quantizer"].run(None, {"latent": latent})[0]
    assert latent.shape == (3, cfg.code_dim, 6, 5)
    assert codes.shape == ((3, stages, 6, 5) if stages > 1 else (3, 6, 5)) and codes.dtype == np.int64
    with torch.no_grad():
        expected = model.quantizer.quantize_indices(torch.from_numpy(latent))
        ties = model.quantizer.near_ties(torch.from_numpy(latent))
    if stages > 1:
        ties = ties[:, None].expand_as(expected)
    assert bool(((torch.from_numpy(codes) == expected) | ties).all())
    for k in range(1, stages + 1) if stages > 1 else [None]:  # rvq: fewer stages decode as PyTorch's do
        chosen = codes if k is None else np.ascontiguousarray(codes[:, :k])
        decoded = run["decoder"].run(None, {"indices": chosen})[0]
        with torch.no_grad():
            reference = model.decode_from_indices(torch.from_numpy(chosen)).numpy()
        assert decoded.shape == image.shape and np.abs(decoded - reference).max() <= 1e-4, k


def test_old_manifests_read_as_plain_vq(tmp_path: Path) -> None:
    raw = {"format_version": 1, "name": "old", "version": "1", "codebook_size": 512, "code_dim": 64, "downsample": 4,
           "fully_convolutional": True, "input": {"channels": 1, "height": 28, "width": 28},
           "grid": {"height": 7, "width": 7}, "metrics": {},
           "files": {g: {"path": f"{g}.onnx", "sha256": "0" * 64} for g in GRAPHS},
           "training": {"command": "", "seed": 0, "steps": 1, "seconds": 1.0, "dataset": "mnist"}}
    manifest = Manifest.model_validate(raw)
    assert manifest.quantizer.model_dump() == {"kind": "vq", "codebook_size": 512, "stages": 1}
    assert "vqvae.quantizer" not in manifest.metadata("encoder")
