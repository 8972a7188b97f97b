"""Admission control: at most N codec requests in progress per worker; beyond that, 429 at once.

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

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded
from service.telemetry import ADMISSION_REJECTED


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
