"""Block means: the one downsampler of display pyramids, coarse images and coarse matching.

A region is cut into blocks of ``step`` voxels per axis from its first voxel, and each block
becomes its mean. Where the region's length is not a multiple of the step, ``partial`` says what
the last, shorter block becomes:

- ``"edge"``: the mean of the block padded by repeating its edge voxel (display pyramids: every
  output voxel weights its voxels like a full block would);
- ``"mean"``: the mean of the voxels it has (coarse images of the affine estimate: voxel ``i``
  stays centred at ``step * i + (step - 1) / 2`` inside full blocks);
- ``"drop"``: nothing; an axis shorter than its step is averaged whole (coarse matching of two
  overlaps, which only needs full blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["PARTIAL_BLOCKS", "block_mean"]

PARTIAL_BLOCKS = ("edge", "mean", "drop")


def _reshape_mean(values: np.ndarray, step: Sequence[int]) -> np.ndarray:
    """Mean of each full ``step`` block (every length a multiple of its step)."""
    shape = []
    for n, s in zip(values.shape, step, strict=True):
        shape += [n // s, s]
    return values.reshape(shape).mean(axis=tuple(range(1, 2 * len(step), 2)))


def _cast(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` in ``dtype``: integers rounded to the nearest and clipped, bool at 0.5."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    elif dtype.kind == "b":
        values = values >= 0.5
    return values.astype(dtype)


def block_mean(
    region: np.ndarray, step: Sequence[int], dtype=None, *, partial: str = "edge"
) -> np.ndarray:
    """The mean of each ``step`` block of ``region``.

    Parameters
    ----------
    region : ndarray
        Values; blocks start at its first voxel.
    step : sequence of int
        Block edge per axis.
    dtype : dtype, optional
        Of the result: integers are rounded to the nearest value and clipped, bool is the mean
        thresholded at 0.5. Default float64 (``"edge"``), float32 (``"mean"``), ``region``'s
        float dtype (``"drop"``).
    partial : {"edge", "mean", "drop"}
        The last, shorter block of an axis: padded with its edge voxel, its own mean, or
        dropped (see the module notes). ``"edge"`` and ``"drop"`` average in one pass, in
        float64 and in ``region``'s dtype; ``"mean"`` axis by axis, summing in float64 and
        rounding each axis to float32.

    Returns
    -------
    ndarray
        ``ceil(n / step)`` voxels per axis (``max(n // step, 1)`` for ``"drop"``).

    Examples
    --------
    >>> row = np.array([[1.0, 4.0, 7.0]])
    >>> block_mean(row, (1, 2)).tolist(), block_mean(row, (1, 2), partial="mean").tolist()
    ([[2.5, 7.0]], [[2.5, 7.0]])
    >>> block_mean(np.array([[1.0, 4.0, 7.0, 8.0, 9.0]]), (1, 2), partial="drop").tolist()
    [[2.5, 7.5]]
    """
    step = tuple(int(s) for s in step)
    if len(step) != region.ndim or min(step, default=1) < 1:
        raise InputError(f"step must have {region.ndim} values >= 1, got {step}.")
    if partial == "edge":
        values = np.asarray(region, dtype=np.float64)
        pad = [(0, -n % s) for n, s in zip(values.shape, step, strict=True)]
        if any(p[1] for p in pad):
            values = np.pad(values, pad, mode="edge")
        return _cast(_reshape_mean(values, step), np.float64 if dtype is None else dtype)
    if partial == "drop":
        values = np.asarray(region)
        step = tuple(s if n >= s else n for n, s in zip(values.shape, step, strict=True))
        values = values[tuple(slice(0, max(n // s, 1) * s) for n, s in zip(values.shape, step,
                                                                            strict=True))]  # fmt: skip
        out = _reshape_mean(values, step)
        return out if dtype is None else _cast(out, dtype)
    if partial == "mean":
        values = np.asarray(region, dtype=np.float32)
        if all(s == 1 for s in step):
            values = values.copy()
        for axis, s in enumerate(step):
            if s == 1:
                continue
            n = values.shape[axis]
            edges = np.arange(0, n, s)
            sums = np.add.reduceat(values, edges, axis=axis, dtype=np.float64)
            counts = np.diff(np.append(edges, n)).reshape((-1,) + (1,) * (values.ndim - 1 - axis))
            values = (sums / counts).astype(np.float32)
        return values if dtype is None else _cast(values, dtype)
    raise InputError(f"partial must be one of {PARTIAL_BLOCKS}, got {partial!r}.")
