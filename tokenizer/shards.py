"""The output of a tokenization job: Parquet shards of code grids and the manifest that lists them.

    OUT_DIR/manifest.json              the job: model (name, version, sha256 of its graphs), K, source,
                                       shards (file, rows, sha256), rows, unreadable or unusable inputs
    OUT_DIR/shard-00000.parquet        one row per image: key (string), label (int64, null where none),
                                       height, width (int32: the grid), codes (list<int32>, row-major h·w);
                                       a residual model's rows also have stages (int32: S), and codes
                                       are then S·h·w, stage-major (stage, row, column)
    OUT_DIR/shard-00000.json           the shard's record (file, rows, sha256, failures), written last

A shard is written aside (`.part`) and renamed into place, then its record; a rerun trusts a shard
only if its record exists and its file's sha256 matches it. Same input, same bytes: rows in input
order, fixed Parquet settings (zstd, no statistics), and the writer's version in the manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from contract.manifest import sha256_of

FORMAT = "vqvae-tokens/1"
SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("label", pa.int64(), nullable=True),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("codes", pa.list_(pa.int32()), nullable=False),
])
# A residual model's shards: the same columns and `stages` (single-stage shards keep SCHEMA, byte for byte).
STAGED_SCHEMA = pa.schema([*list(SCHEMA)[:4], pa.field("stages", pa.int32(), nullable=False), *list(SCHEMA)[4:]])


@dataclass
class Row:
    key: str
    label: int | None
    height: int
    width: int
    codes: list[int]  # row-major, height·width (stages·height·width, stage-major, with stages)
    stages: int | None = None  # a residual model's stages per grid; None: single-stage


@dataclass
class Failure:
    key: str
    reason: str


@dataclass
class ShardRecord:
    file: str
    rows: int
    sha256: str
    failed: list[Failure] = field(default_factory=list)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(out_dir: Path, index: int, rows: list[Row], failed: list[Failure]) -> ShardRecord:
    """Write the shard aside, rename it into place, then its record (atomically, last)."""
    name = shard_name(index)
    columns: dict[str, list[Any]] = {"key": [r.key for r in rows], "label": [r.label for r in rows],
                                     "height": [r.height for r in rows], "width": [r.width for r in rows]}
    staged = any(r.stages is not None for r in rows)
    if staged:
        columns["stages"] = [r.stages for r in rows]
    table = pa.table({**columns, "codes": [r.codes for r in rows]}, schema=STAGED_SCHEMA if staged else SCHEMA)
    final, part = out_dir / f"{name}.parquet", out_dir / f"{name}.parquet.part"
    pq.write_table(table, part, compression="zstd", write_statistics=False, row_group_size=10_000)
    os.replace(part, final)
    record = ShardRecord(final.name, len(rows), sha256_of(final), failed)
    _write_json(out_dir / f"{name}.json", asdict(record))
    return record


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def complete_record(out_dir: Path, index: int) -> ShardRecord | None:
    """The shard's record when the shard is complete and intact, else None (it must be redone)."""
    name = shard_name(index)
    try:
        raw = json.loads((out_dir / f"{name}.json").read_text())
        record = ShardRecord(raw["file"], raw["rows"], raw["sha256"], [Failure(**f) for f in raw["failed"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = out_dir / record.file
    return record if path.is_file() and sha256_of(path) == record.sha256 else None


def write_manifest(out_dir: Path, job: dict[str, Any], records: list[ShardRecord]) -> dict[str, Any]:
    manifest = {"format": FORMAT, **job, "rows": sum(r.rows for r in records),
                "shards": [{"file": r.file, "rows": r.rows, "sha256": r.sha256} for r in records],
                "failed": [asdict(f) for r in records for f in r.failed],
                "writer": {"pyarrow": pa.__version__}}
    _write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_rows(path: Path) -> list[Row]:
    staged = "stages" in pq.read_schema(path).names
    table = pq.read_table(path, schema=STAGED_SCHEMA if staged else SCHEMA)
    return [Row(**row) for row in table.to_pylist()]
