"""In-process throughput per graph: PyTorch eager vs onnxruntime, against the machine's matmul rate.

encode = encoder + quantizer, decode = decoder (codebook lookup inside). Both get the same threads.
Each framework is measured in its own subprocess, alternating over several rounds (medians
reported): in one process, the thread pool one leaves spinning after a run slows the other.

    python -m bench.inprocess torch|onnxruntime MODEL_DIR THREADS SECONDS   # one measurement, JSON out
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.model import VQVAE

BATCHES = (1, 64, 256)
ROOT = Path(__file__).resolve().parents[1]


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


def load_torch(model_dir: Path) -> VQVAE:
    from training.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(model_dir / "checkpoint.pt"))


def measure_one(framework: str, model_dir: Path, threads: int, seconds: float) -> dict[str, dict[int, float]]:
    """Images/s of one framework for every graph and batch size (run alone in a subprocess)."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {"encode": {}, "decode": {}}
    if framework == "torch":
        model = load_torch(model_dir)
        for batch in BATCHES:
            x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
            with torch.inference_mode():
                idx = model.encode_to_indices(x)
                out["encode"][batch] = images_per_second(partial(model.encode_to_indices, x), batch, seconds)
                out["decode"][batch] = images_per_second(partial(model.decode_from_indices, idx), batch, seconds)
        return out
    from runtime.model_runtime import load_model

    runtime = load_model(model_dir, "cpu", threads=threads, warmup_runs=3, max_batch=max(BATCHES))
    for batch in BATCHES:
        images = rng.random((batch, 1, 28, 28), dtype=np.float32)
        codes = runtime.encode(images)
        out["encode"][batch] = images_per_second(partial(runtime.encode, images), batch, seconds)
        out["decode"][batch] = images_per_second(partial(runtime.decode, codes), batch, seconds)
    return out


def _subprocess(framework: str, model_dir: Path, threads: int, seconds: float) -> dict[str, dict[int, float]]:
    cmd = [sys.executable, "-m", "bench.inprocess", framework, str(model_dir), str(threads), str(seconds)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {graph: {int(b): v for b, v in rates.items()} for graph, rates in raw.items()}


def measure_graphs(model_dir: Path, threads: int, seconds: float = 1.0, rounds: int = 3) -> list[GraphRow]:
    runs: dict[str, list[dict[str, dict[int, float]]]] = {"torch": [], "onnxruntime": []}
    for _ in range(rounds):
        for framework in runs:
            runs[framework].append(_subprocess(framework, model_dir, threads, seconds))
    flops = dict(zip(("encode", "decode"), count_flops(load_torch(model_dir)), strict=True))

    def median(framework: str, graph: str, batch: int) -> float:
        return statistics.median(r[graph][batch] for r in runs[framework])

    return [GraphRow(g, b, median("torch", g, b), median("onnxruntime", g, b), flops[g])
            for g in ("encode", "decode") for b in BATCHES]


if __name__ == "__main__":
    framework, model_dir, threads, seconds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(measure_one(framework, model_dir, threads, seconds)))
