"""Micro-batching: right answers to the right requests, bounded queues, deadlines, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from harness.prom import MissingSeries, Scrape
from harness.server import ServerProcess
from runtime.model_runtime import ModelRuntime, load_model
from service.errors import Overloaded
from service.inference.batching import BatchPolicy, MicroBatcher, bucket, padded
from tests.service.conftest import SHIPPED_MODELS, png_bytes, stalled_while


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.rejections = 0

    def batch_ran(self, size: int, queue_waits: list[float]) -> None:
        self.sizes.append(size)

    def batch_finished(self, jobs: int, size: int, phases_ns: tuple[int, int, int]) -> None:
        pass

    def rejected(self) -> None:
        self.rejections += 1


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return load_model(SHIPPED_MODELS / "mnist", "cpu", threads=1, warmup_runs=1, max_batch=8)


@pytest.fixture(scope="module")
def images(mnist_test) -> np.ndarray:  # type: ignore[no-untyped-def]
    return (mnist_test[0][:300, None] / np.float32(255)).astype(np.float32)  # (300, 1, 28, 28)


def run_batched(runtime: ModelRuntime, requests: list[np.ndarray], policy: BatchPolicy,
                cancel: int | None = None) -> tuple[list[np.ndarray | None], Recorder]:
    recorder = Recorder()

    async def main() -> list[np.ndarray | None]:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(padded(runtime.encode, policy.max_batch), executor, policy, recorder)
            tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
            if cancel is not None:
                await asyncio.sleep(0)
                tasks[cancel].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await batcher.close()
        return [None if isinstance(r, BaseException) else r for r in results]

    return asyncio.run(main()), recorder


@pytest.mark.parametrize("max_wait", [0.0, 0.002])
def test_concurrent_requests_each_get_their_own_codes(runtime: ModelRuntime, images: np.ndarray,
                                                      max_wait: float) -> None:
    requests = [images[i : i + 1] for i in range(40)]
    results, recorder = run_batched(runtime, requests, BatchPolicy(max_batch=16, max_wait=max_wait))
    for request, result in zip(requests, results, strict=True):
        assert result is not None and np.array_equal(result, runtime.encode(request))
    assert max(recorder.sizes) > 1, "nothing was coalesced"
    assert sum(recorder.sizes) == 40 and max(recorder.sizes) <= 16


def test_mixed_sizes_are_split_and_reassembled_in_order(runtime: ModelRuntime, images: np.ndarray) -> None:
    sizes = [1, 3, 16, 7, 40, 2, 1, 100]  # 40 and 100 exceed max_batch: split into several runs
    starts = np.cumsum([0, *sizes])
    requests = [images[a:b] for a, b in itertools.pairwise(starts)]
    results, recorder = run_batched(runtime, requests, BatchPolicy(max_batch=16))
    for request, result in zip(requests, results, strict=True):
        assert result is not None and np.array_equal(result, runtime.encode(request))
    assert max(recorder.sizes) <= 16


def test_different_image_sizes_never_share_a_run(runtime: ModelRuntime, images: np.ndarray) -> None:
    wide = np.zeros((2, 1, 28, 56), np.float32)
    wide[..., :28], wide[..., 28:] = images[:2], images[2:4]
    requests = [images[:3], wide, images[3:5]]
    results, _ = run_batched(runtime, requests, BatchPolicy(max_batch=16))
    assert results[1] is not None and results[1].shape == (2, 7, 14)
    assert np.array_equal(results[1], runtime.encode(wide))
    assert results[0] is not None and np.array_equal(results[0], runtime.encode(images[:3]))


def test_a_cancelled_request_does_not_break_the_batch(runtime: ModelRuntime, images: np.ndarray) -> None:
    requests = [images[i : i + 2] for i in range(0, 40, 2)]
    results, _ = run_batched(runtime, requests, BatchPolicy(max_batch=8, max_wait=0.002), cancel=5)
    assert results[5] is None
    for i, (request, result) in enumerate(zip(requests, results, strict=True)):
        if i != 5:
            assert result is not None and np.array_equal(result, runtime.encode(request))


def test_without_coalescing_every_request_runs_alone(runtime: ModelRuntime, images: np.ndarray) -> None:
    requests = [images[i : i + 2] for i in range(0, 20, 2)]
    results, recorder = run_batched(runtime, requests, BatchPolicy(coalesce=False, max_batch=16))
    assert recorder.sizes == [2] * 10
    assert all(r is not None for r in results)


def test_company_is_awaited_only_while_other_requests_are_in_progress(runtime: ModelRuntime,
                                                                     images: np.ndarray) -> None:
    """A lone request never waits max_wait; with a second request in progress but not yet queued,
    the batch waits for it and both run together."""
    policy = BatchPolicy(max_batch=16, max_wait=0.5)

    async def main(in_progress: list[int]) -> tuple[float, Recorder]:
        recorder = Recorder()
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(padded(runtime.encode, 16), executor, policy, recorder,
                                   in_progress=lambda: in_progress[0])
            started = time.monotonic()
            first = asyncio.create_task(batcher.submit(images[:1]))
            if in_progress[0] > 1:  # the second request is still reading its body
                await asyncio.sleep(0.05)
                await batcher.submit(images[1:2])
            await first
            await batcher.close()
        return time.monotonic() - started, recorder

    alone, recorder = asyncio.run(main([1]))
    assert alone < 0.25 and recorder.sizes == [1]  # no wait for company that cannot come
    _, recorder = asyncio.run(main([2]))
    assert recorder.sizes == [2]  # waited, and the late arrival joined the batch


def test_a_full_queue_refuses_at_once(runtime: ModelRuntime, images: np.ndarray) -> None:
    recorder = Recorder()

    async def main() -> None:
        with ThreadPoolExecutor(1) as executor:
            slow = MicroBatcher(lambda x: (time.sleep(0.2), runtime.encode(x))[1], executor,
                                BatchPolicy(max_batch=8, max_queue=10), recorder)
            first = asyncio.create_task(slow.submit(images[:8]))
            await asyncio.sleep(0.05)  # the first batch is running; the queue is empty again
            queued = asyncio.create_task(slow.submit(images[:8]))
            await asyncio.sleep(0)
            started = time.monotonic()
            with pytest.raises(Overloaded):
                await slow.submit(images[:8])  # 8 queued + 8 > 10
            assert time.monotonic() - started < 0.1  # refused at once, not after the 0.2 s run ahead of it
            assert (await first).shape == (8, 7, 7) and (await queued).shape == (8, 7, 7)
            await slow.close()

    asyncio.run(main())
    assert recorder.rejections == 1


def test_buckets() -> None:
    assert [bucket(n, 64) for n in (1, 2, 3, 5, 17, 33, 64)] == [1, 2, 4, 8, 32, 64, 64]
    assert bucket(100, 64) == 100  # never truncates a batch


# -- over HTTP -------------------------------------------------------------------------------


def flood(url: str, files: list, n: int) -> list[httpx.Response]:  # type: ignore[type-arg]
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        response = httpx.post(url, files=files, timeout=60)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return responses


@pytest.mark.slow
def test_queue_full_gives_429_with_retry_after_and_liveness_still_answers(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(queue_max_items=128, batch_max=64)
    server.wait("/readyz")
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits)]  # 64 per request
    result: list[httpx.Response] = []
    probe_times: list[float] = []
    flooding = threading.Thread(target=lambda: result.extend(flood(server.url + "/encode", files, 24)))
    flood_started = time.monotonic()
    flooding.start()
    while flooding.is_alive():
        started = time.monotonic()
        assert httpx.get(server.url + "/livez", timeout=5).status_code == 200
        probe_times.append(time.monotonic() - started)
        time.sleep(0.01)
    flooding.join()
    flood_s = time.monotonic() - flood_started
    rejected = [r for r in result if r.status_code == 429]
    assert rejected and all(r.headers["retry-after"] == "1" for r in rejected)
    assert all(r.json()["error"]["code"] == "overloaded" for r in rejected)
    assert {r.status_code for r in result} == {200, 429}  # some admitted, the excess refused
    # Never queued behind inference: probes were answered one after another while the flood was under
    # way (one queued behind it would return only when the flood had ended: a single probe). Not timed
    # tighter than the probe's 5 s timeout: a loaded machine slows everything.
    assert len(probe_times) >= 2 and sum(probe_times[:-1]) < flood_s, (probe_times, flood_s)


@pytest.mark.slow
def test_work_that_overruns_its_deadline_gives_504(start_server) -> None:  # type: ignore[no-untyped-def]
    """A 1024×1024 encode (about 1.2 s expected: a deadline of 0.2 s + twice that) started, then the
    server stalls for 4 s: the work overran, 504, and the server is ready afterwards."""
    server = start_server(request_timeout_s=0.2, timeout_s_per_mpx=0)
    server.wait("/readyz")
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8))
    response = stalled_while(server, lambda: httpx.post(server.url + "/encode", content=noise, timeout=60,
                                                        headers={"content-type": "image/png"}))
    assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_metrics_families_exist_and_move(server: ServerProcess, client: httpx.Client, digits: np.ndarray) -> None:
    before = Scrape.of(server.url)
    for family in ("vqvae_requests", "vqvae_request_duration_seconds", "vqvae_queue_wait_seconds",
                   "vqvae_batch_size", "vqvae_requests_in_flight", "vqvae_rejected", "vqvae_model_provider_info"):
        assert family in before.families, sorted(before.families)
    assert before.value("vqvae_model_provider_info", model="mnist", provider="CPUExecutionProvider") == 1
    for _ in range(3):
        client.post("/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    client.post("/decode", json={"codes": [[1, 2], [3, 4]]})
    client.post("/decode", json={"codes": "nope"})
    after = Scrape.of(server.url)
    ok = dict(route="/encode", method="POST", status="200")
    assert after.value("vqvae_requests_total", **ok) == before.value_or(0, "vqvae_requests_total", **ok) + 3
    bad = dict(route="/decode", method="POST", status="422")
    assert after.value("vqvae_requests_total", **bad) == before.value_or(0, "vqvae_requests_total", **bad) + 1
    runs = "vqvae_batch_size_count"
    encode_runs = dict(model="mnist", graph="encode")
    assert after.value(runs, **encode_runs) >= before.value_or(0, runs, **encode_runs) + 3
    assert after.value("vqvae_request_duration_seconds_count", route="/encode") > 0
    assert after.value("vqvae_queue_wait_seconds_count", model="mnist", graph="decode") > 0
    with pytest.raises(MissingSeries):  # a misspelt or absent series is an error, never a silent 0
        after.value("vqvae_requests_total", route="/no-such-route")


def test_a_cancelled_split_request_cancels_all_its_parts(runtime: ModelRuntime, images: np.ndarray) -> None:
    recorder = Recorder()

    async def main() -> list[int]:
        with ThreadPoolExecutor(1) as executor:
            slow = MicroBatcher(lambda x: (time.sleep(0.05), runtime.encode(x))[1], executor,
                                BatchPolicy(max_batch=8, coalesce=False), recorder)
            big = asyncio.create_task(slow.submit(images[:64]))  # 8 jobs of 8
            await asyncio.sleep(0.01)  # the first job is running
            big.cancel()
            after = await slow.submit(images[:1])  # must not wait behind 7 orphaned jobs
            await slow.close()
            return [len(after)]

    assert asyncio.run(main()) == [1]
    # At most the job already running when the client left, then the new request: none of the 7
    # orphaned jobs ran (counting runs, not timing them, so a slow machine cannot fail it).
    assert recorder.sizes in ([8, 1], [1]), recorder.sizes


@pytest.mark.slow
def test_work_for_clients_that_left_is_skipped(start_server, digits) -> None:  # type: ignore[no-untyped-def]
    server = start_server(batching="off")
    server.wait("/readyz")
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits)]  # 64 per request

    def impatient() -> None:
        with contextlib.suppress(httpx.TimeoutException):  # the client gives up and closes its connection
            httpx.post(server.url + "/encode", files=files, timeout=0.05)

    threads = [threading.Thread(target=impatient) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)  # let the server finish whatever it had started
    encoded = Scrape.of(server.url).value_or(0, "vqvae_batch_size_sum", model="mnist", graph="encode")
    assert encoded < 30 * 64 / 2, f"{encoded:.0f} images encoded for clients that had all left"
    ok = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert ok.status_code == 200 and httpx.get(server.url + "/readyz").status_code == 200
    assert "Traceback" not in server.log
