"""A codec request's lifetime: its place at the admission gate, its memory reservation, its deadlines
(the body's: 408; the work's: 504) and cancellation when the client leaves. One scope per request,
opened by the route and handed to the parse and run steps, whatever the protocol (HTTP routes, v2).

    async with admitted(target, reading_bytes, client_gone=http_client_gone(request)) as scope:
        async with scope.reading():                          # 408 after VQVAE_BODY_TIMEOUT_S
            body = await request.body()
        await scope.reserve(plan.working_bytes, plan.what)   # 413 / 429 (service/inference/admission.py)
        result = await scope.within(work, plan.deadline_s(settings), watch=True)   # 504; cancelled if the client leaves
        scope.count_in(model.stats["encode"], items)         # the run step: the v2 statistics this request counts in
        scope.stop                                           # set when the request ends: walks in threads stop
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request

from runtime.memory_estimates import body_bytes
from service.api.deps import CodecTarget
from service.config import Settings
from service.errors import BodyTimeout, DeadlineExceeded
from service.inference.admission import Reservation
from service.inference.statistics import GraphStats
from service.inputs.bodies import media_type

T = TypeVar("T")
ClientGone = Callable[[], Awaitable[None]]  # returns when the client has gone


def reading_bytes(request: Request, settings: Settings) -> int:
    """What reading and parsing the body holds, from its declared length (the body-size middleware
    holds the client to it), else the body limit."""
    declared = request.headers.get("content-length", "")
    size = min(int(declared), settings.max_body_bytes) if declared.isdigit() else settings.max_body_bytes
    return body_bytes(media_type(request), size)


def http_client_gone(request: Request) -> ClientGone:
    """For an HTTP request whose body has been read: only disconnect messages remain to receive."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


class RequestScope:
    def __init__(self, settings: Settings, reservation: Reservation, client_gone: ClientGone | None) -> None:
        self.settings, self.reservation, self.client_gone = settings, reservation, client_gone
        self.stop = threading.Event()  # set when the request ends: work left behind in threads stops
        self.counted: tuple[GraphStats, int] | None = None

    def count_in(self, stats: GraphStats, items: int) -> None:
        """The request's outcome, duration and items go to these statistics when it ends (the run
        step says which model it ran; a request refused before that counts nowhere, as in Triton)."""
        self.counted = (stats, items)

    async def reserve(self, nbytes: int, what: str) -> None:
        """Hold at least `nbytes` of the memory budget (413 when it can never fit, 429 when busy)."""
        await self.reservation.grow_to(nbytes, what)

    async def reserve_more(self, extra: int, what: str) -> None:
        """Hold `extra` bytes beyond what is held now."""
        await self.reservation.grow_to(self.reservation.held + extra, what)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Reading (and parsing) the body within VQVAE_BODY_TIMEOUT_S, else 408: a slow upload must
        not hold one of the admission gate's places for ever."""
        seconds = self.settings.body_timeout_s
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within {seconds:g} s") from None

    async def within(self, work: Awaitable[T], seconds: float, watch: bool = True) -> T:
        """Await `work` within the deadline (504 after it). If the client leaves first, the work is
        cancelled, so its queued inference is skipped rather than run for nobody. `watch=False` for
        work too small to be worth two more tasks (a digit's encode takes less than their bookkeeping)."""
        if not watch or self.client_gone is None:
            return await _within(work, seconds)
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self.client_gone())
        watcher.add_done_callback(lambda _: task.cancel())  # fires on disconnect (and harmlessly on cleanup)
        try:
            return await _within(task, seconds)
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                raise ClientDisconnect() from None
            raise
        finally:
            watcher.cancel()


async def _within(work: Awaitable[T], seconds: float) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise DeadlineExceeded(f"the request did not finish within {seconds:g} s; the server is busy, "
                               "retry later or send fewer images per request") from None


@asynccontextmanager
async def admitted(target: CodecTarget, reading_bytes: int,
                   client_gone: ClientGone | None = None) -> AsyncIterator[RequestScope]:
    """A place at the gate (429 at once when none is free, before the body is read) and `reading_bytes`
    of the memory budget for reading the body; both held until the block ends."""
    started = time.perf_counter_ns()
    with target.gate.admit():
        async with target.memory.hold(reading_bytes, "reading the request body") as held:
            scope, ok = RequestScope(target.settings, held, client_gone), False
            try:
                yield scope
                ok = True
            finally:
                scope.stop.set()
                if scope.counted is not None:
                    stats, items = scope.counted
                    stats.request_ended(ok, time.perf_counter_ns() - started, items)


def prefers_png(accept: str) -> bool:
    """True when Accept names image/png explicitly with q > 0 and at least application/json's q."""
    quality: dict[str, float] = {}
    for part in accept.lower().split(","):
        kind, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        quality[kind.strip()] = q
    return quality.get("image/png", 0.0) > 0 and quality["image/png"] >= quality.get("application/json", 0.0)
