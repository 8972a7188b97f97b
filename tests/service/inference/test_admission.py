"""Admission control: beyond max_in_flight codec requests, 429 at once, before the body is read."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest

from harness.prom import Scrape
from service.errors import Overloaded
from service.inference.admission import AdmissionGate
from tests.service.conftest import png_bytes


def test_the_gate_holds_places_and_frees_them() -> None:
    gate = AdmissionGate(limit=1)
    with gate.admit(), pytest.raises(Overloaded, match="1 requests in progress"), gate.admit():
        pass
    with gate.admit():  # the place was given back, also after the refusal
        assert gate.in_progress == 1
    assert gate.in_progress == 0


def stalled_upload(server, declared_length: int, first_bytes: bytes) -> socket.socket:  # type: ignore[no-untyped-def]
    """A raw connection that sends a request's headers and the first bytes of its body, then waits: it
    holds a place in the gate, deterministically, until the test sends the rest (or the deadline)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
                 + f"Content-Length: {declared_length}\r\n\r\n".encode() + first_bytes)
    return conn


def read_answer(conn: socket.socket) -> str:
    """Everything the server sends until it closes (each answer here carries Connection: close)."""
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer.decode(errors="replace")


def wait_until_full(server, body: bytes, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Probe until the gate answers 429: the holders' headers were read and every place is taken. The
    rejected counter counts that one refused probe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.post(server.url + "/encode", content=body, headers={"content-type": "image/png"})
        if response.status_code == 429:
            return
        time.sleep(0.05)  # a 200: a holder was not admitted yet
    raise AssertionError(f"the gate never filled: last answer {response.status_code} {response.text}")


def test_excess_requests_get_429_while_the_places_are_held(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(max_in_flight=2, queue_max_items=100_000, body_timeout_s=60)  # only the gate refuses
    server.wait("/readyz")
    digit = png_bytes(digits[0])
    holders = [stalled_upload(server, len(digit), digit[:10]) for _ in range(2)]  # both places taken until we say so
    wait_until_full(server, digit)
    files = [("images", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits)] * 4  # 256 digits
    outcomes: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        response = httpx.post(server.url + "/encode", files=files, timeout=60)  # raises on a transport error
        with lock:
            outcomes.append(response)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every one of them was answered while the admitted work was still waiting for its body: the
    # refusal never waits for work in progress. Each got a full HTTP answer (no reset connection),
    # although the server refused before reading the 256-digit bodies.
    assert [r.status_code for r in outcomes] == [429] * 10
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in outcomes)
    answers = []
    for conn in holders:
        with conn:
            conn.sendall(digit[10:])
            answers.append(read_answer(conn))
    assert all(a.startswith("HTTP/1.1 200") and '"codes":[[[' in a for a in answers), answers
    assert httpx.post(server.url + "/encode", content=digit, headers={"content-type": "image/png"}).status_code == 200
    assert Scrape.of(server.url).value("vqvae_admission_rejected_total") == 10 + 1


def test_a_stalled_body_gets_408_and_gives_its_place_back(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(max_in_flight=1, body_timeout_s=0.5)
    server.wait("/readyz")
    # Promise 1,000 bytes, send 10, then nothing: the only place is taken until the deadline.
    with stalled_upload(server, 1000, b"\x89PNG\r\n\x1a\n\x00\x00") as stalled:
        wait_until_full(server, png_bytes(digits[0]))
        started = time.monotonic()
        answer = read_answer(stalled)
        assert answer.startswith("HTTP/1.1 408") and '"code":"body_timeout"' in answer
        assert time.monotonic() - started < 5
    ok = httpx.post(server.url + "/encode", content=png_bytes(digits[0]), headers={"content-type": "image/png"})
    assert ok.status_code == 200
