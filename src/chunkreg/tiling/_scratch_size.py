"""How much scratch a blended level needs: the pieces its tiles write before blending.

A tile's blend region (core plus ``band`` per side) is cut along each axis into bands shared
with the neighbour and a middle, unless the bands are too wide to cut (``2 * band > tile``),
then the whole region is one piece. The scratch holds every piece once (float32 per flow
component), so its size follows from the piece edges alone.
"""

from __future__ import annotations

from ._plan import TileGrid

__all__ = ["scratch_nbytes"]


def _axis_extent(grid: TileGrid, band: tuple[int, ...], axis: int) -> int:
    """Summed piece edges along one axis, over every tile."""
    b, t, n = band[axis], grid.tile_shape[axis], grid.shape[axis]
    g = grid.grid_shape[axis]
    if not 0 < 2 * b <= t:  # uncut: one piece per tile, as wide as the blend region may be
        return g * min(t + 2 * b, n)
    total = 0
    for i in range(g):
        c0, c1 = i * t, min((i + 1) * t, n)
        r0, r1 = max(c0 - b, 0), min(c1 + b, n)
        a = min(max(c0 + b, r0), r1)
        z = min(max(c1 - b, a), r1)
        total += (2 * b) * ((a > r0) + (r1 > z)) + (t - 2 * b) * (z > a)
    return total


def scratch_nbytes(grid: TileGrid, band) -> int:
    """Uncompressed bytes of a level's scratch pieces once every tile has written them."""
    band = tuple(int(b) for b in band)
    total = 4 * grid.ndim
    for axis in range(grid.ndim):
        total *= _axis_extent(grid, band, axis)
    return total
