"""The offline codec CLI (python -m codec, and its old name python -m service.codec) on real digits."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.__main__ import main as codec
from tests.service.conftest import png_bytes


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_cli_compresses_a_folder_and_back(tmp_path: Path, digits: np.ndarray,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "digits"
    source.mkdir()
    for i, d in enumerate(digits[:20]):
        (source / f"d{i:02d}.png").write_bytes(png_bytes(d))
    stream = tmp_path / "digits.vqc"
    assert codec(["compress", str(source), str(stream)]) == 0
    assert "20 images" in capsys.readouterr().out
    assert codec(["inspect", str(stream)]) == 0
    assert "entropy stream: model mnist" in capsys.readouterr().out
    assert codec(["decompress", str(stream), str(tmp_path / "out")]) == 0
    restored = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in restored[:2]] == ["00000.png", "00001.png"] and len(restored) == 20
    stream.write_bytes(stream.read_bytes()[:-3])
    assert codec(["decompress", str(stream), str(tmp_path / "bad")]) == 1
    assert "checksum" in capsys.readouterr().err


def test_the_codec_cli_codes_with_the_prior(tmp_path: Path, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    source = tmp_path / "digits"
    source.mkdir()
    for i, digit in enumerate(mnist_test[0][:70]):  # two of the coder's 64-grid chunks
        (source / f"{i:03d}.png").write_bytes(png_bytes(digit))
    for fmt in ("prior", "packed"):
        assert codec(["compress", str(source), str(tmp_path / f"{fmt}.vqc"), "--format", fmt]) == 0
        assert codec(["decompress", str(tmp_path / f"{fmt}.vqc"), str(tmp_path / fmt)]) == 0
    assert (tmp_path / "prior.vqc").stat().st_size < 0.7 * (tmp_path / "packed.vqc").stat().st_size
    for i in range(70):
        name = f"{i:05d}.png"
        assert np.array_equal(pixels((tmp_path / "prior" / name).read_bytes()),
                              pixels((tmp_path / "packed" / name).read_bytes()))


def test_the_old_module_name_still_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "service.codec", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "compress" in done.stdout
