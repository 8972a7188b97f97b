"""training.report: finished runs to the docs' table; an unfinished run is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.report import main, quantizer_options

EVAL = {"step": 6000, "train_seconds": 585.84, "mse": 0.0013568, "psnr_dataset": 28.6749, "psnr_8bit_mean": 29.3239,
        "ssim": 0.98499, "codes_used": 1.0, "codes_used_count": 512, "perplexity": 311.844}


def test_rows_carry_the_run_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "mnist-ema"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(EVAL))
    assert main([str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | command | quantizer options | steps |")
    assert lines[2] == "| mnist-ema | `` |  | 6,000 | 585.8 | 0.00136 | 28.67 | 29.32 | 0.9850 | 512 (100.0%) | 311.8 |"


def test_an_unfinished_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert f"{tmp_path}/eval.json: no eval.json" in capsys.readouterr().err


@pytest.mark.parametrize("model, expected", [
    ({"ema": False, "data_init": False, "restart_threshold": 1.0}, "codebook loss, random init, restart < 1"),
    ({"ema": True, "data_init": True, "restart_threshold": 0.0}, "EMA codebook, k-means++ init, no restart"),
])
def test_quantizer_options_come_from_the_stored_config(model: dict[str, object], expected: str) -> None:
    assert quantizer_options(model) == expected
