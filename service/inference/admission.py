"""Admission control: at most N codec requests in progress per worker (beyond that, 429 at once),
and a memory budget in bytes that their working sets share (MemoryBudget, below).

The batching queue's bound (service/inference/batching.py) protects inference. This protects what saturates
first on a small machine: the event loop's own per-request work (reading the body, parsing
multipart, decoding images), which happens before anything reaches the queue. Without it, an
overload shows up as ever longer waits in front of the queue rather than as quick 429s.
A rejected request costs almost nothing: its body is not parsed (uvicorn still receives and
discards it). An admitted request has VQVAE_BODY_TIMEOUT_S to send its body (else 408), so slow
uploads cannot hold the places for ever.

A place is held from admission to the response. A request that ends early (deadline, client gone)
frees its place while an inference run it joined may still finish in the thread pool; the
batching queue's bound covers that work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from runtime.host_limits import release_freed_memory
from runtime.memory_estimates import mib
from service.errors import Overloaded, OverMemoryBudget
from service.telemetry import ADMISSION_REJECTED, MEMORY_REFUSED, MEMORY_RESERVED


class AdmissionGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_progress = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the `limit` places for the request's lifetime; Overloaded (429) when none is free."""
        if self.in_progress >= self.limit:
            ADMISSION_REJECTED.inc()
            raise Overloaded(f"server busy: {self.in_progress} requests in progress; retry shortly")
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1


TRIM_AFTER_BYTES = 32 << 20


@dataclass(eq=False)
class _Waiter:
    extra: int  # bytes wanted
    held: int  # bytes its request already holds (> 0: it is growing)
    future: asyncio.Future[None]


class MemoryBudget:
    """The bytes of request working sets a worker may hold at once, shared by its requests.

    A request reserves what it will need (runtime/memory_estimates.py estimates it before decoding anything)
    and may grow its reservation once it knows more. One that could never fit gets 413 naming the
    budget and its need; one that fits but not now waits, in order, up to `wait_s`, then gets 429.
    Nothing is ever oversubscribed.

    Waiters are served first come, first served, except that requests growing what they already
    hold go before new ones (they are the ones whose progress frees memory). When everything held
    belongs to requests waiting to grow, none can ever proceed: the newest of them gets 429 at
    once, and its memory goes to the others.
    """

    def __init__(self, total: int, wait_s: float) -> None:
        self.total, self.wait_s = total, wait_s
        self.in_use = 0
        self._waiters: deque[_Waiter] = deque()

    @asynccontextmanager
    async def hold(self, nbytes: int, what: str) -> AsyncIterator[Reservation]:
        """A reservation of `nbytes` for the block's lifetime (it may grow inside)."""
        reservation = Reservation(self)
        try:
            await reservation.grow_to(nbytes, what)
            yield reservation
        finally:
            reservation.release()

    async def _take(self, extra: int, held: int, what: str, nbytes: int) -> None:
        if not self._waiters and self.in_use + extra <= self.total:
            self._grant(extra)
            return
        waiter = _Waiter(extra, held, asyncio.get_running_loop().create_future())
        growers = sum(1 for w in self._waiters if w.held)
        self._waiters.insert(growers, waiter) if held else self._waiters.append(waiter)
        self._dispatch()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.wait_s)
        except TimeoutError:
            if waiter.future.done():  # granted (or refused) just as the wait ran out
                return waiter.future.result()
            self._waiters.remove(waiter)
            MEMORY_REFUSED.labels("busy").inc()
            raise Overloaded(f"server busy: {mib(self.in_use)} of its {mib(self.total)} memory budget are held by "
                             f"other requests and {what} needs {mib(nbytes)}; retry shortly") from None
        except asyncio.CancelledError:  # the client left or the deadline passed while waiting
            if waiter.future.done() and waiter.future.exception() is None:
                self._give_back(extra)  # granted, but nobody will use it
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _grant(self, extra: int) -> None:
        self.in_use += extra
        MEMORY_RESERVED.inc(extra)

    def _dispatch(self) -> None:
        """Grant waiters in order while they fit; break a standstill of growing requests."""
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled while waiting
                self._waiters.popleft()
            elif self.in_use + head.extra <= self.total:
                self._waiters.popleft()
                self._grant(head.extra)
                head.future.set_result(None)
            elif self.in_use <= sum(w.held for w in self._waiters):  # every held byte is waiting
                victim = next((w for w in reversed(self._waiters) if w.held), None)
                if victim is None:
                    return
                self._waiters.remove(victim)
                MEMORY_REFUSED.labels("busy").inc()
                victim.future.set_exception(Overloaded(
                    "server busy: the requests holding its memory budget are all waiting for more; retry shortly"))
            else:
                return

    def _give_back(self, nbytes: int) -> None:
        self.in_use -= nbytes
        MEMORY_RESERVED.dec(nbytes)
        self._dispatch()


class Reservation:
    def __init__(self, budget: MemoryBudget) -> None:
        self.budget, self.held = budget, 0

    async def grow_to(self, nbytes: int, what: str) -> None:
        """Hold at least `nbytes`: OverMemoryBudget (413) if it can never fit, Overloaded (429) if it
        does not fit within the wait."""
        budget, extra = self.budget, nbytes - self.held
        if extra <= 0:
            return
        if nbytes > budget.total:
            MEMORY_REFUSED.labels("over_budget").inc()
            raise OverMemoryBudget(f"{what} needs about {mib(nbytes)} of working memory; this worker's memory "
                                   f"budget for requests is {mib(budget.total)} (VQVAE_MEMORY_BUDGET_MB). "
                                   "Send smaller images or fewer per request")
        await budget._take(extra, self.held, what, nbytes)
        self.held = nbytes

    def release(self) -> None:
        if self.held:
            held, self.held = self.held, 0
            self.budget._give_back(held)
            if held >= TRIM_AFTER_BYTES:  # a large request: hand what it freed back to the OS
                release_freed_memory()
