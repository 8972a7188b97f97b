"""The v2 request parser fuzzed in process (hypothesis): whatever the body, headers and encoding,
parsing returns tensors or raises a domain error the service answers 4xx, never anything else,
and each body is parsed in bounded time. The live routes are fuzzed in tests/service/api/test_v2_fuzz.py."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import CodecError
from service.api.error_mapping import status_of
from service.inputs.v2_tensors import HEADER_LENGTH, decompressed, parse_infer_request
from tests.service.v2_strategies import MODELS, V2Body, v2_bodies

LIMIT = 8 << 20


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODELS).flatmap(v2_bodies))
def test_any_body_parses_or_is_a_client_error(request: V2Body) -> None:
    started = time.monotonic()
    length = request.headers.get(HEADER_LENGTH)
    try:
        body = decompressed(request.content, request.headers.get("content-encoding", b"").decode(), LIMIT)
        parsed = parse_infer_request(body, length.decode("latin-1") if length is not None else None)
    except CodecError as exc:
        assert 400 <= status_of(exc) < 500, exc
    else:
        assert parsed.inputs and all(t.name for t in parsed.inputs.values())
    assert time.monotonic() - started < 2
