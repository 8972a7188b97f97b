"""vqvae-tokenize: the output contract, resume after a crash, byte-identical reruns and engines (Ray
included), failures listed, codes equal to the service's /encode, and a detokenized round trip."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datasources.idx_files import load_split
from harness.server import SHIPPED_MODELS, ServerProcess
from tokenizer.__main__ import main as tokenize
from tokenizer.detokenize import main as detokenize
from tokenizer.shards import SCHEMA

MNIST = SHIPPED_MODELS / "mnist"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """300 real digits as PNG files in two class folders, one corrupt file and one of a bad size."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = load_split("mnist", "test", data_dir)
    for i in range(300):
        folder = root / ("odd" if labels[i] % 2 else "even")
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    (root / "even" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(root / "odd" / "thirty.png")
    return root


def run(source: Path | str, out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    assert tokenize([str(source), "--model", str(MNIST), "--out", str(out), "--shard-size", "100",
                     "--progress", "off", *extra]) == 0
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_output_contract(photos: Path, tmp_path: Path) -> None:
    manifest = run(photos, tmp_path / "out")
    assert manifest["model"]["name"] == "mnist" and manifest["model"]["version"] == "2.1.0"
    assert set(manifest["model"]["graphs"]) == {"encoder", "quantizer", "decoder"}
    assert manifest["codebook_size"] == 512 and manifest["source"] == str(photos) and manifest["rows"] == 300
    assert len(manifest["shards"]) == 4 and sum(s["rows"] for s in manifest["shards"]) == 300  # 302 inputs, 2 failed
    reasons = {f["key"]: f["reason"] for f in manifest["failed"]}
    assert reasons.keys() == {"even/broken", "odd/thirty"}
    assert reasons["even/broken"].startswith("unreadable") and "multiples of 4" in reasons["odd/thirty"]
    table = pq.read_table(tmp_path / "out" / manifest["shards"][0]["file"])
    assert table.schema.equals(SCHEMA)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["key"] == "even/0001" and row["label"] == 0 and (row["height"], row["width"]) == (7, 7)
    assert len(row["codes"]) == 49 and all(0 <= c < 512 for c in row["codes"])


def test_codes_equal_the_services_encode(photos: Path, tmp_path: Path, server: ServerProcess) -> None:
    manifest = run(photos, tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / manifest["shards"][0]["file"]).slice(0, 20).to_pylist()
    files = [("images", (r["key"], (photos / f"{r['key']}.png").read_bytes(), "image/png")) for r in rows]
    served = httpx.post(server.url + "/encode", files=files, timeout=60).json()["codes"]
    assert [r["codes"] for r in rows] == [np.array(g).reshape(-1).tolist() for g in served]


@pytest.mark.slow
def test_reruns_and_engines_give_the_same_bytes(photos: Path, tmp_path: Path) -> None:
    first = run(photos, tmp_path / "a")
    again = run(photos, tmp_path / "b", "--workers", "2")
    ray = run(photos, tmp_path / "c", "--engine", "ray", "--workers", "2")
    assert first["shards"] == again["shards"] == ray["shards"]
    assert first["failed"] == again["failed"] == ray["failed"]


def test_a_killed_run_resumes_to_the_same_output(photos: Path, tmp_path: Path) -> None:
    whole = run(photos, tmp_path / "whole")
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole", out)
    # What a crash leaves: one shard complete, one written aside but never renamed, one missing,
    # and a complete-looking shard whose file was damaged after its record was written.
    (out / "shard-00001.parquet").rename(out / "shard-00001.parquet.part")
    (out / "shard-00001.json").unlink()
    (out / "shard-00002.parquet").write_bytes(b"torn")
    (out / "manifest.json").unlink()
    kept = (out / "shard-00000.parquet").stat().st_mtime_ns
    resumed = run(photos, out)
    assert resumed["shards"] == whole["shards"]
    assert (out / "shard-00000.parquet").stat().st_mtime_ns == kept  # the complete shard was not redone
    assert not list(out.glob("*.part")) or (out / "shard-00001.parquet").is_file()


def test_detokenize_round_trip(photos: Path, tmp_path: Path, server: ServerProcess) -> None:
    run(photos, tmp_path / "tokens")
    assert detokenize([str(tmp_path / "tokens"), "--out", str(tmp_path / "png"), "--model", str(MNIST),
                       "--keep-tree"]) == 0
    restored = sorted((tmp_path / "png").rglob("*.png"))
    assert len(restored) == 300
    key = "odd/0002"  # decoded from its tokens equals the service's decode of the same codes
    codes = httpx.post(server.url + "/encode", content=(photos / f"{key}.png").read_bytes(),
                       headers={"content-type": "image/png"}).json()["codes"][0]
    png = httpx.post(server.url + "/decode", json={"codes": codes}, headers={"accept": "image/png"}).content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                          np.asarray(Image.open(tmp_path / "png" / f"{key}.png")))


def test_built_in_sets_and_clear_errors(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = run("fashion-mnist:test", tmp_path / "fashion", "--data-dir", str(data_dir), "--shard-size", "5000")
    assert manifest["rows"] == 10000 and manifest["failed"] == []
    assert pq.read_table(tmp_path / "fashion" / "shard-00000.parquet").slice(0, 1).to_pylist()[0]["key"] == "test/00000"
    (tmp_path / "empty").mkdir()
    assert tokenize([str(tmp_path / "empty"), "--model", str(MNIST), "--out", str(tmp_path / "x"), "--progress",
                     "off"]) == 1
    assert "no images" in capsys.readouterr().err
