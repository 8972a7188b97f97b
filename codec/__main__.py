"""Compress a folder of images to one code stream, and back, with a shipped model (no server).

    python -m codec compress digits/ digits.vqc [--model mnist] [--format entropy|packed|prior]
    python -m codec decompress digits.vqc restored/
    python -m codec inspect digits.vqc

Images are taken in file-name order and must share a size (or pass --resize native); restored
images are written as 00000.png, 00001.png, ... in the same order. The streams are the ones the
service produces with /encode?format=... and accepts at /decode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codec.folders import compress, decompress, inspect
from contract import ContractError
from contract.formats import STREAM_FORMATS, output_format
from runtime import CodecError
from runtime.model_runtime import SHIPPED_MODELS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m codec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=SHIPPED_MODELS)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="a folder of images -> one stream file")
    c.add_argument("source", type=Path)
    c.add_argument("target", type=Path)
    c.add_argument("--model", default="mnist")
    c.add_argument("--format", choices=[f.name for f in STREAM_FORMATS], default="entropy",
                   help="; ".join(f"{f.name}: {f.summary}" for f in STREAM_FORMATS))
    c.add_argument("--resize", choices=["native"], default=None)
    c.add_argument("--stages", type=int, help="residual models: keep the first k stages (default: all)")
    d = sub.add_parser("decompress", help="a stream file -> a folder of PNGs")
    d.add_argument("source", type=Path)
    d.add_argument("target", type=Path)
    i = sub.add_parser("inspect", help="print a stream's header")
    i.add_argument("source", type=Path)
    return p


def run(args: argparse.Namespace) -> str:
    if args.command == "compress":
        return compress(args.source, args.target, args.models_dir, args.model, output_format(args.format),
                        args.resize, args.stages)
    if args.command == "decompress":
        return decompress(args.source, args.target, args.models_dir)
    return inspect(args.source)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(run(args))
    except (CodecError, ContractError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
