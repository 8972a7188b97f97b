"""The respond step's JSON writers: byte for byte what the slower general ones write."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from starlette.responses import JSONResponse

from service.api.responses import codes_json, json_response


@pytest.mark.parametrize("content", [{"model": "mnist", "images": ["iVBOR", ""]}, {"name": "café ☕", "n": [1, 2.5]},
                                     [], {"nested": {"a": [None, True, False]}}])
def test_json_response_is_jsonresponse_byte_for_byte(content: object) -> None:
    ours, theirs = json_response(content), JSONResponse(content)
    assert ours.body == theirs.body
    assert ours.headers.items() == theirs.headers.items()


def test_json_response_refuses_nan_as_jsonresponse_does() -> None:
    with pytest.raises(ValueError):
        json_response({"x": float("nan")})


@pytest.mark.parametrize("shape", [(1, 7, 7), (3, 2, 4, 4)])
def test_codes_json_is_valid_compact_json(shape: tuple[int, ...]) -> None:
    codes = np.random.default_rng(0).integers(0, 512, shape)
    m = SimpleNamespace(name="mnist", version="2.1.0", codebook_size=512)
    body = codes_json(m, codes)  # type: ignore[arg-type]
    parsed = json.loads(body)
    assert parsed["codes"] == codes.tolist() and parsed["grid"] == list(shape[-2:])
    assert parsed.get("stages") == (shape[1] if len(shape) == 4 else None)
    assert body == json.dumps(parsed, separators=(",", ":")).encode()
