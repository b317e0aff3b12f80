"""Fusion of placed tiles into one output block (pure numpy kernel, no dask, no zarr).

Every output pixel takes the tiles that cover it: a weighted mean with weights that fall
to zero at each tile's border ("linear" or "cosine" ramps, so overlaps cross-fade without
seams), or the largest value ("max"), or the first covering tile in layout order ("first").
Tiles at fractional positions are resampled by spline interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = ["BLEND_MODES", "TilePiece", "fuse_block", "interpolation_depth"]

BLEND_MODES = ("linear", "cosine", "max", "first")


@dataclass(frozen=True)
class TilePiece:
    """The part of one tile needed for an output block.

    Attributes
    ----------
    data : ndarray
        Pixels of the tile from ``start`` onwards (a sub-region of the tile).
    start : tuple of int
        Tile coordinates of ``data[0, ..., 0]``.
    position : ndarray, shape (ndim,)
        Output coordinates of the tile's first pixel (fractional for subpixel placement).
    tile_shape : tuple of int
        Shape of the whole tile (the blending ramps depend on the distance to its border).
    """

    data: np.ndarray
    start: tuple[int, ...]
    position: np.ndarray
    tile_shape: tuple[int, ...]


def interpolation_depth(order: int) -> int:
    """Pixels of context each side that spline interpolation of ``order`` needs."""
    return 0 if order == 0 else (1 if order == 1 else 4)


def covered_range(position, tile_shape, lo, hi):
    """Output index range ``[start, stop)`` per axis where a tile has samples, within ``[lo, hi)``.

    A tile at position ``p`` with ``n`` pixels has samples at output coordinates
    ``p .. p + n - 1``, so it covers the integer pixels ``ceil(p) .. floor(p + n - 1)``.
    """
    p = np.asarray(position, dtype=np.float64)
    n = np.asarray(tile_shape, dtype=np.float64)
    start = np.maximum(np.asarray(lo), np.ceil(p - 1e-9)).astype(np.int64)
    stop = np.minimum(np.asarray(hi), np.floor(p + n - 1 + 1e-9) + 1).astype(np.int64)
    return start, np.maximum(stop, start)


def fuse_block(
    block_start: Sequence[int],
    block_shape: Sequence[int],
    pieces: Sequence[TilePiece],
    *,
    dtype,
    blend: str = "linear",
    blend_width=None,
    order: int = 3,
    fill_value=0,
) -> np.ndarray:
    """Fuse the tiles that touch one output block.

    Parameters
    ----------
    block_start : sequence of int
        Output coordinates of the block's first pixel.
    block_shape : sequence of int
        Shape of the block.
    pieces : sequence of TilePiece
        Tiles touching the block, in layout order, each with enough of its pixels to cover
        the block (plus :func:`interpolation_depth` for fractional positions).
    dtype : dtype
        Output dtype (the tiles' dtype); integers are rounded and clipped.
    blend : {"linear", "cosine", "max", "first"}
        How overlapping tiles are combined.
    blend_width : array_like, shape (ndim,) or scalar, optional
        Length (pixels) of the weight ramps from each tile border; default half the tile
        shape (weights are a tent over the whole tile).
    order : int
        Spline order for tiles at fractional positions (0-5).
    fill_value : scalar
        Value of pixels no tile covers.

    Returns
    -------
    ndarray of ``dtype``, shape ``block_shape``

    Examples
    --------
    >>> a = TilePiece(np.full((4, 4), 10.0), (0, 0), np.array([0, 0]), (4, 4))
    >>> b = TilePiece(np.full((4, 4), 20.0), (0, 0), np.array([0, 2]), (4, 4))
    >>> fuse_block((0, 0), (1, 6), [a, b], dtype=np.float32).round(2).tolist()
    [[10.0, 10.0, 12.5, 17.5, 20.0, 20.0]]
    """
    if blend not in BLEND_MODES:
        raise InputError(f"blend must be one of {BLEND_MODES}, got {blend!r}.")
    dtype = np.dtype(dtype)
    lo = np.asarray(block_start, dtype=np.int64)
    shape = tuple(int(n) for n in block_shape)
    hi = lo + np.asarray(shape)
    work = np.result_type(dtype, np.float32)
    if blend in ("linear", "cosine"):
        acc = np.zeros(shape, dtype=work)
        wsum = np.zeros(shape, dtype=work)
    else:
        acc = np.full(shape, -np.inf if blend == "max" else 0, dtype=work)
        wsum = np.zeros(shape, dtype=bool)
    for piece in pieces:
        start, stop = covered_range(piece.position, piece.tile_shape, lo, hi)
        if (stop <= start).any():
            continue
        values = _sample(piece, start, stop, order).astype(work, copy=False)
        region = tuple(
            slice(int(a - b), int(c - b)) for a, b, c in zip(start, lo, stop, strict=True)
        )
        if blend in ("linear", "cosine"):
            w = _weights(piece, start, stop, blend, blend_width).astype(work, copy=False)
            acc[region] += w * values
            wsum[region] += w
        elif blend == "max":
            np.maximum(acc[region], values, out=acc[region])
            wsum[region] = True
        else:
            fresh = ~wsum[region]
            acc[region][fresh] = values[fresh]
            wsum[region] = True
    covered = wsum > 0
    out = np.full(shape, fill_value, dtype=work)
    if blend in ("linear", "cosine"):
        np.divide(acc, wsum, out=out, where=covered)
    else:
        out[covered] = acc[covered]
    return _cast(out, dtype)


def _sample(piece: TilePiece, start, stop, order):
    """Tile values at output pixels ``start .. stop - 1`` (interpolated if fractional)."""
    pos = np.asarray(piece.position, dtype=np.float64)
    first = start - pos - np.asarray(piece.start)  # data coordinates of the first output pixel
    if np.allclose(pos, np.round(pos), atol=1e-9):
        idx = np.round(first).astype(np.int64)
        return piece.data[
            tuple(slice(int(a), int(a + n)) for a, n in zip(idx, stop - start, strict=True))
        ]
    data = np.asarray(
        piece.data, dtype=np.float64 if piece.data.dtype == np.float64 else np.float32
    )
    return ndimage.affine_transform(
        data,
        np.ones(data.ndim),
        offset=first,
        output_shape=tuple(int(n) for n in stop - start),
        order=order,
        mode="nearest",
    )


def _weights(piece: TilePiece, start, stop, blend, blend_width):
    """Separable ramp weights, zero-going at the tile border, for output pixels start..stop-1."""
    ndim = len(start)
    shape = np.asarray(piece.tile_shape, dtype=np.float64)
    width = (
        shape / 2
        if blend_width is None
        else np.broadcast_to(np.asarray(blend_width, float), (ndim,))
    )
    pos = np.asarray(piece.position, dtype=np.float64)
    w = np.ones((), dtype=np.float64)
    for axis in range(ndim):
        u = np.arange(start[axis], stop[axis], dtype=np.float64) - pos[axis]
        d = np.minimum(u, shape[axis] - 1 - u) + 0.5  # distance to the border, > 0 inside
        r = np.clip(d / max(width[axis], 0.5), 0.0, 1.0)
        if blend == "cosine":
            r = 0.5 - 0.5 * np.cos(np.pi * r)
        r = np.maximum(r, 1e-6)
        w = np.multiply.outer(w, r)
    return w


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)
