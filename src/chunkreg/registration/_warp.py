"""Resample an image at ``grid + flow`` (dense warp), the inverse of the flow kernels."""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage as ndi

from .._validation import as_float_array, check_finite
from ..errors import InputError
from ._filters import row_slabs

__all__ = ["warp"]

#: scikit-image / numpy.pad mode names -> scipy.ndimage modes (the "grid-" variants treat
#: the image as a grid of pixel centres, as scikit-image does).
_NDIMAGE_MODES = {
    "constant": "grid-constant",
    "edge": "nearest",
    "symmetric": "reflect",
    "reflect": "mirror",
    "wrap": "grid-wrap",
}


def warp(
    image: np.ndarray,
    flow: np.ndarray,
    *,
    order: int = 1,
    mode: str = "edge",
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``image`` at ``grid + flow``.

    If ``flow = optical_flow_ilk(reference, moving)`` (or ``optical_flow_tvl1``), then
    ``warp(moving, flow)`` approximates ``reference``: the moving image is brought onto the
    reference's grid. Same result as scikit-image's
    ``skimage.transform.warp(image, grid + flow, order=order, mode=mode, cval=cval,
    preserve_range=True)``.

    Parameters
    ----------
    image : ndarray, shape (M, N[, P[, ...]])
        Image to resample, any number of dimensions.
    flow : ndarray, shape (image.ndim, M, N[, P[, ...]])
        Displacement, in pixels, of each output pixel's sampling position, one component per
        axis in numpy axis order.
    order : int, optional
        Spline interpolation order, 0 (nearest) to 5; 1 is linear.
    mode : {"edge", "constant", "symmetric", "reflect", "wrap"}, optional
        How samples outside the image are filled, with the meaning of :func:`numpy.pad`
        (scikit-image's names): "edge" repeats the border pixel, "constant" uses ``cval``.
    cval : float, optional
        Fill value for ``mode="constant"``.

    Returns
    -------
    warped : ndarray, shape (M, N[, P[, ...]])
        float32 for float16/float32 input, float64 for float64 input. Integer and boolean
        images are resampled as float64 *without* rescaling their values (scikit-image's
        ``preserve_range=True``).

    Raises
    ------
    chunkreg.errors.InputError
        If ``flow`` is not shaped ``(image.ndim, *image.shape)`` or holds NaN/inf, or
        ``order``/``mode`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from chunkreg import warp
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> flow = np.zeros((2, 3, 4))
    >>> flow[1] = 1.0  # sample one pixel to the right
    >>> warp(image, flow)[0]
    array([1., 2., 3., 3.])
    """
    image = as_float_array(image, "image")
    if image.ndim == 0:
        raise InputError("image must have at least one dimension, got a scalar.")
    flow = np.asarray(flow)
    expected = (image.ndim, *image.shape)
    if flow.shape != expected:
        raise InputError(
            f"flow must have shape (image.ndim, *image.shape) = {expected}, got {flow.shape}; "
            "pass the array returned by optical_flow_ilk/optical_flow_tvl1 for this image."
        )
    flow = as_float_array(flow, "flow")
    check_finite(flow, "flow")
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or not 0 <= order <= 5:
        raise InputError(f"order must be an integer from 0 to 5, got {order!r}.")
    if mode not in _NDIMAGE_MODES:
        raise InputError(f"mode must be one of {sorted(_NDIMAGE_MODES)}, got {mode!r}.")
    out = np.empty(image.shape, dtype=image.dtype)
    coord_dtype = np.result_type(flow.dtype, np.float32)
    if order <= 1:
        # No spline prefilter: sample slab by slab so the coordinate array stays small.
        warp_into(image, flow, out, order=int(order), mode=_NDIMAGE_MODES[mode], cval=cval)
    else:
        coords = flow.astype(coord_dtype, copy=True)
        for axis, axis_grid in enumerate(_sparse_grid(image.shape, coord_dtype)):
            coords[axis] += axis_grid
        ndi.map_coordinates(
            image, coords, output=out, order=int(order), mode=_NDIMAGE_MODES[mode], cval=cval
        )
    return out


def _sparse_grid(shape: tuple[int, ...], dtype) -> list[np.ndarray]:
    return np.meshgrid(*[np.arange(n, dtype=dtype) for n in shape], indexing="ij", sparse=True)


def warp_into(
    image: np.ndarray,
    flow: np.ndarray,
    out: np.ndarray,
    *,
    order: int = 1,
    mode: str = "nearest",
    cval: float = 0.0,
    coords: np.ndarray | None = None,
) -> np.ndarray:
    """Sample ``image`` at ``grid + flow`` into ``out``, one slab of rows at a time.

    Only for ``order <= 1`` (no spline prefilter). ``mode`` is a :mod:`scipy.ndimage` mode.
    ``coords`` is an optional scratch buffer of shape ``(ndim, rows, *image.shape[1:])``
    with at least as many rows as the largest slab. Linear sampling in "nearest" mode (what
    the flow solvers use) runs on numpy gathers, about twice as fast as
    :func:`scipy.ndimage.map_coordinates`, and agrees with it to float rounding.
    """
    shape = image.shape
    slabs = row_slabs(shape)
    rows = slabs[0][1] - slabs[0][0]
    coord_dtype = np.result_type(flow.dtype, np.float32)
    if coords is None or coords.shape[1] < rows or coords.dtype != coord_dtype:
        coords = np.empty((image.ndim, rows, *shape[1:]), dtype=coord_dtype)
    fast = order == 1 and mode == "nearest" and min(shape) >= 2
    if fast:
        sampler = _LinearSampler(image, coords[0].shape, out.dtype)
    grid = _sparse_grid(shape[1:], coord_dtype)
    for start, stop in slabs:
        c = coords[:, : stop - start]
        np.add(
            flow[0, start:stop],
            np.arange(start, stop, dtype=coord_dtype).reshape((-1,) + (1,) * (image.ndim - 1)),
            out=c[0],
        )
        for axis in range(1, image.ndim):
            np.add(flow[axis, start:stop], grid[axis - 1][np.newaxis], out=c[axis])
        if fast:
            sampler(c, out[start:stop])
        else:
            ndi.map_coordinates(
                image,
                c,
                output=out[start:stop],
                order=order,
                mode=mode,
                cval=cval,
                prefilter=False,
            )
    return out


class _LinearSampler:
    """Linear interpolation with edge clamping ("nearest" mode) by numpy gathers.

    Works on one slab of coordinates at a time with buffers allocated once; every axis of
    ``image`` must have at least 2 samples.

    Neighbours are blended as ``a * (1 - w) + b * w``, which is exact at both ends: a sample
    at a whole-pixel position returns that pixel bit for bit, the last pixel of an axis
    included (its lower corner is ``length - 2`` and ``w = 1``, where ``a + (b - a) * w``
    would round). A warp by a zero flow is hence the identity, and identical images give a
    zero flow.
    """

    def __init__(self, image: np.ndarray, slab_shape: tuple[int, ...], dtype) -> None:
        self.flat = np.ascontiguousarray(image).reshape(-1)
        self.shape = image.shape
        self.strides = [
            int(np.prod(image.shape[k + 1 :], dtype=np.int64)) for k in range(image.ndim)
        ]
        self.index = np.empty(slab_shape, dtype=np.intp)
        self.corner = np.empty(slab_shape, dtype=np.intp)
        self.whole = np.empty(slab_shape, dtype=np.intp)
        self.floor = np.empty(slab_shape, dtype=self.flat.dtype)
        self.partial = [np.empty(slab_shape, dtype=dtype) for _ in range(image.ndim)]
        self.complement: list[np.ndarray] = []  # 1 - weight per axis, in the coords' dtype

    def __call__(self, coords: np.ndarray, out: np.ndarray) -> None:
        n = coords.shape[1]
        index, whole, fl = self.index[:n], self.whole[:n], self.floor[:n]
        if not self.complement or self.complement[0].dtype != coords.dtype:
            self.complement = [np.empty(self.index.shape, coords.dtype) for _ in self.shape]
        weights = []
        for axis, (length, stride) in enumerate(zip(self.shape, self.strides, strict=True)):
            c = coords[axis]
            np.clip(c, 0, length - 1, out=c)
            np.floor(c, out=fl)
            np.minimum(fl, length - 2, out=fl)
            c -= fl  # now the interpolation weight of the upper neighbour
            weights.append((c, np.subtract(1, c, out=self.complement[axis][:n])))
            if axis == 0:
                np.multiply(fl, stride, out=index, casting="unsafe")
            else:
                np.copyto(whole, fl, casting="unsafe")
                if stride != 1:
                    whole *= stride
                index += whole
        self._blend(0, 0, weights, out, n)

    def _blend(self, axis, offset, weights, out, n) -> None:
        """out = value interpolated over axes >= ``axis`` at corner offset ``offset``."""
        if axis == len(self.shape):
            corner = self.corner[:n]
            np.add(self.index[:n], offset, out=corner)
            np.take(self.flat, corner, out=out, mode="clip")
            return
        upper = self.partial[axis][:n]
        self._blend(axis + 1, offset, weights, out, n)
        self._blend(axis + 1, offset + self.strides[axis], weights, upper, n)
        weight, complement = weights[axis]
        out *= complement
        upper *= weight
        out += upper
