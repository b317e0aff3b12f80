"""How much scratch a blended flow level needs: the pieces its tiles write before blending.

The pieces' geometry, and so their size, is :class:`~chunkreg.tiling.PieceLayout`'s (the
engine's :class:`~chunkreg.engine.Scratch` measures itself the same way); this is the flow
plans' case of it: float32, one component per axis, the blend regions cut into pieces.
"""

from __future__ import annotations

from ._pieces import PieceLayout
from ._plan import TileGrid

__all__ = ["scratch_nbytes"]


def scratch_nbytes(grid: TileGrid, band) -> int:
    """Uncompressed bytes of a flow level's scratch pieces once every tile has written them.

    Examples
    --------
    >>> scratch_nbytes(TileGrid((40,), (16,), (4,)), (2,))  # 1-D: one flow component
    240
    """
    band = tuple(int(b) for b in band)
    return PieceLayout(grid, band).nbytes(grid.ndim, 4)
