"""Training step time of model widths and precisions on this machine (what sets the 10-minute recipe).

    python -m bench.train_step                  # the default grid, 30 timed steps each
    python -m bench.train_step --steps 50 --amp false
    python -m bench.train_step --device cuda    # on a GPU machine: float32 and bf16 there

One step = forward, loss, backward and Adam update on a batch of 128 random 28×28 images, with the
trainer's own train_step and thread count; 5 untimed steps first. Medians of three timed blocks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from training.cli import parse_bool
from training.model import VQVAE, ModelConfig
from training.train import cpu_has_native_bf16, train_step

WIDTHS = ((48, 24), (64, 32), (96, 48), (128, 64))  # (hidden, res_hidden)


def step_ms(hidden: int, res_hidden: int, amp: bool, steps: int, device: torch.device, batch: int = 128) -> float:
    torch.manual_seed(0)
    model = VQVAE(ModelConfig(hidden=hidden, res_hidden=res_hidden)).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
    for _ in range(5):
        train_step(model, optimizer, x, 1e-3, amp)
    blocks = []
    for _ in range(3):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps // 3):
            train_step(model, optimizer, x, 1e-3, amp)
        synchronize(device)  # CUDA runs asynchronously: time the work, not its queueing
        blocks.append((time.perf_counter() - started) / (steps // 3) * 1000)
    return statistics.median(blocks)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", type=parse_bool, nargs="*", default=[False, True],
                        help="precisions to time (default: both)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    native_bf16 = device.type == "cuda" or cpu_has_native_bf16()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads"
    print(f"{where}, native bf16: {native_bf16}, batch 128\n")
    print("| hidden / res_hidden | precision | ms per step |\n|---|---|---:|")
    for amp in args.amp:
        for hidden, res_hidden in WIDTHS:
            if amp and hidden != 64 and not native_bf16:
                continue  # emulated bf16: the recipe's width shows the cost; the rest would take minutes each
            ms = step_ms(hidden, res_hidden, amp, args.steps, device)
            print(f"| {hidden} / {res_hidden} | {'bf16 autocast' if amp else 'float32'} | {ms:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
