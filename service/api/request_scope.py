"""A codec request's lifetime: its place at the admission gate, its memory (charged as its body
arrives, then as its work needs), its turn in the work queue, its deadlines (the body's: 408; the
work's: 504) and cancellation when the client leaves. One scope per request, opened by the route
and handed to the parse and run steps, whatever the protocol (HTTP routes, v2; the scope itself
knows nothing of HTTP: `metered` and `http_client_gone` below are the HTTP side).

    async with admitted(target, body_charge(request), http_client_gone(request)) as scope:
        request = metered(request, scope)                    # the body charged as it arrives (413 / 429)
        async with scope.reading():                          # 408 after VQVAE_BODY_TIMEOUT_S
            body = await request.body()
        async with scope.running(plan.work(settings)):       # 429 if it cannot start in time; memory
            result = await scope.within(work, watch=True)    # 504 past its deadline; cancelled if the client leaves
        scope.count_in(model.stats["encode"], items)         # the run step: the v2 statistics this request counts in
        scope.stop                                           # set when the request ends: walks in threads stop

Memory follows the bytes that arrived, never a size a header promises: nothing is reserved at
admission (a Content-Length whose cost could never fit is refused there with 413, before reading);
each chunk of the body grows the reservation as it arrives (bodies still arriving share at most
half the budget, service/inference/admission.py); once the body is all there its parsing is
charged (JSON, multipart), and an inflated (gzip) body by what it inflates to; after parsing, only
what the parsed request still holds stays reserved while it waits for its turn; then its work's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from runtime.memory_estimates import BodyCharge, charge_for_media
from service.api.deps import CodecTarget
from service.config import Settings
from service.errors import BodyTimeout, DeadlineExceeded
from service.inference.admission import Reservation
from service.inference.statistics import GraphStats
from service.inference.work_queue import Work, WorkQueue
from service.inputs.bodies import media_type

T = TypeVar("T")
ClientGone = Callable[[], Awaitable[None]]  # returns when the client has gone


def body_charge(request: Request) -> BodyCharge:
    """How the body of this HTTP request will be charged, by its media type; its Content-Length only
    serves to refuse at once a body that could never fit."""
    declared = request.headers.get("content-length", "")
    return charge_for_media(media_type(request), int(declared) if declared.isdigit() else None)


def metered(request: Request, scope: RequestScope) -> Request:
    """The same request, its body charged to the scope as each chunk arrives (the parse step reads it
    from here: request.body(), request.stream())."""
    receive = request.receive

    async def charged() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            await scope.body_arrived(len(message.get("body", b"")), complete=not message.get("more_body", False))
        return message

    return Request(request.scope, charged)


def http_client_gone(request: Request) -> ClientGone:
    """For an HTTP request whose body has been read: only disconnect messages remain to receive."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


class RequestScope:
    def __init__(self, settings: Settings, reservation: Reservation, work_queue: WorkQueue, charge: BodyCharge,
                 client_gone: ClientGone | None) -> None:
        self.settings, self.reservation, self.work_queue = settings, reservation, work_queue
        self.charge, self.client_gone = charge, client_gone
        self._stop: threading.Event | None = None  # made on first use: most requests never hand it to a thread
        self._ended = False
        self.received = 0  # body bytes arrived
        self.body_bytes = 0  # what the read body holds: its bytes (and an inflated copy)
        self.deadline: float | None = None  # the event loop's time; set when its work starts
        self.counted: tuple[GraphStats, int] | None = None

    @property
    def stop(self) -> threading.Event:
        """Set when the request ends: work it left behind in threads (a prior's walk) stops."""
        if self._stop is None:
            self._stop = threading.Event()
            if self._ended:
                self._stop.set()
        return self._stop

    def end(self) -> None:
        self._ended = True
        if self._stop is not None:
            self._stop.set()

    def count_in(self, stats: GraphStats, items: int) -> None:
        """The request's outcome, duration and items go to these statistics when it ends (the run
        step says which model it ran; a request refused before that counts nowhere, as in Triton)."""
        self.counted = (stats, items)

    async def body_arrived(self, nbytes: int, complete: bool) -> None:
        """`nbytes` more of the body arrived; `complete`: it is all there, and about to be parsed."""
        self.received += nbytes
        if not complete:
            await self.reservation.grow_to(self.received, "receiving the request body", arriving=True)
            return
        self.reservation.arrived()
        self.body_bytes = self.received
        await self.reservation.grow_to(self.charge.complete(self.received), "reading the request body")

    async def body_expanded(self, nbytes: int, charge: BodyCharge, what: str) -> None:
        """The body inflated to `nbytes` more, held beside it and parsed as `charge` says."""
        self.body_bytes += nbytes
        await self.reservation.grow_to(self.reservation.held + charge.complete(nbytes), what)

    def reading(self) -> AbstractAsyncContextManager[None]:
        """Reading (and parsing) the body within VQVAE_BODY_TIMEOUT_S, else 408: a slow upload must
        not hold one of the admission gate's places, or its memory, for ever."""
        return _BodyDeadline(self.settings.body_timeout_s)

    def running(self, work: Work) -> AbstractAsyncContextManager[None]:
        """The planned work's turn: what parsing needed for a moment is given back, the work waits
        its turn (429 at once when it cannot start before its deadline), its memory is reserved
        (413 / 429), and `within` runs it inside its deadline."""
        return _Running(self, work)

    async def within(self, work: Awaitable[T], watch: bool = True) -> T:
        """Await `work` before the deadline (504 after it). If the client leaves first, the work is
        cancelled, so its queued inference is skipped rather than run for nobody. `watch=False` for
        work too small to be worth two more tasks (a digit's encode takes less than their bookkeeping)."""
        loop = asyncio.get_running_loop()
        seconds = (self.deadline if self.deadline is not None else loop.time() + self.settings.request_timeout_s) \
            - loop.time()
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
        async with asyncio.timeout(max(0.0, seconds)):
            return await work
    except TimeoutError:
        raise DeadlineExceeded("the request's work overran its deadline; the server is busy, retry later or send "
                               "fewer images per request") from None


# The request's contexts below are plain classes, not generators: every codec request enters each.


class _BodyDeadline:
    __slots__ = ("seconds", "timeout")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self.timeout.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.timeout.__aexit__(kind, exc, tb)
        except TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within {self.seconds:g} s") from None


class _Running:
    __slots__ = ("scope", "turn", "work")

    def __init__(self, scope: RequestScope, work: Work) -> None:
        self.scope, self.work = scope, work
        self.turn = scope.work_queue.turn(work)

    async def __aenter__(self) -> None:
        scope, work = self.scope, self.work
        scope.reservation.shrink_to(scope.body_bytes + work.parsed_bytes)
        deadline = await self.turn.__aenter__()
        try:
            total = scope.reservation.held + work.working_bytes if work.on_top else work.working_bytes
            await scope.reservation.grow_to(total, work.what)
        except BaseException as exc:  # its turn ends with the refusal
            await self.turn.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        scope.deadline = deadline

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.turn.__aexit__(kind, exc, tb)


class _Admitted:
    __slots__ = ("charge", "client_gone", "scope", "started", "target")

    def __init__(self, target: CodecTarget, charge: BodyCharge, client_gone: ClientGone | None) -> None:
        self.target, self.charge, self.client_gone = target, charge, client_gone

    async def __aenter__(self) -> RequestScope:
        target, charge = self.target, self.charge
        self.started = time.perf_counter_ns()
        target.gate.take()  # 429 when no place is free
        if charge.declared is not None:
            try:
                target.memory.refuse_if_never(charge.complete(charge.declared), "reading the request body",
                                              arriving=charge.declared)
            except BaseException:
                target.gate.give_back()
                raise
        self.scope = RequestScope(target.settings, Reservation(target.memory), target.work, charge, self.client_gone)
        return self.scope

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        scope = self.scope
        try:
            scope.end()
            if scope.counted is not None:
                stats, items = scope.counted
                stats.request_ended(kind is None, time.perf_counter_ns() - self.started, items)
        finally:
            scope.reservation.release()
            self.target.gate.give_back()


def admitted(target: CodecTarget, charge: BodyCharge,
             client_gone: ClientGone | None = None) -> AbstractAsyncContextManager[RequestScope]:
    """A place at the gate (429 at once when none is free, before the body is read) held until the
    block ends, and a reservation that starts empty: the body is charged as it arrives. A declared
    body whose cost could never fit the budget is refused at once (413)."""
    return _Admitted(target, charge, client_gone)


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
