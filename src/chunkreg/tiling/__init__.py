"""Tile geometry for running kernels over arrays larger than memory.

A :class:`TileGrid` cuts an array into chunk-aligned cores; each :class:`Tile` is read with a
halo (``depth``) clipped at the array edges, computed on, and cropped back to its core.
"""

from ._plan import Tile, TileGrid

__all__ = ["Tile", "TileGrid"]
