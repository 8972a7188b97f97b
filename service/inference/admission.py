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
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from service.errors import Overloaded, OverMemoryBudget
from service.inference.resources import release_freed_memory
from service.inference.working_set import mib
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


class MemoryBudget:
    """The bytes of request working sets a worker may hold at once, shared by its requests.

    A request reserves what it will need (working_set.py estimates it before decoding anything)
    and may grow its reservation once it knows more. One that could never fit gets 413 naming the
    budget and its need; one that fits but not now waits up to `wait_s` for others to finish, then
    gets 429. Nothing is ever oversubscribed.
    """

    def __init__(self, total: int, wait_s: float) -> None:
        self.total, self.wait_s = total, wait_s
        self.in_use = 0
        self._released = asyncio.Event()

    @asynccontextmanager
    async def hold(self, nbytes: int, what: str) -> AsyncIterator[Reservation]:
        """A reservation of `nbytes` for the block's lifetime (it may grow inside)."""
        reservation = Reservation(self)
        try:
            await reservation.grow_to(nbytes, what)
            yield reservation
        finally:
            reservation.release()

    def _give_back(self, nbytes: int) -> None:
        self.in_use -= nbytes
        MEMORY_RESERVED.dec(nbytes)
        self._released.set()  # every waiter re-checks; the event is cleared by the next to wait


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
        deadline = time.monotonic() + budget.wait_s
        while budget.in_use + extra > budget.total:
            remaining = deadline - time.monotonic()
            budget._released.clear()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(budget._released.wait(), remaining)
            except TimeoutError:
                MEMORY_REFUSED.labels("busy").inc()
                raise Overloaded(f"server busy: {mib(budget.in_use)} of its {mib(budget.total)} memory budget are "
                                 f"held by other requests and {what} needs {mib(nbytes)}; retry shortly") from None
        budget.in_use += extra
        MEMORY_RESERVED.inc(extra)
        self.held = nbytes

    def release(self) -> None:
        if self.held:
            self.budget._give_back(self.held)
            if self.held >= TRIM_AFTER_BYTES:  # a large request: hand what it freed back to the OS
                release_freed_memory()
            self.held = 0
