"""Evaluate a VQ-VAE on a test set: quality (MSE, PSNRs, SSIM) and codebook use.

    python -m training.evaluate runs/mnist/ckpt.pt --out runs/mnist/eval.json
    python -m training.evaluate runs/tiny/ckpt.pt --dataset ../shared/data/kodak --grid kodak.png

The test set: the built-in set's test split, the run's validation set (its --val-dataset or the
fraction it held out, as recorded in the checkpoint), or any folder / shards given with --dataset.
Whole images, cut at the bottom and right to multiples of the model's downsampling f; PSNR over
every channel (RGB); codes used and perplexity over the K codes. A residual-VQ model is also
measured at every stage count k = 1..S (`stages`: PSNR from the first k stages, codes used at stage k).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datasources import DatasetError
from datasources.dataset import Dataset
from training.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from training.metrics import QualityTally, code_statistics, code_statistics_from_counts, image_quality, to_uint8
from training.model import VQVAE
from training.run_data import eval_images, evaluation_set, run_split


@torch.no_grad()
def reconstruct_stage_counts(model: VQVAE, images_u8: np.ndarray, counts: Sequence[int | None],
                             batch_size: int = 500) -> tuple[list[np.ndarray], np.ndarray]:
    """uint8 (N, H, W) or (N, H, W, C) -> one float reconstruction of the same shape in [0, 1] per
    entry of `counts` (decoded from the first k stages; None: all), and the indices (N, [S,] H/f, W/f).
    Batches go to the model's device and results come back to the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    channel_last = images_u8 if images_u8.ndim == 4 else images_u8[..., None]  # (N, H, W, C)
    recons: list[list[np.ndarray]] = [[] for _ in counts]
    codes = []
    for start in range(0, len(channel_last), batch_size):
        x = torch.tensor(channel_last[start : start + batch_size], device=device).permute(0, 3, 1, 2)
        indices = model.encode_to_indices(x.float().div_(255))  # (B, [S,] h, w) from x (B, C, H, W)
        for out, k in zip(recons, counts, strict=True):
            chosen = indices if k is None else indices[:, :k]  # rvq: the first k stages
            out.append(model.decode_from_indices(chosen).permute(0, 2, 3, 1).cpu().numpy())
        codes.append(indices.cpu().numpy())
    model.train(was_training)
    joined = [np.concatenate(parts) for parts in recons]
    return [r if images_u8.ndim == 4 else r[..., 0] for r in joined], np.concatenate(codes)


def reconstruct(model: VQVAE, images_u8: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W) or (N, H, W, C) -> float reconstructions of the same shape in [0, 1] (every
    stage) and indices (N, [S,] H/f, W/f)."""
    (recon,), indices = reconstruct_stage_counts(model, images_u8, [None], batch_size)
    return recon, indices


def evaluate_model(model: VQVAE, images_u8: np.ndarray) -> dict[str, Any]:
    """Images of one size, in memory: (N, H, W) or (N, H, W, C) uint8."""
    if model.quantizer.stages > 1:
        return evaluate_images(model, images_u8 if images_u8.ndim == 4 else images_u8[..., None])
    recon, indices = reconstruct(model, images_u8)
    return {"images": len(images_u8), **image_quality(images_u8, recon),
            **code_statistics(indices, model.quantizer.codebook_size)}


def stage_summary(tallies: list[QualityTally]) -> dict[str, Any]:
    """Residual VQ: quality from all S stages; codes used and perplexity the mean over stages (each
    over K), used and dead codes summed, index entropy summed (bits per grid cell for all S codes);
    `stages`: per stage count k, the quality of the first k stages and the use of stage k's codes."""
    per_stage = [{"k": k, **tally.result()} for k, tally in enumerate(tallies, 1)]
    codes = [code_statistics_from_counts(tally.code_counts) for tally in tallies]
    return {**tallies[-1].result(), "stages": per_stage,
            "codes_used": float(np.mean([c["codes_used"] for c in codes])),
            "codes_used_count": int(sum(c["codes_used_count"] for c in codes)),
            "dead_codes": int(sum(c["dead_codes"] for c in codes)),
            "perplexity": float(np.mean([c["perplexity"] for c in codes])),
            "index_entropy_bits": float(sum(c["index_entropy_bits"] for c in codes))}


def same_size_chunks(images: Iterable[np.ndarray], limit: int = 256) -> Iterator[np.ndarray]:
    """(H, W, C) images -> stacks (n, H, W, C) of consecutive images of one size, n <= limit."""
    chunk: list[np.ndarray] = []
    for image in images:
        if chunk and (image.shape != chunk[0].shape or len(chunk) == limit):
            yield np.stack(chunk)
            chunk = []
        chunk.append(image)
    if chunk:
        yield np.stack(chunk)


def evaluate_images(model: VQVAE, images: Iterable[np.ndarray]) -> dict[str, Any]:
    """Any number of (H, W, C) uint8 images of any sizes (multiples of f), a chunk at a time."""
    stages = model.quantizer.stages
    tallies = [QualityTally(model.quantizer.codebook_size) for _ in range(stages)]
    counts: list[int | None] = list(range(1, stages + 1)) if stages > 1 else [None]
    for chunk in same_size_chunks(images):
        recons, indices = reconstruct_stage_counts(model, chunk, counts,
                                                   batch_size=max(1, 500 * 784 // (chunk.shape[1] * chunk.shape[2])))
        for k, (tally, recon) in enumerate(zip(tallies, recons, strict=True)):
            tally.add(chunk, recon, indices[:, k] if stages > 1 else indices)  # codes of stage k + 1
    return stage_summary(tallies) if stages > 1 else tallies[0].result()


def evaluate_set(model: VQVAE, dataset: Dataset, indices: np.ndarray, channels: int) -> dict[str, Any]:
    """The metrics of `dataset`'s images at `indices`: a set held in memory in one piece (the MSE one
    sum over the whole set), one decoded file by file a chunk at a time (the same figures up to the
    last bits of the float sums)."""
    if dataset.arrays is not None:
        return evaluate_model(model, dataset.arrays[0][indices])
    return evaluate_images(model, eval_images(dataset, indices, channels, model.downsample))


def save_reconstruction_grid(originals_u8: np.ndarray, recon: np.ndarray, path: Path, columns: int = 16) -> None:
    """PNG of rows of originals each directly above its row of reconstructions, 2 px gutters; grey
    (N, H, W) or colour (N, H, W, 3)."""
    columns = min(columns, len(originals_u8))
    n = (len(originals_u8) // columns) * columns
    h, w = originals_u8.shape[1:3]
    rows = []
    for start in range(0, n, columns):
        rows.append(originals_u8[start : start + columns])
        rows.append(to_uint8(recon[start : start + columns]))
    pad = 2
    canvas = np.full((len(rows) * (h + pad) + pad, columns * (w + pad) + pad, *originals_u8.shape[3:]), 128, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas[..., 0] if canvas.ndim == 3 and canvas.shape[2] == 1 else canvas).save(path)


def grid_images(images: Iterable[np.ndarray], count: int = 32) -> np.ndarray:
    """The first `count` images that share the first one's size, stacked (N, H, W, C)."""
    chosen: list[np.ndarray] = []
    for image in images:
        if not chosen or image.shape == chosen[0].shape:
            chosen.append(image)
        if len(chosen) == count:
            break
    return np.stack(chosen)


def evaluation_images(config: dict[str, Any], dataset: str | None, data_dir: str | None,
                      channels: int) -> Iterator[np.ndarray]:
    """The test images of a run (see the module docstring), or of `dataset`, as (H, W, C) uint8."""
    downsample = int(config.get("model", {}).get("downsample", 4))  # the grid the model's sides need
    if dataset is not None:
        test = evaluation_set(dataset, data_dir)
        return eval_images(test, np.arange(len(test)), channels, downsample)
    split = run_split(config, data_dir)
    return eval_images(split.test, split.test_indices, channels, downsample)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset", help="a built-in name (its test split), folder or shards (default: the run's "
                                          "test set)")
    parser.add_argument("--data-dir", help="for built-in sets: default $VQVAE_DATA_DIR or the user cache dir")
    parser.add_argument("--out", type=Path, help="write the metrics JSON here (also printed)")
    parser.add_argument("--grid", type=Path, help="write a reconstruction grid PNG here")
    args = parser.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt)
        channels = model.cfg.in_channels
        metrics = {"dataset": args.dataset or ckpt["config"].get("val_dataset") or ckpt["config"]["dataset"],
                   "split": "test", **evaluate_images(model, evaluation_images(ckpt["config"], args.dataset,
                                                                         args.data_dir, channels))}
        if args.grid:
            originals = grid_images(evaluation_images(ckpt["config"], args.dataset, args.data_dir, channels))
            save_reconstruction_grid(originals, reconstruct(model, originals)[0], args.grid)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
