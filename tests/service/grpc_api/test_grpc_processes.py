"""gRPC through a process's life: SIGTERM drains it as it drains HTTP (calls in flight and during the
drain succeed, readiness turns false at once, then the port stops taking calls), and with several
worker processes every worker serves the port and the statistics sum over all of them."""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.service.conftest import StartServer
from tests.service.test_workers import wait_until_every_worker_is_ready


@dataclass
class Outcome:
    started: float
    finished: float = 0.0
    status: str = ""  # "OK" or the status code


@dataclass
class Calls:
    target: str
    digits: np.ndarray
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        pixels = triton.InferInput("pixels", [64, 28, 28, 1], "UINT8")
        pixels.set_data_from_numpy(self.digits[:, :, :, None].copy())
        with triton.InferenceServerClient(self.target) as client:
            while not self.stop.is_set():
                outcome = Outcome(time.monotonic())
                try:
                    client.infer("mnist-encode", [pixels], client_timeout=30)
                    outcome.status = "OK"
                except InferenceServerException as exc:
                    outcome.status = str(exc.status())
                outcome.finished = time.monotonic()
                with self.lock:
                    self.outcomes.append(outcome)
                if outcome.status != "OK":
                    time.sleep(0.05)


@pytest.mark.slow
def test_grpc_calls_in_flight_and_during_the_drain_succeed(start_server: StartServer, digits: np.ndarray) -> None:
    drain = 2.0
    server = start_server(drain_seconds=drain)
    server.wait("/readyz")
    calls = Calls(server.grpc_target, digits)
    threads = [threading.Thread(target=calls.worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    with triton.InferenceServerClient(server.grpc_target) as probe:
        assert probe.is_server_ready()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert not probe.is_server_ready()  # at once, while the drain still serves
    exit_code = server.process.wait(30)
    calls.stop.set()
    for thread in threads:
        thread.join(30)

    closing = signalled + drain
    in_time = [o for o in calls.outcomes if o.started < closing - 0.5]
    assert [o.status for o in in_time if o.status != "OK"] == []
    assert any(o.started < signalled < o.finished for o in in_time), "no call was in flight at SIGTERM"
    assert any(o.started > signalled for o in in_time), "no call was served during the drain"
    # After the drain: refused, never failed midway. A call that reached the server as it closed but
    # never reached a handler is refused with CANCELLED, not UNAVAILABLE: grpc-core's own bug
    # (grpc/grpc#41785, the fix is grpc/grpc#41786); nothing ran for it, as for UNAVAILABLE.
    late = {o.status for o in calls.outcomes if o.status != "OK"}
    assert late <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, late
    assert all(o.started > closing - 0.5 for o in calls.outcomes if o.status != "OK")
    assert exit_code in (0, -signal.SIGTERM) and "Traceback" not in server.log


@pytest.mark.slow  # several worker processes
def test_every_worker_serves_grpc_and_statistics_sum_over_them(start_server: StartServer,
                                                               digits: np.ndarray) -> None:
    server = start_server(workers=2)
    wait_until_every_worker_is_ready(server.url)
    assert server.log.count("gRPC (Open Inference Protocol) on") == 2  # each worker bound the port
    pixels = triton.InferInput("pixels", [1, 28, 28, 1], "UINT8")
    pixels.set_data_from_numpy(digits[:1, :, :, None].copy())
    for _ in range(20):  # a channel is one connection; the kernel hands each new one to either worker
        with triton.InferenceServerClient(server.grpc_target) as client:
            for _ in range(5):
                client.infer("mnist-encode", [pixels])
    for _ in range(10):  # whichever worker answers, the statistics cover both (a worker's own: a share)
        with triton.InferenceServerClient(server.grpc_target) as client:
            stats = client.get_inference_statistics("mnist-encode", as_json=True)["model_stats"][0]
        assert int(stats["inference_count"]) == 100
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    assert "Traceback" not in server.log


def test_a_taken_grpc_port_fails_start_up(start_server: StartServer) -> None:
    """One worker binds without SO_REUSEPORT: a port another process holds is an error, never shared."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = start_server(grpc_port=taken.getsockname()[1])
        assert server.process.wait(60) != 0
    assert "cannot listen for gRPC on 127.0.0.1:" in server.log and "VQVAE_GRPC_PORT" in server.log
