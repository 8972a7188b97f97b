"""Packed, entropy-coded and prior-coded streams: lossless, compact, refused when malformed or foreign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.prior_coding import PriorCoder
from contract.streams import InvalidStream, Kind, decode_stream, encode_stream, pack, seal, unpack, unseal
from datasources.idx_files import load_split
from runtime.model_runtime import SHIPPED_MODELS, ModelRuntime, load_model


@pytest.fixture(scope="module")
def runtimes() -> dict[str, ModelRuntime]:
    names = ("mnist", "fashion-mnist")
    return {name: load_model(SHIPPED_MODELS / name, "cpu", threads=2, warmup_runs=1) for name in names}


@pytest.fixture(scope="module")
def test_codes(runtimes: dict[str, ModelRuntime], data_dir: Path) -> dict[str, np.ndarray]:
    codes = {}
    for name, runtime in runtimes.items():
        images = load_split(name, "test", data_dir)[0]
        batches = [runtime.encode((images[i : i + 500, None] / np.float32(255)).astype(np.float32))
                   for i in range(0, len(images), 500)]
        codes[name] = np.concatenate(batches)  # (10000, 7, 7)
    return codes


def prior_of(runtime: ModelRuntime) -> PriorCoder:
    assert runtime.prior is not None, f"{runtime.name} ships a prior"
    return runtime.prior.coder


def round_trip(runtime: ModelRuntime, codes: np.ndarray, kind: Kind) -> tuple[bytes, np.ndarray]:
    stream = encode_stream(codes, kind, runtime.manifest, runtime.entropy, prior_of(runtime))
    return stream, decode_stream(stream, runtime.manifest, runtime.entropy, prior=prior_of(runtime))


@pytest.mark.parametrize("bits", [1, 3, 9, 16])
def test_bit_packing_is_exact(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 2**bits, 1001)
    packed = pack(values, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(unpack(packed, bits, 1001), values)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
def test_lossless_on_the_whole_test_set(runtimes, test_codes, kind: Kind, model: str) -> None:  # type: ignore[no-untyped-def]
    runtime, codes = runtimes[model], test_codes[model]
    stream, decoded = round_trip(runtime, codes, kind)
    assert np.array_equal(decoded, codes)
    per_image = len(stream) / len(codes)
    limit = {Kind.PACKED: 56.2, Kind.ENTROPY: 50, Kind.PRIOR: 35}[kind]  # 49 × 9 bits = 55.1 bytes uncoded
    assert per_image < limit


@pytest.mark.parametrize("kind", list(Kind))
def test_single_grids_and_other_sizes_round_trip(runtimes, test_codes, kind: Kind) -> None:  # type: ignore[no-untyped-def]
    runtime = runtimes["mnist"]
    other_size = np.random.default_rng(0).integers(0, 512, (3, 5, 11))
    for codes in (test_codes["mnist"][:1], other_size):
        if kind is Kind.PRIOR and codes is other_size:  # the prior models the native 7×7 grid only
            with pytest.raises(InvalidStream, match="7×7 only"):
                round_trip(runtime, codes, kind)
            continue
        assert np.array_equal(round_trip(runtime, codes, kind)[1], codes)


def test_entropy_coding_beats_packing_on_real_digits(runtimes, test_codes) -> None:  # type: ignore[no-untyped-def]
    runtime, codes = runtimes["mnist"], test_codes["mnist"]
    packed = encode_stream(codes, Kind.PACKED, runtime.manifest, runtime.entropy)
    entropy = encode_stream(codes, Kind.ENTROPY, runtime.manifest, runtime.entropy)
    assert len(entropy) < 0.9 * len(packed)


def corruptions(stream: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (bad stream, what the error must say). Some are resealed with a valid checksum, so
    that the header and payload checks behind the CRC are reached too."""
    body = unseal(stream)
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0x10
    wrong_version = bytearray(body)
    wrong_version[2] = 9
    return {
        "truncated": (stream[:-7], "checksum mismatch"),
        "trailing garbage": (stream + b"\x00garbage", "checksum mismatch"),
        "bit flip": (bytes(flipped), "checksum mismatch"),
        "empty": (b"", "too short"),
        "bad magic, resealed": (seal(b"XX" + body[2:]), "bad magic"),
        "other format version, resealed": (seal(bytes(wrong_version)), "format version 9"),
        "header only, resealed": (seal(body[:10]), "truncated in the header"),
        "payload cut short, resealed": (seal(body[:-4]), "payload is|does not decode|whole number"),
    }


CORRUPTIONS = list(corruptions(seal(b"VQ" + b"\0" * 8)))  # only the names, for parametrize


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("kind", list(Kind))
def test_malformed_streams_are_refused_saying_why(runtimes, test_codes, kind: Kind,  # type: ignore[no-untyped-def]
                                                   corruption: str) -> None:
    runtime = runtimes["mnist"]
    stream = round_trip(runtime, test_codes["mnist"][:5], kind)[0]
    bad, reason = corruptions(stream)[corruption]
    with pytest.raises(InvalidStream, match=reason):
        decode_stream(bad, runtime.manifest, runtime.entropy, prior=prior_of(runtime))


def test_a_stream_from_another_model_is_refused(runtimes, test_codes) -> None:  # type: ignore[no-untyped-def]
    fashion, mnist = runtimes["fashion-mnist"], runtimes["mnist"]
    stream = encode_stream(test_codes["fashion-mnist"][:3], Kind.ENTROPY, fashion.manifest, fashion.entropy)
    with pytest.raises(InvalidStream, match="made by model 'fashion-mnist'"):
        decode_stream(stream, mnist.manifest, mnist.entropy)
