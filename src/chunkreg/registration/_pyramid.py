"""Image pyramid steps: Gaussian blur and linear resampling, separable and axis by axis."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ._filters import gaussian_weights

__all__ = ["pyramid_reduce", "resample_axis"]


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


def pyramid_reduce(image: np.ndarray, downscale: float) -> np.ndarray:
    """Blur (Gaussian, sigma ``downscale / 3``) and shrink to ``ceil(n / downscale)`` per axis.

    Same result, to float rounding, as ``scipy.ndimage.gaussian_filter(image, sigma,
    mode="reflect")`` followed by ``scipy.ndimage.zoom(..., order=1, mode="mirror",
    grid_mode=True)`` (what ``skimage.transform.pyramid_reduce`` does), but separable axis
    by axis, each axis shrunk right after it is blurred, which is several times faster.
    """
    weights = gaussian_weights(2 * downscale / 6)
    out = image
    for axis in range(image.ndim):
        out = _smooth_axis(out, weights, axis)
        out = resample_axis(out, math.ceil(image.shape[axis] / downscale), axis)
    return np.ascontiguousarray(out, dtype=image.dtype)
