"""Admission control: beyond max_in_flight codec requests, 429 at once, before the body is read."""

from __future__ import annotations

import re
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from service.admission import AdmissionGate
from service.errors import Overloaded
from tests.service.conftest import png_bytes


def test_the_gate_holds_places_and_frees_them() -> None:
    gate = AdmissionGate(limit=1)
    with gate.admit(), pytest.raises(Overloaded, match="1 requests in progress"), gate.admit():
        pass
    with gate.admit():  # the place was given back, also after the refusal
        assert gate.in_progress == 1
    assert gate.in_progress == 0


def test_excess_requests_get_a_quick_429_and_every_client_an_answer(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(max_in_flight=2, queue_max_items=100_000)  # the queue never refuses here
    server.wait("/readyz")
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits)] * 4  # 256 digits
    outcomes: list[tuple[int, float, dict[str, str], bytes]] = []
    lock = threading.Lock()

    def one() -> None:
        response = httpx.post(server.url + "/encode", files=files, timeout=60)  # raises on a transport error
        with lock:
            outcomes.append((response.status_code, response.elapsed.total_seconds(), dict(response.headers),
                             response.content))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 12  # every client got an HTTP answer, none a reset connection
    refused = [o for o in outcomes if o[0] == 429]
    assert refused and {o[0] for o in outcomes} == {200, 429}
    assert all(o[2]["retry-after"] == "1" and b'"code":"overloaded"' in o[3] for o in refused)
    slowest_admitted = max(o[1] for o in outcomes if o[0] == 200)
    assert max(o[1] for o in refused) < slowest_admitted  # refused without waiting for the work in progress
    metrics = httpx.get(server.url + "/metrics").text
    assert float(re.search(r"^vqvae_admission_rejected_total (\S+)$", metrics, re.M).group(1)) == len(refused)  # type: ignore[union-attr]


def test_a_stalled_body_gets_408_and_gives_its_place_back(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(max_in_flight=1, body_timeout_s=0.5)
    server.wait("/readyz")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        # Promise 1,000 bytes, send 10, then nothing: the only place is taken until the deadline.
        stalled.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                        b"Content-Length: 1000\r\n\r\n" + b"\x89PNG\r\n\x1a\n\x00\x00")
        time.sleep(0.1)
        busy = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
        assert busy.status_code == 429
        started = time.monotonic()
        answer = stalled.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and '"code":"body_timeout"' in answer
        assert time.monotonic() - started < 5
    ok = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert ok.status_code == 200
