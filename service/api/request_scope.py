"""A codec request's lifetime at the HTTP edge: the body deadline (408), the inference deadline
(504), cancellation when the client leaves, and content negotiation for one PNG."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request

from service.errors import BodyTimeout, DeadlineExceeded

T = TypeVar("T")


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read; only disconnect messages remain)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _within(work: Awaitable[T], seconds: float) -> T:
    """Await `work`; DeadlineExceeded (504) when it takes longer than `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise DeadlineExceeded(f"the request did not finish within {seconds:g} s; the server is busy, "
                               "retry later or send fewer images per request") from None


async def for_client(request: Request, work: Awaitable[T], seconds: float, watch: bool = True) -> T:
    """Await `work` within the deadline (504 after it). If the client disconnects first, the work is
    cancelled, so its queued inference is skipped rather than run for nobody. `watch=False` for work
    too small to be worth two more tasks (a digit's encode takes less than their bookkeeping)."""
    if not watch:
        return await _within(work, seconds)
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    watcher.add_done_callback(lambda _: task.cancel())  # fires on disconnect (and harmlessly on cleanup)
    try:
        return await _within(task, seconds)
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientDisconnect() from None
        raise
    finally:
        watcher.cancel()


@asynccontextmanager
async def body_deadline(seconds: float) -> AsyncIterator[None]:
    """Reading (and parsing) the body within `seconds`, else 408: a slow upload must not hold one of
    the admission gate's places for ever."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {seconds:g} s") from None


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
