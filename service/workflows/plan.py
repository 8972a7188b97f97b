"""Plans: what a request's work will be, fixed before any of it is done.

    plan = plan_encode(model, uploads, query, settings)   # image headers only: size, 4xx, runs, bytes, seconds
    plan = plan_decode(model, body_bytes, (n, h, w), png_response)
    plan = plan_sample(model, SampleQuery(count=8, label=3), settings, png_response)
    plan.work(settings)                                   # what admission sees (service/inference/work_queue.py)

Images are decoded a run at a time; a run holds at most `model.run_pixels` pixels, so batches are
split by pixels, and an image or grid larger than a run is processed in tiles with the model's
halo (runtime/tiling.py) and stitched: codes and pixels equal those of one whole run. A model
whose manifest has no measured halo is never tiled: its large images run whole, and the request
reserves that run's full working set on top. A stream format the model cannot make (no entropy
model, no prior, a grid the prior does not model) is refused here, before any work. Every plan
also estimates its work in seconds (runtime/work_estimates.py), for the work queue's turns and
deadlines.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Protocol

from contract.formats import DEFAULT_FORMAT, OutputFormat
from contract.guided_sampling import InvalidSampling, Sampling
from contract.prior_coding import CHUNK_GRIDS
from contract.streams import MissingCoder
from runtime import ImageTooLarge, InvalidCodes, InvalidParameter, TooManyImages
from runtime.images import ImageUpload, Resize, check_image_size, encode_size, read_header
from runtime.memory_estimates import decode_request_bytes, encode_request_bytes
from runtime.prior_sampler import require_prior
from runtime.tiling import Tile, TileTooSmall, plan_tiles
from runtime.work_estimates import entropy_seconds, inference_seconds, prior_seconds
from service.config import Settings
from service.inference.registry import ServedModel
from service.inference.work_queue import Work


@dataclass(frozen=True)
class EncodeQuery:
    """What an encode request asks for besides its images (the codec routes' query parameters)."""

    resize: Resize = None
    format: OutputFormat = DEFAULT_FORMAT
    stages: int | None = None  # a residual model's first k stages; None: all of them


@dataclass(frozen=True)
class RunPlan:
    """How a request's items go through the model: `per_run` whole items at a time, or each item in
    `tiles`; and what the request will hold at most while doing it."""

    size: tuple[int, int]  # (H, W) of every image
    count: int  # images
    per_run: int
    tiles: list[Tile] | None
    working_bytes: int
    what: str  # how error messages name the request's work
    output: OutputFormat = DEFAULT_FORMAT  # encode: what the codes are returned as
    png_response: bool = False  # decode: one PNG is the response
    stages: int | None = None  # a residual model's stages returned (encode) or decoded; None: single-stage
    seconds: float = 0.0  # the work, estimated (runtime/work_estimates.py)
    parsed_bytes: int = 0  # what the parsed inputs hold besides the body while the work waits

    @property
    def pixels(self) -> int:
        return self.count * self.size[0] * self.size[1]

    def slack_s(self, settings: Settings) -> float:
        """What the request may spend beyond its expected work (waiting for its turn, running slow):
        the base, plus an allowance per megapixel (large images are legitimately slow)."""
        return settings.request_timeout_s + settings.timeout_s_per_mpx * self.pixels / 1e6

    def work(self, settings: Settings, on_top: bool = False) -> Work:
        return Work(self.seconds, self.slack_s(settings), self.working_bytes, self.what, self.parsed_bytes, on_top)


@dataclass(frozen=True)
class SampleQuery:
    """What a sample request asks for; None: the prior's default (model.json's prior.sampling)."""

    count: int = 1
    label: int | str | None = None
    temperature: float | None = None
    guidance: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SamplePlan:
    decode: RunPlan  # decoding the drawn grids
    count: int
    label: int | None
    rule: Sampling
    seed: int


def _runs(model: ServedModel, items: int, h: int, w: int, halo: int | None,
          bytes_per_pixel: float) -> tuple[int, list[Tile] | None, int]:
    """(whole items per run, tiles or None, bytes beyond the run slot) for `items` h×w grids."""
    ds2 = model.manifest.downsample ** 2
    run_cells = model.run_pixels // ds2
    if h * w <= run_cells:
        return max(1, min(items, run_cells // (h * w))), None, 0
    if halo is not None:
        try:
            return 1, plan_tiles(h, w, run_cells, halo), 0
        except TileTooSmall:
            pass
    return 1, None, int((h * w - run_cells) * ds2 * bytes_per_pixel)  # one oversized, whole run


def coder_bytes(model: ServedModel, fmt: OutputFormat, grid: tuple[int, int], count: int) -> int:
    """What coding `count` grids in `fmt` holds beyond the codes; MissingCoder / UnsupportedSize (422)
    now, before any work, when the model cannot code them (contract/formats.py: `requires`)."""
    runtime = model.runtime
    if fmt.requires == "entropy_model" and runtime.entropy is None:
        raise MissingCoder(f"model {model.manifest.name!r} ships no entropy model to code with; use format=packed")
    if fmt.requires != "prior":
        return 0
    prior = require_prior(model.manifest, runtime.prior, for_streams=True)
    prior.check_grid(*grid)
    return prior.shape.working_bytes(min(count, CHUNK_GRIDS))  # its coder's walk


def stages_wanted(model: ServedModel, requested: int | None) -> int | None:
    """The stages a request asks for, checked: 1 ≤ k ≤ S (422 naming `stages` otherwise); None for a
    single-stage model (its grids have no stage axis)."""
    total = model.manifest.quantizer.stages
    if requested is not None and not 1 <= requested <= total:
        allowed = f"has {total} stages: ask for 1 to {total}" if total > 1 else "is single-stage: stages can only be 1"
        raise InvalidParameter(f"stages: model {model.manifest.name!r} {allowed}, not {requested}")
    if total == 1:
        return None
    return total if requested is None else requested


def coder_seconds(model: ServedModel, fmt: OutputFormat, grid: tuple[int, int], count: int) -> float:
    """Coding `count` grids in `fmt`, estimated (after coder_bytes has refused what cannot be coded)."""
    if fmt.requires == "entropy_model":
        return entropy_seconds(count, *grid)
    if fmt.requires == "prior":
        return prior_seconds(count, grid[0] * grid[1], CHUNK_GRIDS)
    return 0.0


class StreamDecoding(Protocol):
    """Grids still to be decoded from a stream (service/inputs/grids.py: GridBody; 0 for parsed JSON)."""

    @property
    def decode_bytes(self) -> int: ...

    @property
    def decode_s(self) -> float: ...


def plan_encode(model: ServedModel, uploads: list[ImageUpload], query: EncodeQuery, settings: Settings) -> RunPlan:
    """From the images' headers alone: their size (422/413 now, before decoding), the runs, the bytes."""
    stages = stages_wanted(model, query.stages)
    headers = [read_header(upload, settings.max_pixels) for upload in uploads]
    size = encode_size(model.manifest, headers, query.resize)
    files = sum(len(u.data) for u in uploads)
    ds = model.manifest.downsample
    grid = (size[0] // ds, size[1] // ds)
    walk = coder_bytes(model, query.format, grid, len(uploads))
    # Files are decoded at their own size first (a resize may shrink them).
    pixels = sum(max(header.pixels, size[0] * size[1]) for header in headers)
    seconds = inference_seconds(pixels, encode=True) + coder_seconds(model, query.format, grid, len(uploads))
    return _encode_plan(model, len(uploads), size, max(header.decode_bytes for header in headers), files,
                        query.format, stages=stages, coder_bytes=walk, parsed_bytes=files, seconds=seconds)


def plan_encode_pixels(model: ServedModel, shape: tuple[int, int, int, int], settings: Settings,
                       stages: int | None = None) -> RunPlan:
    """For raw pixels (N, H, W, C) uint8 already in memory (the v2 `pixels` input)."""
    wanted = stages_wanted(model, stages)
    n, height, width, _ = shape
    if height * width > settings.max_pixels:
        raise ImageTooLarge(f"pixels are {height}×{width} = {height * width} per image; the limit is "
                            f"{settings.max_pixels}")
    check_image_size(model.manifest, height, width, "pixels")
    return _encode_plan(model, n, (height, width), 0, 0, DEFAULT_FORMAT, json_output=False, stages=wanted)


def _encode_plan(model: ServedModel, count: int, size: tuple[int, int], largest_decode: int, body_bytes: int,
                 output: OutputFormat, json_output: bool | None = None, stages: int | None = None,
                 coder_bytes: int = 0, parsed_bytes: int = 0, seconds: float | None = None) -> RunPlan:
    """`coder_bytes`: what coding a stream holds beyond the codes; `seconds`: the work, when more than
    the encoder's (files decoded at a larger size, a stream coded)."""
    m = model.manifest
    height, width = size
    per_run, tiles, extra = _runs(model, count, height // m.downsample, width // m.downsample,
                                  model.costs.encoder_halo, model.costs.encode_bytes_per_pixel)
    as_json = output.stream_kind is None if json_output is None else json_output
    # Every stage is computed (quantizer.onnx gives all S) before the first k are kept.
    needed = encode_request_bytes(body_bytes, [size] * count, largest_decode, m.input.channels, m.downsample,
                                  model.run_pixels, as_json, m.quantizer.stages) + extra + coder_bytes
    if seconds is None:
        seconds = inference_seconds(count * height * width, encode=True)
    return RunPlan(size, count, per_run, tiles, needed, f"encoding {count} image(s) of {height}×{width}", output,
                   stages=stages, seconds=seconds, parsed_bytes=parsed_bytes)


def plan_decode(model: ServedModel, body_bytes: int, shape: tuple[int, ...], png_response: bool,
                pixels_output: bool = False, stream: StreamDecoding | None = None, parsed_bytes: int = 0) -> RunPlan:
    """From the grids' shape alone, (N, h, w) or (N, k, h, w): the runs and the bytes (PNGs, and raw
    pixels if asked). A residual model's grids must hold 1 ≤ k ≤ S stages (422 naming `stages`);
    `stream`: the grids are still to be decoded from a stream first."""
    m = model.manifest
    n, h, w = shape[0], shape[-2], shape[-1]
    staged = m.quantizer.stages > 1
    if len(shape) != (4 if staged else 3):
        raise InvalidCodes(f"grids of shape {list(shape[1:])} do not fit model {m.name!r}: send "
                           + (f"[k][h][w] with 1 ≤ k ≤ {m.quantizer.stages} stages" if staged else "[h][w]"))
    stages = stages_wanted(model, shape[1]) if staged else None
    per_run, tiles, extra = _runs(model, n, h, w, model.costs.decoder_halo, model.costs.decode_bytes_per_pixel)
    needed = decode_request_bytes(body_bytes, n, h, w, m.input.channels, m.downsample, png_response,
                                  stages or 1) + extra
    if pixels_output:
        needed += n * h * w * m.downsample**2 * m.input.channels
    seconds = inference_seconds(n * h * w * m.downsample**2, encode=False)
    if stream is not None:  # decoding the stream comes first, and its working set is gone before the images
        needed, seconds = max(needed, stream.decode_bytes), seconds + stream.decode_s
    return RunPlan((h * m.downsample, w * m.downsample), n, per_run, tiles, needed,
                   f"decoding {n} grid(s) of {h}×{w}", png_response=png_response, stages=stages, seconds=seconds,
                   parsed_bytes=parsed_bytes)


def plan_sample(model: ServedModel, query: SampleQuery, settings: Settings, png_response: bool) -> SamplePlan:
    """404 for a model without a prior, 422 for a class it does not have or a setting out of range
    (naming it), 413 over the image limit."""
    prior = require_prior(model.manifest, model.runtime.prior)
    label = prior.label_of(query.label)
    if query.count > settings.max_images:
        raise TooManyImages(f"count {query.count} is over this server's limit of {settings.max_images} per request")
    given = {k: v for k, v in (("temperature", query.temperature), ("guidance", query.guidance),
                               ("top_k", query.top_k), ("top_p", query.top_p)) if v is not None}
    rule = replace(prior.defaults, **given)  # type: ignore[arg-type]
    try:
        rule.check(prior.shape.codebook_size)
    except InvalidSampling as exc:
        raise InvalidParameter(f"body.{exc.message}") from None
    decode = plan_decode(model, 0, (query.count, *prior.shape.grid), png_response=png_response)
    walk = prior.walk_bytes(query.count, rule, label)
    # Guidance runs the prior on twice the rows (conditional and unconditional halves).
    passes = 2 if rule.guides(label, prior.shape) else 1
    sampling_s = passes * prior_seconds(query.count, prior.shape.positions, CHUNK_GRIDS)
    decode = replace(decode, working_bytes=decode.working_bytes + walk, what=f"sampling {query.count} grid(s)",
                     seconds=decode.seconds + sampling_s)
    seed = query.seed if query.seed is not None else secrets.randbits(53)  # exact in a JavaScript number too
    return SamplePlan(decode, query.count, label, rule, seed)
