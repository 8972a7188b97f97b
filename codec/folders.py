"""A folder of images <-> one code stream, with a model from a models directory (no server).

Images are taken in file-name order and must share a size (or resize to the model's native
size); restored images are written as 00000.png, 00001.png, ... in the same order. The streams
are the ones the service produces with /encode?format=... and accepts at /decode. A stream's
header names its model: that name is looked up among the models directory's own folders, never
joined to a path (a stream is data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.formats import STREAM_FORMAT_NAMES, OutputFormat
from contract.prior_coding import PriorCoder
from contract.streams import decode_stream, encode_stream, parse_header, unseal
from runtime import CodecError
from runtime.images import (
    ImageUpload,
    Resize,
    decode_many,
    encode_png,
    encode_size,
    read_header,
    to_model_input,
    to_uint8,
)
from runtime.model_runtime import ModelRuntime, load_model, named_model_dir

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CHUNK = 256  # images per onnxruntime run
MAX_PIXELS = 1 << 26  # per image: offline, on the user's own files


def runtime_for(models_dir: Path, name: str) -> ModelRuntime:
    """The model called `name` in `models_dir`: only a name among its folders, never a path."""
    return load_model(named_model_dir(models_dir, name), "auto", threads=0, warmup_runs=1)


def prior_coder(model: ModelRuntime) -> PriorCoder | None:
    return model.prior.coder if model.prior else None


def compress(source: Path, target: Path, models_dir: Path, model_name: str, fmt: OutputFormat,
             resize: Resize, stages: int | None = None) -> str:
    """`stages`: a residual model's first k stages (default: all); the fewer, the smaller and coarser."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CodecError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    if fmt.stream_kind is None:
        raise CodecError(f"format {fmt.name!r} is not a stream; choose one of {', '.join(STREAM_FORMAT_NAMES)}")
    model = runtime_for(models_dir, model_name)
    if stages is not None and not 1 <= stages <= model.stages:
        raise CodecError(f"--stages {stages}: model {model_name!r} has {model.stages} stage(s)")
    uploads = [ImageUpload(p.name, p.read_bytes()) for p in files]
    size = encode_size(model.manifest, [read_header(u, MAX_PIXELS) for u in uploads], resize)
    codes = np.concatenate([model.encode(to_model_input(decode_many(model.manifest, uploads[i : i + CHUNK], resize,
                                                                    size, MAX_PIXELS)))
                            for i in range(0, len(uploads), CHUNK)])  # (N, h, w) or (N, S, h, w)
    if stages is not None and model.stages > 1:
        codes = codes[:, :stages]
    stream = encode_stream(codes, fmt.stream_kind, model.manifest, model.entropy, prior_coder(model))
    target.write_bytes(stream)
    return (f"{len(files)} images -> {target} ({len(stream)} bytes, {len(stream) / len(files):.1f} bytes "
            f"per image, {fmt.name}, {model.manifest.name} {model.manifest.version})")


def decompress(source: Path, target: Path, models_dir: Path) -> str:
    stream = source.read_bytes()
    header, _ = parse_header(unseal(stream))
    model = runtime_for(models_dir, header.model)
    codes = decode_stream(stream, model.manifest, model.entropy, prior=prior_coder(model))
    target.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(codes), CHUNK):
        for i, image in enumerate(to_uint8(model.decode(codes[start : start + CHUNK]))):
            (target / f"{start + i:05d}.png").write_bytes(encode_png(image))
    ds = model.manifest.downsample
    return f"{len(codes)} images -> {target}/ ({header.height * ds}×{header.width * ds} PNGs)"


def inspect(source: Path) -> str:
    stream = source.read_bytes()
    header, offset = parse_header(unseal(stream))
    stages = f" × {header.stages} stages" if header.stages is not None else ""
    return (f"{header.kind.name.lower()} stream: model {header.model} {header.version}, K={header.codebook_size}, "
            f"{header.count} grids of {header.height}×{header.width}{stages}, {len(stream)} bytes "
            f"(header {offset}, payload {len(stream) - offset - 4}, crc 4)")
