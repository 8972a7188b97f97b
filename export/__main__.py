"""Export a checkpoint to ONNX behind the parity gate.

    python -m export runs/mnist/ckpt.pt models/mnist --version 2.1.0

Writes encoder.onnx, quantizer.onnx, decoder.onnx, model.json and reconstructions.png, but only
after onnx.checker and the PyTorch-vs-onnxruntime parity check pass; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract import ContractError
from datasources import DataError
from export.parity import ParityError
from export.pipeline import export_checkpoint
from training.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path, help="model directory to write, e.g. models/mnist")
    parser.add_argument("--name", help="model name (default: the training data set, e.g. mnist)")
    parser.add_argument("--version", default="1.0.0", help="model version recorded in the manifest")
    parser.add_argument("--data-dir", help="where the test set is (default: $VQVAE_DATA_DIR or the user cache)")
    parser.add_argument("--parity-images", type=int, default=10000, help="test images for the parity check")
    parser.add_argument("--upsample", choices=["transpose", "subpixel"], default="transpose",
                        help="decoder upsampling form in decoder.onnx: ConvTranspose (faster on AVX2 CPUs) or "
                             "convolution + pixel shuffle (faster on AVX-512); both pass the same parity gate")
    args = parser.parse_args(argv)
    try:
        manifest = export_checkpoint(args.checkpoint, args.out_dir, args.name, args.version,
                                     args.data_dir, args.parity_images, args.upsample)
    except (ParityError, CheckpointError, DataError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    p, m = manifest.parity, manifest.metrics
    print(f"exported {manifest.name} {manifest.version} to {args.out_dir}")
    larger = f" and {p['large_images']} at 768×512" if p.get("large_images") else ""
    print(f"  parity on {p['images']} test images{larger}: latent max diff {p['latent_max_abs_diff']:.2e}, "
          f"image max diff {p['image_max_abs_diff']:.2e}, indices {p['index_match_fraction']:.4%} equal "
          f"({p['index_mismatches']} differ, {p['near_ties']} near-ties)")
    print(f"  test metrics: mse {m['mse']:.5f}, psnr {m['psnr_dataset']:.2f} dB, ssim {m['ssim']:.4f}, "
          f"codes used {m['codes_used']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
