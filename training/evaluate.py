"""Evaluate a VQ-VAE on a test set: quality (MSE, PSNRs, SSIM) and codebook use.

    python -m training.evaluate runs/mnist/ckpt.pt --out runs/mnist/eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from training.data import DataError, load_split
from training.metrics import code_statistics, image_quality, to_uint8
from training.model import VQVAE


@torch.no_grad()
def reconstruct(model: VQVAE, images_u8: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W) -> float reconstructions (N, H, W) in [0, 1] and indices (N, H/4, W/4).

    Batches go to the model's device (a GPU when it trained there) and results come back to the CPU.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    recons, codes = [], []
    for start in range(0, len(images_u8), batch_size):
        x = torch.tensor(images_u8[start : start + batch_size], device=device).float().div_(255).unsqueeze(1)
        indices = model.encode_to_indices(x)  # (B, h, w) from x (B, 1, H, W)
        recons.append(model.decode_from_indices(indices)[:, 0].cpu().numpy())
        codes.append(indices.cpu().numpy())
    model.train(was_training)
    return np.concatenate(recons), np.concatenate(codes)


def evaluate_model(model: VQVAE, images_u8: np.ndarray) -> dict[str, Any]:
    recon, indices = reconstruct(model, images_u8)
    return {
        "images": len(images_u8),
        **image_quality(images_u8, recon),
        **code_statistics(indices, model.cfg.codebook_size),
    }


def save_reconstruction_grid(originals_u8: np.ndarray, recon: np.ndarray, path: Path, columns: int = 16) -> None:
    """PNG of rows of originals each directly above its row of reconstructions, 2 px gutters."""
    n = (len(originals_u8) // columns) * columns
    h, w = originals_u8.shape[1:]
    rows = []
    for start in range(0, n, columns):
        rows.append(originals_u8[start : start + columns])
        rows.append(to_uint8(recon[start : start + columns]))
    pad = 2
    canvas = np.full((len(rows) * (h + pad) + pad, columns * (w + pad) + pad), 128, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset", help="default: the data set the checkpoint was trained on")
    parser.add_argument("--data-dir", help="default: $VQVAE_DATA_DIR or the user cache dir")
    parser.add_argument("--out", type=Path, help="write the metrics JSON here (also printed)")
    parser.add_argument("--grid", type=Path, help="write a reconstruction grid PNG here")
    args = parser.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        dataset = args.dataset or ckpt["config"]["dataset"]
        images, _ = load_split(dataset, "test", args.data_dir)
    except (CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model = model_from_checkpoint(ckpt)
    metrics = {"dataset": dataset, "split": "test", **evaluate_model(model, images)}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.grid:
        recon, _ = reconstruct(model, images[:64])
        save_reconstruction_grid(images[:64], recon, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
