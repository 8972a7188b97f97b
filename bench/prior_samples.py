"""Class-conditional samples of the shipped priors, judged by a classifier; and sampling speed.

    python -m bench.prior_samples --data-dir ../shared/data   # writes docs/prior-samples-<model>.png

For each shipped model with a prior on a labelled built-in set (MNIST, Fashion-MNIST): a small CNN
is trained on the set's training images (seeded; its test accuracy is printed, so the judge can be
judged), `--per-class` samples of every class are drawn through the served files (prior.onnx and
decoder.onnx on onnxruntime, as /sample draws them), and the share the classifier recognises as the
class asked for is reported, per class and overall, at each temperature asked for, beside its
accuracy on the model's own reconstructions of the test set (what the decoder allows at best).
Speed: 64 samples of one class, in-process (median of runs) and end to end through
POST /v1/models/{name}/sample.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from datasources.idx_files import load_split
from harness.server import service_process
from runtime.images import to_uint8
from runtime.model_runtime import ModelRuntime, load_model

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("mnist", "fashion-mnist")


def judge_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def as_input(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(images, dtype=torch.float32).div(255)[:, None]  # (N, 1, 28, 28)


def train_judge(dataset: str, data_dir: str | None, epochs: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    images, labels = load_split(dataset, "train", data_dir)
    x, y = as_input(images), torch.from_numpy(labels.astype(np.int64))
    net = judge_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(128):
            loss = nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def classify(net: nn.Module, images: np.ndarray) -> np.ndarray:
    return torch.cat([net(as_input(images[i : i + 1000])).argmax(1) for i in range(0, len(images), 1000)]).numpy()


def draw(runtime: ModelRuntime, label: int, count: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """-> uint8 (count, 28, 28) images of class `label`, as /sample makes them."""
    assert runtime.prior is not None
    return to_uint8(runtime.decode(runtime.prior.sample(count, label, temperature, seed)))[..., 0]


def recognised(runtime: ModelRuntime, judge: nn.Module, per_class: int, temperature: float,
               grid_path: Path | None) -> list[float]:
    """The share of each class's samples the judge recognises as that class; the first ten of each
    class as one row of the grid image."""
    assert runtime.prior is not None
    shares, rows = [], []
    for label in range(runtime.prior.spec.classes):
        images = draw(runtime, label, per_class, seed=label, temperature=temperature)
        shares.append(float((classify(judge, images) == label).mean()))
        rows.append(images[:10])
    if grid_path is not None:
        save_grid(rows, grid_path)
    return shares


def save_grid(rows: list[np.ndarray], path: Path) -> None:
    """One row of samples per class."""
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def sampling_seconds(runtime: ModelRuntime, runs: int = 5) -> float:
    times = []
    for seed in range(runs):
        started = time.perf_counter()
        draw(runtime, 3, 64, seed)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def http_seconds(name: str, runs: int = 5) -> float:
    with tempfile.TemporaryDirectory() as logs, service_process(Path(logs)) as server:
        server.wait()
        with server.client() as client:
            times = []
            for seed in range(runs + 1):
                started = time.perf_counter()
                response = client.post(f"/v1/models/{name}/sample", json={"count": 64, "class": 3, "seed": seed})
                response.raise_for_status()
                times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first warms the connection and the server's caches


def measure(dataset: str, data_dir: str | None, per_class: int, temperatures: list[float]) -> list[str]:
    runtime = load_model(ROOT / "models" / dataset, "cpu", threads=2, warmup_runs=0)
    if runtime.prior is None:
        return [f"| {dataset} | (no prior shipped) |"]
    judge = train_judge(dataset, data_dir)
    test_images, test_labels = load_split(dataset, "test", data_dir)
    accuracy = float((classify(judge, test_images) == test_labels).mean())
    codes = np.concatenate([runtime.encode(as_input(test_images[i : i + 500]).numpy())
                            for i in range(0, len(test_images), 500)])
    recon = to_uint8(runtime.decode(codes))[..., 0]
    recon_accuracy = float((classify(judge, recon) == test_labels).mean())
    names, shares, details = runtime.prior.spec.class_names, [], []
    for temperature in temperatures:  # the grid image shows the first temperature's samples
        grid = ROOT / "docs" / f"prior-samples-{dataset}.png" if temperature == temperatures[0] else None
        per = recognised(runtime, judge, per_class, temperature, grid)
        shares.append(f"{np.mean(per):.1%}")
        details.append(f"  - temperature {temperature:g}, per class: "
                       + ", ".join(f"{n} {p:.0%}" for n, p in zip(names, per, strict=True)))
    return [f"| {dataset} | {' | '.join(shares)} | {accuracy:.2%} | {recon_accuracy:.2%} | "
            f"{sampling_seconds(runtime):.3f} s | {http_seconds(dataset):.3f} s |", *details]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prior_samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--temperatures", default="1.0,0.8", help="comma list; the first one's samples are drawn")
    args = parser.parse_args(argv)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    torch.set_num_threads(2)
    recognised_columns = " | ".join(f"recognised as their class, temperature {t:g}" for t in temperatures)
    lines = [f"| model | {recognised_columns} | judge's accuracy on the test set "
             "| judge on the model's test reconstructions | 64 samples in-process (temperature 1) "
             "| 64 samples over HTTP |", "|---" * (5 + len(temperatures)) + "|"]
    notes = [f"{args.per_class} samples per class, seeds 0-9 (one per class)."]
    for dataset in DATASETS:
        row, *detail = measure(dataset, args.data_dir, args.per_class, temperatures)
        lines.append(row)
        notes += [f"- {dataset}: {d.strip(' -')}" for d in detail]
    print("\n".join([*lines, "", *notes]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
