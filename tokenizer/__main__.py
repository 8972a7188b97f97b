"""Tokenize a whole data set into Parquet shards of code grids, resumably, on one machine or on Ray.

    vqvae-tokenize ../shared/data/tiny-imagenet/val-*.tar.gz --model models/tiny-imagenet --out tokens/
    vqvae-tokenize mnist:test --model models/mnist --out tokens/mnist --workers 2
    vqvae-tokenize photos/ --model models/tiny-imagenet --out tokens/photos --engine ray [--ray-address auto]
    python -m tokenizer ...                       # the same

SOURCE is a folder of images, one tar shard, a glob or brace range of shards, or a built-in set
(`mnist`, `fashion-mnist`, optionally `:train` / `:test`). The output: tokenizer/shards.py. A rerun
skips the shards that are complete (sha256-checked) and redoes the rest; a killed run leaves no
half-written shard. `--workers N` processes each hold their own onnxruntime session, with
threads chosen so that workers × threads ≤ usable CPUs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from contract import ContractError
from datasources import DatasetError
from datasources.dataset import open_dataset
from datasources.image_files import MAX_FILE_BYTES
from runtime import CodecError
from runtime.host_limits import usable_cpus
from tokenizer.job import Job, ShardEncoder, encode_shard_in_worker, shard_count, start_worker
from tokenizer.shards import ShardRecord, complete_record, write_manifest


def pending_shards(job: Job, total: int) -> list[int]:
    return [i for i in range(shard_count(total, job.shard_size)) if complete_record(job.out_dir, i) is None]


def run_local(job: Job, todo: list[int], workers: int) -> Iterable[ShardRecord]:
    """The shards in `todo`, by `workers` processes (1: this one), as each finishes."""
    threads = max(1, usable_cpus() // workers)
    if workers == 1:
        encoder = ShardEncoder(job, threads)
        yield from (encoder.encode_shard(i) for i in todo)
        return
    with get_context("spawn").Pool(workers, initializer=start_worker, initargs=(job, threads)) as pool:
        yield from pool.imap_unordered(encode_shard_in_worker, todo)


def run(job: Job, engine: str, workers: int, ray_address: str | None, progress: bool) -> dict[str, object]:
    job.out_dir.mkdir(parents=True, exist_ok=True)
    total = len(open_dataset(job.source, job.data_dir, job.max_file_bytes))
    todo = pending_shards(job, total)
    done_rows = total - sum(min(job.shard_size, total - i * job.shard_size) for i in todo)
    bar = tqdm(total=total, initial=done_rows, unit="img", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    if engine == "ray":
        from tokenizer.ray_engine import run_ray  # Ray only when asked for (pip install ".[ray]")

        records: Iterable[ShardRecord] = run_ray(job, todo, workers, ray_address)
    else:
        records = run_local(job, todo, workers)
    for record in records:
        bar.update(record.rows + len(record.failed))
        bar.set_postfix(images_per_s=f"{(bar.n - done_rows) / max(1e-9, time.perf_counter() - started):.0f}")
    bar.close()
    final = [complete_record(job.out_dir, i) for i in range(shard_count(total, job.shard_size))]
    missing = [i for i, r in enumerate(final) if r is None]
    if missing:
        raise DatasetError(f"shards {missing[:5]} are not complete; run the job again to finish them")
    return write_manifest(job.out_dir, job.describe(), [r for r in final if r is not None])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqvae-tokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("--model", type=Path, required=True, help="an exported model directory (model.json, *.onnx)")
    p.add_argument("--out", type=Path, required=True, help="output directory (manifest.json, shard-*.parquet)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="a Ray cluster (default: a local ray.init())")
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument("--batch", type=int, default=64, help="images per onnxruntime run")
    p.add_argument("--data-dir", help="for built-in sets: default $VQVAE_DATA_DIR or the user cache dir")
    p.add_argument("--progress", choices=["on", "off"], default="on")
    p.add_argument("--max-file-mb", type=float, default=MAX_FILE_BYTES / 2**20,
                   help="an image file or tar member larger than this is not read, and is listed with the "
                        "unreadable inputs (default %(default)g)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1 or args.shard_size < 1 or args.batch < 1 or not args.max_file_mb > 0:
        print("error: --workers, --shard-size and --batch must be at least 1, --max-file-mb above 0", file=sys.stderr)
        return 2
    job = Job(args.source, args.model, args.out, args.data_dir, args.shard_size, args.batch,
              int(args.max_file_mb * 2**20))
    try:
        manifest = run(job, args.engine, args.workers, args.ray_address, args.progress == "on")
    except (DatasetError, ContractError, CodecError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    print(f"{manifest['rows']} images in {len(manifest['shards'])} shard(s) -> {args.out} "  # type: ignore[arg-type]
          f"({len(manifest['failed'])} not tokenized: see manifest.json)")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
