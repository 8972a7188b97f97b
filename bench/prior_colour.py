"""A colour model's prior: what it codes, against the entropy stream, and what it draws.

    python -m bench.prior_colour --model tiny-imagenet-f8 \\
        --data "../shared/data/tiny-imagenet/val-{0000..0001}.tar.gz" --classes 0,1,2,3,4,5,6,7

Through the served files (encoder.onnx, prior.onnx and decoder.onnx on onnxruntime, as the service
runs them):
- bytes per image of `--images` photos at the model's native size, all in one stream (the header
  amortised): packed, entropy-coded (the shipped static per-position model) and prior-coded (decoded
  again and compared: lossless); and the bits per image those are.
- a grid of samples at the API's defaults (model.json's prior.sampling): one row per class of
  `--classes` (indices or names), `--per-class` samples each, written to --grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from contract.streams import Kind, decode_stream, encode_stream
from datasources.dataset import open_dataset
from runtime.images import to_uint8
from runtime.model_runtime import ModelRuntime, load_model
from training.run_data import center_crops, readable_images

ROOT = Path(__file__).resolve().parents[1]


def encode_all(runtime: ModelRuntime, photos: np.ndarray, batch: int = 250) -> np.ndarray:
    """uint8 (N, H, W, 3) -> codes (N, h, w) int64, through encoder.onnx and quantizer.onnx."""
    parts = [runtime.encode(photos[i : i + batch].astype(np.float32).transpose(0, 3, 1, 2) / 255)
             for i in range(0, len(photos), batch)]
    return np.concatenate(parts)


def stream_sizes(runtime: ModelRuntime, codes: np.ndarray) -> dict[str, float]:
    """Bytes per image of one stream of every kind holding all of `codes`; the prior's is decoded again."""
    m, entropy, prior = runtime.manifest, runtime.entropy, runtime.prior
    if prior is None:
        raise SystemExit(f"{m.name} ships no prior (python -m export.prior)")
    sizes = {kind: len(encode_stream(codes, kind, m, entropy)) / len(codes) for kind in (Kind.PACKED, Kind.ENTROPY)}
    stream = encode_stream(codes, Kind.PRIOR, m, entropy, prior.coder)
    if not np.array_equal(decode_stream(stream, m, entropy, prior=prior.coder), codes):
        raise AssertionError(f"{m.name}: the prior stream does not decode to its codes")
    sizes[Kind.PRIOR] = len(stream) / len(codes)
    return {kind.name.lower(): size for kind, size in sizes.items()}


def sample_grid(runtime: ModelRuntime, classes: list[int], per_class: int, path: Path) -> None:
    """One row per class of `per_class` samples at the API's defaults (seed = the class index)."""
    assert runtime.prior is not None
    rows = []
    for label in classes:
        codes = runtime.prior.sample(per_class, label, runtime.prior.defaults, seed=label)  # (n, h, w)
        images = to_uint8(runtime.decode(codes))  # (n, H, W, 3)
        rows.append(np.concatenate(list(images), axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prior_colour", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-imagenet-f8")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--data", required=True, help="photos to code (any datasources spelling)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7", help="comma list of class indices or names")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--grid", type=Path, help="default: docs/prior-samples-<model>.png")
    args = parser.parse_args(argv)
    runtime = load_model(args.models_dir / args.model, "cpu", threads=2, warmup_runs=0)
    assert runtime.prior is not None, f"{args.model} ships no prior"
    side = runtime.prior.shape.grid[0] * runtime.manifest.downsample
    dataset = open_dataset(args.data)
    photos = center_crops(readable_images(dataset, np.arange(len(dataset)), 3), side, args.images)  # (N, side, side, 3)
    codes = encode_all(runtime, photos)
    sizes = stream_sizes(runtime, codes)
    print(f"{args.model}: {len(codes)} photos at {side}×{side}, one stream of each kind\n")
    print("| stream | bytes per image | bits per image | bits per code |\n|---|---:|---:|---:|")
    for kind, size in sizes.items():
        bits = (size * 8, size * 8 / codes[0].size)
        print(f"| {kind} | {size:.1f} | {bits[0]:.0f} | {bits[1]:.2f} |")
    labels = [runtime.prior.label_of(int(c) if c.isdigit() else c) for c in args.classes.split(",")]
    grid = args.grid or ROOT / "docs" / f"prior-samples-{args.model}.png"
    sample_grid(runtime, labels, args.per_class, grid)
    names = runtime.prior.spec.class_names
    print(f"\nsamples at {runtime.prior.defaults}: {grid} (rows: "
          + ", ".join(names[label] if names else str(label) for label in labels) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
