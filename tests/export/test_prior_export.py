"""python -m export.prior: a small prior trained on real MNIST codes goes through the parity gate
into a copy of the shipped model, which then loads and serves with it; every refusal leaves the
model directory as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from contract.guided_sampling import Sampling
from contract.manifest import load_manifest, sha256_of
from export import prior as prior_export
from export.parity import ParityError
from export.prior import export_prior, main
from runtime.model_runtime import load_model
from training.checkpoint import CheckpointError
from training.train_prior import main as train_prior
from training.train_prior import parse_args

ROOT = Path(__file__).resolve().parents[2]


def train(out: Path, data_dir: Path, *extra: str) -> Path:
    train_prior(parse_args([
        "--vqvae", str(ROOT / "models" / "mnist" / "checkpoint.pt"), "--data-dir", str(data_dir),
        "--out-dir", str(out), "--train-images", "1000", "--test-images", "200", "--max-steps", "40",
        "--batch-size", "32", "--lr", "3e-3", "--warmup-steps", "5", "--eval-interval", "1000", "--model.width", "64",
        "--model.layers", "2",
        "--progress", "false", *extra]))
    return out / "ckpt.pt"


@pytest.fixture(scope="module")
def small_prior(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return train(tmp_path_factory.mktemp("prior"), data_dir)


def model_copy(tmp_path: Path, name: str = "mnist") -> Path:
    target = tmp_path / "models" / name
    shutil.copytree(ROOT / "models" / name, target, ignore=shutil.ignore_patterns("prior.onnx"))
    manifest = json.loads((target / "model.json").read_text())
    manifest.pop("prior", None)  # the shipped model's own prior, if any, is replaced
    (target / "model.json").write_text(json.dumps(manifest))
    return target


def snapshot(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}


@pytest.mark.slow
def test_export_passes_the_gate_and_the_model_serves_with_it(small_prior: Path, tmp_path: Path,
                                                             data_dir: Path) -> None:
    model_dir = model_copy(tmp_path)
    assert main([str(small_prior), str(model_dir), "--data-dir", str(data_dir), "--parity-grids", "100"]) == 0
    manifest = load_manifest(model_dir)
    spec = manifest.prior
    assert spec is not None and spec.sha256 == sha256_of(model_dir / "prior.onnx")
    assert spec.parity["probability_max_abs_diff"] <= spec.parity["tolerance"] == prior_export.PROBABILITY_TOLERANCE
    assert spec.parity["conditions"] == 2  # with the grids' classes, and with none
    assert spec.classes == 10 and spec.class_names == [str(d) for d in range(10)]
    assert spec.metrics["stream_grids"] == 200 and 0 < spec.metrics["stream_bytes_per_image"] < 49 * 9 / 8
    props = {p.key: p.value for p in onnx.load(str(model_dir / "prior.onnx")).metadata_props}
    assert props["vqvae.graph"] == "prior" and props["vqvae.name"] == "mnist"

    runtime = load_model(model_dir, "cpu", threads=1, warmup_runs=0)
    assert runtime.prior is not None
    drawn = runtime.prior.sample(3, 4, Sampling(), seed=11)
    assert drawn.shape == (3, 7, 7) and np.array_equal(drawn, runtime.prior.sample(3, 4, Sampling(), seed=11))


@pytest.mark.slow
def test_a_failed_parity_gate_writes_nothing(small_prior: Path, tmp_path: Path, data_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = model_copy(tmp_path)
    before = snapshot(model_dir)
    monkeypatch.setattr(prior_export, "PROBABILITY_TOLERANCE", 0.0)  # any float difference at all fails
    with pytest.raises(ParityError, match="differ from PyTorch's by up to"):
        export_prior(small_prior, model_dir, str(data_dir), parity_grids=50)
    assert snapshot(model_dir) == before  # no prior.onnx, no scratch file, model.json untouched


def test_a_prior_of_another_models_codes_is_refused(small_prior: Path, tmp_path: Path, data_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = model_copy(tmp_path, "fashion-mnist")
    before = snapshot(model_dir)
    assert main([str(small_prior), str(model_dir), "--data-dir", str(data_dir)]) == 1
    assert "not the checkpoint fashion-mnist ships" in capsys.readouterr().err
    assert snapshot(model_dir) == before


@pytest.mark.slow
def test_the_pixelcnn_is_trained_for_comparison_but_not_exported(tmp_path: Path, data_dir: Path) -> None:
    checkpoint = train(tmp_path / "pixelcnn", data_dir, "--model.arch", "pixelcnn")
    with pytest.raises(CheckpointError, match="only the transformer"):
        export_prior(checkpoint, model_copy(tmp_path), str(data_dir))


@pytest.mark.slow
def test_the_cached_two_half_step_equals_two_full_forwards(small_prior: Path, tmp_path: Path) -> None:
    """Guided sampling runs the class's sequences and the unconditional ones as one batch through the
    exported step graph with its key/value cache; each half's logits must equal PyTorch's full
    forward over the drawn grids, given the class and given none."""
    import onnxruntime as ort
    import torch

    from contract.guided_sampling import sample
    from contract.prior_coding import PriorShape, session_step
    from export.prior import load_prior
    from export.prior_graph import export_prior_graph
    from training.checkpoint import load_checkpoint

    prior = load_prior(load_checkpoint(small_prior))
    export_prior_graph(prior, tmp_path / "prior.onnx")
    session = ort.InferenceSession(str(tmp_path / "prior.onnx"), providers=["CPUExecutionProvider"])
    cfg = prior.cfg
    shape = PriorShape(cfg.layers, cfg.heads, cfg.width // cfg.heads, (7, 7), cfg.codebook_size, cfg.classes)
    step, seen = session_step(session, cfg.layers), []

    def recording(previous, t, labels, cache):  # type: ignore[no-untyped-def]
        logits, new = step(previous, t, labels, cache)
        seen.append(logits.copy())
        return logits, new

    n = 6
    codes = sample(recording, shape, n, 3, Sampling(guidance=1.5), seed=2)  # (6, 7, 7)
    logits = np.stack(seen, axis=1)  # (2n, T, K): the class's half, then the unconditional half
    with torch.no_grad():
        given = prior(torch.from_numpy(codes), torch.full((n,), 3)).numpy()  # (n, T, K)
        none = prior(torch.from_numpy(codes), None).numpy()
    assert np.abs(logits[:n] - given).max() < 1e-4 and np.abs(logits[n:] - none).max() < 1e-4
