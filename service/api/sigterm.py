"""Graceful shutdown: on SIGTERM readiness turns 503 at once (HTTP and gRPC), then (after an optional
drain period in which new requests are still served) uvicorn's own handler stops accepting
connections and lets the requests in flight finish, and at the same moment the gRPC server stops
accepting calls and lets those in flight finish (`on_drained`).

uvicorn installs its signal handlers before the lifespan starts; we chain in front of them, so
this works however uvicorn was started (python -m service, the uvicorn CLI, --workers).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("service")


def install_sigterm_drain(on_signal: Callable[[], None], drain_seconds: float,
                          on_drained: Callable[[], None] | None = None) -> Callable[[], None]:
    """Chain a SIGTERM/SIGINT handler: on_signal() at once, the previous handler after the drain, and
    on_drained() then too, on the event loop (it may be called more than once: make it idempotent).

    Returns a function restoring the previous handlers. A second signal skips the drain.
    """
    if threading.current_thread() is not threading.main_thread():  # e.g. an in-process test client
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signalled = False

    def forward(sig: int, frame: FrameType | None) -> None:
        if on_drained is not None:  # from a signal handler: never touch the loop's state directly
            loop.call_soon_threadsafe(on_drained)
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:
            raise KeyboardInterrupt

    def handle(sig: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if signalled or drain_seconds <= 0:
            if not signalled:
                on_signal()
            signalled = True
            forward(sig, frame)
            return
        signalled = True
        on_signal()
        log.info("signal %s: not ready; draining for %.1f s before closing the listener", sig, drain_seconds)
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, forward, sig, None)

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
