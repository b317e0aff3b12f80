"""Hypothesis strategies for tile geometry (shared by the tiling and volume tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from chunkreg.tiling import TileGrid


@st.composite
def tile_grids(draw, *, max_ndim: int = 3, max_size: int = 40, aligned: bool = True) -> TileGrid:
    """Draw a valid :class:`TileGrid`: ragged shapes, tiles a multiple of the chunks."""
    ndim = draw(st.integers(1, max_ndim))
    shape, tile, depth, chunks = [], [], [], []
    for _ in range(ndim):
        n = draw(st.integers(1, max_size))
        c = draw(st.integers(1, max(1, n)))
        t = c * draw(st.integers(1, 4)) if aligned else draw(st.integers(1, n + 3))
        shape.append(n)
        chunks.append(c)
        tile.append(t)
        depth.append(draw(st.integers(0, n + 2)))
    return TileGrid(
        shape=tuple(shape),
        tile_shape=tuple(tile),
        depth=tuple(depth),
        chunks=tuple(chunks) if aligned else None,
    )
