"""How long a request's work will take, estimated before any of it is done, from the same facts as
its memory (runtime/memory_estimates.py): pixels, grid sizes, stream kinds. Pure arithmetic, no I/O.

The figures are seconds of one worker with one onnxruntime thread (the compose service's share of
its CPUs) on this project's 2-core development VM while it was shared with trainings, measured end
to end over HTTP, one request at a time (docs/reliability.md, "Admission"). They are a starting
point: the service's work queue (service/inference/work_queue.py) scales them by the pace each
worker really measures on the work it finishes, so another machine's speed is learnt in a few
requests. What matters here is their proportions: a range-coded grid position costs as much as
about forty pixels of inference.
"""

from __future__ import annotations

import math

# onnxruntime's encoder and quantizer, with decoding the image file; and the decoder, with the PNG.
ENCODE_S_PER_PIXEL = 1.2e-6
DECODE_S_PER_PIXEL = 1.2e-6
# The entropy coder (contract/entropy_model.py) walks a grid's positions in Python, every grid of
# the request at once: a fixed cost per position and a smaller one per code. A 500×500 grid
# decoded in 13.5 s; 256 digits' 49 positions in 0.21 s.
ENTROPY_S_PER_POSITION = 40e-6
ENTROPY_S_PER_CODE = 16e-6
# The prior's step graph runs once per position for each chunk of grids (contract/prior_coding.py);
# 256 digits (4 chunks of 49 positions) coded in 1.2 s.
PRIOR_S_PER_STEP = 6e-3


def inference_seconds(pixels: int, encode: bool) -> float:
    """Encoding (or decoding) images of `pixels` pixels in all."""
    return pixels * (ENCODE_S_PER_PIXEL if encode else DECODE_S_PER_PIXEL)


def entropy_seconds(count: int, height: int, width: int) -> float:
    """Range coding (either way) `count` h×w grids with the entropy model."""
    return height * width * (ENTROPY_S_PER_POSITION + ENTROPY_S_PER_CODE * count)


def prior_seconds(count: int, positions: int, chunk_grids: int) -> float:
    """Coding (either way) or drawing `count` grids of `positions` codes with the prior."""
    return math.ceil(count / chunk_grids) * positions * PRIOR_S_PER_STEP
