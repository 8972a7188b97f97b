"""Export: the ONNX contract, parity with PyTorch on real digits, integrity checks, and the gate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export.pipeline as pipeline
from contract.manifest import GRAPH_IO, GRAPHS, IntegrityError, ManifestError, load_manifest, sha256_of, verify_files
from export.__main__ import main as export_cli
from export.graphs import export_graph, graph_specs
from export.parity import ParityError, check_parity, measure_parity, near_tie_mask
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import VQVAE, ModelConfig
from training.train import TrainConfig, main

SMALL = ModelConfig(hidden=32, res_hidden=16, code_dim=16, codebook_size=128)


@pytest.fixture(scope="module")
def checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    main(TrainConfig(data_dir=str(data_dir), out_dir=str(out), max_steps=40, batch_size=64, warmup_steps=5,
                     eval_interval=1000, checkpoint_interval=1000, threads=1, progress=False, model=SMALL))
    return out / "ckpt.pt"


@pytest.fixture(scope="module")
def exported(checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "mnist"
    pipeline.export_checkpoint(checkpoint, out, version="0.1.0", data_dir=str(data_dir), parity_images=1000,
                               entropy_images=5000)
    return out


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> VQVAE:
    return model_from_checkpoint(load_checkpoint(checkpoint))


def session(model_dir: Path, graph: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_graphs_have_the_contract_names_types_and_dynamic_axes(exported: Path) -> None:
    expected_types = {"image": "tensor(float)", "latent": "tensor(float)", "indices": "tensor(int64)"}
    for graph, (input_name, output_name) in GRAPH_IO.items():
        onnx.checker.check_model(str(exported / f"{graph}.onnx"), full_check=True)
        s = session(exported, graph)
        (inp,), (out,) = s.get_inputs(), s.get_outputs()
        assert (inp.name, out.name) == (input_name, output_name)
        assert (inp.type, out.type) == (expected_types[input_name], expected_types[output_name])
        assert isinstance(inp.shape[0], str) and isinstance(out.shape[0], str)  # dynamic N
        assert all(isinstance(d, str) for d in inp.shape[-2:])  # dynamic H, W (h, w)


def test_manifest_holds_the_contract_fields(exported: Path, model: VQVAE) -> None:
    raw = json.loads((exported / "model.json").read_text())
    for key in ("name", "version", "codebook_size", "code_dim", "downsample", "input", "grid", "files",
                "metrics", "training"):
        assert key in raw
    assert raw["downsample"] == 4 and raw["grid"] == {"height": 7, "width": 7}
    assert raw["input"] == {"channels": 1, "height": 28, "width": 28, "scale": "pixel/255"}
    assert raw["codebook_size"] == SMALL.codebook_size and raw["code_dim"] == SMALL.code_dim
    assert set(raw["training"]) >= {"command", "seed", "steps", "seconds", "dataset"}
    assert raw["training"]["steps"] == 40 and raw["training"]["dataset"] == "mnist"
    assert raw["metrics"]["images"] == 10000 and 0 < raw["metrics"]["mse"] < 0.1
    for graph in GRAPHS:
        assert raw["files"][graph]["sha256"] == sha256_of(exported / raw["files"][graph]["path"])


def test_key_facts_are_in_each_onnx_files_metadata(exported: Path) -> None:
    manifest = load_manifest(exported)
    for graph in GRAPHS:
        meta = session(exported, graph).get_modelmeta().custom_metadata_map
        assert meta == manifest.metadata(graph)
        assert meta["vqvae.codebook_size"] == str(SMALL.codebook_size) and meta["vqvae.graph"] == graph


def test_round_trip_on_real_digits_matches_pytorch(exported: Path, model: VQVAE, mnist_test) -> None:  # type: ignore[no-untyped-def]
    """Graded independently of the gate: our own onnxruntime and PyTorch runs, and bounds from what
    float32 really achieves here (about 2e-6), 5x tighter than the gate's 1e-4; then the gate's
    report must agree with these numbers."""
    images = mnist_test[0][:2000]
    x = torch.tensor(images, dtype=torch.float32).div_(255).unsqueeze(1)  # (2000, 1, 28, 28)
    with torch.no_grad():
        latent = model.encoder(x)  # (2000, D, 7, 7)
        indices = model.quantizer.quantize_indices(latent)
        image = model.decode_from_indices(indices)
        ties = near_tie_mask(latent, model.quantizer.codebook)
    ort_latent = session(exported, "encoder").run(None, {"image": x.numpy()})[0]
    ort_indices = session(exported, "quantizer").run(None, {"latent": ort_latent})[0]  # the served pipeline
    ort_image = session(exported, "decoder").run(None, {"indices": indices.numpy()})[0]
    latent_diff = float(np.abs(ort_latent - latent.numpy()).max())
    image_diff = float(np.abs(ort_image - image.numpy()).max())
    assert latent_diff <= 2e-5 and image_diff <= 2e-5, (latent_diff, image_diff)
    differs = torch.from_numpy(ort_indices != indices.numpy())
    assert not (differs & ~ties).any(), int((differs & ~ties).sum())  # only near-ties may differ
    assert int(differs.sum()) <= 2000 * 49 // 1000  # and even those are rare

    report = measure_parity(model, {g: exported / f"{g}.onnx" for g in GRAPHS}, images)
    assert report.indices_compared == 2000 * 49
    assert report.latent_max_abs_diff == pytest.approx(latent_diff, rel=0.5, abs=1e-7)
    assert report.image_max_abs_diff == pytest.approx(image_diff, rel=0.5, abs=1e-7)
    assert report.mismatches_outside_ties == 0


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("height, width", [(28, 28), (32, 48)])
def test_dynamic_batch_and_non_square_sizes(exported: Path, model: VQVAE, batch: int, height: int, width: int) -> None:
    rng = np.random.default_rng(batch)
    image = rng.random((batch, 1, height, width), dtype=np.float32)
    latent = session(exported, "encoder").run(None, {"image": image})[0]
    indices = session(exported, "quantizer").run(None, {"latent": latent})[0]
    decoded = session(exported, "decoder").run(None, {"indices": indices})[0]
    assert latent.shape == (batch, SMALL.code_dim, height // 4, width // 4)
    assert indices.shape == (batch, height // 4, width // 4) and indices.dtype == np.int64
    assert decoded.shape == (batch, 1, height, width) and decoded.min() >= 0 and decoded.max() <= 1
    with torch.no_grad():
        expected = model.encode_to_indices(torch.from_numpy(image))
        ties = near_tie_mask(model.encoder(torch.from_numpy(image)), model.quantizer.codebook)
    assert ((torch.from_numpy(indices) == expected) | ties).all()
    with torch.no_grad():
        torch_image = model.decode_from_indices(torch.from_numpy(indices)).numpy()
    assert np.abs(decoded - torch_image).max() <= 1e-4


def test_a_tampered_file_is_detected(exported: Path, tmp_path: Path) -> None:
    copy_dir = tmp_path / "mnist"
    copy_dir.mkdir()
    for item in exported.iterdir():
        (copy_dir / item.name).write_bytes(item.read_bytes())
    manifest = load_manifest(copy_dir)
    verify_files(manifest, copy_dir)  # intact: passes
    data = bytearray((copy_dir / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (copy_dir / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"decoder\.onnx has sha256"):
        verify_files(manifest, copy_dir)
    (copy_dir / "encoder.onnx").unlink()
    with pytest.raises(IntegrityError, match=r"encoder file encoder\.onnx is missing"):
        verify_files(manifest, copy_dir)


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ('{"name": "mnist"}', "does not match the contract"),
     ("[1, 2]", "does not match the contract")],
)
def test_a_bad_manifest_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "model.json").write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path / "mnist")


def perturbed(model: VQVAE) -> VQVAE:
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.decoder.net[0].bias.add_(0.05)  # a decoder that is not the one we trained
    return wrong


def test_parity_gate_raises_with_the_max_difference(exported: Path, model: VQVAE, mnist_test) -> None:  # type: ignore[no-untyped-def]
    paths = {g: exported / f"{g}.onnx" for g in GRAPHS}
    with pytest.raises(ParityError, match=r"decoder image max abs diff \d.*> 0.0001"):
        check_parity(perturbed(model), paths, mnist_test[0][:200])


@pytest.mark.slow
def test_a_failed_gate_writes_nothing_and_exits_non_zero(checkpoint: Path, data_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    real_build = pipeline.build_graphs

    def build_with_a_wrong_decoder(model: VQVAE, draft, scratch: Path, upsample):  # type: ignore[no-untyped-def]
        paths = real_build(model, draft, scratch, upsample)
        export_graph(graph_specs(perturbed(model))[2], paths["decoder"])  # the exporter got it wrong
        return paths

    monkeypatch.setattr(pipeline, "build_graphs", build_with_a_wrong_decoder)
    out = tmp_path / "models" / "mnist"
    code = export_cli([str(checkpoint), str(out), "--data-dir", str(data_dir), "--parity-images", "100"])
    assert code == 1
    assert "ONNX parity check failed" in capsys.readouterr().err
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []  # no scratch left either


@pytest.mark.slow
def test_export_cli_reports_parity_and_metrics(checkpoint: Path, data_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    code = export_cli([str(checkpoint), str(out), "--name", "digits", "--data-dir", str(data_dir),
                       "--parity-images", "300"])
    assert code == 0
    text = capsys.readouterr().out
    assert "parity on 300 test images" in text and "codes used" in text
    assert load_manifest(out).name == "digits"


def test_the_pytorch_weights_are_published_with_the_graphs(exported: Path, model: VQVAE, mnist_test) -> None:  # type: ignore[no-untyped-def]
    manifest = load_manifest(exported)
    assert manifest.pytorch is not None and manifest.pytorch.sha256 == sha256_of(exported / manifest.pytorch.path)
    ckpt = load_checkpoint(exported / manifest.pytorch.path)
    assert "optimizer" not in ckpt and "rng" not in ckpt  # weights only
    rebuilt = model_from_checkpoint(ckpt)
    x = torch.tensor(mnist_test[0][:32], dtype=torch.float32).div(255).unsqueeze(1)
    assert torch.equal(rebuilt.encode_to_indices(x), model.encode_to_indices(x))


@pytest.mark.parametrize("c_in, c_out, height, width", [(96, 48, 7, 7), (48, 1, 14, 14), (5, 3, 4, 9)])
def test_subpixel_rewrite_equals_the_transposed_convolution(c_in: int, c_out: int, height: int, width: int) -> None:
    from export.graphs import subpixel_conv

    torch.manual_seed(c_in)
    transposed = torch.nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    x = torch.randn(3, c_in, height, width)
    with torch.no_grad():
        assert torch.allclose(subpixel_conv(transposed)(x), transposed(x), atol=1e-5)
    with pytest.raises(ValueError, match="kernel 4, stride 2, padding 1"):
        subpixel_conv(torch.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1))


@pytest.mark.slow
@pytest.mark.parametrize("upsample", ["transpose", "subpixel"])
def test_both_upsampling_forms_pass_the_gate(checkpoint: Path, model: VQVAE, mnist_test, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             upsample: str) -> None:
    draft = pipeline.draft_manifest(load_checkpoint(checkpoint), model, "mnist", "0.1.0")
    paths = pipeline.build_graphs(model, draft, tmp_path, upsample)  # type: ignore[arg-type]
    ops = {node.op_type for node in onnx.load(str(paths["decoder"])).graph.node}
    assert ("ConvTranspose" in ops) == (upsample == "transpose") and ("DepthToSpace" in ops) == (upsample == "subpixel")
    report = check_parity(model, paths, mnist_test[0][:300])
    assert report.mismatches_outside_ties == 0 and report.image_max_abs_diff <= 1e-4


def test_the_quantizer_graph_is_one_gemm_and_an_argmin(exported: Path) -> None:
    ops = [node.op_type for node in onnx.load(str(exported / "quantizer.onnx")).graph.node]
    assert ops.count("Gemm") == 1 and ops.count("ArgMin") == 1 and "MatMul" not in ops and "Pow" not in ops
