"""Your own images as a data set: a folder, one tar shard, or many (a glob or a brace range).

    source = open_source("../shared/data/tiny-imagenet/train-{0000..0009}.tar.gz")
    source = open_source("~/photos")                   # searched recursively
    pixels = source.decode(i, channels=3)              # uint8 (H, W, 3); UnreadableImage if it is not

- A folder: every PNG, JPEG, WebP, BMP, TIFF and GIF (first frame) below it, in sorted path order;
  key = the path relative to the folder without its extension; label = the index of its top-level
  sub-folder among them (None for files at the top).
- Tar shards (webdataset convention): members `<key>.<ext>` grouped by key; the image member is
  the sample, `<key>.cls` (ASCII digits) its label. A shard is read whole into the reading process
  when one of its samples is needed (gzip allows no random access): one shard per process at a time.
- Built-in names (mnist, fashion-mnist) are not sources: datasources/idx_files.py reads those, and
  datasources/dataset.py opens either by one spelling.

Decoding follows the service: EXIF orientation applied, alpha composited on black, 16-bit scaled,
then grey or RGB as the model wants (grey files in a colour set become RGB, and vice versa).
Numpy and Pillow only: DataLoader workers import this.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datasources import SourceError, UnreadableImage

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P"}


@dataclass(frozen=True)
class Sample:
    key: str
    label: int | None
    shard: int  # index into the source's shard list; -1 for a folder's file
    member: str  # the tar member name, or the file path


def expand(spec: str) -> list[Path]:
    """A path, a glob, or a brace range ("train-{0000..0009}.tar.gz") -> existing paths, sorted."""
    spec = os.path.expanduser(spec)
    match = BRACE_RANGE.search(spec)
    if match:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        specs = [spec[: match.start()] + str(i).zfill(width) + spec[match.end() :]
                 for i in range(int(first), int(last) + 1)]
        paths = [p for s in specs for p in expand(s)]
        missing = [s for s in specs if not Path(s).exists() and not glob.has_magic(s)]
        if missing:
            raise SourceError(f"{len(missing)} path(s) of the range do not exist, e.g. {missing[0]}")
        return paths
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(spec))
    return [Path(spec)] if Path(spec).exists() else []


def _key_and_extension(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    stem, dot, extension = base.partition(".")  # webdataset: the key ends at the first dot
    prefix = name[: len(name) - len(base)]
    return prefix + stem, ("." + extension.lower()) if dot else ""


def _scan_shard(path: Path, shard: int) -> list[Sample]:
    images: dict[str, str] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = _key_and_extension(member.name)
                if extension == ".cls":
                    reader = tar.extractfile(member)
                    text = reader.read().decode("ascii", "replace").strip() if reader else ""
                    if text.isdigit():
                        labels[key] = int(text)
                elif extension in IMAGE_EXTENSIONS:
                    images[key] = member.name
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable tar shard ({exc})") from exc
    return [Sample(key, labels.get(key), shard, name) for key, name in images.items()]


def _scan_folder(root: Path) -> list[Sample]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for path in files:
        relative = path.relative_to(root)
        label = index[relative.parts[0]] if len(relative.parts) > 1 else None
        samples.append(Sample(str(relative.with_suffix("")), label, -1, str(path)))
    return samples


class ImageSource:
    """The samples of a folder or of tar shards, readable by index in any process."""

    def __init__(self, spec: str, samples: list[Sample], shards: list[Path]) -> None:
        if not samples:
            raise SourceError(f"{spec}: no images there (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.spec, self.samples, self.shards = spec, samples, shards
        self._cached: tuple[int, dict[str, bytes]] | None = None  # one shard's members, per process

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def listing_dir(self) -> Path:
        """Where a `classes.txt` naming the labels would be: beside the shards (or the folder)."""
        return (self.shards[0] if self.shards else Path(os.path.expanduser(self.spec))).parent

    @property
    def labelled(self) -> bool:
        return any(s.label is not None for s in self.samples)

    def read(self, index: int) -> bytes:
        sample = self.samples[index]
        if sample.shard < 0:
            return Path(sample.member).read_bytes()
        if self._cached is None or self._cached[0] != sample.shard:
            self._cached = (sample.shard, self._load_shard(sample.shard))
        return self._cached[1][sample.member]

    def _load_shard(self, shard: int) -> dict[str, bytes]:
        members: dict[str, bytes] = {}
        with tarfile.open(self.shards[shard], "r:*") as tar:
            for member in tar:
                if member.isfile() and _key_and_extension(member.name)[1] in IMAGE_EXTENSIONS:
                    reader = tar.extractfile(member)
                    members[member.name] = reader.read() if reader else b""
        return members

    def decode(self, index: int, channels: int) -> np.ndarray:
        """uint8 (H, W, channels); UnreadableImage naming the sample when it does not decode."""
        sample = self.samples[index]
        try:
            return decode_pixels(self.read(index), channels)
        except (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError, KeyError,
                Image.DecompressionBombError) as exc:
            where = sample.member if sample.shard < 0 else f"{self.shards[sample.shard]}:{sample.member}"
            raise UnreadableImage(f"{where} ({type(exc).__name__})") from exc  # stable: warned once per file

    def is_colour(self, probe: int = 64) -> bool:
        """Whether the first `probe` readable images include colour ones (then the model is RGB)."""
        for index in range(min(probe, len(self))):
            try:
                with Image.open(io.BytesIO(self.read(index))) as image:
                    if _colour(image):
                        return True
            except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
                continue
        return False


def _colour(image: Image.Image) -> bool:
    if image.mode in GREY_MODES - {"P"}:
        return False
    if image.mode in ("P", "PA"):  # a palette is colour only if some entry is
        rgb = np.asarray(image.convert("RGB"))
        return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
    return True


def decode_pixels(data: bytes, channels: int) -> np.ndarray:
    """Encoded image -> uint8 (H, W, channels), as the service decodes uploads."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)
            image = ImageOps.exif_transpose(opened) or opened
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                wide = np.asarray(image, dtype=np.float64)
                image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image.convert("RGBA"))
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def open_source(spec: str) -> ImageSource:
    """A folder, a tar shard, or a glob / brace range of shards -> an ImageSource (SourceError if empty)."""
    paths = expand(spec)
    if not paths:
        raise SourceError(f"{spec}: no such folder, file or shards")
    if len(paths) == 1 and paths[0].is_dir():
        return ImageSource(spec, _scan_folder(paths[0]), [])
    not_tar = [p for p in paths if not p.name.endswith(TAR_SUFFIXES)]
    if not_tar:
        raise SourceError(f"{not_tar[0]}: not a folder or a tar shard (.tar, .tar.gz, .tgz)")
    samples = [s for shard, path in enumerate(paths) for s in _scan_shard(path, shard)]
    return ImageSource(spec, samples, paths)
