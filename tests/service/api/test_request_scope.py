"""Content negotiation at the HTTP edge: when one PNG is answered instead of JSON."""

from __future__ import annotations

import pytest

from service.api.request_scope import prefers_png


@pytest.mark.parametrize(
    "accept, png",
    [("image/png", True), ("application/json", False), ("", False), ("*/*", False),
     ("image/png, application/json", True), ("application/json, image/png;q=0.5", False),
     ("image/png;q=0", False), ("image/png;q=bogus", False), ("text/html, image/png;q=0.9", True)],
)
def test_prefers_png(accept: str, png: bool) -> None:
    assert prefers_png(accept) is png
