"""The training loader against what training consumes, side by side in one run.

    python -m bench.loader --data-dir ../shared/data
    python -m bench.loader --data-dir ../shared/data --workers 1 2 --crop 32 --batch-size 64 --hidden 64 --res-hidden 64

Loader: decoded, cropped and flipped batches from the Tiny ImageNet shards through the trainer's
own DataLoader (shard-blocked order, worker processes), nothing else running: images per second.
Training: the trainer's own train_step on random batches of the same shape (the model and the
thread count of the colour recipe), no loader: images per second. The loader must outrun training
by at least 2× with 2 workers, or the GPU/CPU waits on JPEG decoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from datasources.dataset import open_dataset
from training.batches import StepBatches, source_batches
from training.model import VQVAE, ModelConfig
from training.train import train_step

ROOT = Path(__file__).resolve().parents[1]


def loader_images_per_second(spec: str, workers: int, crop: int, batch: int, steps: int) -> float:
    source = open_dataset(spec)
    indices = np.arange(len(source))
    order = StepBatches(indices, batch, 0, 0, steps + 5, blocks=source.blocks(indices))
    batches = source_batches(source, indices, 3, crop, True, order, workers, pin=False)
    for _ in range(5):  # worker start-up and the first shard's read, not timed
        next(batches)
    started, images = time.perf_counter(), 0
    for x, _ in batches:
        images += len(x)
    return images / (time.perf_counter() - started)


def training_images_per_second(cfg: ModelConfig, crop: int, batch: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = VQVAE(cfg).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)  # (B, 3, crop, crop)
    for _ in range(3):
        train_step(model, optimizer, x, 1e-3, False)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, 1e-3, False)
    return steps * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--res-hidden", type=int, default=64, help="as the shipped colour recipe")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    spec = str(args.data_dir / "tiny-imagenet" / "train-{0000..0009}.tar.gz")
    cfg = ModelConfig(in_channels=3, hidden=args.hidden, res_hidden=args.res_hidden, center=True)
    consumed = training_images_per_second(cfg, args.crop, args.batch_size, 30, args.threads)
    shape = f"hidden {args.hidden}/{args.res_hidden}, {args.threads} threads, batch {args.batch_size} of {args.crop}²"
    print(f"training ({shape}): {consumed:.0f} images/s\n")
    print("| loader workers | images/s | × training's need |\n|---:|---:|---:|")
    for workers in args.workers:
        rate = loader_images_per_second(spec, workers, args.crop, args.batch_size, args.steps)
        print(f"| {workers} | {rate:.0f} | {rate / consumed:.1f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
