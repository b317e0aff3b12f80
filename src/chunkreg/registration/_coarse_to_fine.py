"""Image pyramid and the generic coarse-to-fine driver of the dense optical-flow kernels.

The driver knows nothing about the estimator: it calls ``solver(reference, moving, flow0)``
at each pyramid level, coarsest first, and carries the flow from one level to the next.
The tiling engine calls it directly with a solver from :func:`ilk_solver` or
:func:`tvl1_solver` and, when it already has a flow estimate, an ``initial_flow``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_finite, check_same_shape
from ..errors import InputError
from ._pyramid import check_spacing, pyramid_reduce, reduced_axes

__all__ = ["DEFAULT_NUM_LEVELS", "coarse_to_fine", "prepare_images", "run_pyramid"]

#: Most pyramid levels used when ``num_levels`` is None (scikit-image's ``nlevel``).
DEFAULT_NUM_LEVELS = 10

Solver = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_flow_dtype(dtype) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise InputError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}.") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(
            f"dtype must be float32 or float64, got {dt}; the flow is fractional, and float32 "
            "is accurate enough and half the memory of float64."
        )
    return dt


def _to_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``; integers are scaled by their type's range as ``img_as_float`` does."""
    if image.dtype.kind == "b":
        return image.astype(dtype)
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        scaled = np.multiply(image, 1.0 / info.max, dtype=dtype)
        if image.dtype.kind == "i":
            np.maximum(scaled, -1.0, out=scaled)
        return scaled
    return np.ascontiguousarray(image, dtype=dtype)


def prepare_images(
    reference_image,
    moving_image,
    dtype,
    *,
    min_length: int | tuple[int, ...] = 2,
    window: str = "",
    check_channels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a reference/moving pair and return both as contiguous ``dtype`` arrays.

    Raises :class:`InputError` for non-float ``dtype``, complex or non-numeric images,
    mismatched shapes (naming a colour axis when one image has an extra one of length 3 or
    4), NaN/inf, any axis shorter than ``min_length`` (``window`` explains why) and, with
    ``check_channels``, a trailing axis of length 3 or 4 on an image of 3+ dimensions.
    """
    dt = check_flow_dtype(dtype)
    ref = np.asarray(reference_image)
    mov = np.asarray(moving_image)
    for name, arr in (("reference_image", ref), ("moving_image", mov)):
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{name} must be a real numeric array, got dtype {arr.dtype}.")
        if arr.ndim == 0:
            raise InputError(f"{name} must have at least one dimension, got a scalar.")
    if ref.ndim != mov.ndim:
        big, small = (ref, mov) if ref.ndim > mov.ndim else (mov, ref)
        if big.ndim == small.ndim + 1 and big.shape[-1] in (3, 4) and big.shape[:-1] == small.shape:
            raise InputError(
                f"reference_image and moving_image shapes differ: {ref.shape} vs {mov.shape}; "
                f"the trailing axis of length {big.shape[-1]} looks like colour channels, which "
                "are not supported: convert to greyscale or register one channel at a time."
            )
    check_same_shape(ref, mov)
    if check_channels and ref.ndim >= 3 and ref.shape[-1] in (3, 4):
        raise InputError(
            f"images of shape {ref.shape} look like colour images (trailing axis of length "
            f"{ref.shape[-1]}), which are not supported: convert to greyscale or register one "
            "channel at a time. If that axis really is spatial, move it first "
            "(np.moveaxis(image, -1, 0)) and move the flow components back afterwards."
        )
    lengths = (min_length,) * ref.ndim if isinstance(min_length, int) else min_length
    short = [(axis, n) for axis, n in enumerate(ref.shape) if n < lengths[axis]]
    if short:
        axis, n = short[0]
        raise InputError(
            f"images of shape {ref.shape} are too small: axis {axis} has {n} pixels, at least "
            f"{lengths[axis]} are needed{window}. Squeeze singleton axes (np.squeeze) or pass "
            "larger images."
        )
    ref = _to_float(ref, dt)
    mov = _to_float(mov, dt)
    check_finite(ref, "reference_image")
    check_finite(mov, "moving_image")
    return ref, mov


def _pyramid_steps(
    shape: tuple[int, ...],
    downscale: float,
    num_levels: int,
    min_size: int,
    spacing: tuple[float, ...] | None = None,
) -> list[tuple[float, ...]]:
    """Per-axis downscale of each pyramid step, finest first (one entry fewer than levels).

    Without ``spacing`` every axis is reduced while the smallest axis exceeds
    ``downscale * min_size`` (scikit-image's rule). With it, a step reduces only the axes
    :func:`reduced_axes` picks at the level's voxel size, while the smallest of them exceeds
    ``downscale * min_size``.
    """
    ndim = len(shape)
    steps: list[tuple[float, ...]] = []
    shape = tuple(shape)
    scale = (1.0,) * ndim if spacing is None else tuple(spacing)
    while len(steps) + 1 < num_levels:
        fine = reduced_axes(scale)
        if min(n for n, f in zip(shape, fine, strict=True) if f) <= downscale * min_size:
            break
        step = tuple(downscale if f else 1.0 for f in fine)
        steps.append(step)
        shape = tuple(math.ceil(n / f) for n, f in zip(shape, step, strict=True))
        scale = tuple(s * f for s, f in zip(scale, step, strict=True))
    return steps


def _pyramid(image: np.ndarray, steps) -> list[np.ndarray]:
    levels = [image]
    for step in steps:
        levels.append(pyramid_reduce(levels[-1], step))
    return levels


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each of ``size_out`` samples: nearest, end samples aligned.

    ``scipy.ndimage.zoom(order=0, mode="nearest", grid_mode=False)`` of ``range(size_in)``,
    so the choice (and its rounding) is scipy's, which scikit-image's flow resizing uses.
    """
    if size_in == size_out:
        return np.arange(size_out)
    source = np.arange(size_in, dtype=np.float64)
    # zoom's output length is round(size_in * factor), i.e. exactly size_out
    index = ndi.zoom(source, size_out / size_in, order=0, mode="nearest", prefilter=False)
    return index.astype(np.intp)


def _rescale_flow(flow: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a flow to ``shape`` (nearest neighbour) and rescale its values.

    Each finer pixel takes the value of the nearest coarser pixel, with the first and last
    samples of every axis aligned, as scikit-image does between pyramid levels. Nearest
    neighbour creates no new values: a runaway estimate in the unmatched band where
    content leaves the frame stays confined to the pixels it came from instead of being
    blended into its neighbours, which linear interpolation does, pushing them out of the
    frame as well, where the next level cannot pull them back.
    """
    index = np.ix_(
        *(_nearest_indices(n, size) for n, size in zip(flow.shape[1:], shape, strict=True))
    )
    out = np.empty((flow.shape[0], *shape), dtype=flow.dtype)
    for axis, component in enumerate(flow):
        np.multiply(component[index], shape[axis] / flow.shape[axis + 1], out=out[axis])
    return out


def _reduce_flow(flow: np.ndarray, steps) -> np.ndarray:
    """Carry a full-resolution flow down the pyramid ``steps`` (values rescaled)."""
    for step in steps:
        shape = tuple(math.ceil(n / f) for n, f in zip(flow.shape[1:], step, strict=True))
        reduced = np.empty((flow.shape[0], *shape), dtype=flow.dtype)
        for axis, component in enumerate(flow):
            reduced[axis] = pyramid_reduce(component, step)
            reduced[axis] *= shape[axis] / flow.shape[axis + 1]
        flow = reduced
    return flow


def coarse_to_fine(
    reference_image: np.ndarray,
    moving_image: np.ndarray,
    solver: Solver,
    *,
    initial_flow: np.ndarray | None = None,
    downscale: float = 2,
    num_levels: int | None = None,
    min_size: int = 16,
    dtype=np.float32,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Run a dense-flow ``solver`` over an image pyramid, coarsest level first.

    Both images are reduced into a pyramid (Gaussian blur with sigma ``downscale / 3``, then
    linear resampling to ``ceil(n / downscale)`` pixels per axis) until the next level's
    smallest axis would be at most ``downscale * min_size`` pixels or ``num_levels`` levels
    exist. The solver runs on the coarsest level from ``initial_flow`` (reduced to that
    level) or zero; its result, upsampled by nearest neighbour (end samples aligned, as
    scikit-image does) and multiplied by the size ratio, starts the solver on the next finer
    level, and so on up to full resolution.

    Parameters
    ----------
    reference_image : ndarray, shape (M, N[, P[, ...]])
        Fixed image. Integer images are scaled to [0, 1] (signed: [-1, 1]) by their dtype's
        range, as scikit-image does, so solver parameters keep their meaning.
    moving_image : ndarray, shape (M, N[, P[, ...]])
        Image to register onto the reference.
    solver : callable
        ``solver(reference, moving, flow0) -> flow`` for one level: ``reference`` and
        ``moving`` are ``dtype`` arrays of the level's shape, ``flow0`` a
        ``(ndim, *level_shape)`` ``dtype`` array the solver may overwrite and return. Use
        :func:`ilk_solver` or :func:`tvl1_solver`; both are picklable.
    initial_flow : ndarray, shape (reference_image.ndim, M, N[, P[, ...]]), optional
        Full-resolution starting flow (e.g. from a coarser pass or a neighbouring tile).
        Default: zero. It is reduced to the coarsest level used, so pass ``num_levels=1``
        to refine it at full resolution only (no pyramid), or a small ``num_levels`` to let
        only the finest levels correct it. It is never modified.
    downscale : float, optional
        Size ratio between consecutive levels, > 1.
    num_levels : int, optional
        Most levels, full resolution included (>= 1). None: up to 10, as scikit-image.
        Fewer levels are used when ``min_size`` stops the pyramid earlier.
    min_size : int, optional
        A level is only reduced further while its smallest axis is larger than
        ``downscale * min_size`` pixels.
    dtype : {numpy.float32, numpy.float64}, optional
        Working and output precision.
    spacing : float or sequence of float, optional
        Voxel size per axis (any one unit), for anisotropic data (e.g. ``(50, 4, 4)`` for EM
        sections of 50 nm imaged at 4 nm). Each pyramid step then reduces only the axes whose
        voxel is finer than twice the finest voxel of that level, so a coarse axis waits until
        the others have caught up; the stopping rule (``min_size``) applies to the axes being
        reduced. A solver with an ``at_spacing(spacing)`` method (those of
        :func:`ilk_solver` and :func:`tvl1_solver`) is given each level's voxel size, so its
        windows cover the same physical extent along every axis. None (default): every axis
        reduced at every step, as scikit-image; an isotropic ``spacing`` gives the same result.

    Returns
    -------
    flow : ndarray, shape (reference_image.ndim, M, N[, P[, ...]])
        ``dtype`` displacement, in voxels of each axis whatever ``spacing``, such that
        ``warp(moving_image, flow)`` approximates ``reference_image``.

    Raises
    ------
    chunkreg.errors.InputError
        Mismatched shapes, an axis shorter than 2 pixels, NaN/inf, non-float ``dtype``,
        a non-callable solver, an ``initial_flow`` of the wrong shape or with NaN/inf, or
        ``downscale``, ``num_levels``, ``min_size`` out of range.

    References
    ----------
    .. [1] Le Besnerais, G., & Champagnat, F. (2005). Dense optical flow by iterative local
       window registration. IEEE ICIP 2005, I-137. :DOI:`10.1109/ICIP.2005.1529706`

    Examples
    --------
    >>> import numpy as np
    >>> from chunkreg.registration import coarse_to_fine, ilk_solver
    >>> from chunkreg.testing import apply_flow, smooth_displacement, textured_image
    >>> reference = textured_image((96, 96), seed=1)
    >>> truth = smooth_displacement((96, 96), amplitude=2.0, seed=2)
    >>> moving = apply_flow(reference, -truth)
    >>> flow = coarse_to_fine(reference, moving, ilk_solver(radius=5))
    >>> bool(np.abs(flow - truth).mean() < 0.1)
    True

    Refine a known estimate at full resolution only:

    >>> refined = coarse_to_fine(reference, moving, ilk_solver(), initial_flow=flow,
    ...                          num_levels=1)
    """
    if not callable(solver):
        raise InputError(
            f"solver must be callable as solver(reference, moving, flow0), got {solver!r}; "
            "use ilk_solver() or tvl1_solver()."
        )
    if isinstance(downscale, bool) or not isinstance(downscale, numbers.Real) or downscale <= 1:
        raise InputError(f"downscale must be a number > 1, got {downscale!r}.")
    if num_levels is None:
        num_levels = DEFAULT_NUM_LEVELS
    elif (
        isinstance(num_levels, bool)
        or not isinstance(num_levels, numbers.Integral)
        or num_levels < 1
    ):
        raise InputError(f"num_levels must be an integer >= 1 or None, got {num_levels!r}.")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise InputError(f"min_size must be an integer >= 1, got {min_size!r}.")
    ref, mov = prepare_images(reference_image, moving_image, dtype)
    spacing = check_spacing(spacing, ref.ndim)
    if initial_flow is not None:
        initial_flow = np.asarray(initial_flow)
        expected = (ref.ndim, *ref.shape)
        if initial_flow.shape != expected:
            raise InputError(
                f"initial_flow must have shape (ndim, *reference_image.shape) = {expected}, "
                f"got {initial_flow.shape}."
            )
        if initial_flow.dtype.kind not in "iuf":
            raise InputError(f"initial_flow must be real-valued, got dtype {initial_flow.dtype}.")
        check_finite(initial_flow, "initial_flow")
    return run_pyramid(
        ref,
        mov,
        solver,
        initial_flow=initial_flow,
        downscale=float(downscale),
        num_levels=int(num_levels),
        min_size=int(min_size),
        spacing=spacing,
    )


def run_pyramid(
    ref: np.ndarray,
    mov: np.ndarray,
    solver: Solver,
    *,
    initial_flow: np.ndarray | None = None,
    downscale: float = 2.0,
    num_levels: int = DEFAULT_NUM_LEVELS,
    min_size: int = 16,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """:func:`coarse_to_fine` on already validated images (same dtype, same shape) and a
    validated ``spacing`` (None or one float per axis)."""
    dt = ref.dtype
    steps = _pyramid_steps(ref.shape, downscale, num_levels, min_size, spacing)
    count = len(steps) + 1
    ref_levels = _pyramid(ref, steps)
    mov_levels = _pyramid(mov, steps)
    if initial_flow is not None:
        flow = _reduce_flow(initial_flow.astype(dt, copy=True), steps)
    else:
        flow = np.zeros((ref.ndim, *ref_levels[-1].shape), dtype=dt)
    at_spacing = getattr(solver, "at_spacing", None) if spacing is not None else None
    for level in range(count - 1, -1, -1):
        level_ref, level_mov = ref_levels[level], mov_levels[level]
        if flow.shape[1:] != level_ref.shape:
            flow = _rescale_flow(flow, level_ref.shape)
        level_solver = solver
        if at_spacing is not None:  # the level's voxel size
            level_spacing = (
                np.multiply(spacing, np.prod(steps[:level], axis=0)) if level else spacing
            )
            level_solver = at_spacing(tuple(float(v) for v in level_spacing))
        flow = level_solver(level_ref, level_mov, flow)
        ref_levels[level] = mov_levels[level] = None  # free each level once solved
    return np.asarray(flow, dtype=dt)
