"""Iterative Lucas-Kanade (iLK) dense optical flow.

Per pyramid level and warp: sample the moving image at the current flow, take its
gradient ``g``, and solve at every pixel the ``ndim x ndim`` system
``(W * g gᵀ) u = W * (g (gᵀ u₀ + I₀ - I₁∘u₀))``, ``W *`` being a local window average.
The small systems are solved in closed form (explicit inverse for 1-3 dimensions), the
pointwise work runs slab by slab on cache-sized pieces, and the window averages are
separable in-place :mod:`scipy.ndimage` filters, so nothing is allocated inside the loop.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

from ..errors import InputError
from ._coarse_to_fine import prepare_images, run_pyramid
from ._filters import gradient_rows, median_filter_flow, row_slabs
from ._pyramid import check_spacing
from ._warp import warp_into
from ._window import gaussian_window, window_mean

__all__ = ["axis_radii", "ilk_solver", "optical_flow_ilk"]

#: Systems with ``|det A|`` below this are treated as singular: the flow there is set to 0.
_SINGULAR_DET = 1e-14

#: Default early-stopping tolerance of a level's warps: mean squared change of the flow over
#: one warp, in pixels² summed over components (TV-L1's ``tol`` and its default, 1e-4).
DEFAULT_TOL = 1e-4


def axis_radii(radius: int, spacing, ndim: int) -> tuple[int, ...]:
    """The window radius along each axis: ``radius`` voxels along the finest axis, the same
    physical extent (rounded, at least 1 voxel) along the others.

    >>> axis_radii(7, None, 3), axis_radii(7, (50, 4, 4), 3), axis_radii(7, (50, 16, 16), 3)
    ((7, 7, 7), (1, 7, 7), (2, 7, 7))
    """
    if spacing is None:
        return (int(radius),) * ndim
    finest = min(spacing)
    return tuple(max(1, math.floor(radius * finest / s + 0.5)) for s in spacing)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class ILKSolver:
    """One pyramid level of iLK: ``solver(reference, moving, flow0) -> flow``.

    Built by :func:`ilk_solver`; a frozen dataclass so it pickles to dask workers.
    """

    radius: int = 7
    num_warp: int = 10
    gaussian: bool = False
    prefilter: bool = False
    tol: float = DEFAULT_TOL
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_int(self.radius, "radius", 1)
        if self.spacing is not None:
            object.__setattr__(self, "spacing", check_spacing(self.spacing, len(self.spacing)))
        _check_int(self.num_warp, "num_warp", 1)
        if (
            isinstance(self.tol, bool)
            or not isinstance(self.tol, numbers.Real)
            or not self.tol >= 0
            or not np.isfinite(self.tol)
        ):
            raise InputError(
                f"tol must be a finite number >= 0 (0 runs every warp), got {self.tol!r}."
            )

    def __call__(self, reference: np.ndarray, moving: np.ndarray, flow0: np.ndarray) -> np.ndarray:
        return _ilk(reference, moving, flow0, self)

    def at_spacing(self, spacing) -> ILKSolver:
        """The same solver for a level of voxel size ``spacing``."""
        return dataclasses.replace(self, spacing=tuple(spacing))


def ilk_solver(
    radius: int = 7,
    num_warp: int = 10,
    gaussian: bool = False,
    prefilter: bool = False,
    tol: float = DEFAULT_TOL,
    spacing: float | Sequence[float] | None = None,
) -> ILKSolver:
    """Return the iLK solver for :func:`coarse_to_fine` (parameters as :func:`optical_flow_ilk`).

    Parameters
    ----------
    radius : int, optional
        Radius of the local window, in pixels (window width ``2 * radius + 1``).
    num_warp : int, optional
        Most warps (linearise, solve, resample) per pyramid level.
    gaussian : bool, optional
        Gaussian window (sigma ``(2 * radius + 1) / 4``) instead of a uniform one.
    prefilter : bool, optional
        Median-filter (3 wide) each flow component before every warp.
    tol : float, optional
        A level stops warping once one warp changed the flow by less than ``tol`` in mean
        squared pixels (summed over components); 0 runs all ``num_warp`` warps, as
        scikit-image does.
    spacing : sequence of float, optional
        Voxel size per axis: the window is ``radius`` voxels along the finest axis and as long
        physically along the others (:func:`axis_radii`). None: ``radius`` along every axis.

    Returns
    -------
    solver : callable
        ``solver(reference, moving, flow0) -> flow``, picklable. It overwrites ``flow0``.

    Examples
    --------
    >>> import pickle
    >>> from chunkreg.registration import ilk_solver
    >>> solver = ilk_solver(radius=5)
    >>> pickle.loads(pickle.dumps(solver)) == solver
    True
    """
    return ILKSolver(
        radius=radius,
        num_warp=num_warp,
        gaussian=bool(gaussian),
        prefilter=bool(prefilter),
        tol=tol,
        spacing=None if spacing is None else tuple(spacing),
    )


def _solve_rows(a: list[np.ndarray], b: list[np.ndarray], out: list[np.ndarray]) -> None:
    """Solve the symmetric systems ``A x = b`` pointwise; ``a`` lists the upper triangle.

    ``a`` holds ``A[i, j]`` for ``i <= j`` in ``combinations_with_replacement`` order, all
    arrays of one slab; singular systems (``|det| < 1e-14``) give ``x = 0``.
    """
    ndim = len(b)
    if ndim == 1:
        det = a[0].copy()
        det[np.abs(det) < _SINGULAR_DET] = np.inf
        np.divide(b[0], det, out=out[0])
        return
    if ndim == 2:
        a00, a01, a11 = a
        det = a00 * a11
        tmp = a01 * a01
        det -= tmp
        np.abs(det, out=tmp)
        det[tmp < _SINGULAR_DET] = np.inf
        np.reciprocal(det, out=det)
        np.multiply(a11, b[0], out=out[0])
        np.multiply(a01, b[1], out=tmp)
        out[0] -= tmp
        np.multiply(a00, b[1], out=out[1])
        np.multiply(a01, b[0], out=tmp)
        out[1] -= tmp
        out[0] *= det
        out[1] *= det
        return
    if ndim == 3:
        a00, a01, a02, a11, a12, a22 = a
        tmp = np.empty_like(a00)

        def cofactor(p, q, r, s):  # p*q - r*s
            c = p * q
            np.multiply(r, s, out=tmp)
            c -= tmp
            return c

        c00 = cofactor(a11, a22, a12, a12)
        c01 = cofactor(a02, a12, a01, a22)
        c02 = cofactor(a01, a12, a02, a11)
        det = a00 * c00
        np.multiply(a01, c01, out=tmp)
        det += tmp
        np.multiply(a02, c02, out=tmp)
        det += tmp
        np.abs(det, out=tmp)
        det[tmp < _SINGULAR_DET] = np.inf
        np.reciprocal(det, out=det)
        c11 = cofactor(a00, a22, a02, a02)
        c12 = cofactor(a01, a02, a00, a12)
        c22 = cofactor(a00, a11, a01, a01)
        rows = ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))
        for x, (p, q, r) in zip(out, rows, strict=True):
            np.multiply(p, b[0], out=x)
            np.multiply(q, b[1], out=tmp)
            x += tmp
            np.multiply(r, b[2], out=tmp)
            x += tmp
            x *= det
        return
    # Four or more dimensions: batched LAPACK solve.
    shape = b[0].shape
    mat = np.empty((*shape, ndim, ndim), dtype=b[0].dtype)
    for (i, j), aij in zip(combinations_with_replacement(range(ndim), 2), a, strict=True):
        mat[..., i, j] = mat[..., j, i] = aij
    rhs = np.stack(b, axis=-1)[..., np.newaxis]
    singular = np.abs(np.linalg.det(mat)) < _SINGULAR_DET
    mat[singular] = np.eye(ndim, dtype=mat.dtype)
    rhs[singular] = 0
    solution = np.linalg.solve(mat, rhs)[..., 0]
    for i in range(ndim):
        out[i][...] = solution[..., i]


def _ilk(reference: np.ndarray, moving: np.ndarray, flow: np.ndarray, params: ILKSolver):
    """iLK on one level; ``flow`` (ndim, *shape) is the initial value and is overwritten."""
    ndim = reference.ndim
    dtype = reference.dtype
    shape = reference.shape
    radii = axis_radii(params.radius, params.spacing, ndim)
    sigmas = tuple((2 * r + 1) / 4 for r in radii)
    pairs = list(combinations_with_replacement(range(ndim), 2))
    slabs = row_slabs(shape)
    rows = slabs[0][1] - slabs[0][0]

    warped = np.empty(shape, dtype=dtype)
    # Per pixel: the upper triangle of A = W * (g gᵀ), then b = W * (g e), interleaved on
    # axis 1 so that each row of the image is one contiguous block for the window sums.
    n_sys = len(pairs) + ndim
    systems = np.empty((shape[0], n_sys, *shape[1:]), dtype=dtype)
    # 1-D/2-D: window sums over all systems at once (long planes, few numpy calls); 3-D+:
    # one system at a time, each plane is long enough, and the scratch is one image.
    if ndim <= 2:
        window_views = [(systems, (0, *range(2, ndim + 1)))]
    else:
        window_views = [(systems[:, k], tuple(range(ndim))) for k in range(n_sys)]
    window_scratch = np.empty(window_views[0][0].shape, dtype)
    grad = np.empty((ndim, rows, *shape[1:]), dtype=dtype)
    err = np.empty((rows, *shape[1:]), dtype=dtype)
    tmp = np.empty_like(err)
    coords = np.empty((ndim, rows, *shape[1:]), dtype=dtype)
    median_scratch = np.empty(shape, dtype=dtype) if params.prefilter else None
    # Early stop: sum over the image of the squared change the warp makes to the flow,
    # against tol * size (the change is measured slab by slab, before each slab is solved).
    previous = np.empty_like(grad) if params.tol > 0 else None
    threshold = params.tol * reference.size

    for _ in range(params.num_warp):
        if params.prefilter:
            median_filter_flow(flow, median_scratch)
        warp_into(moving, flow, warped, coords=coords)
        for start, stop in slabs:
            n = stop - start
            g, e, t = grad[:, :n], err[:n], tmp[:n]
            gradient_rows(warped, start, stop, g)
            # e = reference - warped + g . flow  (the linearised residual)
            np.subtract(reference[start:stop], warped[start:stop], out=e)
            for axis in range(ndim):
                np.multiply(g[axis], flow[axis, start:stop], out=t)
                e += t
            block = systems[start:stop]
            for k, (i, j) in enumerate(pairs):
                np.multiply(g[i], g[j], out=block[:, k])
            for i in range(ndim):
                np.multiply(g[i], e, out=block[:, len(pairs) + i])
        for view, axes in window_views:
            if params.gaussian:
                gaussian_window(view, sigmas, axes, window_scratch)
            else:
                window_mean(view, radii, axes, window_scratch)
        change = 0.0
        for start, stop in slabs:
            block = systems[start:stop]
            if previous is not None:
                old = previous[:, : stop - start]
                np.copyto(old, flow[:, start:stop])
            _solve_rows(
                [block[:, k] for k in range(len(pairs))],
                [block[:, len(pairs) + i] for i in range(ndim)],
                [fi[start:stop] for fi in flow],
            )
            if previous is not None:
                old -= flow[:, start:stop]
                change += float(np.vdot(old.ravel(), old.ravel()))
        if previous is not None and change < threshold:
            break
    return flow


def optical_flow_ilk(
    reference_image: np.ndarray,
    moving_image: np.ndarray,
    *,
    radius: int = 7,
    num_warp: int = 10,
    gaussian: bool = False,
    prefilter: bool = False,
    tol: float = DEFAULT_TOL,
    dtype=np.float32,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Dense optical flow by iterative Lucas-Kanade, coarse to fine.

    Same parameters, defaults and conventions as
    :func:`skimage.registration.optical_flow_ilk`, plus an early stop (``tol``); on the
    same input and with ``tol=0`` the flows agree to float32 rounding (1e-5 px), with the
    default ``tol`` to a few thousandths of a pixel on average. The iLK solver [1]_ (fast, robust, less accurate than TV-L1
    on flat areas and object boundaries [2]_) runs on every level of an image pyramid, see
    :func:`chunkreg.registration.coarse_to_fine`.

    Parameters
    ----------
    reference_image : ndarray, shape (M, N[, P[, ...]])
        Fixed greyscale image. Integer images are scaled by their dtype's range.
    moving_image : ndarray, shape (M, N[, P[, ...]])
        Greyscale image to register onto the reference.
    radius : int, optional
        Radius of the local window; every axis must have at least ``2 * radius + 1``
        pixels.
    num_warp : int, optional
        Most times ``moving_image`` is warped per pyramid level.
    gaussian : bool, optional
        Gaussian window (sigma ``(2 * radius + 1) / 4``) instead of a uniform one.
    prefilter : bool, optional
        Median-filter (3 wide along each axis) the flow before each warp, which removes
        outliers.
    tol : float, optional
        A level stops warping early once one warp changed the flow by less than ``tol`` in
        mean squared pixels (sum over components of the mean squared change), as TV-L1's
        ``tol``. Converged warps change the flow by much less than the flow's error, so
        this saves most of the ``num_warp`` warps on smooth motion at no cost in accuracy;
        ``tol=0`` runs all of them, which is scikit-image's behaviour (it has no ``tol``).
    dtype : {numpy.float32, numpy.float64}, optional
        Working and output precision; float32 is as accurate here and faster.
    spacing : float or sequence of float, optional
        Voxel size per axis (not in scikit-image), for anisotropic data such as EM sections
        (``(50, 4, 4)`` nm): the window is ``radius`` voxels along the finest axis and covers
        the same physical extent along the others (rounded, at least one voxel), and the
        pyramid reduces only the fine axes until the voxels are near isotropic (see
        :func:`chunkreg.registration.coarse_to_fine`). None (default) or an isotropic
        spacing: scikit-image's behaviour.

    Returns
    -------
    flow : ndarray, shape (reference_image.ndim, M, N[, P[, ...]])
        Displacement per axis (numpy axis order), in voxels of that axis whatever
        ``spacing`` (multiply by ``spacing`` for physical units), such that
        ``warp(moving_image, flow)`` approximates ``reference_image``.

    Raises
    ------
    chunkreg.errors.InputError
        Mismatched shapes, colour images (trailing axis of length 3 or 4 on 3+ dimensions),
        NaN/inf, non-float ``dtype``, an axis shorter than the window ``2 * radius + 1``
        (per axis with ``spacing``), ``radius``/``num_warp`` < 1, ``tol`` < 0 or a
        non-positive ``spacing``.

    Notes
    -----
    The ``ndim x ndim`` systems are solved pointwise in closed form for 1-3 dimensions;
    systems with ``|det| < 1e-14`` (no texture in the window) yield a zero flow, as in
    scikit-image.

    References
    ----------
    .. [1] Le Besnerais, G., & Champagnat, F. (2005). Dense optical flow by iterative
       local window registration. IEEE ICIP 2005, I-137.
       :DOI:`10.1109/ICIP.2005.1529706`
    .. [2] Plyer, A., Le Besnerais, G., & Champagnat, F. (2016). Massively parallel Lucas
       Kanade optical flow for real-time video processing applications. Journal of
       Real-Time Image Processing, 11(4), 713-730. :DOI:`10.1007/s11554-014-0423-0`

    Examples
    --------
    >>> import numpy as np
    >>> from chunkreg import optical_flow_ilk, warp
    >>> from chunkreg.testing import apply_flow, smooth_displacement, textured_image
    >>> reference = textured_image((128, 128), seed=1)
    >>> truth = smooth_displacement((128, 128), amplitude=3.0, seed=2)
    >>> moving = apply_flow(reference, -truth)
    >>> flow = optical_flow_ilk(reference, moving)
    >>> flow.shape, flow.dtype
    ((2, 128, 128), dtype('float32'))
    >>> bool(np.abs(warp(moving, flow) - reference).mean() < 0.2 * np.abs(moving - reference).mean())
    True
    """
    solver = ilk_solver(
        radius=radius, num_warp=num_warp, gaussian=gaussian, prefilter=prefilter, tol=tol
    )
    ndim = np.ndim(reference_image)
    spacing = check_spacing(spacing, ndim)
    radii = axis_radii(solver.radius, spacing, ndim)
    ref, mov = prepare_images(
        reference_image,
        moving_image,
        dtype,
        min_length=tuple(2 * r + 1 for r in radii),
        window=f" for the iLK window of radius {solver.radius if spacing is None else radii} "
        "(pass a smaller radius)",
        check_channels=True,
    )
    return run_pyramid(ref, mov, solver, spacing=spacing)
