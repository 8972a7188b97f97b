"""Shards back to images, to check a round trip: vqvae-detokenize OUT_DIR --out PNG_DIR.

    vqvae-detokenize tokens/ --out restored/ [--model models/tiny-imagenet] [--keep-tree] [--no-verify]
    python -m tokenizer.detokenize tokens/ --out restored/

Everything in a tokens folder is data, never a path to follow: a row's key names its PNG only
inside PNG_DIR, the manifest's shard files only inside OUT_DIR, its model name only one of the
models directory's own folders. Each row becomes PNG_DIR/<key>.png with the key escaped into one
file name ("cats/img001" -> "cats%2Fimg001.png"); with --keep-tree, sub-folders as in the key, for
keys that are plain relative paths ("../x", "/abs/x", "a//b" are refused). A key that cannot be
written safely, a second row with the same key, and a row whose codes the model cannot decode are
listed on stderr and skipped (exit status 1). Shards are checked against the sha256 the manifest
records before anything is decoded; an altered or damaged shard stops the job (--no-verify decodes
it anyway). Decoded by the model the manifest names (its graphs' sha256 must match), in runs of
grids of one size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from contract import ContractError
from contract.manifest import GRAPHS, Manifest, load_manifest, sha256_of
from runtime import CodecError
from runtime.images import encode_png, to_uint8
from runtime.model_runtime import ModelRuntime, load_model, named_model_dir
from tokenizer.shards import Failure, Row, read_rows

ROOT = Path(__file__).resolve().parents[1]
MAX_NAME_BYTES = 255  # a file name on Linux, macOS and Windows filesystems
MAX_DEPTH = 32  # --keep-tree: folders in a key
MAX_PIXELS = 1 << 26  # a restored image, as the codec CLI allows


class TokensError(ValueError):
    """A tokens folder that cannot be restored: malformed manifest, altered shard, unknown model."""


@dataclass
class Restored:
    written: int = 0
    skipped: list[Failure] = field(default_factory=list)


def read_job(tokens: Path) -> dict[str, Any]:
    """manifest.json, with the fields restoring reads checked (TokensError naming what is wrong)."""
    job = json.loads((tokens / "manifest.json").read_text())
    model = job.get("model") if isinstance(job, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("version"), str)
            and isinstance(model.get("graphs"), dict) and isinstance(job.get("shards"), list)):
        raise TokensError(f"{tokens / 'manifest.json'} is not a tokens manifest (model name, version, graphs, shards)")
    for shard in job["shards"]:
        if not (isinstance(shard, dict) and all(isinstance(shard.get(f), str) for f in ("file", "sha256"))):
            raise TokensError(f"{tokens / 'manifest.json'}: each shard needs a file and a sha256")
    return job  # type: ignore[no-any-return]


def shard_path(tokens: Path, name: str) -> Path:
    """A shard the manifest lists: a file name inside the tokens folder, never a path elsewhere."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name or not (tokens / name).is_file():
        raise TokensError(f"manifest.json lists shard {name[:80]!r}: not a file of {tokens}")
    return tokens / name


def verified_shards(tokens: Path, job: dict[str, Any], verify: bool) -> list[Path]:
    """Every shard's path; with `verify`, each file's sha256 equal to the manifest's, before any is read."""
    paths = [shard_path(tokens, shard["file"]) for shard in job["shards"]]
    if verify:
        altered = [p.name for p, shard in zip(paths, job["shards"], strict=True) if sha256_of(p) != shard["sha256"]]
        if altered:
            raise TokensError(f"{', '.join(altered[:5])} no longer match the sha256 in manifest.json (altered or "
                              "damaged); tokenize again, or pass --no-verify to decode them anyway")
    return paths


def output_path(out: Path, key: Any, keep_tree: bool) -> Path:
    """Where a row's PNG goes, always inside `out`; ValueError saying why a key cannot be written."""
    if not isinstance(key, str) or not key or "\0" in key:
        raise ValueError("an empty or malformed key")
    if not keep_tree:
        name = quote(key, safe="") + ".png"  # "/" and "%" escaped: one name per key, no folders
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"the key escapes to a file name over {MAX_NAME_BYTES} bytes")
        return _inside(out, out / name)
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts) or len(parts) > MAX_DEPTH:
        raise ValueError("with --keep-tree a key must be a relative path without '', '.', '..' or '\\' parts")
    if any(len(p.encode()) > MAX_NAME_BYTES - 4 for p in parts):
        raise ValueError(f"a part of the key is over {MAX_NAME_BYTES - 4} bytes")
    return _inside(out, out.joinpath(*parts[:-1], parts[-1] + ".png"))


def _inside(out: Path, path: Path) -> Path:
    """The names are plain; only a symbolic link already inside `out` could still lead elsewhere."""
    if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(out)):
        raise ValueError("the key leads outside --out through a symbolic link there")
    return path


def row_problem(row: Row, m: Manifest) -> str | None:
    """Why the model cannot decode a row's codes, or None."""
    h, w, codes, stages = row.height, row.width, row.codes, row.stages
    model_stages = m.quantizer.stages if m.quantizer.kind == "rvq" else None
    if stages != model_stages and not (isinstance(stages, int) and model_stages and 1 <= stages <= model_stages):
        return f"{stages} stages per grid; model {m.name!r} has {model_stages or 'no'} stages"
    if not (isinstance(h, int) and isinstance(w, int) and isinstance(codes, list) and h >= 1 and w >= 1
            and len(codes) == (stages or 1) * h * w):
        return f"a {h}×{w} grid does not hold its {len(codes) if isinstance(codes, list) else 'missing'} codes"
    if not m.fully_convolutional and (h, w) != (m.grid.height, m.grid.width):
        return f"grid {h}×{w}; model {m.name!r} decodes {m.grid.height}×{m.grid.width} grids only"
    if h * w * m.downsample**2 > MAX_PIXELS:
        return f"a {h}×{w} grid decodes to more than {MAX_PIXELS} pixels"
    if any(c is None or not 0 <= c < m.codebook_size for c in codes):
        return f"codes outside [0, {m.codebook_size})"
    return None


def check_model(model_dir: Path, job: dict[str, Any]) -> Manifest:
    manifest, wanted = load_manifest(model_dir), job["model"]
    if (manifest.name, manifest.version) != (wanted["name"], wanted["version"]) or any(
            manifest.file(g).sha256 != wanted["graphs"].get(g) for g in GRAPHS):
        raise ContractError(f"{model_dir} is not the model these tokens were made with "
                            f"({wanted['name'][:64]} {wanted['version'][:32]})")
    return manifest


def restore(tokens: Path, out: Path, model_dir: Path | None = None, batch: int = 64, keep_tree: bool = False,
            verify: bool = True, models_dir: Path = ROOT / "models") -> Restored:
    """Decode every row of every shard to a PNG inside `out`; rows that cannot be are listed, not written."""
    job = read_job(tokens)
    shards = verified_shards(tokens, job, verify)
    model_dir = model_dir or named_model_dir(models_dir, job["model"]["name"])
    manifest = check_model(model_dir, job)
    runtime = load_model(model_dir, "cpu", threads=0, warmup_runs=1)
    done, taken = Restored(), set[Path]()
    for shard in shards:
        rows = read_rows(shard)
        for start in range(0, len(rows), batch):
            ready = writable(rows[start : start + batch], out, keep_tree, manifest, taken, done.skipped)
            for (_, path), (_, image) in zip(ready, decode_rows(runtime, [row for row, _ in ready]), strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_png(image))
                done.written += 1
    return done


def writable(rows: list[Row], out: Path, keep_tree: bool, m: Manifest, taken: set[Path],
             skipped: list[Failure]) -> list[tuple[Row, Path]]:
    """(row, its PNG's path) for the rows that can be written; the others appended to `skipped`."""
    ready = []
    for row in rows:
        try:
            path = output_path(out, row.key, keep_tree)
            if path in taken:
                raise ValueError("a second row with this key (the first one was written)")
            problem = row_problem(row, m)
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            skipped.append(Failure(str(row.key)[:200], str(exc)))
            continue
        taken.add(path)
        ready.append((row, path))
    return ready


def decode_rows(runtime: ModelRuntime, rows: list[Row]) -> list[tuple[Row, np.ndarray]]:
    """Rows -> (row, uint8 (H, W, C)) in the order given, grids of one size decoded together."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(rows):  # (h, w), or (stages, h, w) for a residual model
        grid: tuple[int, ...] = (row.height, row.width) if row.stages is None else (row.stages, row.height, row.width)
        by_size.setdefault(grid, []).append(i)
    images: dict[int, np.ndarray] = {}
    for shape, group in by_size.items():
        grids = np.array([rows[i].codes for i in group], np.int64).reshape(len(group), *shape)
        images.update(zip(group, to_uint8(runtime.decode(grids)), strict=True))
    return [(row, images[i]) for i, row in enumerate(rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqvae-detokenize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokens", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="default: the model the manifest names, among models/")
    parser.add_argument("--keep-tree", action="store_true",
                        help="sub-folders as in the keys (plain relative paths only), not one escaped name per key")
    parser.add_argument("--no-verify", action="store_true",
                        help="decode shards whose sha256 no longer matches the manifest")
    args = parser.parse_args(argv)
    try:
        done = restore(args.tokens, args.out, args.model, keep_tree=args.keep_tree, verify=not args.no_verify)
    except (OSError, ValueError, KeyError, ContractError, CodecError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    for failure in done.skipped:
        print(f"skipped {failure.key!r}: {failure.reason}", file=sys.stderr)
    print(f"{done.written} images -> {args.out}/" + (f" ({len(done.skipped)} rows skipped)" if done.skipped else ""))
    return 1 if done.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
