"""In-process throughput per graph: PyTorch eager vs onnxruntime, against the machine's matmul rate.

encode = encoder + quantizer, decode = decoder (codebook lookup inside). Both sides get the same
threads; rows alternate torch / onnxruntime over several rounds and report medians, so that a noisy
neighbour slows both rather than one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.runtime import ModelRuntime, load_model
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import VQVAE


@dataclass
class GraphRow:
    graph: str
    batch: int
    torch_images_s: float
    ort_images_s: float
    flops_per_image: float

    @property
    def ratio(self) -> float:
        return self.ort_images_s / self.torch_images_s


def matmul_rate(threads: int, size: int = 2048, seconds: float = 1.5) -> float:
    """Measured fp32 GEMM rate of this machine in FLOP/s (torch's BLAS, `threads` threads)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started)


def count_flops(model: VQVAE, height: int = 28, width: int = 28) -> tuple[float, float]:
    """(encode, decode) FLOPs per image: 2 × multiply-adds of every convolution, plus the quantizer's
    distance matmul (h·w·D·K)."""
    macs: dict[str, float] = {"encode": 0.0, "decode": 0.0}
    part = ["encode"]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs[part[0]] += output[0].numel() * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs[part[0]] += inputs[0][0].numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    with torch.inference_mode():
        indices = model.encode_to_indices(torch.zeros(1, model.cfg.in_channels, height, width))
        macs["encode"] += indices.numel() * model.cfg.code_dim * model.cfg.codebook_size
        part[0] = "decode"
        model.decode_from_indices(indices)
    for handle in handles:
        handle.remove()
    return 2 * macs["encode"], 2 * macs["decode"]


def images_per_second(fn: Callable[[], object], batch: int, seconds: float) -> float:
    fn()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
        fn()
        runs += 1
    return batch * runs / elapsed


def measure_graphs(model_dir: Path, threads: int, batches: tuple[int, ...] = (1, 64, 256),
                   seconds: float = 1.0, rounds: int = 3) -> list[GraphRow]:
    torch.set_num_threads(threads)
    model = model_from_checkpoint(load_checkpoint(model_dir / "checkpoint.pt"))
    runtime: ModelRuntime = load_model(model_dir, "cpu", threads=threads, warmup_runs=3, max_batch=max(batches))
    flops = dict(zip(("encode", "decode"), count_flops(model), strict=True))
    rng = np.random.default_rng(0)
    rows = []
    for graph in ("encode", "decode"):
        for batch in batches:
            images = rng.random((batch, 1, 28, 28), dtype=np.float32)
            codes = runtime.encode(images)
            x, idx = torch.from_numpy(images), torch.from_numpy(codes)
            with torch.inference_mode():
                torch_fn = partial(model.encode_to_indices, x) if graph == "encode" else partial(
                    model.decode_from_indices, idx)
                ort_fn = partial(runtime.encode, images) if graph == "encode" else partial(runtime.decode, codes)
                torch_runs, ort_runs = [], []
                for _ in range(rounds):
                    torch_runs.append(images_per_second(torch_fn, batch, seconds))
                    ort_runs.append(images_per_second(ort_fn, batch, seconds))
            rows.append(GraphRow(graph, batch, statistics.median(torch_runs), statistics.median(ort_runs),
                                 flops[graph]))
    return rows
