"""Gated PixelCNN against the transformer prior: code length, training time, and what sampling costs.

    python -m bench.prior_compare runs/prior-mnist-pixelcnn/ckpt.pt runs/prior-mnist/ckpt.pt ...

For each prior checkpoint (python -m training.train_prior, any --model.arch): its recorded test code
length and training time, and the median time to draw 64 grids of one class in PyTorch on this
CPU. The transformer draws with its key/value cache (one new position through the network per
step); the PixelCNN has no cache here, so each of the h·w positions runs the whole network on the
whole grid, which is how the paper samples it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint
from training.pixelcnn import GatedPixelCNN
from training.prior_model import CodePrior, PriorConfig
from training.train_prior import Prior, build_prior


@torch.no_grad()
def draw(prior: Prior, count: int, label: int, grid: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.full((count,), label)
    if isinstance(prior, CodePrior):
        return prior.sample(count, grid, labels, generator=generator)
    assert isinstance(prior, GatedPixelCNN)
    codes = torch.zeros(count, *grid, dtype=torch.long)
    flat = codes.view(count, -1)
    for t in range(flat.shape[1]):  # the whole network on the whole grid, once per position
        logits = prior(codes, labels)[:, t]  # (count, K)
        flat[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
    return codes


def row(path: Path, runs: int) -> str:
    ckpt = load_checkpoint(path)
    cfg = PriorConfig(**ckpt["config"]["model"])
    prior = build_prior(cfg)
    prior.load_state_dict(ckpt["model"])
    prior.eval()
    grid = (ckpt["grid"][0], ckpt["grid"][1])
    draw(prior, 64, 0, grid, 0)  # warm-up
    times = []
    for seed in range(runs):
        started = time.perf_counter()
        draw(prior, 64, 3 % max(1, cfg.classes), grid, seed)
        times.append(time.perf_counter() - started)
    m = ckpt["metrics"] or {}
    dropout = f", dropout {cfg.dropout:g}" if cfg.arch == "transformer" else ""  # the PixelCNN has none
    shape = f"{cfg.layers} layers, width {cfg.width}{dropout}"
    return (f"| {cfg.arch} ({shape}) | {ckpt['step']} | {ckpt['seconds']:.1f} | {m.get('bits_per_grid', 0):.1f} "
            f"| {m.get('unlabelled_bits_per_grid', 0):.1f} | {m.get('unlabelled_bytes_per_image', 0):.2f} "
            f"| {statistics.median(times):.2f} s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prior_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print("| prior | steps | train s | test bits per grid, given the class | given no class | bytes per image, "
          "no class | 64 samples, PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in args.checkpoints:
        print(row(path, args.runs), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
