"""Small array helpers shared by the optical-flow kernels.

Everything here works on preallocated buffers and, where the arithmetic is pointwise, on
slabs of rows along axis 0, so that the hot loops touch cache-sized pieces of memory and
allocate nothing. Private to :mod:`chunkreg.registration`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "SLAB_ELEMENTS",
    "gaussian_weights",
    "gradient_rows",
    "median3",
    "median_filter_flow",
    "row_slabs",
]

#: Target number of elements per slab: 65536 float32 values (256 KiB) per array. Measured
#: on the reference machine (2 vCPU EPYC, 1 MiB L2 per core): smaller slabs pay numpy's
#: per-call overhead, whole arrays spill every pass to memory; 64-128 Ki elements was best
#: for both solvers in 2-D and 3-D.
SLAB_ELEMENTS = 65536


def row_slabs(shape: tuple[int, ...], target: int | None = None) -> list[tuple[int, int]]:
    """Split axis 0 of ``shape`` into ``(start, stop)`` slabs of about ``target`` elements."""
    if target is None:
        target = SLAB_ELEMENTS
    n0 = shape[0]
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, target // max(row, 1))
    return [(a, min(a + step, n0)) for a in range(0, n0, step)]


def _axis_slice(ndim: int, axis: int, sl: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = sl
    return tuple(index)


def _gradient_along(src: np.ndarray, axis: int, out: np.ndarray) -> None:
    """``np.gradient(src, axis=axis)`` (edge_order=1) written into ``out``."""
    n = src.shape[axis]
    ndim = src.ndim
    if n < 2:
        out[...] = 0
        return
    if n > 2:
        inner = out[_axis_slice(ndim, axis, slice(1, -1))]
        np.subtract(
            src[_axis_slice(ndim, axis, slice(2, None))],
            src[_axis_slice(ndim, axis, slice(None, -2))],
            out=inner,
        )
        inner *= 0.5
    np.subtract(
        src[_axis_slice(ndim, axis, slice(1, 2))],
        src[_axis_slice(ndim, axis, slice(0, 1))],
        out=out[_axis_slice(ndim, axis, slice(0, 1))],
    )
    np.subtract(
        src[_axis_slice(ndim, axis, slice(-1, None))],
        src[_axis_slice(ndim, axis, slice(-2, -1))],
        out=out[_axis_slice(ndim, axis, slice(-1, None))],
    )


def gradient_rows(image: np.ndarray, start: int, stop: int, out: np.ndarray) -> None:
    """Write ``np.gradient(image)`` restricted to rows ``start:stop`` of axis 0 into ``out``.

    Parameters
    ----------
    image : ndarray, shape (N0, N1, ...)
        Whole image; rows ``start - 1`` and ``stop`` are read for the axis-0 differences.
    start, stop : int
        Row range along axis 0.
    out : ndarray, shape (image.ndim, stop - start, N1, ...)
        Receives one component per axis; central differences inside, one-sided differences
        at the image border, exactly as :func:`numpy.gradient` with ``edge_order=1``.
    """
    n0 = image.shape[0]
    g0 = out[0]
    if n0 < 2:
        g0[...] = 0
    else:
        lo, hi = max(start, 1), min(stop, n0 - 1)
        if hi > lo:
            inner = g0[lo - start : hi - start]
            np.subtract(image[lo + 1 : hi + 1], image[lo - 1 : hi - 1], out=inner)
            inner *= 0.5
        if start == 0:
            np.subtract(image[1:2], image[0:1], out=g0[0:1])
        if stop == n0:
            last = n0 - 1 - start
            np.subtract(image[n0 - 1 :], image[n0 - 2 : n0 - 1], out=g0[last : last + 1])
    rows = image[start:stop]
    for axis in range(1, image.ndim):
        _gradient_along(rows, axis, out[axis])


def median_filter_flow(flow: np.ndarray, scratch: np.ndarray) -> None:
    """Replace each flow component by its 3-wide median (``scipy.ndimage`` reflect mode).

    ``scratch`` has the shape of one component; the result is written back into ``flow``.
    Equals ``scipy.ndimage.median_filter(flow, size=(1, 3, 3, ...))``.
    """
    for component in flow:
        median3(component, scratch)
        component[...] = scratch


def median3(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.median_filter(image, size=3, output=out)`` (mode "reflect").

    For 1-3 dimensions by forgetful selection on slabs: of the ``3**ndim`` neighbours,
    keep a pool of ``3**ndim // 2 + 2``, repeatedly drop its minimum and maximum (moved
    to the ends by compare-exchanges, i.e. ``np.minimum``/``np.maximum``) and add the next
    neighbour, until one value, the median, remains. About 390 vectorised operations per
    voxel in 3-D, 6-8x faster than scipy's rank filter; other dimensions go to scipy.
    """
    ndim = image.ndim
    if not 1 <= ndim <= 3:
        return ndi.median_filter(image, size=3, output=out)
    n0 = image.shape[0]
    slabs = row_slabs(image.shape, SLAB_ELEMENTS // 4)
    rows = slabs[0][1] - slabs[0][0]
    padded = np.empty([rows + 2] + [n + 2 for n in image.shape[1:]], dtype=image.dtype)
    count = 3**ndim
    slab_shape = (rows, *image.shape[1:])
    free = [np.empty(slab_shape, dtype=image.dtype) for _ in range(count // 2 + 3)]
    offsets = list(np.ndindex(*(3,) * ndim))
    for start, stop in slabs:
        m = stop - start
        pad = padded[: m + 2]
        inner = (slice(1, -1),) * (ndim - 1)
        pad[(slice(1, m + 1), *inner)] = image[start:stop]
        pad[(slice(0, 1), *inner)] = image[max(start - 1, 0) : max(start - 1, 0) + 1]
        pad[(slice(m + 1, m + 2), *inner)] = image[min(stop, n0 - 1) : min(stop, n0 - 1) + 1]
        for axis in range(1, ndim):  # "reflect" with a 1-sample pad repeats the edge
            lead = (slice(None),) * axis
            pad[(*lead, slice(0, 1))] = pad[(*lead, slice(1, 2))]
            pad[(*lead, slice(-1, None))] = pad[(*lead, slice(-2, -1))]
        views = [
            pad[tuple(slice(d, d + n) for d, n in zip(offset, (m, *image.shape[1:]), strict=True))]
            for offset in offsets
        ]
        spare = [buf[:m] for buf in free]
        pool = []
        for view in views[: count // 2 + 2]:
            buf = spare.pop()
            np.copyto(buf, view)
            pool.append(buf)
        remaining = views[count // 2 + 2 :]
        while True:
            # move the minimum to pool[0] and the maximum to pool[-1]
            for i in range(1, len(pool)):
                low = spare.pop()
                np.minimum(pool[0], pool[i], out=low)
                np.maximum(pool[0], pool[i], out=pool[i])
                spare.append(pool[0])
                pool[0] = low
            for i in range(1, len(pool) - 1):
                high = spare.pop()
                np.maximum(pool[i], pool[-1], out=high)
                np.minimum(pool[i], pool[-1], out=pool[i])
                spare.append(pool[-1])
                pool[-1] = high
            spare.append(pool.pop(0))
            spare.append(pool.pop())
            if not remaining:
                break
            buf = spare.pop()
            np.copyto(buf, remaining.pop(0))
            pool.append(buf)
        np.copyto(out[start:stop], pool[0])
    return out


def gaussian_weights(sigma: float) -> np.ndarray:
    """scipy.ndimage's normalised Gaussian taps for ``sigma`` (truncate 4)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * x * x / (sigma * sigma))
    return w / w.sum()
