"""model.json's `quantizer` entry: defaults for old manifests, consistency rules, the metadata tag."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract.manifest import GRAPHS, ManifestError, QuantizerSpec, load_manifest
from tests.conftest import ROOT

PLAIN_KEYS = {"vqvae.name", "vqvae.version", "vqvae.graph", "vqvae.codebook_size", "vqvae.code_dim",
              "vqvae.downsample", "vqvae.input", "vqvae.grid", "vqvae.scale"}


def shipped(name: str = "mnist") -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((ROOT / "models" / name / "model.json").read_text())
    return raw


def write(tmp_path: Any, raw: dict[str, Any]) -> Any:
    folder = tmp_path / raw["name"]
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "tiny-imagenet"])
def test_shipped_models_are_plain_vq_and_keep_their_metadata_keys(name: str) -> None:
    manifest = load_manifest(ROOT / "models" / name)
    assert manifest.quantizer.model_dump() == {"kind": "vq", "codebook_size": 512, "stages": 1}
    assert shipped(name)["quantizer"] == {"kind": "vq", "codebook_size": 512, "stages": 1}
    for graph in GRAPHS:
        assert set(manifest.metadata(graph)) == PLAIN_KEYS


def test_a_model_json_without_the_entry_reads_as_plain_vq(tmp_path: Any) -> None:
    raw = shipped()
    del raw["quantizer"]
    manifest = load_manifest(write(tmp_path, raw))
    assert manifest.quantizer == QuantizerSpec(kind="vq", codebook_size=512, stages=1)
    assert manifest.quantizer.plain and set(manifest.metadata("encoder")) == PLAIN_KEYS


@pytest.mark.parametrize("entry, tag", [
    ({"kind": "vq", "codebook_size": 16384, "lookup_dim": 8}, "vq:16384/8"),
    ({"kind": "fsq", "codebook_size": 15360, "levels": [8, 8, 8, 6, 5]}, "fsq:8,8,8,6,5"),
    ({"kind": "rvq", "codebook_size": 512, "stages": 4}, "rvq:512x4"),
])
def test_other_kinds_add_their_tag_to_the_metadata(tmp_path: Any, entry: dict[str, Any], tag: str) -> None:
    raw = {**shipped(), "quantizer": entry, "codebook_size": entry["codebook_size"]}
    manifest = load_manifest(write(tmp_path, raw))
    assert manifest.metadata("decoder") == {**{k: v for k, v in manifest.metadata("decoder").items()
                                               if k in PLAIN_KEYS}, "vqvae.quantizer": tag}
    dumped = json.loads(manifest.model_dump_json())["quantizer"]
    assert dumped == {"stages": 1, **entry}  # levels and lookup_dim only where they apply, never null


@pytest.mark.parametrize("entry, message", [
    ({"kind": "fsq", "codebook_size": 1000}, "levels are given for kind fsq"),
    ({"kind": "vq", "codebook_size": 512, "levels": [8, 8, 8]}, "levels are given for kind fsq"),
    ({"kind": "fsq", "codebook_size": 999, "levels": [8, 5, 5, 5]}, "their product codebook_size"),
    ({"kind": "fsq", "codebook_size": 512, "levels": [8, 1, 64]}, "must each be"),
    ({"kind": "rvq", "codebook_size": 512, "lookup_dim": 8, "stages": 2}, "lookup_dim is for kind vq"),
    ({"kind": "vq", "codebook_size": 512, "stages": 4}, "only rvq has"),
    ({"kind": "rvq", "codebook_size": 512, "stages": 1}, "only rvq has"),
    ({"kind": "pq", "codebook_size": 512}, "quantizer.kind"),
    ({"kind": "vq", "codebook_size": 256}, "differs from codebook_size"),
])
def test_inconsistent_entries_are_refused(tmp_path: Any, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, {**shipped(), "quantizer": entry}))
