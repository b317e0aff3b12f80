"""Sampling a moving volume at ``x + flow(x)`` one tile at a time (pure numpy/scipy).

A tile's flow says which region of the moving volume its samples fall in
(:func:`sample_bounds`); :func:`sample_region` then resamples that region alone, matching a
resampling of the whole volume (the spline prefilter of orders above 1 gets a margin).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ._affine_kernels import _MODES, _PREFILTER_DEPTH

__all__ = ["sample_bounds", "sample_region"]


def sample_bounds(flow_tile: np.ndarray, core: tuple[slice, ...], shape, order: int):
    """Region of the moving volume that the samples of one output tile need.

    Returns the slices ``[lo, hi)`` per axis covering ``x + flow(x)`` for every ``x`` in
    ``core``, grown by the spline support of ``order`` (and a prefilter margin for
    ``order > 1``), clipped to the volume but never empty.
    """
    margin = order // 2 + 2 + (_PREFILTER_DEPTH if order > 1 else 0)
    out = []
    for axis, (s, n) in enumerate(zip(core, shape, strict=True)):
        f = flow_tile[axis]
        lo = math.floor(s.start + float(f.min())) - margin
        hi = math.floor(s.stop - 1 + float(f.max())) + margin + 1
        lo = min(max(lo, 0), n - 1)
        hi = max(min(hi, n), lo + 1)
        out.append(slice(lo, hi))
    return tuple(out)


def sample_region(
    region: np.ndarray,
    region_start,
    flow_tile: np.ndarray,
    core_start,
    *,
    order: int = 1,
    mode: str = "edge",
    cval: float = 0.0,
    step: int = 1,
) -> np.ndarray:
    """Sample a region of the moving volume at ``x + flow(x)`` for the voxels of one tile.

    Parameters
    ----------
    region : ndarray, shape R
        Part of the moving volume starting at ``region_start``.
    region_start : sequence of int
        Position of ``region[0, 0, ...]`` in the volume.
    flow_tile : ndarray, shape (ndim, *T)
        Displacements of the output tile's voxels.
    core_start : sequence of int
        Position of the tile's first voxel in the volume.
    order : int
        Spline order, 0 to 5.
    mode : {"edge", "constant"}
        Outside the volume: repeat the edge voxel, or use ``cval``.
    cval : float
        Fill value for ``mode="constant"``.
    step : int
        Spacing of the tile's voxels along every axis: ``flow_tile[:, j]`` belongs to voxel
        ``core_start + step * j`` (a subsampled tile).

    Returns
    -------
    ndarray of float32 or float64, shape T
        float64 for float64 input, float32 otherwise.
    """
    dtype = np.float64 if region.dtype == np.float64 else np.float32
    region = np.asarray(region, dtype=dtype)
    ndim = region.ndim
    coords = np.array(flow_tile, dtype=np.float64, copy=True)
    for axis in range(ndim):
        offset = core_start[axis] - region_start[axis]
        axis_grid = np.arange(flow_tile.shape[1 + axis], dtype=np.float64) * step + offset
        coords[axis] += axis_grid.reshape((-1,) + (1,) * (ndim - 1 - axis))
    return ndimage.map_coordinates(
        region, coords, output=dtype, order=order, mode=_MODES[mode], cval=cval
    )
