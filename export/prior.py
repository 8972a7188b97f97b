"""A trained prior (python -m training.train_prior) -> prior.onnx in a model directory, behind a parity gate.

    python -m export.prior runs/prior-mnist/ckpt.pt models/mnist

The prior must model the codes of the very VQ-VAE the directory ships (its checkpoint's sha256 is
compared). The step graph (export/prior_graph.py) is exported into a scratch file, checked by
onnx.checker, and run by onnxruntime through real test grids position by position; its
probabilities must equal PyTorch's full forward within PROBABILITY_TOLERANCE, and the test set
coded with it (contract/prior_coding.py) must decode to itself. Only then are prior.onnx and model.json
(with the prior's entry and sha256) replaced, the manifest last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from contract import ContractError
from contract.manifest import MANIFEST_NAME, PRIOR_GRAPH, Manifest, PriorSpec, load_manifest, sha256_of
from contract.prior_coding import CHUNK_GRIDS, PriorCoder, PriorShape, probabilities, session_step, walk
from contract.streams import Header, Kind
from datasources import DataError
from export.graphs import write_metadata
from export.parity import ParityError
from export.prior_graph import export_prior_graph
from training.checkpoint import CheckpointError, load_checkpoint
from training.prior_data import CodeSet, prior_data
from training.prior_model import CodePrior, PriorConfig

PROBABILITY_TOLERANCE = 1e-4  # max |p_onnx − p_torch| over every position and code
PRIOR_FILE = "prior.onnx"


def load_prior(ckpt: dict[str, Any]) -> CodePrior:
    if ckpt.get("kind") != "prior":
        raise CheckpointError("not a prior checkpoint (made by python -m training.train_prior)")
    cfg = PriorConfig(**ckpt["config"]["model"])
    if cfg.arch != "transformer":  # the gated PixelCNN is trained for comparison only (docs/training.md)
        raise CheckpointError(f"only the transformer prior exports to ONNX, not {cfg.arch!r}")
    prior = CodePrior(cfg)
    prior.load_state_dict(ckpt["model"])
    return prior.eval()


def check_same_vqvae(ckpt: dict[str, Any], manifest: Manifest) -> None:
    """The prior models one VQ-VAE's codes; the directory must ship that VQ-VAE."""
    recorded = ckpt.get("vqvae_sha256") or sha256_of(Path(ckpt["config"]["vqvae"]))
    if manifest.pytorch is None or manifest.pytorch.sha256 != recorded:
        raise ContractError(f"the prior was trained on the codes of {ckpt['config']['vqvae']} (sha256 "
                            f"{recorded[:12]}…), which is not the checkpoint {manifest.name} ships")
    if (manifest.grid.height * manifest.grid.width, manifest.codebook_size) != (
            ckpt["config"]["model"]["positions"], ckpt["config"]["model"]["codebook_size"]):
        raise ContractError("the prior's grid or codebook size differs from the model's")


def shape_of(prior: CodePrior, manifest: Manifest) -> PriorShape:
    cfg = prior.cfg
    return PriorShape(cfg.layers, cfg.heads, cfg.width // cfg.heads, (manifest.grid.height, manifest.grid.width),
                      cfg.codebook_size, cfg.classes)


@torch.no_grad()
def check_parity(prior: CodePrior, session: ort.InferenceSession, shape: PriorShape, test: CodeSet,
                 grids: int) -> dict[str, Any]:
    """onnxruntime's step-by-step probabilities against PyTorch's full forward, on `grids` test grids,
    with their class (where the prior has classes) and with none; ParityError past the tolerance."""
    worst = 0.0
    conditions: list[torch.Tensor | None] = [None] + ([test.labels[:grids]] if test.labels is not None else [])
    for labels in conditions:
        for start in range(0, grids, CHUNK_GRIDS):
            codes = test.codes[start : min(grids, start + CHUNK_GRIDS)]  # (n, h, w)
            chosen = labels[start : start + len(codes)] if labels is not None else None
            expected = torch.softmax(prior(codes, chosen).double(), -1).numpy()  # (n, T, K)
            flat = codes.flatten(1).numpy()
            got = np.empty_like(expected)

            def teacher(t: int, logits: np.ndarray, flat: np.ndarray = flat, got: np.ndarray = got) -> np.ndarray:
                got[:, t] = probabilities(logits)
                return flat[:, t]

            label_array = chosen.numpy() if chosen is not None else np.full(len(codes), shape.classes)
            walk(session_step(session, shape.layers), shape, label_array.astype(np.int64), teacher)
            worst = max(worst, float(np.abs(got - expected).max()))
    if worst > PROBABILITY_TOLERANCE:
        raise ParityError(f"prior.onnx probabilities differ from PyTorch's by up to {worst:.3e} "
                          f"(tolerance {PROBABILITY_TOLERANCE:g})")
    return {"grids": grids, "conditions": len(conditions), "probability_max_abs_diff": worst,
            "tolerance": PROBABILITY_TOLERANCE}


def coded_test_set(coder: PriorCoder, manifest: Manifest, codes: np.ndarray) -> dict[str, Any]:
    """The whole test set as one prior stream's payload; it must decode to itself."""
    started = time.perf_counter()
    payload = coder.encode(codes)
    n, h, w = codes.shape
    header = Header(Kind.PRIOR, manifest.name, manifest.version, manifest.codebook_size, h, w, n)
    if not np.array_equal(coder.decode(header, payload), codes):
        raise ParityError("the test set coded with prior.onnx does not decode to itself")
    stream = len(header.to_bytes()) + len(payload) + 4
    return {"stream_grids": len(codes), "stream_bytes_per_image": stream / len(codes),
            "stream_seconds": round(time.perf_counter() - started, 1)}


def publish(scratch: Path, model_dir: Path, manifest: Manifest) -> None:
    scratch.chmod(0o644)  # mkstemp makes it private; the service may run as another user (the container's)
    os.replace(scratch, model_dir / PRIOR_FILE)
    tmp = model_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, model_dir / MANIFEST_NAME)


def export_prior(checkpoint: Path, model_dir: Path, data_dir: str | None = None, parity_grids: int = 1000) -> Manifest:
    ckpt = load_checkpoint(checkpoint)
    prior, manifest = load_prior(ckpt), load_manifest(model_dir)
    check_same_vqvae(ckpt, manifest)
    shape = shape_of(prior, manifest)
    trained = ckpt["config"]
    vqvae = load_checkpoint(model_dir / manifest.pytorch.path) if manifest.pytorch else {}
    test = prior_data(vqvae, data_dir, (1, trained["test_images"]), shape.classes > 0).test
    fd, name = tempfile.mkstemp(prefix=".prior-", suffix=".onnx", dir=model_dir)
    os.close(fd)
    scratch = Path(name)
    try:
        export_prior_graph(prior, scratch)
        write_metadata(scratch, {**manifest.metadata(PRIOR_GRAPH), "vqvae.prior_classes": str(shape.classes)})
        onnx.checker.check_model(str(scratch), full_check=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the service and the codec CLI run it (runtime/prior_sampler.py)
        session = ort.InferenceSession(str(scratch), options, providers=["CPUExecutionProvider"])
        parity = check_parity(prior, session, shape, test, min(parity_grids, len(test.codes)))
        spec = PriorSpec(path=PRIOR_FILE, sha256=sha256_of(scratch), layers=shape.layers, heads=shape.heads,
                         head_dim=shape.head_dim, classes=shape.classes,
                         class_names=ckpt.get("class_names") or [str(i) for i in range(shape.classes)],
                         parity=parity, training={k: ckpt.get(k) for k in ("command", "step", "seconds")})
        coder = PriorCoder(session_step(session, shape.layers), shape, spec.prior_id)
        metrics = {**(ckpt.get("metrics") or {}), **coded_test_set(coder, manifest, test.codes.numpy())}
        manifest = manifest.model_copy(update={"prior": spec.model_copy(update={"metrics": metrics})})
        publish(scratch, model_dir, manifest)
    finally:
        scratch.unlink(missing_ok=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.prior", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the prior's checkpoint, e.g. runs/prior-mnist/ckpt.pt")
    parser.add_argument("model_dir", type=Path, help="the exported model it belongs to, e.g. models/mnist")
    parser.add_argument("--data-dir", help="where the test set is (default: $VQVAE_DATA_DIR or the user cache)")
    parser.add_argument("--parity-grids", type=int, default=1000, help="test grids for the parity check")
    args = parser.parse_args(argv)
    try:
        manifest = export_prior(args.checkpoint, args.model_dir, args.data_dir, args.parity_grids)
    except (ParityError, CheckpointError, DataError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert manifest.prior is not None
    p, m = manifest.prior.parity, manifest.prior.metrics
    print(f"exported the prior of {manifest.name} {manifest.version} to {args.model_dir / PRIOR_FILE}")
    print(f"  parity on {p['grids']} test grids: probability max diff {p['probability_max_abs_diff']:.2e}")
    print(f"  test set as one prior stream: {m['stream_bytes_per_image']:.2f} bytes per image "
          f"({m['stream_grids']} grids, lossless, {m['stream_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
