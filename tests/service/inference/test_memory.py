"""The memory budget: cgroup limits read right, reservations never oversubscribe, and real requests
of every large kind stay inside it on a real server (peak RSS read from the kernel)."""

from __future__ import annotations

import asyncio
import io
import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from contract.manifest import load_manifest
from contract.streams import Kind, encode_stream
from harness.multipart import image_parts, multipart_body
from harness.server import SHIPPED_MODELS, ServerProcess
from runtime.host_limits import cgroup_memory_limit, physical_memory, worker_memory_share
from service.errors import Overloaded, OverMemoryBudget
from service.inference.admission import MemoryBudget
from tests.service.conftest import StartServer

MiB = 1 << 20


# -- the container's limit ----------------------------------------------------------------------


@pytest.mark.parametrize("text, limit", [("1073741824", 1 << 30), ("max", None), ("536870912\n", 1 << 29),
                                         ("nonsense", None)])
def test_cgroup_v2_memory_max(tmp_path: Path, text: str, limit: int | None) -> None:
    (tmp_path / "memory.max").write_text(text)
    assert cgroup_memory_limit(tmp_path) == limit


@pytest.mark.parametrize("text, limit", [("1073741824", 1 << 30), ("9223372036854771712", None)])
def test_cgroup_v1_limit_in_bytes(tmp_path: Path, text: str, limit: int | None) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(text)
    assert cgroup_memory_limit(tmp_path) == limit


def test_the_share_splits_the_limit_among_workers_and_falls_back_to_physical_memory(tmp_path: Path) -> None:
    assert worker_memory_share(2, tmp_path) == physical_memory() // 2  # no cgroup files: the machine
    (tmp_path / "memory.max").write_text(str(1 << 30))
    assert worker_memory_share(2, tmp_path) == (1 << 29)
    assert worker_memory_share(1, tmp_path) == (1 << 30)


# -- reservations -------------------------------------------------------------------------------


def test_a_request_that_can_never_fit_is_413_naming_budget_and_need() -> None:
    async def main() -> None:
        budget = MemoryBudget(100 * MiB, wait_s=0.1)
        with pytest.raises(OverMemoryBudget, match=r"encoding 8 images needs about 150 MiB.*budget .* is 100 MiB"):
            async with budget.hold(150 * MiB, "encoding 8 images"):
                pass
        assert budget.in_use == 0

    asyncio.run(main())


def test_a_request_that_fits_later_waits_then_proceeds_and_one_that_waits_too_long_gets_429() -> None:
    async def main() -> list[str]:
        budget, events = MemoryBudget(100 * MiB, wait_s=0.5), []

        async def big(name: str, seconds: float) -> None:
            try:
                async with budget.hold(70 * MiB, name):
                    events.append(f"{name} in")
                    assert budget.in_use <= budget.total
                    await asyncio.sleep(seconds)
            except Overloaded:
                events.append(f"{name} 429")

        await asyncio.gather(big("a", 0.2), big("b", 0.2))  # b waits for a, then runs
        await asyncio.gather(big("c", 2.0), big("d", 0.1))  # d gives up after 0.5 s
        return events

    assert asyncio.run(main()) == ["a in", "b in", "c in", "d 429"]


def test_many_concurrent_reservations_never_oversubscribe() -> None:
    """200 requests that reserve, then grow: the budget is never exceeded, everything is given back,
    and growth that cannot fit (holders waiting on each other) ends in a few 429s, not a standstill."""
    async def main() -> tuple[int, dict[str, int]]:
        budget, peak, outcomes = MemoryBudget(1000, wait_s=10), 0, {"ok": 0, "429": 0}
        rng = random.Random(0)

        async def request(i: int) -> None:
            nonlocal peak
            try:
                async with budget.hold(rng.randint(1, 400), f"request {i}") as held:
                    peak = max(peak, budget.in_use)
                    await asyncio.sleep(rng.random() / 100)
                    await held.grow_to(held.held + rng.randint(0, 300), f"request {i}")
                    peak = max(peak, budget.in_use)
                    await asyncio.sleep(rng.random() / 100)
                outcomes["ok"] += 1
            except Overloaded:
                outcomes["429"] += 1

        await asyncio.gather(*(request(i) for i in range(200)))
        assert budget.in_use == 0
        return peak, outcomes

    peak, outcomes = asyncio.run(main())
    assert 700 < peak <= 1000  # busy, and never past the budget
    assert outcomes["ok"] + outcomes["429"] == 200 and outcomes["ok"] >= 150, outcomes


def test_bodies_still_arriving_hold_at_most_their_share_and_never_block_the_rest() -> None:
    """Stalled uploads fill the arriving share (half the budget): another arriving body waits, but a
    request whose body is all there is served at once, past it; when a stalled body completes, its
    bytes stop counting against the share and the waiting body proceeds."""
    async def main() -> list[str]:
        budget, events = MemoryBudget(100 * MiB, wait_s=1.0), []
        stalled = [budget.hold(0, "stalled") for _ in range(2)]
        held = [await ctx.__aenter__() for ctx in stalled]
        for reservation in held:
            await reservation.grow_to(25 * MiB, "arriving", arriving=True)  # 50 MiB: the share is full
        assert budget.arriving == budget.arriving_limit == 50 * MiB

        async def arriving() -> None:
            async with budget.hold(0, "another upload") as r:
                await r.grow_to(1 * MiB, "arriving", arriving=True)
                events.append("arriving body granted")

        async def complete() -> None:
            async with budget.hold(10 * MiB, "a complete body"):
                events.append("complete body granted")

        waiting = asyncio.create_task(arriving())
        await asyncio.sleep(0.05)
        await complete()  # behind the waiting upload in the queue, granted at once all the same
        held[0].arrived()  # one stalled body completes: 25 MiB leave the share
        await waiting
        for ctx in stalled:
            await ctx.__aexit__(None, None, None)
        assert budget.in_use == 0 and budget.arriving == 0
        return events

    assert asyncio.run(main()) == ["complete body granted", "arriving body granted"]


def test_an_arriving_body_past_the_share_is_413_and_a_shrunk_reservation_frees_its_waiter() -> None:
    async def main() -> None:
        budget = MemoryBudget(100 * MiB, wait_s=1.0)
        async with budget.hold(0, "upload") as r:
            with pytest.raises(OverMemoryBudget, match="for bodies still arriving"):
                await r.grow_to(60 * MiB, "receiving the request body", arriving=True)
        granted, done = asyncio.Event(), asyncio.Event()

        async def next_request() -> None:
            async with budget.hold(50 * MiB, "next"):
                granted.set()
                await done.wait()

        async with budget.hold(90 * MiB, "parsing JSON") as parsing:
            waiter = asyncio.create_task(next_request())
            await asyncio.sleep(0.05)
            assert not granted.is_set()
            parsing.shrink_to(20 * MiB)  # parsed: the Python objects are gone
            await asyncio.wait_for(granted.wait(), 1)
            assert budget.in_use == 70 * MiB
            done.set()
            await waiter
        assert budget.in_use == 0

    asyncio.run(main())


# -- real requests on a real server ------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def kib_of(server: ServerProcess, field: str) -> int:
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0])


def peak_mib_during(server: ServerProcess, send: callable) -> tuple[httpx.Response, float]:  # type: ignore[valid-type]
    """Reset the kernel's peak-RSS mark, send, and read the peak back (MiB)."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    response = send()
    return response, kib_of(server, "VmHWM") / 1024


BUDGET_MB = 160


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    from harness.server import service_process

    server = service_process(tmp_path_factory.mktemp("memory"), memory_budget_mb=BUDGET_MB)
    server.wait("/readyz")
    yield server
    server.stop()


def large_requests() -> dict[str, dict[str, object]]:
    black = png(np.zeros((2000, 2000), np.uint8))
    noise = png(np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8))
    grids = np.random.default_rng(1).integers(0, 512, (4, 500, 500))
    manifest = load_manifest(SHIPPED_MODELS / "mnist")
    body, content_type = multipart_body(image_parts([black] * 2))
    return {
        "2 black 2000x2000 PNGs": {"url": "/encode", "content": body, "headers": {"content-type": content_type}},
        "1024x1024 noise": {"url": "/encode", "content": noise, "headers": {"content-type": "image/png"}},
        "4 grids 500x500, packed": {"url": "/decode", "content": encode_stream(grids, Kind.PACKED, manifest, None),
                                    "headers": {"content-type": "application/octet-stream"}},
        "2 grids 500x500, JSON": {"url": "/decode", "content": json.dumps({"codes": grids[:2].tolist()}).encode(),
                                  "headers": {"content-type": "application/json"}},
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(large_requests()))
def test_large_requests_work_and_stay_inside_the_budget(bounded: ServerProcess, name: str) -> None:
    request = large_requests()[name]
    baseline = kib_of(bounded, "VmRSS") / 1024
    response, peak = peak_mib_during(bounded, lambda: httpx.post(bounded.url + str(request["url"]), timeout=120,
                                                                 content=request["content"],
                                                                 headers=request["headers"]))
    assert response.status_code == 200, response.text[:300]
    # The budget covers the request's working set and its one onnxruntime run; 10 % for the allocator.
    assert peak - baseline <= BUDGET_MB * 1.1, f"{name}: peak {peak:.0f} MiB from a baseline of {baseline:.0f} MiB"


@pytest.mark.slow
def test_what_cannot_fit_even_split_is_413_and_the_worker_lives_on(start_server: StartServer) -> None:
    server = start_server(memory_budget_mb=32)
    server.wait("/readyz")
    grids = {"codes": np.random.default_rng(2).integers(0, 512, (2, 500, 500)).tolist()}
    response = httpx.post(server.url + "/decode", json=grids, timeout=60)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "over_memory_budget" and "MiB" in error["message"] and "budget" in error["message"]
    assert httpx.get(server.url + "/readyz").status_code == 200


@pytest.mark.slow
def test_concurrent_large_requests_share_the_budget(start_server: StartServer) -> None:
    """Four at once, room for about one: each either succeeds (after waiting) or gets 429, none more."""
    server = start_server(memory_budget_mb=96, memory_wait_s=30)
    server.wait("/readyz")
    body = png(np.zeros((2000, 2000), np.uint8))

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            sends = [client.post("/encode", content=body, headers={"content-type": "image/png"}) for _ in range(4)]
            return [r.status_code for r in await asyncio.gather(*sends)]

    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    baseline = kib_of(server, "VmRSS") / 1024
    statuses = asyncio.run(main())
    assert statuses == [200] * 4, statuses
    assert kib_of(server, "VmHWM") / 1024 - baseline <= 96 * 1.1


@pytest.mark.slow
def test_probes_are_answered_while_a_long_request_runs(bounded: ServerProcess) -> None:
    """An entropy stream of large grids takes seconds to decode: in the thread pool, never on the
    event loop, so /livez keeps answering (a blocked loop would fail Kubernetes' liveness probe)."""
    manifest = load_manifest(SHIPPED_MODELS / "mnist")
    from contract.entropy_model import EntropyModel

    entropy = EntropyModel.load(SHIPPED_MODELS / "mnist" / manifest.entropy_model.path)  # type: ignore[union-attr]
    stream = encode_stream(np.random.default_rng(3).integers(0, 512, (2, 400, 400)), Kind.ENTROPY, manifest, entropy)

    async def main() -> tuple[int, list[float]]:
        async with httpx.AsyncClient(base_url=bounded.url, timeout=120) as client:
            long = asyncio.create_task(client.post("/decode", content=stream,
                                                   headers={"content-type": "application/octet-stream"}))
            waits = []
            while not long.done():
                started = asyncio.get_running_loop().time()
                assert (await client.get("/livez", timeout=2)).status_code == 200
                waits.append(asyncio.get_running_loop().time() - started)
                await asyncio.sleep(0.1)
            return (await long).status_code, waits

    status, waits = asyncio.run(main())
    assert status == 200 and len(waits) >= 10, (status, len(waits))  # it ran for a while, probes throughout
