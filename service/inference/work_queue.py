"""The work queue: heavy requests run one at a time per worker, in order, and a request that cannot
start before its deadline is refused at once (429, with a Retry-After computed from the work ahead
of it) instead of being accepted and answered 504 later.

Every planned request knows its work before doing any (runtime/work_estimates.py: pixels, grid
positions, stream kinds), in estimated seconds; the queue turns them into this worker's seconds
with the pace it measures on the heavy work it finishes (an exponential average of measured over
estimated seconds). A request's deadline is its slack (VQVAE_REQUEST_TIMEOUT_S plus
VQVAE_TIMEOUT_S_PER_MPX per megapixel) plus twice its expected work. So:

- light work (expected under `heavy_s`) never waits here: it runs at once, micro-batched with the
  rest, as before; so many light requests together stay well inside their deadlines;
- heavy work waits for its turn, first come, first served. If the work ahead of it (what is left of
  the running request and everything queued) is expected to take longer than its slack, it is
  refused at once with Retry-After = that excess: by then the queue will have drained enough for it
  to start in time. A queued request that has waited its whole slack without starting (the work
  ahead took longer than expected) is refused the same way, never started late;
- started work runs within its deadline; 504 only when it overruns twice its expected time and the
  slack it did not spend waiting.

Running heavy requests one at a time is what keeps them inside their deadlines: interleaved, eight
2000×2000 decodes sharing one CPU all finish late together; in turn, the first ones finish early
and the rest are told at once when to come back.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from service.errors import DeadlineExceeded, Overloaded
from service.telemetry import WORK_QUEUED, WORK_REFUSED

PACE_WEIGHT = 0.3  # of each finished request in the pace's average
PACE_RANGE = (0.05, 20.0)  # a pace outside this is a measurement gone wrong, not a machine
DEADLINE_WORK_FACTOR = 2.0  # a started request may take this many times its expected work (plus slack)


@dataclass(frozen=True)
class Work:
    """A planned request's work as admission sees it (service/workflows/plan.py makes them)."""

    seconds: float  # estimated (runtime/work_estimates.py), before this worker's pace
    slack_s: float  # time it may spend beyond its expected work: waiting for its turn, or running slow
    working_bytes: int  # memory at its peak (the reservation grows to this when its turn comes)
    what: str  # how messages name it
    parsed_bytes: int = 0  # what its parsed inputs hold besides the body, while it waits
    on_top: bool = False  # working_bytes come on top of what the request holds already (v2)


@dataclass(eq=False)
class _Turn:
    expected: float  # this worker's seconds
    granted: asyncio.Future[None]
    started: float = field(default=0.0)


class _LightTurn:
    """Light work's turn: at once, nothing to wait for or to measure; only its deadline. (A plain
    class: nearly every request takes this turn, and a generator per request costs more.)"""

    __slots__ = ("pace", "work")

    def __init__(self, work: Work, pace: float) -> None:
        self.work, self.pace = work, pace

    async def __aenter__(self) -> float:
        work = self.work
        return asyncio.get_running_loop().time() + work.slack_s + DEADLINE_WORK_FACTOR * work.seconds * self.pace

    async def __aexit__(self, *exc: object) -> None:
        return None


class WorkQueue:
    def __init__(self, heavy_s: float) -> None:
        self.heavy_s = heavy_s  # estimated seconds from which work takes its turn
        self.pace = 1.0  # this worker's seconds per estimated second
        self._running: _Turn | None = None
        self._waiting: deque[_Turn] = deque()

    def ahead_s(self, now: float) -> float:
        """Expected seconds before work joining the queue now would start."""
        running = self._running
        left = max(0.0, running.expected - (now - running.started)) if running else 0.0
        return left + sum(turn.expected for turn in self._waiting)

    def turn(self, work: Work) -> AbstractAsyncContextManager[float]:
        """`async with queue.turn(work) as deadline:` waits for the work's turn (light work: none) ->
        its deadline, in the event loop's time. Overloaded (429, with its Retry-After) when it cannot
        start before its deadline."""
        return _LightTurn(work, self.pace) if work.seconds < self.heavy_s else self._heavy_turn(work)

    @asynccontextmanager
    async def _heavy_turn(self, work: Work) -> AsyncIterator[float]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expected = work.seconds * self.pace
        deadline = now + work.slack_s + DEADLINE_WORK_FACTOR * expected
        ahead = self.ahead_s(now)
        if ahead > work.slack_s:
            raise self._refusal(work, ahead, "at_once")
        turn = _Turn(expected, loop.create_future())
        self._waiting.append(turn)
        WORK_QUEUED.inc(expected)
        self._dispatch(now)
        try:
            await asyncio.wait_for(asyncio.shield(turn.granted), work.slack_s)
        except TimeoutError:
            if not turn.granted.done():
                self._leave(turn)
                raise self._refusal(work, self.ahead_s(loop.time()), "waited") from None
        except asyncio.CancelledError:
            self._leave(turn) if not turn.granted.done() else self._finish(turn, None)
            raise
        measured: float | None = None
        try:
            yield deadline
            measured = loop.time() - turn.started
        except DeadlineExceeded:  # it overran: what it took so far is still a measurement (a low one)
            measured = loop.time() - turn.started
            raise
        finally:
            self._finish(turn, measured / work.seconds if measured is not None and work.seconds > 0 else None)

    def _refusal(self, work: Work, ahead: float, when: str) -> Overloaded:
        WORK_REFUSED.labels(when).inc()
        retry = max(0.1, ahead - work.slack_s)  # error_mapping rounds it up to whole seconds
        return Overloaded(f"server busy: the work queued ahead of {work.what} is expected to take "
                          f"{ahead:.0f} s, longer than it may wait ({work.slack_s:.0f} s); retry in "
                          f"{math.ceil(retry)} s", retry_after_s=retry)

    def _dispatch(self, now: float) -> None:
        while self._running is None and self._waiting:
            turn = self._waiting.popleft()
            WORK_QUEUED.dec(turn.expected)
            if turn.granted.done():  # cancelled while waiting
                continue
            turn.started = now
            self._running = turn
            turn.granted.set_result(None)

    def _leave(self, turn: _Turn) -> None:
        """A waiting turn gives up (refused, or its client left)."""
        if turn in self._waiting:
            self._waiting.remove(turn)
            WORK_QUEUED.dec(turn.expected)

    def _finish(self, turn: _Turn, pace: float | None) -> None:
        """The running turn ends; `pace`: measured over estimated seconds, when it ran to its end."""
        if pace is not None:
            low, high = PACE_RANGE
            self.pace = min(high, max(low, (1 - PACE_WEIGHT) * self.pace + PACE_WEIGHT * pace))
        if self._running is turn:
            self._running = None
        self._dispatch(asyncio.get_running_loop().time())
