"""Class-conditional samples of the shipped priors, judged for recognisability AND diversity, over a
sweep of guidance × temperature × filters; the defaults chosen from it; and sampling speed.

    python -m bench.prior_samples --data-dir ../shared/data                      # the sweep, printed
    python -m bench.prior_samples --data-dir ../shared/data --write-defaults     # + model.json's prior.sampling

For each shipped model with a prior on a labelled built-in set (MNIST, Fashion-MNIST), a judge
(bench/prior_judge.py) is trained on the set's training images; `--per-class` samples of every
class are drawn through the served files (prior.onnx and decoder.onnx on onnxruntime, as /sample
draws them) at every setting, and scored: recognised (the judge says the class asked for),
distinct grids, spread (within-class pairwise pixel distance relative to real test images of the
class) and the Fréchet distance of the judge's features to as many real test images.

The defaults: the setting with the highest recognised share among those that keep diversity —
at least 99 % distinct grids, a spread of at least 0.85, and a Fréchet distance no worse than plain
sampling at temperature 1 — so guidance cannot buy accuracy by collapsing to a few prototypes.
With --write-defaults they are written to model.json's prior.sampling (nothing else changes) and
a grid of samples at the defaults (one row per class) to docs/prior-samples-<model>.png.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.prior_judge import (
    Judge,
    classify,
    distinct_share,
    features,
    frechet_distance,
    mean_pairwise_distance,
    train_judge,
)
from contract.guided_sampling import Sampling
from contract.manifest import MANIFEST_NAME, Manifest, SamplingSpec, load_manifest
from datasources.idx_files import load_split
from harness.server import service_process
from runtime.images import to_uint8
from runtime.model_runtime import ModelRuntime, load_model

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("mnist", "fashion-mnist")
PLAIN = Sampling(temperature=1.0)
MIN_DISTINCT, MIN_SPREAD = 0.99, 0.85


@dataclass
class Score:
    rule: Sampling
    recognised: float
    per_class: list[float]
    distinct: float
    spread: float
    frechet: float


def draw(runtime: ModelRuntime, label: int, count: int, seed: int, rule: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """-> codes (count, 7, 7) and uint8 images (count, 28, 28) of class `label`, as /sample makes them."""
    assert runtime.prior is not None
    codes = runtime.prior.sample(count, label, rule, seed)
    return codes, to_uint8(runtime.decode(codes))[..., 0]


@dataclass
class RealSet:
    by_class: list[np.ndarray]  # per class: uint8 test images
    spread: list[float]  # per class: mean pairwise distance of `per_class` real test images
    features: np.ndarray  # the judge's features of per_class × classes real test images


def real_set(judge: Judge, dataset: str, data_dir: str | None, per_class: int) -> RealSet:
    images, labels = load_split(dataset, "test", data_dir)
    by_class = [images[labels == c][:per_class] for c in range(10)]
    return RealSet(by_class, [mean_pairwise_distance(x) for x in by_class], features(judge, np.concatenate(by_class)))


def score(runtime: ModelRuntime, judge: Judge, real: RealSet, per_class: int, rule: Sampling) -> tuple[Score, list]:
    shares, spreads, codes, images, rows = [], [], [], [], []
    for label in range(10):
        drawn_codes, drawn = draw(runtime, label, per_class, seed=label, rule=rule)
        shares.append(float((classify(judge, drawn) == label).mean()))
        spreads.append(mean_pairwise_distance(drawn) / real.spread[label])
        codes.append(drawn_codes)
        images.append(drawn)
        rows.append(drawn[:10])
    everything = np.concatenate(images)
    frechet = frechet_distance(features(judge, everything), real.features)
    return Score(rule, float(np.mean(shares)), shares, distinct_share(np.concatenate(codes)),
                 float(np.mean(spreads)), frechet), rows


def sweep_rules(guidance: list[float], temperatures: list[float], filters: list[str]) -> list[Sampling]:
    rules = []
    for g, t, f in itertools.product(guidance, temperatures, filters):
        kind, _, value = f.partition("=")
        extra = {} if kind == "none" else {kind: int(value) if kind == "top_k" else float(value)}
        rules.append(Sampling(temperature=t, guidance=g, **extra))  # type: ignore[arg-type]
    return [PLAIN, *[r for r in rules if r != PLAIN]]


def choose(scores: list[Score]) -> Score:
    """The most recognised setting that keeps diversity (see the module docstring)."""
    plain = next(s for s in scores if s.rule == PLAIN)
    keeps = [s for s in scores if s.distinct >= MIN_DISTINCT and s.spread >= MIN_SPREAD and s.frechet <= plain.frechet]
    return max(keeps or [plain], key=lambda s: s.recognised)


def describe(rule: Sampling) -> str:
    parts = [f"guidance {rule.guidance:g}", f"temperature {rule.temperature:g}"]
    parts += [f"top-k {rule.top_k}"] if rule.top_k is not None else []
    parts += [f"top-p {rule.top_p:g}"] if rule.top_p is not None else []
    return ", ".join(parts)


def save_grid(rows: list[np.ndarray], path: Path) -> None:
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def write_defaults(dataset: str, chosen: Score, command: str) -> None:
    """model.json's prior.sampling, validated by the contract and written as export.prior writes the
    manifest (so nothing else in the file changes)."""
    model_dir = ROOT / "models" / dataset
    manifest = load_manifest(model_dir)
    assert manifest.prior is not None
    sampling = SamplingSpec(**asdict(chosen.rule), chosen_by=(
        f"{command}: {chosen.recognised:.1%} recognised, {chosen.distinct:.1%} distinct, "
        f"spread {chosen.spread:.2f}, Fréchet {chosen.frechet:.2f}"))
    manifest = manifest.model_copy(update={"prior": manifest.prior.model_copy(update={"sampling": sampling})})
    Manifest.model_validate(manifest.model_dump())  # still the contract (model_copy does not validate)
    tmp = model_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, model_dir / MANIFEST_NAME)


def speed(runtime: ModelRuntime, dataset: str, rule: Sampling, runs: int = 5) -> tuple[float, float]:
    """(in-process, over HTTP) median seconds for 64 samples of one class at `rule`."""
    times = []
    for seed in range(runs):
        started = time.perf_counter()
        draw(runtime, 3, 64, seed, rule)
        times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as logs, service_process(Path(logs)) as server:
        server.wait()
        with server.client() as client:
            http = []
            for seed in range(runs + 1):
                started = time.perf_counter()
                client.post(f"/v1/models/{dataset}/sample", json={"count": 64, "class": 3, "seed": seed,
                                                                  **asdict(rule)}).raise_for_status()
                http.append(time.perf_counter() - started)
    return statistics.median(times), statistics.median(http[1:])


def measure(dataset: str, args: argparse.Namespace, command: str) -> list[str]:
    runtime = load_model(ROOT / "models" / dataset, "cpu", threads=2, warmup_runs=0)
    judge = train_judge(dataset, args.data_dir)
    test_images, test_labels = load_split(dataset, "test", args.data_dir)
    accuracy = float((classify(judge, test_images) == test_labels).mean())
    real = real_set(judge, dataset, args.data_dir, args.per_class)
    scores, rows_of = [], {}
    for rule in sweep_rules(args.guidance, args.temperatures, args.filters):
        result, rows = score(runtime, judge, real, args.per_class, rule)
        scores.append(result)
        rows_of[rule] = rows
        print(f"  {dataset}: {describe(rule):<45} recognised {result.recognised:6.1%}  distinct {result.distinct:6.1%}"
              f"  spread {result.spread:.2f}  Fréchet {result.frechet:7.2f}", flush=True)
    chosen = choose(scores)
    if args.write_defaults:
        write_defaults(dataset, chosen, command)
        save_grid(rows_of[chosen.rule], ROOT / "docs" / f"prior-samples-{dataset}.png")
    seconds, http = speed(runtime, dataset, chosen.rule)
    lines = [f"### {dataset} (judge: {accuracy:.2%} on the test set; {args.per_class} samples per class)", "",
             "| setting | recognised | distinct grids | spread (× real) | Fréchet distance |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {describe(s.rule)}{' **(default)**' if s is chosen else ''} | {s.recognised:.1%} | "
              f"{s.distinct:.1%} | {s.spread:.2f} | {s.frechet:.2f} |" for s in scores]
    names = runtime.prior.spec.class_names if runtime.prior else []
    lines += ["", f"Default: {describe(chosen.rule)}; per class: "
              + ", ".join(f"{n} {p:.0%}" for n, p in zip(names, chosen.per_class, strict=True)),
              f"64 samples at the default: {seconds:.3f} s in-process, {http:.3f} s over HTTP (median of 5).", ""]
    return lines


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prior_samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--guidance", type=floats, default=floats("0,0.5,1,1.5,2,3"))
    parser.add_argument("--temperatures", type=floats, default=floats("1,0.9"))
    parser.add_argument("--filters", type=lambda t: t.split(","), default=["none", "top_p=0.95", "top_k=32"],
                        help="comma list of none, top_p=P, top_k=K")
    parser.add_argument("--write-defaults", action="store_true",
                        help="write the chosen settings to models/<name>/model.json and the sample grids to docs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    command = "python -m bench.prior_samples " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = []
    for dataset in args.datasets.split(","):
        lines += measure(dataset, args, command.strip())
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
