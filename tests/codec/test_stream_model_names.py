"""`python -m codec decompress` resolves the model a stream's header names only among the models
directory's own model folders (issue 27): a header naming an absolute path, a `..` path, a folder
without model.json, a file or an empty name is refused, and nothing outside the models directory is
ever opened (an audit hook watches a decoy: a complete, loadable copy of the mnist model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.streams import Header, parse_header, seal, unseal
from harness.server import SHIPPED_MODELS
from tests.conftest import run_audited


def renamed(stream: bytes, model: str) -> bytes:
    """The same stream, its header naming `model` (the CRC made right again)."""
    header, offset = parse_header(unseal(stream))
    fake = Header(header.kind, model, header.version, header.codebook_size, header.height, header.width, header.count)
    return seal(fake.to_bytes() + unseal(stream)[offset:])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> tuple[Path, Path, Path, bytes]:
    """(models dir, decoy dir outside it, work dir, a packed stream of 3 digits made by mnist)."""
    root = tmp_path_factory.mktemp("codec-names")
    models, decoy = root / "models", root / "decoy"
    shutil.copytree(SHIPPED_MODELS / "mnist", models / "mnist")
    shutil.copytree(SHIPPED_MODELS / "mnist", decoy / "mnist")  # loadable, if anything ever followed a path there
    (models / "not-a-model").mkdir()
    (models / "notes.txt").write_text("a file, not a model folder")
    images = root / "images"
    images.mkdir()
    for i, digit in enumerate(digits[:3]):
        Image.fromarray(digit).save(images / f"{i}.png")
    stream = root / "digits.vqc"
    status, _, err = run_audited(f"__import__('codec.__main__').__main__.main(['--models-dir', {str(models)!r}, "
                                 f"'compress', {str(images)!r}, {str(stream)!r}, '--format', 'packed'])", decoy)
    assert status == 0, err
    return models, decoy, root, stream.read_bytes()


def decompress(models: Path, decoy: Path, source: Path, target: Path) -> tuple[int, list[str], str]:
    return run_audited(f"__import__('codec.__main__').__main__.main(['--models-dir', {str(models)!r}, 'decompress', "
                       f"{str(source)!r}, {str(target)!r}])", decoy)


NAMES = {
    "absolute-path-of-a-model": lambda models, decoy: str(decoy / "mnist"),
    "dotdot-to-a-model": lambda models, decoy: "../decoy/mnist",
    "dotdot-inside": lambda models, decoy: "mnist/../mnist",
    "trailing-slash": lambda models, decoy: "mnist/",
    "dot": lambda models, decoy: ".",
    "empty": lambda models, decoy: "",
    "folder-without-model-json": lambda models, decoy: "not-a-model",
    "a-file": lambda models, decoy: "notes.txt",
    "nul-byte": lambda models, decoy: "mnist\0",
    "other-case": lambda models, decoy: "MNIST",
}


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_naming_anything_but_a_model_folder_is_refused(setup: tuple[Path, Path, Path, bytes],
                                                                 name: str) -> None:
    models, decoy, root, stream = setup
    source, target = root / f"{name}.vqc", root / f"out-{name}"
    source.write_bytes(renamed(stream, NAMES[name](models, decoy)))
    status, touched, err = decompress(models, decoy, source, target)
    assert status == 1 and "no model named" in err and "the models there are mnist" in err, err
    assert touched == [] and not target.exists()


def test_the_control_decodes_and_touches_nothing_outside(setup: tuple[Path, Path, Path, bytes]) -> None:
    models, decoy, root, stream = setup
    (root / "plain.vqc").write_bytes(renamed(stream, "mnist"))
    status, touched, err = decompress(models, decoy, root / "plain.vqc", root / "plain")
    assert status == 0, err
    assert touched == [] and len(list((root / "plain").glob("*.png"))) == 3
    # The decoy is watched for real: decompressing with it as the models directory opens it.
    _, seen, _ = decompress(decoy, decoy, root / "plain.vqc", root / "from-decoy")
    assert any("model.json" in event for event in seen), seen
