"""The model card says what the shipped manifests say (so the two cannot drift apart)."""

from __future__ import annotations

import re

import pytest

from contract.manifest import load_manifest
from tests.conftest import ROOT
from training.train import TrainConfig

CARD = (ROOT / "models" / "README.md").read_text()


def card_row(label: str) -> list[str]:
    line = next(line for line in CARD.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")[1:]]


def test_metrics_table_matches_the_manifests() -> None:
    manifests = [load_manifest(ROOT / "models" / name) for name in ("mnist", "fashion-mnist")]
    rows = {
        "MSE per pixel (on [0, 1])": ("mse", "{:.6f}"),
        "PSNR over the dataset (dB)": ("psnr_dataset", "{:.2f}"),
        "mean per-image PSNR, 8-bit (dB)": ("psnr_8bit_mean", "{:.2f}"),
        "SSIM (11×11 Gaussian, σ 1.5, 8-bit)": ("ssim", "{:.4f}"),
        "perplexity": ("perplexity", "{:.1f}"),
        "index entropy (bits per code)": ("index_entropy_bits", "{:.2f}"),
        "dead codes": ("dead_codes", "{}"),
    }
    for label, (key, fmt) in rows.items():
        assert card_row(label) == [fmt.format(m.metrics[key]) for m in manifests], label


@pytest.mark.parametrize("doc", ["models/README.md", "README.md", "BENCHMARKS.md", "docs/training.md",
                                 "docs/compression.md", "docs/reliability.md"])
def test_no_placeholders_are_left(doc: str) -> None:
    text = re.sub(r"```.*?```", "", (ROOT / doc).read_text(), flags=re.S)
    prose = re.sub(r"`[^`]*`", "", text)  # code holds real names such as VQVAE_PORT
    assert not re.search(r"\b[A-Z]{3,}_[A-Z_]{3,}\b", prose), "a placeholder was left in " + doc


def test_training_record_matches_the_manifests() -> None:
    for name in ("mnist", "fashion-mnist"):
        training = load_manifest(ROOT / "models" / name).training
        assert f"`{training.command}`" in CARD
        assert f"{training.seconds:.1f} s" in CARD
        assert training.steps == TrainConfig().max_steps and training.seed == 0  # the recipe's defaults
    assert re.search(r"\| training time on this machine \| \d+\.\d s \| \d+\.\d s \|", CARD)


def test_the_model_family_entries_match_their_manifests() -> None:
    """The residual model's per-stage validation PSNRs and its last training phase's time, as its
    manifest records them (the card adds the phases before it)."""
    manifest = load_manifest(ROOT / "models" / "tiny-imagenet-rvq")
    stages = manifest.metrics["stages"]
    per_stage = " / ".join(f"{s['psnr_8bit_mean']:.2f}" for s in stages)
    assert f"{per_stage} dB at k = 1..{len(stages)}" in CARD
    assert manifest.training is not None and f"({manifest.training.seconds:,.1f} s;" in CARD
