"""MNIST-format data sets: IDX reading with clear errors, where the files live, and a downloader.

Numpy only (no torch), so tests and tools that need real digits can import it anywhere.

Layout: <data dir>/<dataset>/<standard file name>[.gz], e.g. ../shared/data/mnist/t10k-images-idx3-ubyte.gz.
The data dir comes from --data-dir, else $VQVAE_DATA_DIR, else the user cache dir.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasources import DataError

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
BUILTIN_CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # gzipped file name -> published MD5


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


def default_data_dir() -> Path:
    if env := os.environ.get("VQVAE_DATA_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vqvae-codec" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir) if data_dir else default_data_dir()


def _spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def _find_file(folder: Path, stem: str, dataset: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder / (stem + '.gz')} not found (nor the uncompressed {stem}). "
        f"Download it with: python -m datasources download --dataset {dataset} --data-dir {folder.parent} "
        f"(or set VQVAE_DATA_DIR / --data-dir to where the files are)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file: labels (n,) for LABEL_MAGIC, images (n, rows, cols) for IMAGE_MAGIC."""
    data = _read_bytes(path)
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, need {header_len})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong magic number {found} (expected {magic}); not an IDX file of this kind")
    dims = [int.from_bytes(data[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    body = len(data) - header_len
    if body != expected:
        problem = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: header says {dims} = {expected} bytes of data, file has {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def load_split(
    dataset: str, split: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """-> images (n, 28, 28) uint8, labels (n,) uint8, both checked against each other."""
    _spec(dataset)
    if split not in SPLIT_PREFIX:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    folder = resolve_data_dir(data_dir) / dataset
    prefix = SPLIT_PREFIX[split]
    image_path = _find_file(folder, f"{prefix}-images-idx3-ubyte", dataset)
    label_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte", dataset)
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{image_path}: count mismatch: {len(images)} images but {label_path.name} has {len(labels)} labels"
        )
    return images, labels


# -- download --------------------------------------------------------------------------------


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> None:
    # Write next to the target and rename, so an interrupted download never leaves a partial file.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http/https mirrors)
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    tmp.write(chunk)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    Path(tmp.name).replace(target)


def download(dataset: str, data_dir: str | os.PathLike[str] | None = None,
             mirrors: tuple[str, ...] | None = None, timeout: float = 60.0) -> Path:
    """Fetch the four files of `dataset` into <data dir>/<dataset>/, verifying every MD5."""
    spec = _spec(dataset)
    folder = resolve_data_dir(data_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in spec.md5.items():
        target = folder / name
        if target.is_file() and md5_of(target) == expected:
            continue
        errors = []
        for mirror in mirrors or spec.mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _fetch(url, target, timeout)
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            found = md5_of(target)
            if found == expected:
                break
            target.unlink()
            errors.append(f"{url}: MD5 mismatch (got {found}, expected {expected})")
        else:
            raise DataError(f"{name}: could not download a valid copy:\n  " + "\n  ".join(errors))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasources", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("download", help="download a data set and verify its MD5s")
    get.add_argument("--dataset", choices=sorted(DATASETS), action="append",
                     help="data set to fetch (repeatable; default: all)")
    get.add_argument("--data-dir", help="target data dir (default: $VQVAE_DATA_DIR or the user cache dir)")
    get.add_argument("--mirror", action="append", help="base URL to fetch from instead of the standard mirrors")
    args = parser.parse_args(argv)
    try:
        for dataset in args.dataset or sorted(DATASETS):
            folder = download(dataset, args.data_dir, tuple(args.mirror) if args.mirror else None)
            print(f"{dataset}: verified in {folder}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
