"""Partial sums of the seam metric of a field, region by region (pure numpy).

The seam metric (:func:`chunkreg.volume.seam_metric`) compares a field's change across tile
borders with its change just inside the tiles on either side. :func:`seam_sums` computes its
sums over one region, so tasks that each hold a part of a field can measure it together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ._plan import TileGrid

__all__ = ["seam_sums"]


def _tile_shape(grid, ndim: int) -> tuple[int, ...]:
    if isinstance(grid, TileGrid):
        tile = grid.tile_shape
    else:
        tile = tuple(int(t) for t in np.broadcast_to(np.asarray(grid), (ndim,)))
    if len(tile) != ndim or min(tile) < 1:
        raise InputError(f"tile shape must have {ndim} values >= 1, got {tile}.")
    return tile


def seam_sums(
    flow: np.ndarray,
    tile_shape: Sequence[int],
    *,
    origin: Sequence[int] | None = None,
    core: Sequence[slice] | None = None,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Partial sums of the seam metric over one region of a flow field.

    A border ``b`` (a multiple of the tile shape along an axis) is counted by the region whose
    core holds voxel ``b - 1``, over the core's extent along the other axes; so regions whose
    cores partition a volume, each given its core grown by one voxel below and two above
    (clipped at the volume), count every border pair exactly once.

    Parameters
    ----------
    flow : ndarray, shape (ndim, *region_shape)
        Displacements of the region.
    tile_shape : sequence of int
        Tile shape of the grid whose borders are examined (tiles start at multiples of it).
    origin : sequence of int, optional
        Position of ``flow[:, 0, 0, ...]`` in the volume; zeros by default.
    core : sequence of slice, optional
        The region's core, in volume coordinates; the whole region by default.
    shape : sequence of int, optional
        Shape of the whole volume; by default the region is the volume.

    Returns
    -------
    ndarray of float64, shape (3, ndim)
        Rows: sum over border pairs of the difference norm, sum of the neighbouring pairs'
        mean difference norm, number of border pairs; one column per axis. Add the arrays of
        several regions and pass the total to :func:`combine_seam_sums`.
    """
    flow = np.asarray(flow)
    ndim = flow.ndim - 1
    if ndim < 1 or flow.shape[0] != ndim:
        raise InputError(f"flow must have shape (ndim, *shape), got {flow.shape}.")
    tile = _tile_shape(tile_shape, ndim)
    region = flow.shape[1:]
    origin = (0,) * ndim if origin is None else tuple(int(o) for o in origin)
    shape = tuple(o + r for o, r in zip(origin, region, strict=True)) if shape is None else shape
    if core is None:
        core = tuple(slice(o, o + r) for o, r in zip(origin, region, strict=True))
    local = [slice(c.start - o, c.stop - o) for c, o in zip(core, origin, strict=True)]
    sums = np.zeros((3, ndim))
    for axis in range(ndim):
        t, start, stop, n = tile[axis], core[axis].start, core[axis].stop, shape[axis]
        borders = np.arange((start // t + 1) * t, min(stop, n - 1) + 1, t)  # b - 1 in the core
        borders = borders[borders < origin[axis] + region[axis]]  # voxel b is in the region
        if borders.size == 0:
            continue
        sel = [slice(None), *local]

        def take(positions, sel=sel, axis=axis):
            sel[1 + axis] = positions - origin[axis]
            return flow[tuple(sel)].astype(np.float64)

        def norm(d):
            return np.sqrt(np.einsum("c...,c...->...", d, d))

        at, before = take(borders), take(borders - 1)
        across = norm(at - before)
        total = np.zeros_like(across)
        count = np.zeros(borders.size)
        lower = borders - 2 >= 0
        if lower.any():
            idx = np.flatnonzero(lower)
            d = norm(take(borders[lower] - 1) - take(borders[lower] - 2))
            total[(slice(None),) * axis + (idx,)] += d
            count[idx] += 1
        upper = borders + 1 < min(n, origin[axis] + region[axis])
        if upper.any():
            idx = np.flatnonzero(upper)
            d = norm(take(borders[upper] + 1) - take(borders[upper]))
            total[(slice(None),) * axis + (idx,)] += d
            count[idx] += 1
        usable = count > 0
        shape_b = (1,) * axis + (-1,) + (1,) * (ndim - 1 - axis)
        expected = total / np.maximum(count, 1).reshape(shape_b)
        mask = np.broadcast_to(usable.reshape(shape_b), across.shape)
        sums[0, axis] = across[mask].sum()
        sums[1, axis] = expected[mask].sum()
        sums[2, axis] = mask.sum()
    return sums
