"""Files from outside are data, never paths (issue 27): keys that `vqvae-tokenize` makes from tar
member names such as ../../x or /abs/x are written only inside `vqvae-detokenize --out` (escaped
into one file name, or refused with --keep-tree), a shard altered after tokenizing is refused before
anything is decoded, and tar members and labels over their limits are listed, never read."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.server import SHIPPED_MODELS
from tokenizer.__main__ import main as tokenize
from tokenizer.detokenize import main as detokenize

MNIST = SHIPPED_MODELS / "mnist"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tokens_of(source: Path, out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    assert tokenize([str(source), "--model", str(MNIST), "--out", str(out), "--progress", "off", *extra]) == 0
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def escaping(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a work folder, the tokens of a tar whose member names try to leave any output folder)."""
    root = tmp_path_factory.mktemp("escaping")
    names = ["../../evil.png", f"{root}/abs-evil.png", "a//b.png", "ok.png"]
    manifest = tokens_of(tar_gz(root / "keys-0000.tar.gz", {name: png() for name in names}), root / "tokens")
    assert manifest["rows"] == 4 and manifest["failed"] == []
    return root, root / "tokens"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.png")}


def test_keys_are_written_only_inside_out_as_escaped_names(escaping: tuple[Path, Path]) -> None:
    root, tokens = escaping
    out = root / "deep" / "out"
    assert detokenize([str(tokens), "--out", str(out), "--model", str(MNIST)]) == 0
    assert {p.name for p in out.iterdir()} == {"..%2F..%2Fevil.png", "%2F" + "%2F".join(root.parts[1:])
                                               + "%2Fabs-evil.png", "a%2F%2Fb.png", "ok.png"}
    assert files_under(root) == {f"deep/out/{p.name}" for p in out.iterdir()}  # nothing anywhere else


def test_keep_tree_refuses_keys_that_are_not_plain_relative_paths(escaping: tuple[Path, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, tokens = escaping
    out = root / "tree" / "out"
    assert detokenize([str(tokens), "--out", str(out), "--model", str(MNIST), "--keep-tree"]) == 1
    assert files_under(root / "tree") == {"out/ok.png"}
    err = capsys.readouterr().err
    assert all(f"skipped {key!r}" in err for key in ("../../evil", f"{root}/abs-evil", "a//b")), err
    assert not (root / "abs-evil.png").exists()


def copy_of(tokens: Path, to: Path) -> Path:
    to.mkdir()
    for path in tokens.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_an_altered_shard_is_refused_before_anything_is_decoded(escaping: tuple[Path, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root, tokens = escaping
    altered = copy_of(tokens, root / "altered")
    shard = next(altered.glob("shard-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    assert detokenize([str(altered), "--out", str(root / "from-altered"), "--model", str(MNIST)]) == 1
    assert "no longer match the sha256 in manifest.json" in capsys.readouterr().err
    assert files_under(root / "from-altered") == set()


def test_no_verify_decodes_a_shard_whose_hash_differs(escaping: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root, tokens = escaping
    relabelled = copy_of(tokens, root / "relabelled")
    manifest = json.loads((relabelled / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (relabelled / "manifest.json").write_text(json.dumps(manifest))
    assert detokenize([str(relabelled), "--out", str(root / "refused"), "--model", str(MNIST)]) == 1
    assert "no longer match the sha256" in capsys.readouterr().err
    assert detokenize([str(relabelled), "--out", str(root / "unverified"), "--model", str(MNIST),
                       "--no-verify"]) == 0
    assert len(files_under(root / "unverified")) == 4


def test_members_and_labels_over_their_limits_are_listed_not_read(tmp_path: Path) -> None:
    source = tar_gz(tmp_path / "big-0000.tar.gz", {
        "ok.png": png(), "ok.cls": b"1",
        "big.png": bytes(3 << 20), "big.cls": b"2",  # 3 MiB; the limit below is 1
        "label.png": png(), "label.cls": b"7" * 1024,  # a label is at most 32 bytes
        "last.png": png(), "last.cls": b"3",
    })
    manifest = tokens_of(source, tmp_path / "tokens", "--max-file-mb", "1")
    assert manifest["rows"] == 2
    reasons = {f["key"]: f["reason"] for f in manifest["failed"]}
    assert reasons.keys() == {"big", "label"}, reasons
    assert "over the limit of 1048576" in reasons["big"] and "a label is at most 32" in reasons["label"]
