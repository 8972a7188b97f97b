"""The v2 routes fuzzed (hypothesis) against a real server: any JSON or binary body, header length
and content encoding, to the encode and decode models of mnist (grey) and tiny-imagenet (colour),
is answered 200 or 4xx in the protocol's error shape, never 5xx, each within a bounded
time; afterwards the server logged no unexpected error and is still ready. Seeded (derandomized),
so a run is repeatable. About a third of the bodies are valid (125 of 400 answered 200 in one run),
the rest wrong in one field or in many."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.server import ServerProcess
from tests.service.v2_strategies import MODELS, V2Body, v2_bodies

pytestmark = pytest.mark.slow  # a fuzzer: 400 requests (the parser alone is fuzzed in the fast loop)
SECONDS = 10  # per request; a digit's answer takes milliseconds


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MODELS).flatmap(lambda model: st.tuples(st.just(model), v2_bodies(model))))
def test_any_v2_body_is_answered_200_or_4xx(client: httpx.Client, drawn: tuple[str, V2Body]) -> None:
    model, request = drawn
    started = time.monotonic()
    response = client.post(f"/v2/models/{model}/infer", content=request.content, headers=request.headers,
                           timeout=SECONDS)
    assert time.monotonic() - started < SECONDS
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        assert isinstance(response.json()["error"], str)


def test_the_fuzzed_server_logged_nothing_unexpected(server: ServerProcess, client: httpx.Client) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    assert "Traceback" not in server.log and "unexpected error" not in server.log
