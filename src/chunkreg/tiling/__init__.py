"""Tile geometry for running kernels over arrays larger than memory.

A :class:`TileGrid` cuts an array into chunk-aligned cores; each :class:`Tile` is read with a
halo (``depth``) clipped at the array edges, computed on, and cropped back to its core —
or blended with its neighbours using :func:`blend_weights`, whose stored pieces
:class:`PieceLayout` lays out.
"""

from ._blend import blend_profiles, blend_weights, ramp
from ._pieces import PieceLayout
from ._plan import Tile, TileGrid

__all__ = ["PieceLayout", "Tile", "TileGrid", "blend_profiles", "blend_weights", "ramp"]
