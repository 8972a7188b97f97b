"""A tokenization job: its inputs, its shards, and encoding one shard in whichever process runs it.

Shard i holds inputs [i·S, (i+1)·S) of the source, in input order (S = --shard-size), so any engine
(local processes or Ray) makes the same shards. Each process opens the source and the model's
onnxruntime sessions once. Images are grouped into runs of one size (up to --batch images and a
run's pixels); an image larger than a run is encoded in tiles with the model's halo, exactly as the
service does. An unreadable file, or one whose size the model cannot take, is listed with its
reason and the job goes on; so is a file or tar member over --max-file-mb, which is never read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.manifest import GRAPHS, load_manifest
from datasources import UnreadableImage
from datasources.dataset import open_dataset
from datasources.image_files import MAX_FILE_BYTES
from runtime.memory_estimates import GraphCosts
from runtime.model_runtime import ModelRuntime, load_model
from runtime.tiling import plan_tiles
from tokenizer.shards import Failure, Row, ShardRecord, write_shard

RUN_BYTES = 256 << 20  # one onnxruntime run's working memory at most (the manifest's bytes per pixel)


@dataclass(frozen=True)
class Job:
    source: str
    model_dir: Path
    out_dir: Path
    data_dir: str | None = None  # for built-in sets
    shard_size: int = 5000
    batch: int = 64
    max_file_bytes: int = MAX_FILE_BYTES  # an image file or tar member; larger ones are listed, never read

    def describe(self) -> dict[str, object]:
        manifest = load_manifest(self.model_dir)
        stages = manifest.quantizer.stages
        return {"model": {"name": manifest.name, "version": manifest.version,
                          "graphs": {g: manifest.file(g).sha256 for g in GRAPHS}},
                "codebook_size": manifest.codebook_size, **({"stages": stages} if stages > 1 else {}),
                "source": self.source, "shard_size": self.shard_size}


def shard_count(total: int, shard_size: int) -> int:
    return max(1, math.ceil(total / shard_size))


class ShardEncoder:
    """One process's model and inputs."""

    def __init__(self, job: Job, threads: int) -> None:
        self.job = job
        self.inputs = open_dataset(job.source, job.data_dir, job.max_file_bytes)
        self.runtime: ModelRuntime = load_model(job.model_dir, "cpu", threads, warmup_runs=1, max_batch=job.batch)
        m = self.runtime.manifest
        self.costs = GraphCosts.of(m)
        self.run_pixels = max(m.input.height * m.input.width, int(RUN_BYTES / self.costs.encode_bytes_per_pixel))

    def shard_indices(self, index: int) -> range:
        start = index * self.job.shard_size
        return range(start, min(len(self.inputs), start + self.job.shard_size))

    def encode_shard(self, index: int) -> ShardRecord:
        rows, failed = self.encode_indices(self.shard_indices(index))
        return write_shard(self.job.out_dir, index, [rows[i] for i in sorted(rows)], [f for _, f in sorted(failed)])

    def encode_indices(self, indices: Iterable[int]) -> tuple[dict[int, Row], list[tuple[int, Failure]]]:
        """Rows of the images that encode, and (index, failure) for those that do not."""
        rows: dict[int, Row] = {}
        failed: list[tuple[int, Failure]] = []
        for group in self._runs(indices, failed):
            for i, codes in zip(group.indices, self._encode(group.pixels), strict=True):  # codes ([S,] h, w)
                rows[i] = Row(self.inputs.key(i), self.inputs.label(i), codes.shape[-2], codes.shape[-1],
                              codes.reshape(-1).tolist(), codes.shape[0] if codes.ndim == 3 else None)
        return rows, failed

    def _runs(self, indices: Iterable[int], failed: list[tuple[int, Failure]]) -> Iterator[_Run]:
        """Consecutive images of one size, up to `batch` images and a run's pixels, decoded."""
        m = self.runtime.manifest
        current: _Run | None = None
        for i in indices:
            try:
                pixels = self.inputs.decode(i, m.input.channels)
            except UnreadableImage as exc:
                failed.append((i, Failure(self.inputs.key(i), f"unreadable: {exc}")))
                continue
            height, width = pixels.shape[:2]
            if height % m.downsample or width % m.downsample:
                failed.append((i, Failure(self.inputs.key(i), f"size {height}×{width}: the model takes sides "
                                                               f"that are multiples of {m.downsample}")))
                continue
            if current is not None and not current.takes(pixels, self.job.batch, self.run_pixels):
                yield current
                current = None
            current = current or _Run([], [])
            current.indices.append(i)
            current.pixels.append(pixels)
        if current is not None:
            yield current

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        """Same-size uint8 images (H, W, C) -> int64 codes (n, [S,] h, w); tiled when one image exceeds a run."""
        m = self.runtime.manifest
        batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)  # (n, C, H, W)
        height, width = batch.shape[2:]
        if len(images) > 1 or height * width <= self.run_pixels or self.costs.encoder_halo is None:
            return self.runtime.encode(batch)
        h, w = height // m.downsample, width // m.downsample
        codes = np.empty((1, *self.runtime.grid_shape[:-2], h, w), np.int64)  # stage axis of a residual model
        for tile in plan_tiles(h, w, self.run_pixels // m.downsample**2, self.costs.encoder_halo):
            (rows, cols), _, _ = tile.in_pixels(m.downsample)
            part = self.runtime.encode(np.ascontiguousarray(batch[:, :, rows, cols]))
            core_rows, core_cols = tile.core_in_outer
            codes[0][(..., *tile.core)] = part[0][..., core_rows, core_cols]
        return codes


@dataclass
class _Run:
    indices: list[int]
    pixels: list[np.ndarray]

    def takes(self, pixels: np.ndarray, batch: int, run_pixels: int) -> bool:
        """Whether one more image joins this run: same size, within the batch and the run's pixels."""
        return (len(self.indices) < batch and pixels.shape == self.pixels[0].shape
                and (len(self.indices) + 1) * pixels.shape[0] * pixels.shape[1] <= run_pixels)


_ENCODER: ShardEncoder | None = None  # one per worker process


def start_worker(job: Job, threads: int) -> None:
    global _ENCODER
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _ENCODER = ShardEncoder(job, threads)


def encode_shard_in_worker(index: int) -> ShardRecord:
    assert _ENCODER is not None, "start_worker was not run in this process"
    return _ENCODER.encode_shard(index)
