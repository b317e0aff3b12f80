"""Block means: the downsampling of pyramids, coarse images and coarse matching."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["block_mean"]


def block_mean(region: np.ndarray, step: Sequence[int], dtype) -> np.ndarray:
    """The mean of each ``step`` block of ``region`` (a partial last block repeats its edge).

    Integer results are rounded to the nearest value of ``dtype``.
    """
    step = tuple(int(s) for s in step)
    pad = [(0, -n % s) for n, s in zip(region.shape, step, strict=True)]
    values = np.asarray(region, dtype=np.float64)
    if any(p[1] for p in pad):
        values = np.pad(values, pad, mode="edge")
    shape = []
    for n, s in zip(values.shape, step, strict=True):
        shape += [n // s, s]
    values = values.reshape(shape).mean(axis=tuple(range(1, 2 * len(step), 2)))
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    elif dtype.kind == "b":
        values = values >= 0.5
    return values.astype(dtype)
