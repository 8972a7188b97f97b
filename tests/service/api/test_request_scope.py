"""A request's scope (admission, memory, its turn, deadlines) at its edges, and content negotiation
at the HTTP edge: when one PNG is answered instead of JSON."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.memory_estimates import BodyCharge
from service.api.deps import CodecTarget
from service.api.request_scope import RequestScope, admitted, prefers_png
from service.config import Settings
from service.errors import BodyTimeout, Overloaded, OverMemoryBudget
from service.inference.admission import AdmissionGate, MemoryBudget
from service.inference.work_queue import Work, WorkQueue


@pytest.mark.parametrize(
    "accept, png",
    [("image/png", True), ("application/json", False), ("", False), ("*/*", False),
     ("image/png, application/json", True), ("application/json, image/png;q=0.5", False),
     ("image/png;q=0", False), ("image/png;q=bogus", False), ("text/html, image/png;q=0.9", True)],
)
def test_prefers_png(accept: str, png: bool) -> None:
    assert prefers_png(accept) is png


# -- a request's scope at its edges: refusals give back what they took ------------------------------

MiB = 1 << 20


def _target(memory_mb: int = 10, places: int = 2) -> CodecTarget:
    settings = Settings(body_timeout_s=0.05)
    # The scope never reads the model: its statistics come through count_in.
    return CodecTarget(None, settings, AdmissionGate(places), MemoryBudget(memory_mb * MiB, wait_s=0.05),  # type: ignore[arg-type]
                       WorkQueue(heavy_s=0.01))


def test_a_body_that_could_never_fit_is_refused_and_its_place_given_back() -> None:
    target = _target()

    async def scenario() -> None:
        with pytest.raises(OverMemoryBudget):
            async with admitted(target, BodyCharge(declared=50 * MiB)):
                pytest.fail("admitted a body over the budget")
        assert target.gate.in_progress == 0 and target.memory.in_use == 0

    asyncio.run(scenario())


def test_a_full_gate_refuses_at_once_and_holds_nothing() -> None:
    target = _target(places=1)

    async def scenario() -> None:
        async with admitted(target, BodyCharge()):
            with pytest.raises(Overloaded, match="1 requests in progress"):
                async with admitted(target, BodyCharge()):
                    pytest.fail("admitted past the gate's limit")
            assert target.gate.in_progress == 1
        assert target.gate.in_progress == 0

    asyncio.run(scenario())


def test_work_refused_its_memory_ends_its_turn_and_releases_everything() -> None:
    """Heavy work takes its turn, then cannot have its memory: the turn must end with the refusal,
    or the work queue would hold every later heavy request behind a request that is gone."""
    target = _target(memory_mb=10)
    too_big = Work(seconds=1.0, slack_s=0.2, working_bytes=20 * MiB, what="too big")
    fits = Work(seconds=1.0, slack_s=0.2, working_bytes=1 * MiB, what="fits")

    async def scenario() -> None:
        async with admitted(target, BodyCharge()) as scope:
            with pytest.raises(OverMemoryBudget, match="too big"):
                async with scope.running(too_big):
                    pytest.fail("ran without its memory")
        async with admitted(target, BodyCharge()) as scope:
            async with asyncio.timeout(1):  # not queued behind the refused turn
                async with scope.running(fits):
                    assert scope.deadline is not None
                    assert target.memory.in_use == 1 * MiB
        assert target.gate.in_progress == 0 and target.memory.in_use == 0
        assert target.work.ahead_s(asyncio.get_running_loop().time()) == 0

    asyncio.run(scenario())


def test_a_body_that_does_not_arrive_in_time_is_a_body_timeout() -> None:
    target = _target()

    async def scenario() -> None:
        with pytest.raises(BodyTimeout, match=r"0\.05 s"):
            async with admitted(target, BodyCharge()) as scope, scope.reading():
                await asyncio.sleep(1)
        assert target.gate.in_progress == 0

    asyncio.run(scenario())


def test_the_stop_event_is_set_when_the_request_ends_however_late_it_is_asked_for() -> None:
    target = _target()

    async def scenario() -> tuple[threading.Event, RequestScope]:
        async with admitted(target, BodyCharge()) as scope:
            early = scope.stop
            assert not early.is_set()
        return early, scope

    early, scope = asyncio.run(scenario())
    assert early.is_set() and scope.stop.is_set()  # a thread handed the event after the end stops at once
