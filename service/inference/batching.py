"""Dynamic micro-batching: concurrent requests' inputs coalesced into one onnxruntime run.

One MicroBatcher per model and graph ("encode" = encoder + quantizer, "decode"). Requests submit
their inputs (N, ...) and await their own slice of the batch output, in order. The loop takes
queued jobs of the same trailing shape, up to max_batch items, optionally waiting up to max_wait
for more to arrive, and runs them on the single inference thread (sessions already use every
usable CPU, so inference never runs two at a time). With coalescing off every job runs alone,
through the same queue, bounds and metrics.

Backpressure: the queue holds at most max_queue items; beyond that submit raises Overloaded (429)
at once. A waiter that is cancelled (deadline, client gone) is skipped; the batch goes on.

Runs are bounded in pixels too (policy.max_pixels): coalescing stops there, and large items are
never padded past it, so one run's working memory stays inside the run slot of the memory budget.
Small runs (at most policy.inline_max items and inline_max_pixels pixels) run on the event loop,
larger ones on the inference thread.

A batcher whose model was replaced by a reload is retired: it finishes the work already queued or
still submitted by requests that resolved the old model, then its loop ends (and with it the last
reference to the old sessions).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import Overloaded

RunFn = Callable[[np.ndarray], np.ndarray]
PixelsOf = Callable[[tuple[int, ...]], int]  # an item's shape (without N) -> pixels its run touches


def spatial_pixels(item_shape: tuple[int, ...]) -> int:
    """(C, H, W) or (h, w) -> H·W or h·w: the last two dimensions."""
    return int(item_shape[-1] * item_shape[-2])


class BatchObserver(Protocol):
    def batch_ran(self, size: int, queue_waits: list[float]) -> None: ...
    def batch_finished(self, jobs: int, size: int, phases_ns: tuple[int, int, int]) -> None:
        """A run succeeded: its jobs, items, and ns gathering inputs, running, handing outputs back."""
    def rejected(self) -> None: ...


@dataclass(eq=False)
class _Job:
    inputs: np.ndarray  # (n, ...) with n <= max_batch
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchPolicy:
    coalesce: bool = True
    max_batch: int = 64
    max_wait: float = 0.0  # seconds to wait for company when fewer than max_batch items are queued
    max_queue: int = 1024  # items waiting (not yet running) before new work is refused
    # Runs of at most this many items execute on the event loop itself: for a digit or two the run
    # (~0.2 ms on one thread) is cheaper than the two thread wake-ups of the executor hop (~0.3 ms
    # on this VM; /encode p50 at concurrency 1: 0.96 ms inline, 1.29 ms through the thread).
    inline_max: int = 2
    max_pixels: int = 1 << 40  # pixels per run (coalesced items together)
    inline_max_pixels: int = 16384  # a run on the event loop must also be this small


def bucket(n: int, max_batch: int) -> int:
    """The padded batch size: the next power of two, capped at max_batch (a small fixed set of shapes)."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max(max_batch, n))


def padded(run: RunFn, max_batch: int, pixels_of: PixelsOf = spatial_pixels, max_pixels: int = 1 << 40) -> RunFn:
    """Run on batches padded to bucket sizes, so onnxruntime sees few shapes and memory stays flat;
    never padded past max_pixels (large tiles run at their own batch size)."""

    def run_padded(batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = bucket(n, max_batch)
        if size * pixels_of(batch.shape[1:]) > max_pixels:
            size = n
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        return run(batch)[:n]

    return run_padded


class MicroBatcher:
    def __init__(self, run: RunFn, executor: Executor, policy: BatchPolicy, observer: BatchObserver,
                 pixels_of: PixelsOf = spatial_pixels, in_progress: Callable[[], int] | None = None) -> None:
        self.run, self.executor, self.policy, self.observer = run, executor, policy, observer
        self.pixels_of = pixels_of
        # Requests the server has in progress (admitted, not yet answered). Company is waited for only
        # while some of them are not already waiting here: a lone request never waits.
        self.in_progress = in_progress
        self._submitters = 0  # requests inside submit(): queued or running
        self._queue: deque[_Job] = deque()
        self._queued_items = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retired = False

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def submit(self, inputs: np.ndarray) -> np.ndarray:
        """(N, ...) -> the run's output for these N items, in order; Overloaded when the queue is full."""
        n = len(inputs)
        limit = max(1, min(self.policy.max_batch, self.policy.max_pixels // max(1, self.pixels_of(inputs.shape[1:]))))
        if self._queued_items + n > self.policy.max_queue:
            self.observer.rejected()
            raise Overloaded(f"server busy: {self._queued_items} items queued; retry shortly")
        loop = asyncio.get_running_loop()
        # First use, a new event loop, or a retired batcher whose loop ended (a late request of the old model).
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue, self._queued_items, self._arrived = deque(), 0, asyncio.Event()
            self._task = asyncio.create_task(self._serve())
        jobs = [_Job(inputs[i : i + limit], loop.create_future()) for i in range(0, n, limit)]
        self._queue.extend(jobs)
        self._queued_items += n
        self._submitters += 1
        self._arrived.set()
        try:
            parts = [await job.future for job in jobs]
        except asyncio.CancelledError:  # deadline or client gone: none of this request's jobs should run
            for job in jobs:
                job.future.cancel()
            raise
        finally:
            self._submitters -= 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def retire(self) -> None:
        """A reload replaced this batcher's model: end the loop once nothing is queued (see the module doc)."""
        self._retired = True
        self._arrived.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._retired:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_company()
            jobs, waits = self._take()
            if not jobs:
                continue
            started = time.perf_counter_ns()
            batch = jobs[0].inputs if len(jobs) == 1 else np.concatenate([j.inputs for j in jobs])
            gathered = time.perf_counter_ns()
            self.observer.batch_ran(len(batch), waits)
            try:
                if self._runs_inline(batch):
                    outputs = self.run(batch)
                else:
                    outputs = await loop.run_in_executor(self.executor, self.run, batch)
            except Exception as exc:  # the run failed: every job in it gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            ran = time.perf_counter_ns()
            offset = 0
            for job in jobs:
                n = len(job.inputs)
                if not job.future.done():  # a cancelled waiter is simply skipped
                    job.future.set_result(outputs[offset : offset + n])
                offset += n
            self.observer.batch_finished(len(jobs), len(batch),
                                         (gathered - started, ran - gathered, time.perf_counter_ns() - ran))
            await asyncio.sleep(0)  # after an inline run: let other requests (and probes) have the loop

    def _runs_inline(self, batch: np.ndarray) -> bool:
        policy = self.policy
        pixels = len(batch) * self.pixels_of(batch.shape[1:])
        return len(batch) <= policy.inline_max and pixels <= policy.inline_max_pixels

    def _company_may_come(self) -> bool:
        return self.in_progress is None or self.in_progress() > self._submitters

    async def _wait_for_company(self) -> None:
        """Wait up to max_wait past the oldest job's arrival while the batch is not full and other
        requests in progress may still join it."""
        policy = self.policy
        if not policy.coalesce or policy.max_wait <= 0:
            return
        deadline = self._queue[0].enqueued + policy.max_wait
        while self._queued_items < policy.max_batch and self._company_may_come() \
                and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> tuple[list[_Job], list[float]]:
        """Pop the oldest live job and (when coalescing) later jobs of its shape, up to max_batch items."""
        taken: list[_Job] = []
        kept: deque[_Job] = deque()
        items = 0
        now = time.monotonic()
        policy = self.policy
        while self._queue:
            job = self._queue.popleft()
            n = len(job.inputs)
            if job.future.done():  # cancelled while queued
                self._queued_items -= n
                continue
            fits = not taken or (policy.coalesce and job.inputs.shape[1:] == taken[0].inputs.shape[1:]
                                 and items + n <= policy.max_batch
                                 and (items + n) * self.pixels_of(job.inputs.shape[1:]) <= policy.max_pixels)
            if fits:
                taken.append(job)
                items += n
                self._queued_items -= n
            else:
                kept.append(job)
            if taken and (not self.policy.coalesce or items == self.policy.max_batch):
                break
        kept.extend(self._queue)
        self._queue = kept
        return taken, [now - job.enqueued for job in taken]
