"""Rate–distortion: our code streams against JPEG, WebP and AVIF (Pillow) on MNIST and Fashion-MNIST.

    python -m bench.compression          # writes docs/compression.md and docs/compression.png

Quality is measured on the 8-bit images each codec hands back (PSNR over the subset, mean SSIM).
Sizes are whole files as a user stores them. Our points: the raw fixed-length code (49 × 9 bits),
packed and entropy-coded streams holding one image each, and one stream holding the whole test set
(the header amortised), and, for models that ship a prior, the whole test set coded with the prior
(decoded again and compared: lossless). Entropy coding is measured with the per-position model (shipped) and with
one model for all positions, to show which is smaller.
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contract.entropy_model import EntropyModel
from contract.streams import Kind, decode_stream, encode_stream
from datasources.idx_files import load_split
from runtime.images import to_uint8
from runtime.model_runtime import ModelRuntime, load_model
from training.metrics import psnr_from_mse, ssim

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = {"JPEG": [1, 5, 10, 20, 30, 50, 75, 90, 95], "WEBP": [0, 5, 10, 20, 30, 50, 75, 90, 100],
          "AVIF": [0, 10, 20, 30, 50, 70, 90]}
SIDES = (28, 14)  # full resolution, and half resolution enlarged again after decoding


@dataclass
class Point:
    codec: str
    setting: str
    bytes_per_image: float
    psnr: float
    ssim: float


def quality(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    mse = float(np.mean((original.astype(np.float64) - decoded) ** 2)) / 255.0**2
    return psnr_from_mse(mse), float(ssim(original, decoded).mean())


def round_trip(image: np.ndarray, fmt: str, q: int, side: int) -> tuple[int, np.ndarray]:
    """One image through a format at `side`×`side` pixels -> (file bytes, decoded 28×28 uint8). Below 28 the
    image is shrunk before encoding and enlarged after decoding (Lanczos): how a user meets a byte budget
    that the format cannot reach at full resolution."""
    source = Image.fromarray(image)
    if side != image.shape[0]:
        source = source.resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    source.save(buffer, format=fmt, quality=q)
    decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    if side != image.shape[0]:
        decoded = decoded.resize(image.shape[::-1], Image.Resampling.LANCZOS)
    return buffer.tell(), np.asarray(decoded)


def baseline_points(images: np.ndarray) -> list[Point]:
    points = []
    for side, (fmt, qualities) in itertools.product(SIDES, SWEEPS.items()):
        for q in qualities:
            sizes, decoded = zip(*(round_trip(image, fmt, q, side) for image in images), strict=True)
            label = fmt if side == images.shape[1] else f"{fmt} {side}×{side}"
            points.append(Point(label, f"q={q}", float(np.mean(sizes)), *quality(images, np.stack(decoded))))
    png = np.mean([len(_png(image)) for image in images])
    points.append(Point("PNG", "lossless", float(png), math.inf, 1.0))
    return points


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def encode_all(runtime: ModelRuntime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime.encode((images[i : i + 500, None] / np.float32(255)).astype(np.float32))
                           for i in range(0, len(images), 500)])


def our_points(runtime: ModelRuntime, images: np.ndarray, subset: int) -> tuple[list[Point], dict[str, float]]:
    codes = encode_all(runtime, images)  # (N, 7, 7) over the whole test set
    m, entropy = runtime.manifest, runtime.entropy
    assert entropy is not None
    decoded = to_uint8(runtime.decode(codes[:subset]))[..., 0]  # (subset, 28, 28) as the service returns them
    psnr, ssim_value = quality(images[:subset], decoded)
    sizes = {
        "fixed-length code (49 × 9 bits)": codes[0].size * math.ceil(math.log2(m.codebook_size)) / 8,
        "packed stream, one image": float(np.mean([len(encode_stream(c[None], Kind.PACKED, m, entropy))
                                                   for c in codes[:subset]])),
        "entropy stream, one image": float(np.mean([len(encode_stream(c[None], Kind.ENTROPY, m, entropy))
                                                    for c in codes[:subset]])),
        "packed stream, whole test set": len(encode_stream(codes, Kind.PACKED, m, entropy)) / len(codes),
        "entropy stream, whole test set": len(encode_stream(codes, Kind.ENTROPY, m, entropy)) / len(codes),
        **{f"entropy stream, whole test set, {name}": len(encode_stream(codes, Kind.ENTROPY, m, variant)) / len(codes)
           for name, variant in _variants(runtime).items()},
    }
    if runtime.prior is not None:  # the learned prior's conditionals; the stream must decode to the codes
        stream = encode_stream(codes, Kind.PRIOR, m, entropy, runtime.prior.coder)
        if not np.array_equal(decode_stream(stream, m, entropy, prior=runtime.prior.coder), codes):
            raise AssertionError(f"{m.name}: the prior stream of the test set does not decode to its codes")
        sizes["prior stream, whole test set"] = len(stream) / len(codes)
    points = [Point("ours", name, size, psnr, ssim_value) for name, size in sizes.items()]
    return points, {"ideal_bits_positional": _positional_entropy_bits(codes)}


def _variants(runtime: ModelRuntime) -> dict[str, EntropyModel]:
    """The shipped model, and simpler ones from the same file, to show what each part buys."""
    path = runtime_dir(runtime) / (runtime.manifest.entropy_model.path if runtime.manifest.entropy_model else "")
    with np.load(path) as data:
        overall, positional = data["overall"], data["positional"]
        left = data.get("left")
        return {
            "one model for all positions": EntropyModel(np.broadcast_to(overall, positional.shape).copy(), overall),
            "per-position model, no neighbour context": EntropyModel(positional, overall),
            "per-position model, left neighbour only": EntropyModel(positional, overall, left),
        }


def runtime_dir(runtime: ModelRuntime) -> Path:
    return ROOT / "models" / runtime.manifest.name


def _positional_entropy_bits(codes: np.ndarray) -> float:
    """Σ over positions of the empirical entropy of that position's codes (a lower bound for a static model)."""
    flat = codes.reshape(len(codes), -1)
    total = 0.0
    for column in flat.T:
        p = np.bincount(column) / len(column)
        p = p[p > 0]
        total += float(-(p * np.log2(p)).sum())
    return total


def baseline_series(points: list[Point]) -> list[str]:
    """The lossy baselines in the order measured: "JPEG", ..., "WEBP 14×14", ..."""
    return list(dict.fromkeys(p.codec for p in points if p.codec not in ("ours", "PNG")))


def sweep_of(points: list[Point], series: str) -> list[Point]:
    return sorted((p for p in points if p.codec == series), key=lambda p: p.bytes_per_image)


def psnr_at_bytes(points: list[Point], series: str, target: float) -> tuple[float, str]:
    """A series' PSNR at `target` bytes: interpolated inside its range; below its smallest file, the PSNR
    of that smallest file, an upper bound (smaller files of a format are not sharper) -> (dB, how)."""
    sweep = sweep_of(points, series)
    if target < sweep[0].bytes_per_image:
        s = sweep[0]
        return s.psnr, f"≤ {s.psnr:.2f} dB (cannot get that small: its smallest files, {s.setting}, are " \
                       f"{s.bytes_per_image:.0f} bytes)"
    for a, b in itertools.pairwise(sweep):
        if a.bytes_per_image <= target <= b.bytes_per_image:
            t = (target - a.bytes_per_image) / (b.bytes_per_image - a.bytes_per_image)
            value = a.psnr + t * (b.psnr - a.psnr)
            return value, f"{value:.2f} dB (interpolated between {a.setting} and {b.setting})"
    best = sweep[-1]
    return best.psnr, f"{best.psnr:.2f} dB (at its largest setting, {best.setting})"


def bytes_for_psnr(points: list[Point], series: str, target: float) -> str:
    sweep = sweep_of(points, series)
    if sweep[0].psnr >= target:  # even its smallest file is at least as sharp
        s = sweep[0]
        return f"≤ {s.bytes_per_image:.0f} bytes (its smallest files, {s.setting}, already give {s.psnr:.2f} dB)"
    for a, b in itertools.pairwise(sweep):
        if a.psnr <= target <= b.psnr:
            t = (target - a.psnr) / (b.psnr - a.psnr)
            return f"{a.bytes_per_image + t * (b.bytes_per_image - a.bytes_per_image):.0f} bytes"
    best = max(sweep, key=lambda p: p.psnr)
    return f"not reached (best {best.psnr:.2f} dB at {best.bytes_per_image:.0f} bytes)"


def measure(dataset: str, data_dir: str | None, subset: int) -> tuple[list[Point], dict[str, float]]:
    images = load_split(dataset, "test", data_dir)[0]
    runtime = load_model(ROOT / "models" / dataset, "cpu", threads=0, warmup_runs=1)
    ours, extra = our_points(runtime, images, subset)
    return ours + baseline_points(images[:subset]), extra
