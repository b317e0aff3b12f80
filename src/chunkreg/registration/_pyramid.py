"""Image pyramid steps: Gaussian blur and linear resampling, separable and axis by axis.

Anisotropic voxels (``spacing``): a pyramid step reduces only the axes whose voxel is finer
than :data:`ANISOTROPY_LIMIT` times the finest one (:func:`reduced_axes`), so a coarse axis (z
of 4 x 4 x 50 nm EM) waits until the others have caught up, then all axes are reduced.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ._filters import gaussian_weights

__all__ = ["ANISOTROPY_LIMIT", "check_spacing", "pyramid_reduce", "reduced_axes", "resample_axis"]

#: A pyramid step reduces an axis only while its voxel is finer than this times the finest one.
ANISOTROPY_LIMIT = 2.0


def check_spacing(spacing, ndim: int) -> tuple[float, ...] | None:
    """Validate a voxel size: None, a number or one positive finite number per axis.

    Returns None for None, else a tuple of ``ndim`` floats.
    """
    from ..errors import InputError

    if spacing is None:
        return None
    values = np.atleast_1d(np.asarray(spacing, dtype=object))
    if values.ndim != 1 or len(values) not in (1, ndim):
        raise InputError(
            f"spacing must be a number or one voxel size per axis ({ndim}), got {spacing!r}."
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InputError(f"spacing must hold positive numbers, got {spacing!r}.")
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise InputError(f"spacing must hold positive finite numbers, got {spacing!r}.")
        out.append(float(v))
    return tuple(out * ndim) if len(out) == 1 else tuple(out)


def reduced_axes(spacing) -> tuple[bool, ...]:
    """Which axes a pyramid step reduces: those finer than ``ANISOTROPY_LIMIT`` x the finest.

    >>> reduced_axes((50.0, 4.0, 4.0)), reduced_axes((50.0, 32.0, 32.0))
    ((False, True, True), (True, True, True))
    """
    finest = min(spacing)
    return tuple(s < ANISOTROPY_LIMIT * finest * (1 - 1e-9) for s in spacing)


def _along(ndim: int, axis: int, index) -> tuple:
    full = [slice(None)] * ndim
    full[axis] = index
    return tuple(full)


def _smooth_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``image`` with symmetric ``weights`` along ``axis`` (scipy "reflect")."""
    radius = len(weights) // 2
    n = image.shape[axis]
    if n <= radius:
        return ndi.correlate1d(image, weights, axis=axis, mode="reflect")
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="symmetric")
    taps = [image.dtype.type(w) for w in weights]
    out = np.multiply(padded[_along(image.ndim, axis, slice(0, n))], taps[0])
    tmp = np.empty_like(out)
    for k in range(1, len(taps)):
        np.multiply(padded[_along(image.ndim, axis, slice(k, k + n))], taps[k], out=tmp)
        out += tmp
    return out


def resample_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear resampling to ``size`` samples along ``axis``, pixel-centre aligned.

    Equals ``scipy.ndimage.zoom(..., order=1, mode="nearest", grid_mode=True)`` along one
    axis: the outer pixel edges stay aligned and positions past the end samples clamp.
    """
    n = image.shape[axis]
    ndim = image.ndim
    if size == n:
        return image
    if n == 2 * size:
        out = np.add(
            image[_along(ndim, axis, slice(0, None, 2))],
            image[_along(ndim, axis, slice(1, None, 2))],
        )
        out *= 0.5
        return out
    if n == 1:
        return np.repeat(image, size, axis=axis)
    position = (np.arange(size) + 0.5) * (n / size) - 0.5
    position = np.clip(position, 0, n - 1)
    lower = np.minimum(np.floor(position).astype(np.intp), n - 2)
    shape = [1] * ndim
    shape[axis] = size
    weight = (position - lower).astype(image.dtype).reshape(shape)
    low = np.take(image, lower, axis=axis)
    high = np.take(image, lower + 1, axis=axis)
    high -= low
    high *= weight
    low += high
    return low


def pyramid_reduce(image: np.ndarray, downscale) -> np.ndarray:
    """Blur (Gaussian, sigma ``downscale / 3``) and shrink to ``ceil(n / downscale)`` per axis.

    ``downscale`` is a number or one per axis; an axis with ``downscale`` 1 is left alone.

    Same result, to float rounding, as ``scipy.ndimage.gaussian_filter(image, sigma,
    mode="reflect")`` followed by ``scipy.ndimage.zoom(..., order=1, mode="mirror",
    grid_mode=True)`` (what ``skimage.transform.pyramid_reduce`` does), but separable axis
    by axis, each axis shrunk right after it is blurred, which is several times faster.
    """
    factors = np.broadcast_to(np.asarray(downscale, dtype=float), (image.ndim,))
    out = image
    for axis, factor in enumerate(factors):
        if factor == 1:
            continue
        out = _smooth_axis(out, gaussian_weights(2 * factor / 6), axis)
        out = resample_axis(out, math.ceil(image.shape[axis] / factor), axis)
    return np.ascontiguousarray(out, dtype=image.dtype)
