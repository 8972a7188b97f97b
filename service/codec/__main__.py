"""Compress a folder of images to one code stream, and back, with a shipped model (no server).

    python -m service.codec compress digits/ digits.vqc [--model mnist] [--format entropy|packed|prior]
    python -m service.codec decompress digits.vqc restored/
    python -m service.codec inspect digits.vqc

Images are taken in file-name order and must share a size (or pass --resize native); restored
images are written as 00000.png, 00001.png, ... in the same order. The streams are the ones the
service produces with /encode?format=... and accepts at /decode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from contract import ContractError
from contract.prior import PriorCoder
from contract.streams import Kind, decode_stream, encode_stream, parse_header, unseal
from service.config import SHIPPED_MODELS
from service.errors import ServiceError
from service.inference.runtime import ModelRuntime, load_model
from service.inputs.bodies import ImageUpload
from service.inputs.images import decode_many, encode_png, encode_size, read_header, to_model_input, to_uint8

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CHUNK = 256  # images per onnxruntime run
MAX_PIXELS = 1 << 26  # per image: offline, on the user's own files


def runtime_for(models_dir: Path, name: str) -> ModelRuntime:
    return load_model(models_dir / name, "auto", threads=0, warmup_runs=1)


def prior_coder(model: ModelRuntime) -> PriorCoder | None:
    return model.prior.coder if model.prior else None


def compress(args: argparse.Namespace) -> str:
    files = sorted(p for p in args.source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ServiceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.source}")
    model = runtime_for(args.models_dir, args.model)
    uploads = [ImageUpload(p.name, p.read_bytes()) for p in files]
    size = encode_size(model.manifest, [read_header(u, MAX_PIXELS) for u in uploads], args.resize)
    codes = np.concatenate([model.encode(to_model_input(decode_many(model.manifest, uploads[i : i + CHUNK], args.resize,
                                                                    size, MAX_PIXELS)))
                            for i in range(0, len(uploads), CHUNK)])  # (N, h, w)
    stream = encode_stream(codes, Kind[args.format.upper()], model.manifest, model.entropy, prior_coder(model))
    args.target.write_bytes(stream)
    return (f"{len(files)} images -> {args.target} ({len(stream)} bytes, {len(stream) / len(files):.1f} bytes "
            f"per image, {args.format}, {model.manifest.name} {model.manifest.version})")


def decompress(args: argparse.Namespace) -> str:
    stream = args.source.read_bytes()
    header, _ = parse_header(unseal(stream))
    model = runtime_for(args.models_dir, header.model)
    codes = decode_stream(stream, model.manifest, model.entropy, prior=prior_coder(model))
    args.target.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(codes), CHUNK):
        for i, image in enumerate(to_uint8(model.decode(codes[start : start + CHUNK]))):
            (args.target / f"{start + i:05d}.png").write_bytes(encode_png(image))
    return f"{len(codes)} images -> {args.target}/ ({header.height * 4}×{header.width * 4} PNGs)"


def inspect(args: argparse.Namespace) -> str:
    stream = args.source.read_bytes()
    header, offset = parse_header(unseal(stream))
    return (f"{header.kind.name.lower()} stream: model {header.model} {header.version}, K={header.codebook_size}, "
            f"{header.count} grids of {header.height}×{header.width}, {len(stream)} bytes "
            f"(header {offset}, payload {len(stream) - offset - 4}, crc 4)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m service.codec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=SHIPPED_MODELS)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="a folder of images -> one stream file")
    c.add_argument("source", type=Path)
    c.add_argument("target", type=Path)
    c.add_argument("--model", default="mnist")
    c.add_argument("--format", choices=["entropy", "packed", "prior"], default="entropy",
                   help="prior: coded with the model's learned prior (models that ship one; native-size images)")
    c.add_argument("--resize", choices=["native"], default=None)
    d = sub.add_parser("decompress", help="a stream file -> a folder of PNGs")
    d.add_argument("source", type=Path)
    d.add_argument("target", type=Path)
    i = sub.add_parser("inspect", help="print a stream's header")
    i.add_argument("source", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    action = {"compress": compress, "decompress": decompress, "inspect": inspect}[args.command]
    try:
        print(action(args))
    except (ServiceError, ContractError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
