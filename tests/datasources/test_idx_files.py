"""IDX reading on the real files, clear errors on bad ones, and the downloader against a local mirror."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from datasources import DataError
from datasources.idx_files import DATASETS, download, load_split, main, md5_of


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_reads_the_real_files(data_dir: Path, dataset: str, split: str, count: int) -> None:
    images, labels = load_split(dataset, split, data_dir)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and set(np.unique(labels)) == set(range(10))
    assert 20 < images.mean() < 90  # real pictures: mostly dark background, some ink


def test_reads_uncompressed_files_too(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / stem).write_bytes(gzip.decompress((data_dir / "mnist" / f"{stem}.gz").read_bytes()))
    images, _ = load_split("mnist", "test", tmp_path)
    reference, _ = load_split("mnist", "test", data_dir)
    assert np.array_equal(images, reference)


def _copy_test_split(data_dir: Path, target: Path) -> Path:
    folder = target / "mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / "mnist" / name, folder / name)
    return folder


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))


@pytest.mark.parametrize(
    "file, edit, message",
    [
        ("t10k-images-idx3-ubyte.gz", lambda b: b"\x00\x00\x08\x01" + b[4:], "wrong magic"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:-100], "truncated"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:10], "truncated header"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b + b"\x00", "trailing bytes"),
        ("t10k-labels-idx1-ubyte.gz", lambda b: b[:4] + (9999).to_bytes(4, "big") + b[8:-1], "count mismatch"),
    ],
)
def test_bad_files_get_a_clear_error(data_dir: Path, tmp_path: Path, file: str, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = _copy_test_split(data_dir, tmp_path)
    _rewrite(folder / file, edit)
    with pytest.raises(DataError, match=message) as info:
        load_split("mnist", "test", tmp_path)
    assert "t10k-images" in str(info.value) or file in str(info.value)


def test_corrupt_gzip_is_a_data_error(data_dir: Path, tmp_path: Path) -> None:
    folder = _copy_test_split(data_dir, tmp_path)
    raw = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read"):
        load_split("mnist", "test", tmp_path)


def test_missing_files_say_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found.*python -m datasources download --dataset fashion-mnist"):
        load_split("fashion-mnist", "test", tmp_path)


def test_data_dir_comes_from_the_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQVAE_DATA_DIR", str(data_dir))
    images, _ = load_split("mnist", "test")
    assert len(images) == 10000


@pytest.fixture()
def local_mirror(data_dir: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ../shared/data/mnist, like a standard mirror does."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_dir / "mnist"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_fetches_and_verifies_every_file(local_mirror: str, tmp_path: Path) -> None:
    dead_mirror = "http://127.0.0.1:9/"  # nothing listens on the discard port: the next mirror is tried
    folder = download("mnist", tmp_path, mirrors=(dead_mirror, local_mirror))
    for name, expected in DATASETS["mnist"].md5.items():
        assert md5_of(folder / name) == expected
    images, labels = load_split("mnist", "test", tmp_path)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert not list(folder.glob("*.part"))


def test_download_rejects_a_file_with_the_wrong_md5(local_mirror: str, tmp_path: Path) -> None:
    # The local mirror serves MNIST; asking it for Fashion-MNIST yields files with other MD5s.
    with pytest.raises(DataError, match="MD5 mismatch"):
        download("fashion-mnist", tmp_path, mirrors=(local_mirror,))
    assert not list((tmp_path / "fashion-mnist").iterdir())  # nothing unverified is kept


def test_download_cli(local_mirror: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "--dataset", "mnist", "--data-dir", str(tmp_path), "--mirror", local_mirror]) == 0
    assert "mnist: verified" in capsys.readouterr().out
    assert main(["download", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--mirror", local_mirror]) == 1
    assert "MD5 mismatch" in capsys.readouterr().err
