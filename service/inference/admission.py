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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from runtime.host_limits import release_freed_memory
from runtime.memory_estimates import mib
from service.errors import Overloaded, OverMemoryBudget
from service.telemetry import ADMISSION_REJECTED, MEMORY_REFUSED, MEMORY_RESERVED


class AdmissionGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_progress = 0

    def take(self) -> None:
        """Hold one of the `limit` places (until `give_back`); Overloaded (429) when none is free."""
        if self.in_progress >= self.limit:
            ADMISSION_REJECTED.inc()
            raise Overloaded(f"server busy: {self.in_progress} requests in progress; retry shortly")
        self.in_progress += 1

    def give_back(self) -> None:
        self.in_progress -= 1

    def admit(self) -> AdmissionGate:
        """`with gate.admit():` holds a place for the block (the gate is its own context manager)."""
        return self

    def __enter__(self) -> None:
        self.take()

    def __exit__(self, *exc: object) -> None:
        self.give_back()


TRIM_AFTER_BYTES = 32 << 20
ARRIVING_SHARE = 0.5  # of the budget: what bodies still arriving may hold together


@dataclass(eq=False)
class _Waiter:
    extra: int  # bytes wanted
    held: int  # bytes its request already holds (> 0: it is growing)
    arriving: bool  # for a body still arriving: also within the arriving share
    future: asyncio.Future[None]


class MemoryBudget:
    """The bytes of request working sets a worker may hold at once, shared by its requests.

    A request reserves what it will need (runtime/memory_estimates.py estimates it before decoding anything)
    and may grow its reservation once it knows more. One that could never fit gets 413 naming the
    budget and its need; one that fits but not now waits, in order, up to `wait_s`, then gets 429.
    Nothing is ever oversubscribed.

    Bodies are charged as their bytes arrive (service/api/request_scope.py), and the bytes of bodies
    still arriving may hold only `arriving_limit` of the budget together: slow or stalled uploads
    (a client holding sockets open) can never take the memory that requests with their bodies
    already read need; past the share they wait (and the body deadline ends them), without holding
    up the requests behind them.

    Waiters are served first come, first served, except that requests growing what they already
    hold go before new ones (they are the ones whose progress frees memory). When everything held
    belongs to requests waiting to grow, none can ever proceed: the newest of them gets 429 at
    once, and its memory goes to the others.
    """

    def __init__(self, total: int, wait_s: float, arriving_share: float = ARRIVING_SHARE) -> None:
        self.total, self.wait_s = total, wait_s
        self.arriving_limit = int(total * arriving_share)
        self.in_use = 0
        self.arriving = 0  # of in_use: bytes of bodies still arriving
        self._waiters: deque[_Waiter] = deque()

    @asynccontextmanager
    async def hold(self, nbytes: int, what: str) -> AsyncIterator[Reservation]:
        """A reservation of `nbytes` for the block's lifetime (it may grow and shrink inside)."""
        reservation = Reservation(self)
        try:
            await reservation.grow_to(nbytes, what)
            yield reservation
        finally:
            reservation.release()

    def refuse_if_never(self, nbytes: int, what: str, arriving: int = 0) -> None:
        """OverMemoryBudget (413) for a need that could never fit: `nbytes` in all, `arriving` of them
        while a body arrives."""
        if nbytes > self.total or arriving > self.arriving_limit:
            MEMORY_REFUSED.labels("over_budget").inc()
            raise OverMemoryBudget(f"{what} needs about {mib(max(nbytes, arriving))} of working memory; this "
                                   f"worker's memory budget for requests is {mib(self.total)}"
                                   + (f", {mib(self.arriving_limit)} of it for bodies still arriving"
                                      if arriving > self.arriving_limit else "")
                                   + " (VQVAE_MEMORY_BUDGET_MB). Send smaller images or fewer per request")

    def _fits(self, extra: int, arriving: bool) -> bool:
        return self.in_use + extra <= self.total and (not arriving or self.arriving + extra <= self.arriving_limit)

    async def _take(self, extra: int, held: int, what: str, nbytes: int, arriving: bool) -> None:
        if not self._waiters and self._fits(extra, arriving):
            self._grant(extra, arriving)
            return
        waiter = _Waiter(extra, held, arriving, asyncio.get_running_loop().create_future())
        growers = sum(1 for w in self._waiters if w.held)
        self._waiters.insert(growers, waiter) if held else self._waiters.append(waiter)
        self._dispatch()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.wait_s)
        except TimeoutError:
            if waiter.future.done():  # granted (or refused) just as the wait ran out
                return waiter.future.result()
            self._waiters.remove(waiter)
            self._dispatch()  # it may have been holding up smaller requests behind it
            MEMORY_REFUSED.labels("busy").inc()
            raise Overloaded(f"server busy: {mib(self.in_use)} of its {mib(self.total)} memory budget are held by "
                             f"other requests and {what} needs {mib(nbytes)}; retry shortly") from None
        except asyncio.CancelledError:  # the client left or the deadline passed while waiting
            if waiter.future.done() and waiter.future.exception() is None:
                self._give_back(extra, extra if arriving else 0)  # granted, but nobody will use it
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._dispatch()
            raise

    def _grant(self, extra: int, arriving: bool) -> None:
        self.in_use += extra
        self.arriving += extra if arriving else 0
        MEMORY_RESERVED.inc(extra)

    def _dispatch(self) -> None:
        """Grant waiters in order while they fit; break a standstill of growing requests. A body that
        waits only for the arriving share does not hold up the requests behind it."""
        for waiter in list(self._waiters):
            if waiter.future.done():  # cancelled while waiting
                self._waiters.remove(waiter)
            elif self._fits(waiter.extra, waiter.arriving):
                self._waiters.remove(waiter)
                self._grant(waiter.extra, waiter.arriving)
                waiter.future.set_result(None)
            elif self.in_use + waiter.extra <= self.total:  # blocked by the arriving share alone
                continue
            else:
                self._break_standstill()
                return

    def _break_standstill(self) -> None:
        if self.in_use > sum(w.held for w in self._waiters):  # someone not waiting will give memory back
            return
        victim = next((w for w in reversed(self._waiters) if w.held), None)
        if victim is None:
            return
        self._waiters.remove(victim)
        MEMORY_REFUSED.labels("busy").inc()
        victim.future.set_exception(Overloaded(
            "server busy: the requests holding its memory budget are all waiting for more; retry shortly"))
        self._dispatch()

    def _give_back(self, nbytes: int, arriving: int = 0) -> None:
        self.in_use -= nbytes
        self.arriving -= arriving
        MEMORY_RESERVED.dec(nbytes)
        self._dispatch()

    def _arrived(self, nbytes: int) -> None:
        self.arriving -= nbytes
        self._dispatch()


class Reservation:
    def __init__(self, budget: MemoryBudget) -> None:
        self.budget, self.held = budget, 0
        self.arriving = 0  # of held: bytes of a body still arriving

    async def grow_to(self, nbytes: int, what: str, arriving: bool = False) -> None:
        """Hold at least `nbytes`: OverMemoryBudget (413) if it can never fit, Overloaded (429) if it
        does not fit within the wait. `arriving`: the growth is a body's bytes, still arriving."""
        budget, extra = self.budget, nbytes - self.held
        if extra <= 0:
            return
        budget.refuse_if_never(nbytes, what, self.arriving + extra if arriving else 0)
        await budget._take(extra, self.held, what, nbytes, arriving)
        self.held = nbytes
        self.arriving += extra if arriving else 0

    def arrived(self) -> None:
        """The body is all there: its bytes no longer count against the arriving share."""
        if self.arriving:
            arriving, self.arriving = self.arriving, 0
            self.budget._arrived(arriving)

    def shrink_to(self, nbytes: int) -> None:
        """Hold only `nbytes` (no more than now): what parsing needed for a moment is given back."""
        if 0 <= nbytes < self.held:
            self.arrived()
            freed, self.held = self.held - nbytes, nbytes
            self.budget._give_back(freed)

    def release(self) -> None:
        if self.held:
            held, self.held = self.held, 0
            arriving, self.arriving = self.arriving, 0
            self.budget._give_back(held, arriving)
            if held >= TRIM_AFTER_BYTES:  # a large request: hand what it freed back to the OS
                release_freed_memory()
