"""contract/prior_coding.py on the shipped MNIST prior (prior.onnx on onnxruntime) and real test digits:
prior streams are lossless at every chunk boundary, smaller than the static entropy streams, and
every altered, cut or foreign payload is refused; sampling is a function of the seed."""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from contract.guided_sampling import Sampling, sample
from contract.prior_coding import CHUNK_GRIDS, ID_BYTES, PriorCoder, WalkStopped
from contract.streams import Header, InvalidStream, Kind, decode_stream, encode_stream
from runtime.model_runtime import ModelRuntime, load_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mnist() -> ModelRuntime:
    return load_model(ROOT / "models" / "mnist", "cpu", threads=1, warmup_runs=0)


@pytest.fixture(scope="module")
def test_codes(mnist: ModelRuntime, mnist_test: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    images = mnist_test[0][:1000, None].astype(np.float32) / 255  # (1000, 1, 28, 28)
    return mnist.encode(images)  # (1000, 7, 7)


def coder_of(runtime: ModelRuntime) -> PriorCoder:
    assert runtime.prior is not None, "models/mnist ships a prior (python -m export.prior)"
    return runtime.prior.coder


def header(codes: np.ndarray) -> Header:
    n, h, w = codes.shape
    return Header(Kind.PRIOR, "mnist", "2.1.0", 512, h, w, n)


@pytest.mark.parametrize("count", [1, CHUNK_GRIDS, CHUNK_GRIDS + 1, pytest.param(1000, marks=pytest.mark.slow)])
def test_prior_streams_are_lossless_across_chunks(mnist: ModelRuntime, test_codes: np.ndarray, count: int) -> None:
    codes = test_codes[:count]
    stream = encode_stream(codes, Kind.PRIOR, mnist.manifest, mnist.entropy, coder_of(mnist))
    assert np.array_equal(decode_stream(stream, mnist.manifest, mnist.entropy, prior=coder_of(mnist)), codes)


def test_the_prior_codes_digits_smaller_than_the_static_model(mnist: ModelRuntime, test_codes: np.ndarray) -> None:
    prior = len(encode_stream(test_codes, Kind.PRIOR, mnist.manifest, mnist.entropy, coder_of(mnist)))
    static = len(encode_stream(test_codes, Kind.ENTROPY, mnist.manifest, mnist.entropy))
    assert prior < 0.9 * static, (prior, static)
    assert prior / len(test_codes) <= 35  # the target, here on the first 1000 test digits


def test_altered_cut_and_foreign_payloads_are_refused(mnist: ModelRuntime, test_codes: np.ndarray) -> None:
    coder, codes = coder_of(mnist), test_codes[:100]
    payload = coder.encode(codes)
    assert np.array_equal(coder.decode(header(codes), payload), codes)
    altered = bytearray(payload)
    altered[-20] ^= 0x10  # one bit of the range coder's words: decodes, but to other codes
    with pytest.raises(InvalidStream, match="does not decode"):
        coder.decode(header(codes), bytes(altered))
    with pytest.raises(InvalidStream, match="whole number of 32-bit words"):
        coder.decode(header(codes), payload[:-1])
    foreign = bytes(b ^ 0xFF for b in payload[:ID_BYTES]) + payload[ID_BYTES:]
    with pytest.raises(InvalidStream, match="another prior"):
        coder.decode(header(codes), foreign)
    with pytest.raises(InvalidStream, match="7×7 only"):
        coder.encode(np.zeros((1, 8, 8), np.int64))
    fewer = Header(Kind.PRIOR, "mnist", "2.1.0", 512, 7, 7, 99)  # a header that lies about the count
    with pytest.raises(InvalidStream):
        coder.decode(fewer, payload)


def test_the_crc_covers_the_codes_themselves(mnist: ModelRuntime, test_codes: np.ndarray) -> None:
    codes = test_codes[:10]
    payload = coder_of(mnist).encode(codes)
    flat = np.ascontiguousarray(codes.reshape(10, 49), dtype="<u4")
    assert payload[ID_BYTES : ID_BYTES + 4] == zlib.crc32(flat.tobytes()).to_bytes(4, "big")


def test_sampling_is_a_function_of_the_seed(mnist: ModelRuntime) -> None:
    prior = mnist.prior
    assert prior is not None
    a, b, c = (sample(prior.step, prior.shape, 70, 3, Sampling(1.0), seed) for seed in (5, 5, 6))
    assert a.shape == (70, 7, 7) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 512
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    greedy = [sample(prior.step, prior.shape, 2, 3, Sampling(0.0), seed) for seed in (1, 2)]
    assert np.array_equal(greedy[0], greedy[1]) and np.array_equal(greedy[0][0], greedy[0][1])  # no randomness
    assert not np.array_equal(sample(prior.step, prior.shape, 2, 4, Sampling(0.0), 1), greedy[0])  # the class matters


def test_a_stopped_walk_ends_at_once(mnist: ModelRuntime, test_codes: np.ndarray) -> None:
    prior = mnist.prior
    assert prior is not None
    stop = threading.Event()
    stop.set()  # as a route does when its request times out or its client leaves
    with pytest.raises(WalkStopped):
        sample(prior.step, prior.shape, 64, None, Sampling(1.0), 0, stop)
    with pytest.raises(WalkStopped):
        prior.coder.bound(stop).encode(test_codes[:64])
    assert np.array_equal(prior.coder.decode(header(test_codes[:3]), prior.coder.encode(test_codes[:3])),
                          test_codes[:3])  # the unbound coder is untouched


def test_a_tiny_tempered_draw_is_greedy_not_nan(mnist: ModelRuntime) -> None:
    prior = mnist.prior
    assert prior is not None
    tiny, greedy = (sample(prior.step, prior.shape, 2, 5, Sampling(t), seed) for t, seed in ((1e-300, 1), (0, 9)))
    assert np.array_equal(tiny, greedy)
