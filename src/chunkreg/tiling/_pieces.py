"""The piece layout of blended tile results: which pieces a tile writes, which a blend reads.

Neighbouring tiles' results are blended with smooth weights across a band of ``2 * band``
elements centred on every border between two cores (:func:`~chunkreg.tiling.blend_weights` of
the grid with ``depth = band``), so the values blended are at least ``depth - band`` elements
away from the edge of the region their tile read.

A tile cannot blend alone: the chunks around its core need its neighbours' results. So each
tile stores its result over its *blend region* (core grown by ``band``) cut into pieces along
the bands: per axis the band shared with the tile before, the middle that no other tile reads,
and the band shared with the tile after (up to ``3**ndim`` pieces). Each piece is one chunk of
one of the arrays named here, which that tile alone writes, so a neighbour reads exactly the
band it blends. This module only computes the geometry (no I/O); the engine stores the pieces
(:class:`chunkreg.engine.Scratch`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from ._plan import TileGrid

__all__ = ["PieceLayout", "cut_pays", "every", "overlapping"]

#: Below this many bytes per tile's blend region, one piece per tile beats cutting it: a
#: request to a store costs about as much as reading a megabyte, and a blend reads up to
#: ``3**ndim`` regions.
WHOLE_REGION_BYTES = 2**19

# piece classes along one axis: a band shared by two tiles, the middle of a tile, or (where
# the bands are too wide to cut, 2 * band > tile, or absent) the tile's whole blend region
_BAND, _MIDDLE, _WHOLE = "b", "m", "w"


@dataclass(frozen=True)
class PieceLayout:
    """How the blend regions of a grid's tiles are cut into pieces, each one whole chunk.

    Parameters
    ----------
    grid : TileGrid
        The tiles (``depth``: the halo each read).
    band : tuple of int
        Half-width of the blend band across each border, per axis (``0 <= band``).
    cut : bool
        Cut the blend regions along the bands (default). Without it each tile's blend region
        is one piece: a tile writes one chunk and a blend reads its neighbours' whole regions,
        fewer and larger requests, which suits small tiles (see :func:`cut_pays`).

    Examples
    --------
    >>> layout = PieceLayout(TileGrid((40,), (16,), (4,)), (2,))
    >>> layout.classes(0)
    {'b': (4, 6), 'm': (12, 3)}
    >>> layout.segments(0, 1)
    [(14, 18, 'b', 2), (18, 30, 'm', 1), (30, 34, 'b', 3)]
    """

    grid: TileGrid
    band: tuple[int, ...]
    cut: bool = True

    @property
    def band_grid(self) -> TileGrid:
        """The tiles with ``depth = band``: their read regions are the blend regions."""
        return dataclasses.replace(self.grid, depth=self.band, chunks=None)

    def _cut(self, axis: int) -> bool:
        b, t = self.band[axis], self.grid.tile_shape[axis]
        return self.cut and 0 < 2 * b <= t

    def classes(self, axis: int) -> dict[str, tuple[int, int]]:
        """``{class: (piece edge, pieces along the axis)}`` of one axis."""
        b, t = self.band[axis], self.grid.tile_shape[axis]
        n, g = self.grid.shape[axis], self.grid.grid_shape[axis]
        if not self._cut(axis):
            return {_WHOLE: (min(t + 2 * b, n), g)}
        out = {_BAND: (2 * b, 2 * g)}
        if t > 2 * b:
            out[_MIDDLE] = (t - 2 * b, g)
        return out

    def segments(self, axis: int, i: int) -> list[tuple[int, int, str, int]]:
        """``(start, stop, class, slot)`` of the pieces of tile ``i``'s blend region along an
        axis, in array coordinates; they cover the blend region without overlapping."""
        b, t, n = self.band[axis], self.grid.tile_shape[axis], self.grid.shape[axis]
        c0, c1 = i * t, min((i + 1) * t, n)
        r0, r1 = max(c0 - b, 0), min(c1 + b, n)
        if not self._cut(axis):
            return [(r0, r1, _WHOLE, i)]
        a = min(max(c0 + b, r0), r1)
        z = min(max(c1 - b, a), r1)
        parts = [(r0, a, _BAND, 2 * i), (a, z, _MIDDLE, i), (z, r1, _BAND, 2 * i + 1)]
        return [p for p in parts if p[1] > p[0]]

    def arrays(self) -> Iterator[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        """``(name, shape, chunks)`` of every piece array (spatial axes only)."""
        per_axis = [self.classes(axis) for axis in range(self.grid.ndim)]
        for combo in itertools.product(*(c.items() for c in per_axis)):
            name = "p" + "".join(c for c, _ in combo)
            yield name, tuple(e * k for _, (e, k) in combo), tuple(e for _, (e, _) in combo)

    @property
    def voxels(self) -> int:
        """Elements of all the pieces once every tile has written them (whole chunks)."""
        total = 1
        for axis in range(self.grid.ndim):
            edges = self.classes(axis)
            total *= sum(
                edges[c][0]
                for i in range(self.grid.grid_shape[axis])
                for _, _, c, _ in self.segments(axis, i)
            )
        return total

    def nbytes(self, components: int, itemsize: int) -> int:
        """Bytes of all the pieces once every tile has written them, uncompressed, at
        ``components`` values of ``itemsize`` bytes per element (what scratch space holds).

        Examples
        --------
        >>> PieceLayout(TileGrid((40,), (16,), (4,)), (2,)).nbytes(1, 4)  # 6 bands, 3 middles
        240
        """
        return int(components) * int(itemsize) * self.voxels

    def pieces(self, index) -> Iterator[tuple[str, tuple[slice, ...], tuple[slice, ...]]]:
        """``(array name, chunk slices, array slices)`` of each piece of tile ``index``."""
        per_axis = [self.segments(axis, i) for axis, i in enumerate(index)]
        for combo in itertools.product(*per_axis):
            name = "p" + "".join(c for _, _, c, _ in combo)
            edges = [self.classes(axis)[c][0] for axis, (_, _, c, _) in enumerate(combo)]
            chunk = tuple(
                slice(slot * e, slot * e + e)
                for (_, _, _, slot), e in zip(combo, edges, strict=True)
            )
            yield name, chunk, tuple(slice(s0, s1) for s0, s1, _, _ in combo)


def cut_pays(grid: TileGrid, band, itemsize: int) -> bool:
    """Whether to cut blend regions of ``itemsize`` bytes per element into pieces.

    Cutting saves a blend task from reading its neighbours' whole regions at the price of
    up to ``3**ndim`` requests per tile instead of one: it pays once a blend region holds more
    than :data:`WHOLE_REGION_BYTES`.

    Examples
    --------
    >>> cut_pays(TileGrid((1000, 1000), (128, 128), (16, 16)), (8, 8), 8)
    False
    >>> cut_pays(TileGrid((512,) * 3, (128,) * 3, (16,) * 3), (8,) * 3, 12)
    True
    """
    region = math.prod(
        min(t + 2 * b, n) for t, b, n in zip(grid.tile_shape, band, grid.shape, strict=True)
    )
    return region * itemsize > WHOLE_REGION_BYTES


def overlapping(band_grid: TileGrid, region) -> list[tuple[int, ...]]:
    """Grid indices of the tiles whose blend region (read region of ``band_grid``) intersects
    ``region`` (slices)."""
    ranges = []
    for axis, s in enumerate(region):
        t, b, n = band_grid.tile_shape[axis], band_grid.depth[axis], band_grid.shape[axis]
        lo = max((s.start - b) // t, 0)
        hi = min((s.stop - 1 + b) // t, band_grid.grid_shape[axis] - 1)
        keep = [
            i
            for i in range(lo, hi + 1)
            if max(i * t - b, 0) < s.stop and min((i + 1) * t + b, n) > s.start
        ]
        ranges.append(keep)
    return list(itertools.product(*ranges))


def every(sl: slice, step: int) -> tuple[slice, slice]:
    """The elements of ``sl`` at multiples of ``step``: their slice in the subsampled grid, and
    the slice that picks them from an array over ``sl``.

    Examples
    --------
    >>> every(slice(3, 10), 2)
    (slice(2, 5, None), slice(1, None, 2))
    """
    first = -(-sl.start // step)
    return slice(first, -(-sl.stop // step)), slice(first * step - sl.start, None, step)
