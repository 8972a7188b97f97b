"""Tiles of a code grid, so that a large image or grid runs in pieces within the run slot.

A tile's `outer` cells are run; its `core` cells are kept. Cores partition the grid; each outer
block extends its core by the model's halo (its receptive field, measured by the exporter) where
the grid goes on, so a core's cells equal those of a whole-grid run, bit for bit (tests/service/
test_tiling.py). Offsets are whole grid cells, so encoder tiles keep the stride phase of the
whole image. Full-width strips need no halo on the sides; squares need less for wide grids: the
shape that runs fewer halo cells per kept cell wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    outer: tuple[slice, slice]  # grid rows, columns run
    core: tuple[slice, slice]  # grid rows, columns kept

    @property
    def core_in_outer(self) -> tuple[slice, slice]:
        (rows, cols), (core_rows, core_cols) = self.outer, self.core
        return (slice(core_rows.start - rows.start, core_rows.stop - rows.start),
                slice(core_cols.start - cols.start, core_cols.stop - cols.start))

    def in_pixels(self, factor: int) -> tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]:
        """(outer, core, core-in-outer) in pixels, at `factor` pixels per grid cell."""
        def px(cells: tuple[slice, slice]) -> tuple[slice, slice]:
            return slice(cells[0].start * factor, cells[0].stop * factor), slice(cells[1].start * factor,
                                                                                 cells[1].stop * factor)
        return px(self.outer), px(self.core), px(self.core_in_outer)


class TileTooSmall(ValueError):
    """The run slot cannot hold even one core cell with its halo."""


def _span(start: int, stop: int, halo: int, limit: int) -> slice:
    return slice(max(0, start - halo), min(limit, stop + halo))


def _core_shape(width: int, max_cells: int, halo: int) -> tuple[int, int]:
    """Full-width strips or squares, whichever runs fewer halo cells per kept cell."""
    side = math.isqrt(max_cells) - 2 * halo
    strip_rows = max_cells // width - 2 * halo  # full-width strips: the sides need no halo
    square_cost = (side + 2 * halo) ** 2 / side**2 if side >= 1 else math.inf
    strip_cost = (strip_rows + 2 * halo) / strip_rows if strip_rows >= 1 else math.inf
    if strip_cost == square_cost == math.inf:
        raise TileTooSmall(f"{max_cells} cells per run cannot hold a tile with a halo of {halo}")
    return (strip_rows, width) if strip_cost <= square_cost else (side, side)


def plan_tiles(height: int, width: int, max_cells: int, halo: int) -> list[Tile]:
    """Cover an h×w grid with tiles of at most `max_cells` outer cells each."""
    whole = (slice(0, height), slice(0, width))
    if height * width <= max_cells:
        return [Tile(whole, whole)]
    core_h, core_w = _core_shape(width, max_cells, halo)
    tiles = []
    for r0 in range(0, height, core_h):
        for c0 in range(0, width, core_w):
            r1, c1 = min(height, r0 + core_h), min(width, c0 + core_w)
            outer = (_span(r0, r1, halo, height), _span(c0, c1, halo if core_w < width else 0, width))
            tiles.append(Tile(outer, (slice(r0, r1), slice(c0, c1))))
    return tiles
