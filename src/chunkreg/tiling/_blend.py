"""Smooth blending weights for tiles that overlap by their halos.

Instead of cropping each tile's result to its core, a stitcher may blend the overlapping read
regions: each tile's result is multiplied by :func:`blend_weights` and the products are summed.
The weights form a partition of unity (they sum to 1 at every voxel), ramp smoothly across the
band of width ``2 * depth`` centred on each border between two cores, are exactly 1 where only
one tile has data, and are renormalised at the array edges where a neighbour is missing.

The weights are separable: a product of one 1-D profile per axis, each normalised along its
axis, so the sum over a whole grid is 1 exactly (up to rounding).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ._plan import TileGrid

__all__ = ["blend_profiles", "blend_weights", "ramp"]

_KINDS = ("linear", "cosine")


def _shape(u: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return u
    return np.sin(0.5 * np.pi * u) ** 2


def ramp(n: int, kind: str = "cosine") -> np.ndarray:
    """A rising ramp of ``n`` samples strictly between 0 and 1, sampled at pixel centres.

    ``ramp(n) + ramp(n)[::-1] == 1``, so a rising and a falling ramp over the same band blend
    two tiles without changing their common value.

    Parameters
    ----------
    n : int
        Number of samples (the width of the overlap band), >= 1.
    kind : {"cosine", "linear"}
        ``sin²(πu/2)`` (smooth at both ends) or ``u``, for ``u = (k + 0.5) / n``.

    Returns
    -------
    ndarray of float64, shape (n,)

    Examples
    --------
    >>> ramp(4, "linear")
    array([0.125, 0.375, 0.625, 0.875])
    """
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {_KINDS}, got {kind!r}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"ramp length must be an integer >= 1, got {n!r}.")
    return _shape((np.arange(n) + 0.5) / n, kind)


def _raw_profile(grid: TileGrid, axis: int, i: int, kind: str) -> tuple[int, np.ndarray]:
    """Unnormalised weights of tile ``i`` along ``axis`` over its read region: (start, w)."""
    n, t, d = grid.shape[axis], grid.tile_shape[axis], grid.depth[axis]
    c0, c1 = i * t, min((i + 1) * t, n)
    r0, r1 = max(c0 - d, 0), min(c1 + d, n)
    x = np.arange(r0, r1, dtype=np.float64)
    w = np.ones(r1 - r0)
    if d > 0 and c0 > 0:  # a neighbour before: rise across [c0 - d, c0 + d)
        w *= _shape(np.clip((x - (c0 - d) + 0.5) / (2 * d), 0.0, 1.0), kind)
    if d > 0 and c1 < n:  # a neighbour after: fall across [c1 - d, c1 + d)
        w *= _shape(np.clip(((c1 + d) - x - 0.5) / (2 * d), 0.0, 1.0), kind)
    return r0, w


def _axis_weights(grid: TileGrid, axis: int, i: int, kind: str) -> np.ndarray:
    r0, w = _raw_profile(grid, axis, i, kind)
    total = np.zeros_like(w)
    t, d = grid.tile_shape[axis], grid.depth[axis]
    reach = math.ceil(2 * d / t) + 1 if d else 0
    for j in range(max(0, i - reach), min(grid.grid_shape[axis], i + reach + 1)):
        s0, v = _raw_profile(grid, axis, j, kind)
        lo, hi = max(r0, s0), min(r0 + w.size, s0 + v.size)
        if lo < hi:
            total[lo - r0 : hi - r0] += v[lo - s0 : hi - s0]
    return w / total


def blend_profiles(grid: TileGrid, index, *, kind: str = "cosine") -> tuple[np.ndarray, ...]:
    """The 1-D factors of a tile's blending weights, one per axis.

    :func:`blend_weights` is their outer product; a stitcher that needs the weights over part
    of a read region only multiplies the matching slices of these profiles.

    Parameters
    ----------
    grid : TileGrid
        The tiles; their halos (``grid.depth``) are the overlaps blended across.
    index : int or tuple of int
        The tile (linear number or grid index).
    kind : {"cosine", "linear"}
        Shape of the ramps (see :func:`ramp`).

    Returns
    -------
    tuple of ndarray of float64
        One profile per axis, each as long as the tile's read region along that axis.

    Examples
    --------
    >>> grid = TileGrid(shape=(8, 4), tile_shape=(4, 4), depth=(2, 2))
    >>> [p.round(3).tolist() for p in blend_profiles(grid, (1, 0), kind="linear")]
    [[0.125, 0.375, 0.625, 0.875, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {_KINDS}, got {kind!r}.")
    tile = grid.tile(index)
    return tuple(_axis_weights(grid, axis, i, kind) for axis, i in enumerate(tile.index))


def blend_weights(grid: TileGrid, index, *, kind: str = "cosine", dtype=np.float32) -> np.ndarray:
    """Blending weights of one tile over its read region.

    Parameters
    ----------
    grid : TileGrid
        The tiles; their halos (``grid.depth``) are the overlaps blended across.
    index : int or tuple of int
        The tile (linear number or grid index).
    kind : {"cosine", "linear"}
        Shape of the ramps (see :func:`ramp`).
    dtype : dtype
        Output dtype.

    Returns
    -------
    ndarray, shape ``grid.tile(index).read_shape``
        Weights in (0, 1]; summed over all tiles (each placed at its read region) they are 1
        everywhere.

    Examples
    --------
    >>> grid = TileGrid(shape=(8,), tile_shape=(4,), depth=(2,))
    >>> blend_weights(grid, 0, kind="linear")
    array([1.   , 1.   , 0.875, 0.625, 0.375, 0.125], dtype=float32)
    """
    weights = np.ones((), dtype=np.float64)
    for profile in blend_profiles(grid, index, kind=kind):
        weights = np.multiply.outer(weights, profile)
    return weights.astype(dtype, copy=False)
