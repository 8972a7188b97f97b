"""Code grids in JSON bodies: one grid or many, the first offending position named, the limits."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import BadRequest, InvalidCodes, TooManyImages
from service.inputs.bodies import parse_json
from service.inputs.grids import parse_code_grids


def test_one_grid_or_many() -> None:
    grid = [[1, 2], [3, 4]]
    one, single = parse_code_grids({"codes": grid}, 8, 10)
    many, plural = parse_code_grids({"codes": [grid, grid]}, 8, 10)
    assert single and not plural
    assert one.shape == (1, 2, 2) and many.shape == (2, 2, 2) and one.dtype == np.int64


@pytest.mark.parametrize(
    "codes, message",
    [([[1, 2], [3, 8]], r"codes\[1\]\[1\] = 8: codes must be in \[0, 8\)"),
     ([[[1, 2]], [[3, True]]], r"codes\[1\]\[0\]\[1\] = true: expected an int"),
     ([[1, 2], 3], r"codes\[1\] = 3: expected a non-empty list of ints"),
     ([[1, 2], [3]], r"codes\[1\] has 1 entries but codes\[0\] has 2")],
)
def test_the_first_offending_position_is_named(codes: object, message: str) -> None:
    with pytest.raises(InvalidCodes, match=message):
        parse_code_grids({"codes": codes}, 8, 10)


def test_limits_and_shapes_of_json() -> None:
    with pytest.raises(TooManyImages):
        parse_code_grids({"codes": [[[1]]] * 11}, 8, 10)
    with pytest.raises(BadRequest):
        parse_code_grids([1], 8, 10)
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json(b"[" * 50 + b"]" * 50)
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(b"[" * 100000 + b"]" * 100000)


@pytest.mark.parametrize(
    "body, deepest_ok",
    [(b'{"codes": [[[[1]]]]}', True),  # a residual model's list of staged grids: 5 levels, the limit
     (b'{"codes": [[[[[1]]]]]}', False),
     (b'{"a": 1, "b": {"c": [{"d": [2]}]}}', True),
     (b'[1, [2, [3, [4, [5, [6]]]]]]', False),  # deep in the last element, shallow in the first
     (b'[[[[[{}]]]]]', False), (b'[[], [[]], {"x": {"y": {"z": {"w": 0}}}}]', True)],
)
def test_json_nesting_is_counted_exactly_whatever_its_shape(body: bytes, deepest_ok: bool) -> None:
    if deepest_ok:
        parse_json(body)
    else:
        with pytest.raises(BadRequest, match="nested deeper than 5"):
            parse_json(body)
