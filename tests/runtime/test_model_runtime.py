"""The runtime's sessions: small batches on a single-threaded session, large ones on all threads."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from contract.manifest import GridSpec
from runtime import ModelLoadError
from runtime.model_runtime import (
    CPU,
    CUDA,
    SHIPPED_MODELS,
    SMALL_BATCH,
    GraphSession,
    ModelRuntime,
    load_model,
    provider_list,
    session_options,
)


@pytest.mark.parametrize(
    "choice, available, expected",
    [("cpu", [CUDA, CPU], [CPU]), ("auto", [CUDA, CPU], [CUDA, CPU]), ("auto", [CPU], [CPU]),
     ("cuda", [CPU], [CUDA, CPU]), ("cuda", [CUDA, CPU], [CUDA, CPU])],
)
def test_provider_list_is_explicit(choice: str, available: list[str], expected: list[str]) -> None:
    assert provider_list(choice, available) == expected  # type: ignore[arg-type]


def quantizer_session(model: str) -> ort.InferenceSession:
    path = SHIPPED_MODELS / model / "quantizer.onnx"
    return ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, SMALL_BATCH, SMALL_BATCH + 1, 64])
def test_batch_size_picks_the_session(batch: int) -> None:
    # Two real sessions that give different answers for the same latent tell which one ran.
    narrow, wide = quantizer_session("mnist"), quantizer_session("fashion-mnist")
    latent = np.random.default_rng(batch).standard_normal((batch, 64, 7, 7), dtype=np.float32)
    expected = (narrow if batch <= SMALL_BATCH else wide).run(["indices"], {"latent": latent})[0]
    other = (wide if batch <= SMALL_BATCH else narrow).run(["indices"], {"latent": latent})[0]
    assert not np.array_equal(expected, other)
    assert np.array_equal(GraphSession(wide, narrow).run("indices", {"latent": latent}), expected)


def test_without_a_narrow_session_everything_runs_wide() -> None:
    wide = quantizer_session("mnist")
    latent = np.zeros((1, 64, 7, 7), np.float32)
    assert np.array_equal(GraphSession(wide).run("indices", {"latent": latent}),
                          wide.run(["indices"], {"latent": latent})[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_narrow_sessions_exist_only_with_more_than_one_thread(threads: int, mnist_test) -> None:  # type: ignore[no-untyped-def]
    runtime = load_model(SHIPPED_MODELS / "mnist", "cpu", threads=threads, warmup_runs=1, max_batch=8)
    assert all((s.narrow is not None) == (threads > 1) for s in runtime.sessions.values())
    digits = (mnist_test[0][:8, None] / np.float32(255)).astype(np.float32)  # (8, 1, 28, 28)
    one_by_one = np.concatenate([runtime.encode(d[None]) for d in digits])  # narrow when threads > 1
    assert np.array_equal(one_by_one, runtime.encode(digits))  # wide: the same codes


@pytest.mark.parametrize("warmup_runs, max_batch", [(0, 8), (0, 1), (2, 3)])
def test_warm_up_checks_shapes_at_every_batch_it_runs(warmup_runs: int, max_batch: int) -> None:
    # Every bucket's output must have that bucket's batch size; a warm-up ending on a batch other
    # than 1 (no batch-1 runs requested) used to be compared with batch-1 shapes and refused.
    runtime = load_model(SHIPPED_MODELS / "mnist", "cpu", threads=1, warmup_runs=warmup_runs, max_batch=max_batch)
    assert runtime.encode(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 7, 7)


@pytest.mark.parametrize("max_batch", [1, 4])
def test_warm_up_refuses_graphs_whose_shapes_break_the_manifests_promise(max_batch: int) -> None:
    # Real sessions, with a manifest that promises a grid (and image) the graphs do not produce.
    good = load_model(SHIPPED_MODELS / "mnist", "cpu", threads=1, warmup_runs=1, max_batch=max_batch)
    lying = good.manifest.model_copy(update={"grid": GridSpec(height=8, width=8)})
    runtime = ModelRuntime(manifest=lying, sessions=good.sessions, provider=good.provider)
    with pytest.raises(ModelLoadError, match=r"promises grid \(8, 8\).*produce \(1, 7, 7\)"):
        runtime.warm_up(runs=1, max_batch=max_batch)
