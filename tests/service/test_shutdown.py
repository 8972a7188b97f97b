"""Graceful shutdown on a real process: SIGTERM under load loses no request.

Clients open a new connection per request. A request whose connection was accepted must get its
200; once the drain period is over the listener closes and new connections are refused, which is
the only error allowed (the request never reached the server)."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.service.conftest import png_bytes


@dataclass
class Outcome:
    started: float
    finished: float = 0.0
    status: int | None = None
    error: str = ""


@dataclass
class Load:
    url: str
    body: dict[str, object]
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        while not self.stop.is_set():
            outcome = Outcome(started=time.monotonic())
            try:
                with httpx.Client(timeout=30) as client:  # a fresh connection for every request
                    outcome.status = client.post(self.url, **self.body).status_code  # type: ignore[arg-type]
            except httpx.ConnectError:
                outcome.error = "refused"
            except httpx.HTTPError as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.finished = time.monotonic()
            with self.lock:
                self.outcomes.append(outcome)
            if outcome.error == "refused":
                time.sleep(0.05)


def test_requests_in_flight_during_sigterm_all_succeed(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(drain_seconds=1.5)
    server.wait("/readyz")
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(np.tile(digits, (2, 1, 1)))]
    load = Load(server.url + "/encode", {"files": files})  # 128 digits per request (6 × 128 < the queue bound)
    threads = [threading.Thread(target=load.worker) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(30)
    exited = time.monotonic()
    load.stop.set()
    for t in threads:
        t.join(30)

    served = [o for o in load.outcomes if o.status is not None]
    failed = [o for o in load.outcomes if o.error not in ("", "refused") or (o.status not in (None, 200))]
    in_flight = [o for o in served if o.started < signalled < o.finished]
    during_drain = [o for o in served if o.started > signalled]
    refused = [o for o in load.outcomes if o.error == "refused"]
    assert not failed, [(o.status, o.error) for o in failed][:5]
    assert in_flight, "no request was in flight at SIGTERM: the test proved nothing"
    assert during_drain, "no request was served during the drain period"
    assert all(o.started > signalled + 1.0 for o in refused), "a connection was refused before the drain ended"
    assert exit_code in (0, -signal.SIGTERM) and exited - signalled < 10
