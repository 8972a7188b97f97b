"""Several worker processes: metrics summed over all of them, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import time

import httpx
import numpy as np
import pytest

from harness.prom import Scrape
from tests.service.conftest import png_bytes

pytestmark = pytest.mark.slow  # several worker processes


def wait_until_every_worker_is_ready(url: str, streak: int = 30, timeout: float = 90) -> None:
    """Each worker loads its models on its own; the kernel hands each fresh connection to either, so
    `streak` 200s in a row on fresh connections mean both are ready (one unready one: ~2**-streak)."""
    deadline, in_a_row = time.monotonic() + timeout, 0
    while in_a_row < streak:
        assert time.monotonic() < deadline, f"workers not all ready after {timeout} s"
        try:
            ready = httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
        if not ready:
            time.sleep(0.1)


def test_two_workers_sum_their_metrics_and_stop_cleanly(start_server, digits: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    server = start_server(workers=2)
    wait_until_every_worker_is_ready(server.url)
    body = png_bytes(digits[0])
    for _ in range(200):  # a fresh connection each time, so both workers take some
        response = httpx.post(server.url + "/encode", content=body, headers={"content-type": "image/png"})
        assert response.status_code == 200
    # Whichever worker answers /metrics, the count covers both (prometheus multiprocess mode);
    # a per-worker registry would show only its own share of the 200.
    for _ in range(5):
        assert Scrape.of(server.url).value("vqvae_requests_total", route="/encode", status="200") == 200
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    assert "Traceback" not in server.log
