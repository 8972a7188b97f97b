"""Rate–distortion on Kodak: a colour model against JPEG, WebP and AVIF, all 24 photos at full size.

    python -m bench.kodak --model models/tiny-imagenet        # prints the table; used by compression_report
    python -m bench.kodak --model models/tiny-imagenet-rvq --plot docs/kodak-rvq.png   # every k = 1..4

A residual model is measured at every number of stages k (the first k of its S stages' codes),
each k a point of its rate-distortion curve, with the targets of each k checked.

Ours, per image: the raw fixed-length code (ceil(log2 K) bits per 4×4 block: 0.5625 bpp for K = 512),
and the packed and entropy-coded streams as files (header and checksum included); PSNR over RGB of
the decoded 8-bit image, and SSIM (mean over channels). Baselines: Pillow's encoders swept over
quality, each photo's file size in bits per pixel; their PSNR at our rates is read off each codec's
curve (linear in bpp between the two sweep points around it), photo by photo, then averaged.
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contract.streams import Kind, encode_stream
from runtime.images import to_uint8
from runtime.model_runtime import ModelRuntime, load_model
from training.metrics import psnr_from_mse, ssim

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = {"JPEG": [1, 3, 5, 10, 15, 20, 30, 40, 50, 60, 75, 90], "WEBP": [0, 5, 10, 20, 30, 40, 50, 75, 90],
          "AVIF": [0, 10, 20, 30, 40, 50, 60, 70, 80]}
# CompressAI's published results on Kodak (PSNR over RGB, dB) at 0.25 and 0.5 bpp (../shared/data/README.md).
ANCHORS = {"JPEG": (24.66, 28.95), "WebP": (28.55, 31.32), "BPG 4:4:4": (30.32, 33.32),
           "Ballé 2018 factorized prior": (29.15, 31.83), "Ballé 2018 hyperprior": (29.95, 33.06)}


@dataclass
class KodakPoint:
    codec: str
    setting: str
    bpp: float  # mean over the 24 photos
    psnr: float  # mean over the photos of each photo's RGB PSNR
    ssim: float


def kodak_photos(data_dir: Path) -> list[np.ndarray]:
    """The 24 photos, uint8 (H, W, 3), in order (18 landscape 768×512, 6 portrait)."""
    return [np.asarray(Image.open(data_dir / "kodak" / f"kodim{i:02d}.png").convert("RGB")) for i in range(1, 25)]


def quality(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    mse = float(np.mean((original.astype(np.float64) - decoded) ** 2)) / 255.0**2
    return psnr_from_mse(mse), float(ssim(original[None], decoded[None])[0])


def baseline(photo: np.ndarray, fmt: str, q: int) -> tuple[float, float, float]:
    """(bpp, PSNR, SSIM) of one photo through Pillow's `fmt` at quality q."""
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format=fmt, quality=q)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return len(buffer.getvalue()) * 8 / (photo.shape[0] * photo.shape[1]), *quality(photo, decoded)


def ours(runtime: ModelRuntime, photos: list[np.ndarray]) -> list[KodakPoint]:
    """Raw code, packed and entropy stream per photo; a residual model's at every k = 1..S stages."""
    m = runtime.manifest
    stage_counts: list[int | None] = list(range(1, m.quantizer.stages + 1)) if m.quantizer.stages > 1 else [None]
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for photo in photos:
        pixels = photo.shape[0] * photo.shape[1]
        every = runtime.encode(photo.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255))
        for k in stage_counts:  # every: (1, h, w), or (1, S, h, w) whose first k stages are kept
            codes = every if k is None else every[:, :k]
            decoded = to_uint8(runtime.decode(codes))[0]  # (H, W, 3)
            psnr, structure = quality(photo, decoded)
            raw_bits = codes.size * math.ceil(math.log2(m.codebook_size))
            packed = encode_stream(codes, Kind.PACKED, m, runtime.entropy)
            entropy = encode_stream(codes, Kind.ENTROPY, m, runtime.entropy)
            prefix = "" if k is None else f"k={k} "
            for name, bits in (("raw code", raw_bits), ("packed stream", len(packed) * 8),
                               ("entropy stream", len(entropy) * 8)):
                rows.setdefault(prefix + name, []).append((bits / pixels, psnr, structure))
    return [KodakPoint("ours", name, *np.mean(values, axis=0)) for name, values in rows.items()]


# The residual model's targets (issue 24): mean Kodak PSNR at k = 1..4 stages.
STAGE_TARGETS_DB = {1: 27.5, 2: 30.8, 3: 32.3, 4: 33.0}


def stage_verdicts(points: list[KodakPoint], measured: dict[str, list[list[tuple[float, float, float]]]]) -> str:
    """Each k's PSNR against its target, and the entropy-coded points against JPEG at their bpp."""
    lines = []
    for p in points:
        k = int(p.setting.split()[0][2:]) if p.setting.startswith("k=") else None
        if k in STAGE_TARGETS_DB and p.setting.endswith("raw code"):
            target = STAGE_TARGETS_DB[k]
            lines.append(f"k = {k}: {p.psnr:.2f} dB, target ≥ {target}: {'met' if p.psnr >= target else 'NOT met'}")
        if k is not None and p.setting.endswith("entropy stream"):
            jpeg = baselines_at(measured, p.bpp)["JPEG"]
            lines.append(f"k = {k} entropy-coded: {p.psnr:.2f} dB at {p.bpp:.4f} bpp, JPEG there "
                         + (f"{jpeg:.2f} dB: {'above' if p.psnr > jpeg else 'NOT above'}" if jpeg else "–"))
    return "\n".join(lines)


def sweeps(photos: list[np.ndarray]) -> dict[str, list[list[tuple[float, float, float]]]]:
    """codec -> per quality setting -> per photo (bpp, PSNR, SSIM)."""
    return {fmt: [[baseline(photo, fmt, q) for photo in photos] for q in qualities]
            for fmt, qualities in SWEEPS.items()}


def psnr_at(curve: list[tuple[float, float, float]], bpp: float) -> float | None:
    """One photo's PSNR at `bpp`, linear between the sweep points around it; None outside the sweep."""
    points = sorted(curve)
    for (b0, p0, _), (b1, p1, _) in itertools.pairwise(points):
        if b0 <= bpp <= b1:
            return p0 + (p1 - p0) * (bpp - b0) / max(b1 - b0, 1e-12)
    return None


def baselines_at(measured: dict[str, list[list[tuple[float, float, float]]]], bpp: float) -> dict[str, float | None]:
    """codec -> mean PSNR over the photos at `bpp` (None when some photo's sweep does not reach it)."""
    out: dict[str, float | None] = {}
    for fmt, settings in measured.items():
        per_photo = [psnr_at([settings[s][i] for s in range(len(settings))], bpp) for i in range(len(settings[0]))]
        out[fmt] = None if any(p is None for p in per_photo) else float(np.mean(per_photo))  # type: ignore[arg-type]
    return out


def sweep_points(measured: dict[str, list[list[tuple[float, float, float]]]]) -> list[KodakPoint]:
    return [KodakPoint(fmt, f"q={q}", *np.mean(settings[s], axis=0))
            for fmt, settings in measured.items() for s, q in enumerate(SWEEPS[fmt])]


def plot(points: list[KodakPoint], sweep: list[KodakPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fmt, colour in (("JPEG", "tab:blue"), ("WEBP", "tab:orange"), ("AVIF", "tab:green")):
        series = sorted((p for p in sweep if p.codec == fmt), key=lambda p: p.bpp)
        ax.plot([p.bpp for p in series], [p.psnr for p in series], "o-", color=colour, markersize=4,
                label=f"{fmt.replace('WEBP', 'WebP')} (Pillow)")
    for name, (low, high) in ANCHORS.items():
        ax.plot([0.25, 0.5], [low, high], "x:", markersize=7, label=f"{name} (published)")
    curves: dict[str, list[KodakPoint]] = {}  # a residual model's k = 1..S points of one kind, as one curve
    for p in points:
        curves.setdefault(p.setting.split(" ", 1)[1] if p.setting.startswith("k=") else p.setting, []).append(p)
    for name, curve in curves.items():
        if len(curve) > 1 and name == "packed stream":
            continue  # on top of the raw code, a header's bytes to the right
        ax.plot([p.bpp for p in curve], [p.psnr for p in curve], "*-" if len(curve) > 1 else "*", markersize=11,
                label=f"ours: {name}" + (f", k = 1..{len(curve)} stages" if len(curve) > 1 else ""))
        for p in curve if len(curve) > 1 else []:
            ax.annotate(p.setting.split()[0], (p.bpp, p.psnr), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xlim(0, max(1.5, max(p.bpp for p in points) + 0.1))
    ax.set_xlabel("bits per pixel (mean over the 24 photos)")
    ax.set_ylabel("PSNR over RGB (dB, mean over the photos)")
    ax.set_title("Kodak, 24 photos at full size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(model_dir: Path, data_dir: Path, plot_path: Path) -> str:
    """The Kodak section of docs/compression.md, from one measurement."""
    photos = kodak_photos(data_dir)
    runtime = load_model(model_dir, "cpu", threads=0, warmup_runs=1)
    points, measured = ours(runtime, photos), sweeps(photos)
    sweep = sweep_points(measured)
    plot(points, sweep, plot_path)
    m = runtime.manifest
    rows = ["| ours | bpp | PSNR (dB) | SSIM | JPEG at that bpp | WebP | AVIF |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        at = baselines_at(measured, p.bpp)
        cells = [f"{v:.2f}" if v is not None else "below its lowest setting"
                 for v in (at["JPEG"], at["WEBP"], at["AVIF"])]
        rows.append(f"| {p.setting} | {p.bpp:.4f} | {p.psnr:.2f} | {p.ssim:.4f} | {' | '.join(cells)} |")
    sweep_rows = ["| format | quality | bpp | PSNR (dB) | SSIM |", "|---|---|---:|---:|---:|"]
    sweep_rows += [f"| {p.codec.replace('WEBP', 'WebP')} | {p.setting} | {p.bpp:.3f} | {p.psnr:.2f} | {p.ssim:.4f} |"
                   for p in sweep]
    anchors = "; ".join(f"{name} {low:.2f} / {high:.2f} dB" for name, (low, high) in ANCHORS.items())
    raw, entropy = points[0], points[2]
    jpeg_raw, jpeg_entropy = baselines_at(measured, raw.bpp)["JPEG"], baselines_at(measured, entropy.bpp)["JPEG"]
    verdicts = (f"Targets: ≥ 28.5 dB at ≤ 0.5625 bpp raw: {raw.psnr:.2f} dB, "
                f"{'met' if raw.psnr >= 28.5 else 'NOT met'}. Stretch, above JPEG's PSNR at our entropy-coded bpp: "
                + (f"ours {entropy.psnr:.2f} dB against JPEG {jpeg_entropy:.2f} dB at {entropy.bpp:.4f} bpp, "
                   f"{'met' if entropy.psnr > jpeg_entropy else 'NOT met'}." if jpeg_entropy is not None
                   else "JPEG cannot reach our rate on every photo, so no comparison is made.") + "\n\n")
    return (f"## Kodak (colour model `{m.name}` {m.version})\n\n"
            f"All 24 photos at full size (768×512 and 512×768), encoded whole by the model trained on 64×64 Tiny "
            f"ImageNet photos. Ours: {raw.setting} {raw.bpp:.4f} bpp (9 bits per 4×4 block), the packed stream and "
            f"the entropy-coded stream as files. Baselines: Pillow swept over quality, each codec's PSNR at our rate "
            f"read off its curve photo by photo (`bench/kodak.py`). Published anchors at 0.25 / 0.5 bpp "
            f"(CompressAI's results; `../shared/data/README.md`): {anchors}.\n\n"
            f"![Kodak rate-distortion](kodak.png)\n\n" + "\n".join(rows) + "\n\n"
            f"Where we stand: at our raw rate ({raw.bpp:.4f} bpp) we reach {raw.psnr:.2f} dB and JPEG "
            f"{jpeg_raw:.2f} dB; entropy-coded we need {entropy.bpp:.4f} bpp for the same {entropy.psnr:.2f} dB, "
            f"where JPEG gives {_or_dash(jpeg_entropy)}. WebP, AVIF and the learned codecs of the literature are "
            f"well above both: a 9-bit code per 4×4 block caps what a VQ-VAE of this size can keep, while a "
            f"transform codec spends its bits where the image needs them.\n\n" + verdicts +
            "<details><summary>The baselines' sweeps (means over the 24 photos)</summary>\n\n"
            + "\n".join(sweep_rows) + "\n\n</details>\n")


def _or_dash(value: float | None) -> str:
    return f"{value:.2f} dB" if value is not None else "nothing (below its lowest setting)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kodak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-imagenet")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--plot", type=Path, help="also draw the curves to this PNG")
    args = parser.parse_args(argv)
    photos = kodak_photos(args.data_dir)
    points = ours(load_model(args.model, "cpu", threads=0, warmup_runs=1), photos)
    measured = sweeps(photos)
    print("| ours | bpp | PSNR (dB) | SSIM | JPEG at that bpp | WebP | AVIF |\n|---|---:|---:|---:|---:|---:|---:|")
    for p in points:
        at = baselines_at(measured, p.bpp)
        cells = [f"{v:.2f}" if v is not None else "–" for v in (at["JPEG"], at["WEBP"], at["AVIF"])]
        print(f"| {p.setting} | {p.bpp:.4f} | {p.psnr:.2f} | {p.ssim:.4f} | {' | '.join(cells)} |")
    verdicts = stage_verdicts(points, measured)
    if verdicts:
        print("\n" + verdicts)
    if args.plot:
        plot(points, sweep_points(measured), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
