"""Shared fixtures: where the real data sets are, and real MNIST digits."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasources.idx_files import load_split

ROOT = Path(__file__).resolve().parents[1]


SLOW_FIXTURES = {
    "start_server",  # tests/service/conftest.py: servers of a test's own, with its own settings
    "exported",  # tests/export/: a model trained and exported for the module
}


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts servers of its own (fault injection, shutdown, settings: a few seconds each)
    or reads an export made for it is `slow`: the quick loop keeps the tests on each module's shared
    server. Tests marked `cuda` run where torch sees a GPU and are skipped, visibly (-ra), elsewhere."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch  # only when cuda tests were collected: the service tests never load torch here

    if torch.cuda.is_available():
        return
    reason = f"no CUDA device (torch {torch.__version__}, cuda.is_available() is False): run these on a GPU machine"
    for item in cuda_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def shared_data_dir() -> Path:
    """$VQVAE_DATA_DIR, else ../shared/data beside the checkout; asserts the real data is there."""
    path = Path(os.environ.get("VQVAE_DATA_DIR") or ROOT.parent / "shared" / "data")
    assert (path / "mnist").is_dir(), f"real data expected in {path} (set VQVAE_DATA_DIR)"
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared MNIST / Fashion-MNIST folder; tests fail loudly (never skip) if it is missing."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_split("mnist", "test", data_dir)


@pytest.fixture(scope="session")
def digits(mnist_test: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The first 64 real MNIST test digits, uint8 (64, 28, 28)."""
    return mnist_test[0][:64]


# -- image sets of our own: a folder and tar shards -------------------------------------------


def photo_like(rng: np.random.Generator, height: int, width: int, grey: bool = False) -> np.ndarray:
    """Smooth random images (low-frequency noise upscaled): something a codec can learn a little of."""
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 1 if grey else 3), dtype=np.uint8)
    image = Image.fromarray(small[..., 0] if grey else small).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image)


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RGB and grey files in six formats, mixed sizes, two class sub-folders, one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("tif", "TIFF"), ("gif", "GIF")]
    for i in range(60):
        sub = root / ("cats" if i % 3 == 0 else "dogs" if i % 3 == 1 else "")
        sub.mkdir(exist_ok=True)
        extension, fmt = formats[i % len(formats)]
        height, width = (48, 40) if i % 2 else (36, 52)  # odd sizes: not all multiples of 4
        Image.fromarray(photo_like(rng, height, width, grey=i % 5 == 0)).save(sub / f"img{i:03d}.{extension}",
                                                                             format=fmt)
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a header and nothing
    return root


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two webdataset shards: <key>.jpg + <key>.cls, some JPEGs grey."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    for shard in range(2):
        with tarfile.open(root / f"train-{shard:04d}.tar.gz", "w:gz") as tar:
            for i in range(40):
                buffer = io.BytesIO()
                Image.fromarray(photo_like(rng, 32, 32, grey=i % 4 == 0)).save(buffer, format="JPEG", quality=90)
                members = ((f"s{shard}_{i}.jpg", buffer.getvalue()), (f"s{shard}_{i}.cls", str(i % 7).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


# -- files a program touches: an audit hook in a fresh interpreter ----------------------------

AUDITED = """
import json, os, sys
watched = os.path.realpath(sys.argv[1])
touched = []

def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path == watched or path.startswith(watched + os.sep):
            touched.append(event + " " + path)

sys.addaudithook(hook)
rc = {call}
print(json.dumps({{"rc": rc, "touched": touched}}))
"""


def run_audited(call: str, watched: Path) -> tuple[int, list[str], str]:
    """Run `call` (Python evaluating to an exit status, e.g. a CLI's main([...])) in a fresh interpreter
    whose audit hook records every file opened and folder listed under `watched`
    -> (the status, those events, stderr). onnxruntime reads a model only after its sha256 was checked
    from Python, so a model that is loaded shows up here."""
    done = subprocess.run([sys.executable, "-c", AUDITED.format(call=call), str(watched)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["rc"], report["touched"], done.stderr
