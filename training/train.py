"""Train the VQ-VAE. Read top to bottom: config, data order, one step, the loop in main(cfg).

    python -m training.train --dataset mnist --out-dir runs/mnist
    torchrun --nproc_per_node=2 -m training.train --dataset mnist --out-dir runs/mnist-ddp

Every flag is a field of TrainConfig (`--model.hidden 128`, `--model.ema false`; see --help).
Re-running with --resume true continues from <out-dir>/ckpt.pt and gives the same numbers, bit for
bit, as a run that was never interrupted. Under torchrun each rank takes an equal slice of every
global batch, so 2 ranks compute the same steps as 1 process with the same batch size.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from datasources import DatasetError
from training.batches import DataSpec, TrainingData, training_data
from training.checkpoint import CheckpointError, load_checkpoint, model_config_from, save_checkpoint, warm_start
from training.cli import parse_config, run_and_report
from training.evaluate import evaluate_images, grid_images, reconstruct, save_reconstruction_grid
from training.model import VQVAE, ModelConfig


@dataclass
class TrainConfig:
    dataset: str = "mnist"  # any datasources spelling: mnist, fashion-mnist, a folder, tar shards (glob, {a..b})
    data_dir: str | None = None  # for built-in sets: default $VQVAE_DATA_DIR or the user cache dir
    val_dataset: str | None = None  # folder or shards to evaluate on; default: a held-out part of the training set
    val_fraction: float = 0.05  # held out of a folder or shard source when there is no val_dataset ...
    val_limit: int = 5000  # ... at most this many images
    crop: int | None = None  # training crop side (multiple of 4); default: the images' own size if they share one
    flip: bool = True  # random horizontal flips of training crops (image sources)
    workers: int = 2  # DataLoader processes decoding image sources (0: in the training process)
    out_dir: str = "runs/mnist"
    seed: int = 0
    max_steps: int = 5500  # about 9 minutes on 2 CPU cores in float32 (docs/training.md)
    batch_size: int = 128  # global: split evenly across ranks
    lr: float = 4e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * min_lr_ratio
    eval_interval: int = 1000
    eval_images: int = 2000  # test images for periodic evaluation (the final one uses all)
    checkpoint_interval: int = 1000
    log_interval: int = 50
    resume: bool = False
    init_from: str | None = None  # start from this checkpoint's weights (a vq one seeds an rvq model's first stage)
    stop_after: int | None = None  # stop at this step as if interrupted (schedule still targets max_steps)
    threads: int | None = None  # per rank; default: usable CPUs / local ranks
    amp: bool = False  # bf16 autocast for encoder and decoder (quantizer stays float32); pays on bf16 hardware
    device: str = "auto"  # auto | cpu | cuda
    deterministic: bool = True  # on CUDA: deterministic cuDNN/cuBLAS kernels, so resume is bit for bit
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)


# -- distributed set-up -------------------------------------------------------------------------


@dataclass
class Runtime:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512-bf16 or AMX), not by emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def choose_device(requested: str, local_rank: int) -> torch.device:
    """auto -> this rank's GPU when CUDA is usable, else the CPU; cuda without a GPU is a clear error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device (is this a CPU build of torch?)")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def make_cuda_deterministic() -> None:
    """Deterministic cuDNN convolutions and cuBLAS workspaces: same seed, same device -> same bits.

    warn_only: an op without a deterministic CUDA kernel warns instead of stopping a run.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(cfg.device, local_rank)
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(device)  # NCCL and the default CUDA stream follow this rank's GPU
        if cfg.deterministic:
            make_cuda_deterministic()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    usable_cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(cfg.threads or max(1, usable_cpus // local_world))
    if world > 1 and cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly across {world} ranks")
    if cfg.amp and not use_cuda and not cpu_has_native_bf16():
        # Without AVX-512-bf16/AMX, oneDNN emulates bf16: measured 15× slower per step than float32
        # on an AVX2 EPYC (2214 vs 147 ms at batch 128), so a 10-minute run would take hours.
        print(f"warning: --amp true, but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
              "bf16; autocast will be much slower than float32 here. Use --amp false.", file=sys.stderr)
    return Runtime(rank=dist.get_rank() if world > 1 else 0, world=world, device=device)


# -- data order and learning rate: pure functions of the step, so resume needs no loader state ----


class Schedule(Protocol):
    """What the learning-rate schedule reads from a config (TrainConfig, PriorTrainConfig)."""

    lr: float
    warmup_steps: int
    max_steps: int
    min_lr_ratio: float


def learning_rate(cfg: Schedule, step: int) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# -- state ---------------------------------------------------------------------------------------


def restore(cfg: TrainConfig, model: VQVAE, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Load <out_dir>/ckpt.pt into model and optimiser; -> (step to continue from, seconds so far)."""
    ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt")
    stored = ckpt["config"]
    if model_config_from(ckpt) != cfg.model or any(
        stored.get(k) != getattr(cfg, k) for k in ("dataset", "seed", "max_steps", "batch_size", "lr", "crop",
                                                   "val_dataset", "init_from")
    ):
        raise CheckpointError(f"{cfg.out_dir}/ckpt.pt was made with a different config; resume with the same flags")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    device = next(model.parameters()).device
    if device.type == "cuda":
        if ckpt.get("cuda_rng") is None:
            raise CheckpointError(f"{cfg.out_dir}/ckpt.pt was written on the CPU; resume it with --device cpu")
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)  # the quantizer's restarts draw from it
    return ckpt["step"], ckpt["seconds"]


def launch_command() -> str:
    """The command line that started this run, in its canonical form (recorded in every checkpoint)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node={world} -m training.train" if world > 1 else "python -m training.train"
    return f"{launcher} {shlex.join(sys.argv[1:])}".strip()


def cuda_rng_state(model: VQVAE) -> torch.Tensor | None:
    """The CUDA generator of the model's GPU (restarts draw from it), or None on the CPU."""
    device = next(model.parameters()).device
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def checkpoint_payload(cfg: TrainConfig, model: VQVAE, optimizer: torch.optim.Optimizer, step: int,
                       seconds: float, data: dict[str, Any], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "config": asdict(cfg),
        "data": data,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng_state(model),
        "step": step,
        "seconds": seconds,
        "command": launch_command(),
        "metrics": metrics,
    }


@dataclass
class TrainResult:
    model: VQVAE  # the trained model (each rank's own copy under torchrun)
    metrics: dict[str, Any]  # final test metrics on rank 0 after max_steps; else empty


class MetricsLog:
    """Appends one JSON object per line to <out_dir>/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **row: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


# -- the loop ------------------------------------------------------------------------------------


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               lr: float, amp: bool) -> tuple[dict[str, float], torch.Tensor]:
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        _, indices, losses = model(x)  # recon (B, C, H, W), indices (B, [S,] H/f, W/f), ModelLosses
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    stats = {name: float(value.detach()) for name, value in losses._asdict().items()}
    stats["loss"] = float(losses.total.detach())
    stats["psnr"] = -10 * math.log10(max(stats["reconstruction"], 1e-10))
    return stats, indices


def evaluate_and_log(cfg: TrainConfig, model: VQVAE, data: TrainingData, step: int, log: MetricsLog,
                     n_images: int | None) -> dict[str, Any]:
    metrics = evaluate_images(model, data.eval_images(n_images))
    log.write(kind="eval", step=step, **metrics)
    originals = grid_images(data.eval_images(64))  # (n, H, W, C): 32 in colour would be few pixels
    recon, _ = reconstruct(model, originals)
    save_reconstruction_grid(originals, recon, Path(cfg.out_dir) / f"recon_step{step:06d}.png")
    return metrics


def data_of(cfg: TrainConfig, rt: Runtime) -> TrainingData:
    spec = DataSpec(cfg.dataset, cfg.val_dataset, cfg.val_fraction, cfg.val_limit, cfg.data_dir, cfg.model.in_channels,
                    cfg.crop, cfg.flip, cfg.workers, cfg.batch_size // rt.world * rt.world, cfg.seed)
    return training_data(spec, rt.rank, rt.world, cfg.model.downsample, pin=rt.device.type == "cuda")


class SkippedImages:
    """Unreadable training images: one warning per image (named), and a count for the metrics."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.seen, self.count = enabled, set[str](), 0

    def note(self, problems: list[str]) -> None:
        for problem in problems:
            self.count += 1
            if problem not in self.seen and self.enabled:
                print(f"warning: skipped an unreadable image: {problem}", file=sys.stderr)
            self.seen.add(problem)


def run_loop(cfg: TrainConfig, rt: Runtime, model: VQVAE, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer,
             data: TrainingData, step: int, end: int, started: float) -> int:
    """Steps [step, end) with logging, periodic evaluation and checkpoints; -> the step reached."""
    out, log = Path(cfg.out_dir), MetricsLog(Path(cfg.out_dir) / "metrics.jsonl", rt.is_main)
    bar = tqdm(total=end, initial=step, disable=not (cfg.progress and rt.is_main), dynamic_ncols=True)
    skipped = SkippedImages(rt.is_main)
    for x_u8, problems in data.batches(step, end):
        skipped.note(problems)
        step += 1
        bar.update(1)
        if x_u8.numel() == 0:  # every image of this batch was unreadable
            continue
        x = x_u8.to(rt.device, non_blocking=True).float().div_(255)
        x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
        stats, indices = train_step(wrapped, optimizer, x, learning_rate(cfg, step - 1), cfg.amp)
        if step % cfg.log_interval == 0 or step == end:
            codes = int(indices.unique().numel())
            bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}", codes=codes)
            log.write(kind="train", step=step, lr=learning_rate(cfg, step - 1), codes_in_batch=codes,
                      skipped_images=skipped.count, seconds=round(time.perf_counter() - started, 2), **stats)
        if rt.is_main and step % cfg.eval_interval == 0 and step < cfg.max_steps:
            evaluate_and_log(cfg, model, data, step, log, cfg.eval_images)
        if rt.is_main and step % cfg.checkpoint_interval == 0 and step < end:
            save_checkpoint(out / "ckpt.pt", checkpoint_payload(cfg, model, optimizer, step,
                                                                time.perf_counter() - started, data.record))
    bar.close()
    return step


def main(cfg: TrainConfig) -> TrainResult:
    """Train to cfg.max_steps (or stop early at cfg.stop_after) and evaluate on the whole test set."""
    rt = setup_runtime(cfg)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = data_of(cfg, rt)
    cfg = replace(cfg, crop=data.crop,
                  model=replace(cfg.model, in_channels=data.channels))  # what the data decided, recorded

    model = VQVAE(cfg.model).to(rt.device, memory_format=torch.channels_last)
    if cfg.init_from:  # every rank reads the same file
        fresh = warm_start(model, cfg.init_from)
        if rt.is_main:
            print(f"started from {cfg.init_from}; fresh: {', '.join(fresh) or 'nothing'}", file=sys.stderr)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, seconds = restore(cfg, model, optimizer) if cfg.resume and (out / "ckpt.pt").exists() else (0, 0.0)
    wrapped: torch.nn.Module = model
    if rt.world > 1:  # buffers are kept equal by the quantizer's own all-reduce, not re-broadcast
        wrapped = DistributedDataParallel(model, broadcast_buffers=False,
                                          device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    end = min(cfg.max_steps, cfg.stop_after or cfg.max_steps)
    started = time.perf_counter() - seconds
    step = run_loop(cfg, rt, model, wrapped, optimizer, data, step, end, started)
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if rt.is_main:
        if step == cfg.max_steps:
            log = MetricsLog(out / "metrics.jsonl", True)
            metrics = {"dataset": cfg.val_dataset or cfg.dataset, "split": "test", "step": step,
                       "train_seconds": round(seconds, 1), **evaluate_and_log(cfg, model, data, step, log, None)}
            (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save_checkpoint(out / "ckpt.pt", checkpoint_payload(cfg, model, optimizer, step, seconds, data.record,
                                                            metrics or None))
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model, metrics)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_config(TrainConfig, "python -m training.train", __doc__, argv)


def cli(argv: list[str] | None = None) -> int:
    return run_and_report(lambda: main(parse_args(argv)).metrics, (DatasetError, CheckpointError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
