"""contract/guided_sampling.py on the shipped MNIST prior (prior.onnx on onnxruntime): guidance 0 is
today's sampling bit for bit, guidance runs both halves in one batched step and mixes them as the
formula says, the filters keep only the codes they allow, bad settings name their field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.guided_sampling import InvalidSampling, Sampling, filtered_probabilities, guided_logits, sample
from contract.prior_coding import CHUNK_GRIDS, GREEDY_BELOW, PriorShape, Step, probabilities, walk
from runtime.model_runtime import ModelRuntime, load_model
from runtime.prior_sampler import PriorRuntime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prior() -> PriorRuntime:
    runtime: ModelRuntime = load_model(ROOT / "models" / "mnist", "cpu", threads=1, warmup_runs=0)
    assert runtime.prior is not None
    return runtime.prior


def draw_before_guidance(step: Step, shape: PriorShape, count: int, label: int | None, temperature: float,
                         seed: int) -> np.ndarray:
    """The sampler as it was before guidance and filters existed (contract/prior.py of the last
    release), kept here as the reference the new one must equal bit for bit."""
    rng = np.random.Generator(np.random.PCG64(seed))
    chunks = []
    for start in range(0, count, CHUNK_GRIDS):
        n = min(CHUNK_GRIDS, count - start)
        out = np.empty((n, shape.positions), np.int64)

        def draw(t: int, logits: np.ndarray, out: np.ndarray = out, n: int = n) -> np.ndarray:
            if temperature < GREEDY_BELOW:
                out[:, t] = logits.argmax(axis=1)
            else:
                cdf = np.cumsum(probabilities(logits, temperature), axis=1)
                below = (cdf < rng.random(n)[:, None] * cdf[:, -1:]).sum(axis=1)
                out[:, t] = np.minimum(below, shape.codebook_size - 1)
            return out[:, t]

        walk(step, shape, np.full(n, shape.classes if label is None else label, np.int64), draw)
        chunks.append(out)
    return np.concatenate(chunks).reshape(count, *shape.grid)


@pytest.mark.parametrize(("label", "temperature", "seed"), [(3, 1.0, 0), (None, 1.0, 1), (7, 0.8, 2), (2, 0.0, 3)])
def test_guidance_zero_is_todays_sampling_bit_for_bit(prior: PriorRuntime, label: int | None, temperature: float,
                                                      seed: int) -> None:
    before = draw_before_guidance(prior.step, prior.shape, 70, label, temperature, seed)  # two chunks
    now = sample(prior.step, prior.shape, 70, label, Sampling(temperature=temperature, guidance=0.0), seed)
    assert np.array_equal(before, now)


class Recorder:
    """The step graph, recording what each call was given and returned."""

    def __init__(self, step: Step) -> None:
        self.step, self.calls = step, []  # type: ignore[var-annotated]

    def __call__(self, previous: np.ndarray, t: int, labels: np.ndarray,
                 cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        logits, new = self.step(previous, t, labels, cache)
        self.calls.append((previous.copy(), t, labels.copy(), logits.copy()))
        return logits, new


def test_guidance_runs_both_halves_in_one_step_and_mixes_them(prior: PriorRuntime) -> None:
    recorder, n, g = Recorder(prior.step), 5, 1.5
    codes = sample(recorder, prior.shape, n, 4, Sampling(guidance=g, temperature=0.0), seed=0).reshape(n, -1)
    assert len(recorder.calls) == prior.shape.positions  # one step per position, both halves in it
    for previous, t, labels, logits in recorder.calls:
        assert list(labels) == [4] * n + [prior.shape.classes] * n  # the class, then "no class"
        if t:
            assert np.array_equal(previous[:n], codes[:, t - 1]) and np.array_equal(previous[n:], codes[:, t - 1])
        mixed = logits[n:].astype(np.float64) + (1 + g) * (logits[:n].astype(np.float64) - logits[n:])
        assert np.array_equal(codes[:, t], mixed.argmax(axis=1))  # greedy: the mixed logits decided
    assert np.allclose(guided_logits(np.array([[1.0, 2.0], [3.0, 1.0]]), 1, 1.0), [[-1.0, 3.0]])


def test_guidance_changes_the_draw_only_when_there_is_a_class(prior: PriorRuntime) -> None:
    plain = sample(prior.step, prior.shape, 8, 9, Sampling(), seed=4)
    guided = sample(prior.step, prior.shape, 8, 9, Sampling(guidance=2.0), seed=4)
    assert not np.array_equal(plain, guided)
    unconditional = [sample(prior.step, prior.shape, 8, None, Sampling(guidance=g), seed=4) for g in (0.0, 2.0)]
    assert np.array_equal(*unconditional)  # no class: nothing to guide toward, the same draw


@pytest.mark.parametrize("rule", [Sampling(top_k=1), Sampling(top_k=5), Sampling(top_p=0.5),
                                  Sampling(top_k=20, top_p=0.9, guidance=1.0), Sampling(top_p=1e-9)])
def test_filters_keep_only_the_codes_they_allow(prior: PriorRuntime, rule: Sampling) -> None:
    recorder = Recorder(prior.step)
    n = 16
    codes = sample(recorder, prior.shape, n, 6, rule, seed=5).reshape(n, -1)
    for _, t, _, logits in recorder.calls:
        mixed = guided_logits(logits, n, rule.guidance) if rule.guidance else logits.astype(np.float64)
        p = probabilities(mixed, rule.temperature)
        rank = (p > p[np.arange(n), codes[:, t]][:, None]).sum(axis=1)  # likelier codes than the drawn one
        if rule.top_k is not None:
            assert (rank < rule.top_k).all()
        if rule.top_p is not None:
            likelier = np.where(p > p[np.arange(n), codes[:, t]][:, None], p, 0).sum(axis=1)
            assert (likelier < rule.top_p).all()  # the drawn code is inside the nucleus
    if rule.top_k == 1 or rule.top_p == 1e-9:  # one code allowed: the greedy draw
        assert np.array_equal(codes, sample(prior.step, prior.shape, n, 6, Sampling(temperature=0), 9).reshape(n, -1))


def test_filtered_probabilities_zero_exactly_what_is_dropped() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.allclose(filtered_probabilities(logits, Sampling(top_k=2)), [[0.625, 0.375, 0, 0]])
    assert np.allclose(filtered_probabilities(logits, Sampling(top_p=0.7)), [[0.625, 0.375, 0, 0]])
    assert np.allclose(filtered_probabilities(logits, Sampling(top_p=0.81)), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    assert np.allclose(filtered_probabilities(logits, Sampling(top_p=1.0)), [[0.5, 0.3, 0.15, 0.05]])


@pytest.mark.parametrize(("rule", "field"), [
    (Sampling(guidance=-0.1), "guidance"), (Sampling(guidance=float("nan")), "guidance"),
    (Sampling(top_p=0.0), "top_p"), (Sampling(top_p=1.5), "top_p"), (Sampling(top_p=float("nan")), "top_p"),
    (Sampling(top_k=0), "top_k"), (Sampling(top_k=513), "top_k"), (Sampling(temperature=float("inf")), "temperature"),
])
def test_bad_settings_name_their_field(rule: Sampling, field: str) -> None:
    with pytest.raises(InvalidSampling, match=f"^{field}: ") as raised:
        rule.check(512)
    assert raised.value.field == field
