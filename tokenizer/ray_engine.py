"""--engine ray: the same job on Ray Data, against a local ray.init() or a cluster (--ray-address).

    read (the job's input indices) -> map_batches(EncodeActor): each actor holds the model's sessions
    and the opened source, decodes and encodes its batches -> groupby(shard).map_groups: each
    shard's rows in input order, written by the same writer as the local engine -> the same
    shards, byte for byte, and the same manifest.

On a cluster every node needs the project installed (`pip install ".[ray]"`), the source and the
model at the same paths, and OUT_DIR on storage all of them share.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from tokenizer.job import Job, ShardEncoder, shard_count
from tokenizer.shards import Failure, Row, ShardRecord, complete_record, write_shard


class EncodeActor:
    """One Ray actor: a ShardEncoder (sessions with one thread: Ray gives the actor one CPU)."""

    def __init__(self, job: Job) -> None:
        self.encoder = ShardEncoder(job, threads=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        indices = [int(i) for i in batch["index"]]
        rows, failed = self.encoder.encode_indices(indices)
        reasons = {i: f for i, f in failed}
        out: dict[str, list[Any]] = {k: [] for k in ("index", "shard", "key", "label", "height", "width", "codes",
                                                     "reason")}
        for i, shard in zip(indices, batch["shard"], strict=True):
            row = rows.get(i)
            out["index"].append(i)
            out["shard"].append(int(shard))
            out["key"].append(row.key if row else reasons[i].key)
            out["label"].append(-1 if row is None or row.label is None else row.label)
            out["height"].append(row.height if row else 0)
            out["width"].append(row.width if row else 0)
            out["codes"].append(row.codes if row else [])
            out["reason"].append("" if row else reasons[i].reason)
        return out


def write_group(group: dict[str, np.ndarray], job: Job, labelled: dict[int, bool]) -> dict[str, list[int]]:
    """One shard's rows (in any order) -> the shard, as the local engine writes it."""
    order = np.argsort(group["index"])
    rows, failed = [], []
    for j in order:
        if group["reason"][j]:
            failed.append(Failure(str(group["key"][j]), str(group["reason"][j])))
            continue
        label = int(group["label"][j])
        rows.append(Row(str(group["key"][j]), label if labelled[int(group["index"][j])] else None,
                        int(group["height"][j]), int(group["width"][j]), [int(c) for c in group["codes"][j]]))
    shard = int(group["shard"][0])
    record = write_shard(job.out_dir, shard, rows, failed)
    return {"shard": [shard], "rows": [record.rows]}


def run_ray(job: Job, todo: list[int], workers: int, address: str | None) -> Iterator[ShardRecord]:
    started_here = not ray.is_initialized()
    try:
        yield from _run(job, todo, workers, address)
    finally:
        if started_here:
            ray.shutdown()  # a local ray.init() this job made: its processes go with it


def _run(job: Job, todo: list[int], workers: int, address: str | None) -> Iterator[ShardRecord]:
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    probe = ShardEncoder(job, threads=1)  # the driver's view: shard ranges and which rows have labels
    items = [{"index": i, "shard": s} for s in todo for i in probe.shard_indices(s)]
    labelled = {i: probe.inputs.label(i) is not None for i in range(len(probe.inputs))}
    if items:
        dataset = ray.data.from_items(items)
        encoded = dataset.map_batches(EncodeActor, fn_constructor_kwargs={"job": job}, batch_size=job.batch,
                                      concurrency=workers, num_cpus=1, batch_format="numpy")
        writer: Any = write_group  # Ray's stubs do not know functions with keyword arguments
        encoded.groupby("shard").map_groups(writer, fn_kwargs={"job": job, "labelled": labelled},
                                            batch_format="numpy").materialize()
    for shard in range(shard_count(len(probe.inputs), job.shard_size)):
        record = complete_record(job.out_dir, shard)
        if record is not None and shard in todo:
            yield record
