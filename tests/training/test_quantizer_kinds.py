"""The model family: 4×/8×/16× shapes, every quantizer kind through the seam, residual VQ's stage
counts and dropout, factorised lookup, clear errors for bad flags, and old checkpoints unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import VQVAE, ModelConfig
from training.quantizers.codebooks import nearest_code
from training.quantizers.fsq import FiniteScalarQuantizer
from training.quantizers.kinds import QUANTIZERS
from training.quantizers.rvq import ResidualVectorQuantizer
from training.quantizers.seam import Quantizer
from training.train import cli

SMALL = ModelConfig(in_channels=3, hidden=32, res_hidden=16, code_dim=16, codebook_size=64)
KINDS = {
    "vq": SMALL,
    "vq-lookup": replace(SMALL, codebook_size=256, lookup_dim=4),
    "fsq": replace(SMALL, quantizer="fsq", fsq_levels="8,5,5,5"),
    "rvq": replace(SMALL, quantizer="rvq", stages=3),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("downsample", [4, 8, 16])
def test_shapes_at_every_downsampling_and_kind(kind: str, downsample: int) -> None:
    torch.manual_seed(0)
    cfg = replace(KINDS[kind], downsample=downsample)
    model = VQVAE(cfg)
    x = torch.rand(2, 3, 64, 96)
    recon, indices, losses = model.train()(x)
    stages = (cfg.stages,) if cfg.quantizer == "rvq" else ()
    grid = (2, *stages, 64 // downsample, 96 // downsample)
    assert recon.shape == x.shape and indices.shape == grid and indices.dtype == torch.int64
    assert all(torch.isfinite(v) for v in losses)
    model.eval()
    assert model.encode(x).shape == (2, cfg.code_dim, 64 // downsample, 96 // downsample)
    codes = model.encode_to_indices(x)
    assert codes.shape == grid and int(codes.min()) >= 0 and int(codes.max()) < model.quantizer.codebook_size
    assert model.decode_from_indices(codes).shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_the_seam(kind: str) -> None:
    torch.manual_seed(1)
    model = VQVAE(KINDS[kind]).eval()
    q = model.quantizer
    assert isinstance(q, Quantizer) and type(q) is QUANTIZERS[KINDS[kind].quantizer]
    z = torch.randn(2, KINDS[kind].code_dim, 5, 6)
    quantized, indices, _losses = q(z)
    assert torch.equal(q.quantize_indices(z), indices)
    assert torch.allclose(q.decode_from_indices(indices), quantized, atol=1e-5)  # forward value is z_q
    assert q.near_ties(z).shape == (2, 5, 6)
    assert q.describe()["kind"] == KINDS[kind].quantizer and q.describe()["codebook_size"] == q.codebook_size


def test_the_default_model_keeps_its_state_dict_keys_and_old_checkpoints_load() -> None:
    for name in ("mnist", "fashion-mnist", "tiny-imagenet"):
        ckpt = load_checkpoint(ROOT / "models" / name / "checkpoint.pt")
        model = model_from_checkpoint(ckpt)  # strict load: the same keys and shapes
        assert model.cfg.quantizer == "vq" and model.downsample == 4 and model.quantizer.stages == 1
        assert set(model.state_dict()) == set(ckpt["model"])


def test_factorised_lookup_searches_unit_codes_in_the_projection() -> None:
    torch.manual_seed(2)
    model = VQVAE(KINDS["vq-lookup"]).eval()
    q = model.quantizer
    z = torch.randn(2, 16, 4, 4)
    projected = torch.nn.functional.normalize(q.project_in(z), dim=1)  # l2norm(W_in z): (2, 4, 4, 4)
    flat = projected.permute(0, 2, 3, 1).reshape(-1, 4)
    unit_codes = torch.nn.functional.normalize(q.codebook, dim=1)
    brute = ((flat[:, None] - unit_codes[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(q.quantize_indices(z).reshape(-1), brute)
    assert torch.equal(nearest_code(flat, unit_codes), brute)
    vectors = q.decode_from_indices(brute.view(2, 4, 4))  # W_out e_k: back in D = 16 dimensions
    assert vectors.shape == (2, 16, 4, 4)
    assert q.describe() == {"kind": "vq", "codebook_size": 256, "stages": 1, "lookup_dim": 4}


def test_residual_stages_sum_and_any_first_k_decode() -> None:
    torch.manual_seed(3)
    q = ResidualVectorQuantizer(3, 16, 4, data_init=False, restart_threshold=0).eval()
    z = torch.randn(2, 4, 3, 3)
    indices = q.quantize_indices(z)  # (2, 3, 3, 3)
    running = torch.zeros_like(z)
    residual = z
    for s, layer in enumerate(q.layers):  # by hand: each stage quantizes what is left
        assert torch.equal(indices[:, s], layer.quantize_indices(residual))
        vectors = layer.decode_from_indices(indices[:, s])
        running, residual = running + vectors, residual - vectors
        assert torch.allclose(q.decode_from_indices(indices[:, : s + 1]), running, atol=1e-6)
    with torch.no_grad():
        errors = [float((q.decode_from_indices(indices[:, :k]) - z).pow(2).mean()) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]  # every stage refines


@pytest.mark.parametrize("mode", ["batch", "sample", "none"])
def test_quantizer_dropout_cuts_what_the_decoder_sees(mode: str) -> None:
    torch.manual_seed(4)
    q = ResidualVectorQuantizer(4, 16, 4, dropout=mode, full_fraction=0.5 if mode == "sample" else 0.0,
                                data_init=False, restart_threshold=0)
    counts = q.train().stage_counts(400, torch.device("cpu"))
    assert int(counts.min()) >= 1 and int(counts.max()) <= 4
    if mode == "batch":
        assert len(counts.unique()) == 1
    elif mode == "sample":
        assert len(counts.unique()) == 4 and 0.5 < float((counts == 4).float().mean()) < 0.75  # half + a quarter
    else:
        assert bool((counts == 4).all())
    assert bool((q.eval().stage_counts(10, torch.device("cpu")) == 4).all())  # evaluation: all stages
    z = torch.randn(8, 4, 2, 2)
    torch.manual_seed(5)
    quantized, indices, _ = q.train()(z)
    torch.manual_seed(5)
    drawn = q.stage_counts(8, torch.device("cpu"))  # the same draw the forward made
    for n in range(8):
        assert torch.allclose(quantized[n : n + 1], q.decode_from_indices(indices[n : n + 1, : int(drawn[n])]),
                              atol=1e-5)


def test_stage_weights_set_the_odds_of_each_stage_count() -> None:
    torch.manual_seed(6)
    q = ResidualVectorQuantizer(4, 16, 4, dropout="sample", stage_weights=(3, 2, 0, 3), data_init=False)
    shares = torch.bincount(q.train().stage_counts(40_000, torch.device("cpu")), minlength=5)[1:] / 40_000
    assert torch.allclose(shares, torch.tensor([0.375, 0.25, 0.0, 0.375]), atol=0.01), shares
    batch = ResidualVectorQuantizer(4, 16, 4, dropout="batch", stage_weights=(0, 0, 1, 0), data_init=False)
    assert bool((batch.train().stage_counts(5, torch.device("cpu")) == 3).all())


def test_fsq_gradient_is_straight_through() -> None:
    q = FiniteScalarQuantizer((8, 5, 5, 5))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    quantized, _, _ = q(z)
    (grad,) = torch.autograd.grad(quantized.sum(), z)
    assert float(grad.abs().min()) > 0  # the tanh bound's slope, never a zero from rounding


@pytest.mark.parametrize("flags, message", [
    ({"downsample": 2}, "--model.downsample must be 4, 8 or 16, not 2"),
    ({"downsample": 32}, "--model.downsample must be 4, 8 or 16, not 32"),
    ({"quantizer": "pq"}, "--model.quantizer must be one of vq, fsq, rvq"),
    ({"quantizer": "fsq", "fsq_levels": "8,1,5"}, "every level must be at least 2"),
    ({"quantizer": "fsq", "fsq_levels": "8,x"}, "comma-separated integers"),
    ({"quantizer": "fsq"}, "needs --model.fsq-levels"),
    ({"fsq_levels": "8,5,5"}, "--model.fsq-levels is for --model.quantizer fsq"),
    ({"lookup_dim": 65}, "--model.lookup-dim 65: must be between 1 and --model.code-dim"),
    ({"lookup_dim": -1}, "--model.lookup-dim -1"),
    ({"quantizer": "rvq", "stages": 0}, "--model.stages must be at least 1, not 0"),
    ({"quantizer": "rvq", "stages": 1}, "at least 2 for rvq"),
    ({"stages": 4}, "--model.stages is for --model.quantizer rvq"),
    ({"quantizer": "rvq", "stages": 4, "rvq_dropout": "layer"}, "--model.rvq-dropout must be one of"),
    ({"quantizer": "rvq", "stages": 4, "rvq_full_fraction": 1.5}, "--model.rvq-full-fraction must be in"),
    ({"quantizer": "rvq", "stages": 4, "lookup_dim": 8}, "not rvq"),
    ({"quantizer": "rvq", "stages": 4, "rvq_stage_weights": "1,2"}, "rvq-stage-weights must be 4 finite non-negative"),
    ({"quantizer": "rvq", "stages": 2, "rvq_stage_weights": "1,x"}, "--model.rvq-stage-weights must be 2"),
    ({"quantizer": "rvq", "stages": 2, "rvq_stage_weights": "0,0"}, "not all 0"),
    ({"quantizer": "rvq", "stages": 2, "rvq_stage_weights": "-1,2"}, "non-negative"),
    ({"quantizer": "rvq", "stages": 2, "rvq_stage_weights": "inf,1"}, "finite non-negative"),
    ({"quantizer": "rvq", "stages": 2, "rvq_stage_weights": "nan,1"}, "finite non-negative"),
])
def test_bad_flag_values_are_clear_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**flags)  # type: ignore[arg-type]


def test_a_bad_flag_on_the_command_line_exits_1_with_the_message(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["--out-dir", str(tmp_path), "--model.quantizer", "fsq", "--model.fsq-levels", "8,1"])
    assert code == 1
    assert "every level must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "ckpt.pt").exists()
