"""Train the prior (training/prior_model.py) over a trained VQ-VAE's code grids.

    python -m training.train_prior --vqvae models/mnist/checkpoint.pt --out-dir runs/prior-mnist

The grids are the VQ-VAE's codes of its own training images, computed once at start-up
(training/prior_data.py: built-in sets, or the image source it was trained on, such as Tiny
ImageNet's shards); the prior is class-conditional where the images have labels, and sees a tenth
of them as "no class" so that one prior also codes unlabelled grids (`?format=prior`). The trainer's
conventions: one config dataclass stored in the checkpoint, every field a flag, a progress bar,
metrics.jsonl, exact resume (the batch order is a pure function of seed and step), eval.json at the
end with the test grids' negative log-likelihood in bits per grid, bytes per image and bits per
dimension (per pixel channel, the paper's unit).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from contract.manifest import sha256_of
from datasources import DataError, SourceError
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.cli import parse_config, run_and_report
from training.pixelcnn import GatedPixelCNN
from training.prior_data import CodeSet, prior_data
from training.prior_model import CodePrior, PriorConfig
from training.train import learning_rate

Prior = CodePrior | GatedPixelCNN
ARCHITECTURES = {"transformer": CodePrior, "pixelcnn": GatedPixelCNN}


def build_prior(cfg: PriorConfig) -> Prior:
    if cfg.arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown prior architecture {cfg.arch!r}; choose {' or '.join(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.arch](cfg)



@dataclass
class PriorTrainConfig:
    vqvae: str = "models/mnist/checkpoint.pt"  # the VQ-VAE checkpoint whose codes are modelled
    data_dir: str | None = None
    out_dir: str = "runs/prior-mnist"
    conditional: bool = True  # condition on the class labels
    label_dropout: float = 0.1  # share of training grids shown as "no class", so one prior also codes unlabelled grids
    train_images: int | None = None  # use only the first N training images (tests, quick runs)
    test_images: int | None = None
    seed: int = 0
    max_steps: int = 2800  # under 10 minutes on 2 CPU cores with the default model (docs/training.md)
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01
    eval_interval: int = 1000  # each test-set evaluation costs ~17 s of the 10-minute budget
    log_interval: int = 50
    resume: bool = False
    stop_after: int | None = None  # stop at this step as if interrupted
    threads: int | None = None
    progress: bool = True
    model: PriorConfig = field(default_factory=PriorConfig)


def batch_of(cfg: PriorTrainConfig, data: CodeSet, classes: int, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step's grids (B, h, w) and labels (B,): a pure function of (seed, step), so a resumed run
    draws the same ones. A `label_dropout` share of the labels becomes "no class" (index `classes`)."""
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    rows = torch.randint(0, len(data.codes), (cfg.batch_size,), generator=generator)
    if data.labels is None:
        return data.codes[rows], None
    hidden = torch.rand(cfg.batch_size, generator=generator) < cfg.label_dropout
    return data.codes[rows], torch.where(hidden, classes, data.labels[rows])


@torch.no_grad()
def test_nll(prior: Prior, data: CodeSet, pixels: int, batch: int = 1000) -> dict[str, float]:
    """Mean code length of the test grids: bits per grid, bytes per image, bits per dimension — given
    their class where the prior is conditional, and given "no class" (what ?format=prior codes with)."""
    prior.eval()
    totals = {"": 0.0, "unlabelled_": 0.0}
    for start in range(0, len(data.codes), batch):
        codes = data.codes[start : start + batch]
        labels = data.labels[start : start + batch] if data.labels is not None else None
        given = float(prior.bits(codes, labels).sum())
        totals[""] += given
        totals["unlabelled_"] += float(prior.bits(codes, None).sum()) if labels is not None else given
    prior.train()
    out = {}
    for prefix, total in totals.items():
        bits = total / len(data.codes)
        out |= {f"{prefix}bits_per_grid": bits, f"{prefix}bytes_per_image": bits / 8,
                f"{prefix}bits_per_dim": bits / pixels}
    return out


RUN_ONLY = ("data_dir", "out_dir", "resume", "stop_after", "threads", "progress")  # not what a run computes


def what_it_trains(config: dict[str, Any]) -> dict[str, Any]:
    """A stored or current config without the fields that may change on resume."""
    return {k: v for k, v in config.items() if k not in RUN_ONLY}


def restore(cfg: PriorTrainConfig, prior: Prior, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt")
    if ckpt.get("kind") != "prior" or what_it_trains(ckpt["config"]) != what_it_trains(asdict(cfg)):
        raise CheckpointError(f"{cfg.out_dir}/ckpt.pt was made with a different config; resume with the same flags")
    prior.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    return ckpt["step"], ckpt["seconds"]


def save(cfg: PriorTrainConfig, prior: Prior, optimizer: torch.optim.Optimizer, step: int, seconds: float,
         extra: dict[str, Any]) -> None:
    save_checkpoint(Path(cfg.out_dir) / "ckpt.pt", {
        "kind": "prior", "config": asdict(cfg), "model": prior.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step, "seconds": seconds,
        "command": f"python -m training.train_prior {shlex.join(sys.argv[1:])}".strip(), **extra})


def train_steps(cfg: PriorTrainConfig, prior: Prior, optimizer: torch.optim.Optimizer, train: CodeSet,
                test: CodeSet, step: int, end: int, started: float, pixels: int) -> int:
    log = Path(cfg.out_dir) / "metrics.jsonl"
    bar = tqdm(total=end, initial=step, disable=not cfg.progress, dynamic_ncols=True)
    while step < end:
        codes, labels = batch_of(cfg, train, prior.cfg.classes, step)  # (B, h, w), (B,)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        loss = prior.bits(codes, labels).mean() / codes[0].numel()  # bits per code
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bits_per_code = float(loss.detach())
        rows_out = []
        if step % cfg.log_interval == 0:
            rows_out.append({"kind": "train", "step": step, "bits_per_code": bits_per_code,
                             "seconds": round(time.perf_counter() - started, 2)})
        if step % cfg.eval_interval == 0 and step < cfg.max_steps:
            rows_out.append({"kind": "eval", "step": step, **test_nll(prior, test, pixels)})
        with log.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows_out)
        bar.set_postfix(bits_per_code=f"{bits_per_code:.3f}")
    bar.close()
    return step


def main(cfg: PriorTrainConfig) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    vq = load_checkpoint(cfg.vqvae)
    data = prior_data(vq, cfg.data_dir, (cfg.train_images, cfg.test_images), cfg.conditional)
    train, test = data.train, data.test
    grid = tuple(train.codes.shape[1:])
    cfg = replace(cfg, model=replace(cfg.model, codebook_size=data.codebook_size,
                                     positions=grid[0] * grid[1], classes=len(data.class_names)))
    pixels = grid[0] * grid[1] * data.downsample**2 * data.channels  # each code is an f×f block of pixels
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prior = build_prior(cfg.model)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, seconds = restore(cfg, prior, optimizer) if cfg.resume and (out / "ckpt.pt").exists() else (0, 0.0)
    started = time.perf_counter() - seconds
    step = train_steps(cfg, prior, optimizer, train, test, step, min(cfg.max_steps, cfg.stop_after or cfg.max_steps),
                       started, pixels)
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if step == cfg.max_steps:
        metrics = {"dataset": data.dataset, "split": "test", "grids": len(test.codes), "grid": list(grid), "step": step,
                   "train_seconds": round(seconds, 1), **test_nll(prior, test, pixels)}
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save(cfg, prior, optimizer, step, seconds, {
        "grid": list(grid), "dataset": data.dataset, "metrics": metrics or None,
        "vqvae_sha256": sha256_of(Path(cfg.vqvae)), "class_names": data.class_names})
    return metrics


def parse_args(argv: list[str] | None = None) -> PriorTrainConfig:
    return parse_config(PriorTrainConfig, "python -m training.train_prior", __doc__, argv)


def cli(argv: list[str] | None = None) -> int:
    return run_and_report(lambda: main(parse_args(argv)), (DataError, SourceError, CheckpointError))


if __name__ == "__main__":
    sys.exit(cli())
