"""Drawing code grids from the prior's step graph: temperature, classifier-free guidance, top-k and
nucleus (top-p) filters. One implementation for the service, the codec CLI and the benchmarks.

    codes = sample(step, shape, 64, label=3, rule=Sampling(guidance=1.0, top_p=0.9), seed=0)

Classifier-free guidance (Ho & Salimans 2022): the prior was trained with a tenth of its grids
shown as "no class", so each step can give both the class's logits and the unconditional ones.
With guidance g, the logits drawn from are

    ℓ = ℓ_uncond + (1 + g) · (ℓ_cond − ℓ_uncond)

so g = 0 is the plain conditional draw (bit for bit the same as without guidance: the unconditional
half is then not even computed) and g > 0 pushes the draw toward what distinguishes the class. Both
halves go through one batched step: the key/value cache holds the n conditional sequences and then
the n unconditional ones, and both halves are fed the same drawn code at every position.

Then the temperature divides ℓ, top-k keeps the k likeliest codes, top-p keeps the smallest set of
likeliest codes whose probability reaches p, and a code is drawn by the inverse CDF with a seeded
PCG64 generator (the same seed and settings give the same grids). A temperature below
GREEDY_BELOW takes the likeliest code at every position.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from contract import ContractError
from contract.prior_coding import CHUNK_GRIDS, GREEDY_BELOW, PriorShape, Step, probabilities, walk


class InvalidSampling(ContractError):
    """A sampling setting outside its range; `field` names it."""

    code = "invalid_parameter"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    guidance: float = 0.0  # g above: 0 = off
    top_k: int | None = None  # keep the k likeliest codes; None: all
    top_p: float | None = None  # keep the likeliest codes up to probability p; None: all

    def check(self, codebook_size: int) -> None:
        """InvalidSampling naming the first setting out of range (NaN and infinities included)."""
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 10):
            raise InvalidSampling("temperature", f"must be in [0, 10], not {self.temperature}")
        if not (math.isfinite(self.guidance) and 0 <= self.guidance <= 100):
            raise InvalidSampling("guidance", f"must be in [0, 100] (0: no guidance), not {self.guidance}")
        if self.top_k is not None and not 1 <= self.top_k <= codebook_size:
            raise InvalidSampling("top_k", f"must be in [1, {codebook_size}] (the codebook size), not {self.top_k}")
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InvalidSampling("top_p", f"must be in (0, 1], not {self.top_p}")

    def guides(self, label: int | None, shape: PriorShape) -> bool:
        return self.guidance > 0 and label is not None and shape.classes > 0


def guided_logits(logits: np.ndarray, n: int, guidance: float) -> np.ndarray:
    """(2n, K) logits, conditional half first -> (n, K) float64 guided logits."""
    cond, uncond = logits[:n].astype(np.float64), logits[n:].astype(np.float64)
    return uncond + (1.0 + guidance) * (cond - uncond)


def filtered_probabilities(logits: np.ndarray, rule: Sampling) -> np.ndarray:
    """(n, K) logits -> (n, K) float64 probabilities after the temperature and the filters; codes the
    filters drop have probability 0 exactly."""
    p = probabilities(logits, rule.temperature)
    if rule.top_k is not None and rule.top_k < p.shape[1]:
        dropped = np.argpartition(-p, rule.top_k - 1, axis=1)[:, rule.top_k:]  # all but the k likeliest
        np.put_along_axis(p, dropped, 0.0, axis=1)
    if rule.top_p is not None and rule.top_p < 1:
        order = np.argsort(-p, axis=1, kind="stable")  # likeliest first
        ranked = np.take_along_axis(p, order, axis=1)
        total = ranked.sum(axis=1, keepdims=True)
        before = np.cumsum(ranked, axis=1) - ranked  # probability of the likelier codes
        keep = before < rule.top_p * total  # the likeliest code always stays
        np.put_along_axis(p, order, np.where(keep, ranked, 0.0), axis=1)
    return np.ascontiguousarray(p / p.sum(axis=1, keepdims=True))


def sample(step: Step, shape: PriorShape, count: int, label: int | None, rule: Sampling, seed: int,
           stop: threading.Event | None = None) -> np.ndarray:
    """-> int64 (count, h, w) codes drawn from the prior (class `label`, or none); the same for a
    seed and settings. WalkStopped once `stop` is set."""
    rng = np.random.Generator(np.random.PCG64(seed))
    chunks = [_draw(step, shape, min(CHUNK_GRIDS, count - start), label, rule, rng, stop)
              for start in range(0, count, CHUNK_GRIDS)]
    return np.concatenate(chunks).reshape(count, *shape.grid)


def _choose(logits: np.ndarray, rule: Sampling, rng: np.random.Generator, codebook_size: int) -> np.ndarray:
    """(n, K) logits -> (n,) codes."""
    if rule.temperature < GREEDY_BELOW:  # logits / a tiny temperature would overflow to inf
        greedy: np.ndarray = logits.argmax(axis=1)
        return greedy
    filtered = rule.top_k is not None or rule.top_p is not None
    p = filtered_probabilities(logits, rule) if filtered else probabilities(logits, rule.temperature)
    cdf = np.cumsum(p, axis=1)  # (n, K)
    below = (cdf < rng.random(len(p))[:, None] * cdf[:, -1:]).sum(axis=1)  # inverse CDF: (n,)
    codes: np.ndarray = np.minimum(below, codebook_size - 1)
    return codes


def _draw(step: Step, shape: PriorShape, n: int, label: int | None, rule: Sampling,
          rng: np.random.Generator, stop: threading.Event | None) -> np.ndarray:
    """One walk of n grids -> int64 (n, T); 2n sequences through the graph when guided."""
    out = np.empty((n, shape.positions), np.int64)
    none = shape.classes  # the "no class" label
    guided = rule.guides(label, shape)
    labels = np.full(n, none if label is None else label, np.int64)
    if guided:
        labels = np.concatenate([labels, np.full(n, none, np.int64)])  # conditional half, then unconditional

    def draw(t: int, logits: np.ndarray) -> np.ndarray:
        mixed = guided_logits(logits, n, rule.guidance) if guided else logits
        out[:, t] = _choose(mixed, rule, rng, shape.codebook_size)
        return np.concatenate([out[:, t], out[:, t]]) if guided else out[:, t]

    walk(step, shape, labels, draw, stop)
    return out
