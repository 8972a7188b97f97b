"""Your own images as a data set: a folder, one tar shard, or many (a glob or a brace range).

    source = open_source("../shared/data/tiny-imagenet/train-{0000..0009}.tar.gz")
    source = open_source("~/photos")                   # searched recursively
    pixels = source.decode(i, channels=3)              # uint8 (H, W, 3); UnreadableImage if it is not

- A folder: every PNG, JPEG, WebP, BMP, TIFF and GIF (first frame) below it, in sorted path order;
  key = the path relative to the folder without its extension; label = the index of its top-level
  sub-folder among them (None for files at the top).
- Tar shards (webdataset convention): members `<key>.<ext>` grouped by key; the image member is
  the sample, `<key>.cls` (ASCII digits) its label. When one of a shard's samples is needed, its
  members from that one on are read into the reading process (gzip allows no random access), up to
  WINDOW_BYTES of them: a shard of ordinary size is read once, whole; a larger one a window at a time.
- Sizes are limited before anything is read: an image file or member over `max_file_bytes` (64 MiB
  by default) and a label member over MAX_LABEL_BYTES are never read; their sample stays in the set
  (its index, key and order do not change) but reads as UnreadableImage naming the limit, so the
  tokenizer lists it with the unreadable files and training skips it. A tar header may claim any
  size: what is held never depends on it (a 0.5 MB tar.gz can hold a 512 MiB member of zeros).
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
MAX_FILE_BYTES = 64 << 20  # an image file or tar member; larger ones are listed as unreadable
MAX_LABEL_BYTES = 32  # a `.cls` member: ASCII digits
WINDOW_BYTES = 256 << 20  # a shard's members held in memory at once, at most (a member over it: alone)


@dataclass(frozen=True)
class Sample:
    key: str
    label: int | None
    shard: int  # index into the source's shard list; -1 for a folder's file
    member: str  # the tar member name, or the file path
    offset: int = -1  # the tar member's header offset: its identity (a tar may repeat a name)
    problem: str | None = None  # why it cannot be read (over a size limit), found while scanning


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


def _label(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int | str | None:
    """A `.cls` member's label; a problem (str) when it is over MAX_LABEL_BYTES; None when not digits."""
    if member.size > MAX_LABEL_BYTES:
        return f"its label {member.name} is {member.size} bytes; a label is at most {MAX_LABEL_BYTES}"
    reader = tar.extractfile(member)
    text = reader.read(MAX_LABEL_BYTES).decode("ascii", "replace").strip() if reader else ""
    return int(text) if text.isascii() and text.isdigit() else None


def _scan_shard(path: Path, shard: int, max_file_bytes: int) -> list[Sample]:
    images: dict[str, tarfile.TarInfo] = {}
    labels: dict[str, int | str | None] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = _key_and_extension(member.name)
                if extension == ".cls":
                    labels[key] = _label(tar, member)
                elif extension in IMAGE_EXTENSIONS:
                    images[key] = member
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable tar shard ({exc})") from exc
    samples = []
    for key, member in images.items():
        label = labels.get(key)
        problem = label if isinstance(label, str) else _over_limit(member.size, max_file_bytes)
        samples.append(Sample(key, label if isinstance(label, int) else None, shard, member.name, member.offset,
                              problem))
    return samples


def _over_limit(size: int, max_file_bytes: int) -> str | None:
    return f"{size} bytes, over the limit of {max_file_bytes}" if size > max_file_bytes else None


def _read_file(path: Path, max_file_bytes: int) -> bytes:
    """A folder's file, read no further than the limit (it may have grown since the scan)."""
    with path.open("rb") as file:
        data = file.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise UnreadableImage(f"{path}: over the limit of {max_file_bytes} bytes")
    return data


def _read_window(path: Path, start: int, max_file_bytes: int) -> dict[int, bytes]:
    """The shard's image members from the one at offset `start` on (that one always), by offset, up to
    WINDOW_BYTES in all; members over the limit are skipped unread."""
    members: dict[int, bytes] = {}
    held = 0
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.offset < start or not member.isfile() or member.size > max_file_bytes:
                continue
            if _key_and_extension(member.name)[1] not in IMAGE_EXTENSIONS:
                continue
            if members and held + member.size > WINDOW_BYTES:
                break
            reader = tar.extractfile(member)
            members[member.offset] = reader.read(member.size) if reader else b""
            held += member.size
    return members


def _scan_folder(root: Path, max_file_bytes: int) -> list[Sample]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for path in files:
        relative = path.relative_to(root)
        label = index[relative.parts[0]] if len(relative.parts) > 1 else None
        problem = _over_limit(path.stat().st_size, max_file_bytes)
        samples.append(Sample(str(relative.with_suffix("")), label, -1, str(path), problem=problem))
    return samples


class ImageSource:
    """The samples of a folder or of tar shards, readable by index in any process."""

    def __init__(self, spec: str, samples: list[Sample], shards: list[Path], max_file_bytes: int = MAX_FILE_BYTES
                 ) -> None:
        if not samples:
            raise SourceError(f"{spec}: no images there (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.spec, self.samples, self.shards, self.max_file_bytes = spec, samples, shards, max_file_bytes
        self._window: tuple[int, dict[int, bytes]] | None = None  # one shard's members by offset, per process

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
        """The sample's file; UnreadableImage when it is over a size limit."""
        sample = self.samples[index]
        if sample.problem is not None:
            raise UnreadableImage(f"{self._where(sample)}: {sample.problem}")
        if sample.shard < 0:
            return _read_file(Path(sample.member), self.max_file_bytes)
        if self._window is None or self._window[0] != sample.shard or sample.offset not in self._window[1]:
            self._window = None  # let the old window go before the next is read
            self._window = (sample.shard, _read_window(self.shards[sample.shard], sample.offset, self.max_file_bytes))
        return self._window[1][sample.offset]

    def _where(self, sample: Sample) -> str:
        return sample.member if sample.shard < 0 else f"{self.shards[sample.shard]}:{sample.member}"

    def decode(self, index: int, channels: int) -> np.ndarray:
        """uint8 (H, W, channels); UnreadableImage naming the sample when it does not decode."""
        sample = self.samples[index]
        try:
            return decode_pixels(self.read(index), channels)
        except (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError, KeyError,
                tarfile.TarError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(f"{self._where(sample)} ({type(exc).__name__})") from exc  # stable: warned once

    def is_colour(self, probe: int = 64) -> bool:
        """Whether the first `probe` readable images include colour ones (then the model is RGB)."""
        for index in range(min(probe, len(self))):
            try:
                with Image.open(io.BytesIO(self.read(index))) as image:
                    if _colour(image):
                        return True
            except (OSError, ValueError, SyntaxError, UnidentifiedImageError, UnreadableImage, tarfile.TarError):
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


def open_source(spec: str, max_file_bytes: int = MAX_FILE_BYTES) -> ImageSource:
    """A folder, a tar shard, or a glob / brace range of shards -> an ImageSource (SourceError if empty).
    Files and members over `max_file_bytes` are listed, not read: they read as UnreadableImage."""
    paths = expand(spec)
    if not paths:
        raise SourceError(f"{spec}: no such folder, file or shards")
    if len(paths) == 1 and paths[0].is_dir():
        return ImageSource(spec, _scan_folder(paths[0], max_file_bytes), [], max_file_bytes)
    not_tar = [p for p in paths if not p.name.endswith(TAR_SUFFIXES)]
    if not_tar:
        raise SourceError(f"{not_tar[0]}: not a folder or a tar shard (.tar, .tar.gz, .tgz)")
    samples = [s for shard, path in enumerate(paths) for s in _scan_shard(path, shard, max_file_bytes)]
    return ImageSource(spec, samples, paths, max_file_bytes)
