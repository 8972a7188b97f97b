"""Tokenization throughput: the local engine (1 and 2 workers) and Ray (2 CPUs) against in-process
onnxruntime at the same batch size, side by side in one run.

    python -m bench.tokenizing --data-dir ../shared/data

Data sets: the 10,000 Tiny ImageNet validation images (model tiny-imagenet) and the MNIST test set
(model mnist). In-process: the same decoding and the same onnxruntime sessions (all usable CPUs),
batch 64, in one process, writing nothing: the ceiling for a job that must also write Parquet.
Each job starts from an empty output directory and includes its start-up (sessions, workers).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from runtime.host_limits import usable_cpus
from tokenizer.__main__ import main as tokenize
from tokenizer.job import Job, ShardEncoder

ROOT = Path(__file__).resolve().parents[1]


def in_process(source: str, model: Path, data_dir: Path, batch: int) -> tuple[float, int]:
    """(images/s, images) decoding and encoding everything in this process, output discarded."""
    encoder = ShardEncoder(Job(source, model, Path(tempfile.gettempdir()), str(data_dir), batch=batch),
                           usable_cpus())
    started = time.perf_counter()
    rows, failed = encoder.encode_indices(range(len(encoder.inputs)))
    return len(rows) / (time.perf_counter() - started), len(rows) + len(failed)


def job(source: str, model: Path, data_dir: Path, batch: int, *flags: str) -> float:
    out = Path(tempfile.mkdtemp(prefix="vqvae-tokens-"))
    try:
        started = time.perf_counter()
        argv = [source, "--model", str(model), "--out", str(out), "--data-dir", str(data_dir), "--batch",
                str(batch), "--progress", "off", *flags]
        assert tokenize(argv) == 0
        seconds = time.perf_counter() - started
        rows = sum(1 for _ in out.glob("shard-*.parquet"))
        assert rows
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokenizing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    sets = [("Tiny ImageNet val (10,000 × 64×64)", str(args.data_dir / "tiny-imagenet" / "val-*.tar.gz"),
             ROOT / "models" / "tiny-imagenet"),
            ("MNIST test (10,000 × 28×28)", "mnist:test", ROOT / "models" / "mnist")]
    print("| data | engine | images/s | vs in-process |\n|---|---|---:|---:|")
    for label, source, model in sets:
        ceiling, count = in_process(source, model, args.data_dir, args.batch)
        print(f"| {label} | in-process onnxruntime, batch {args.batch} | {ceiling:.0f} | 100 % |", flush=True)
        for name, flags in (("local, 1 worker", ("--workers", "1")), ("local, 2 workers", ("--workers", "2")),
                            ("Ray Data, 2 CPUs", ("--engine", "ray", "--workers", "2"))):
            rate = count / job(source, model, args.data_dir, args.batch, *flags)
            print(f"| {label} | {name} | {rate:.0f} | {rate / ceiling:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
