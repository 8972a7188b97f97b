"""Shards back to images, to check a round trip: vqvae-detokenize OUT_DIR --out PNG_DIR.

    vqvae-detokenize tokens/ --out restored/ [--model models/tiny-imagenet]
    python -m tokenizer.detokenize tokens/ --out restored/

Each row becomes PNG_DIR/<key>.png (sub-folders as in the key), decoded by the model the manifest
names (its graphs' sha256 must match), in runs of grids of one size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from contract import ContractError
from contract.manifest import GRAPHS, load_manifest
from runtime.images import encode_png, to_uint8
from runtime.model_runtime import load_model
from tokenizer.shards import Row, read_rows

ROOT = Path(__file__).resolve().parents[1]


def restore(tokens: Path, out: Path, model_dir: Path, batch: int = 64) -> int:
    job = json.loads((tokens / "manifest.json").read_text())
    manifest = load_manifest(model_dir)
    wanted = job["model"]
    if (manifest.name, manifest.version) != (wanted["name"], wanted["version"]) or any(
            manifest.file(g).sha256 != wanted["graphs"][g] for g in GRAPHS):
        raise ContractError(f"{model_dir} is not the model these tokens were made with "
                            f"({wanted['name']} {wanted['version']})")
    runtime = load_model(model_dir, "cpu", threads=0, warmup_runs=1)
    written = 0
    for shard in job["shards"]:
        rows = read_rows(tokens / shard["file"])
        for start in range(0, len(rows), batch):
            for row, image in decode_rows(runtime, rows[start : start + batch]):
                path = out / f"{row.key}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_png(image))
                written += 1
    return written


def decode_rows(runtime: object, rows: list[Row]) -> list[tuple[Row, np.ndarray]]:
    """Rows -> (row, uint8 (H, W, C)), grids of one size decoded together."""
    out = []
    by_size: dict[tuple[int, ...], list[Row]] = {}
    for row in rows:  # (h, w), or (stages, h, w) for a residual model
        by_size.setdefault((row.height, row.width) if row.stages is None else (row.stages, row.height, row.width),
                           []).append(row)
    for shape, group in by_size.items():
        grids = np.array([r.codes for r in group], np.int64).reshape(len(group), *shape)
        images = to_uint8(runtime.decode(grids))  # type: ignore[attr-defined]
        out += list(zip(group, images, strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqvae-detokenize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokens", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="default: models/<the manifest's model name>")
    args = parser.parse_args(argv)
    try:
        name = json.loads((args.tokens / "manifest.json").read_text())["model"]["name"]
        count = restore(args.tokens, args.out, args.model or ROOT / "models" / name)
    except (OSError, ValueError, KeyError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{count} images -> {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
