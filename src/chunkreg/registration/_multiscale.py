"""Pure kernels of the distributed coarse-to-fine flow: pyramid step, flow upsampling, refinement.

Numpy and scipy only (no dask, no zarr): each function works on one region of a volume, given
where the region lies, and returns the same values the whole-volume computation has there.

Geometry: level ``L + 1`` halves level ``L`` along every axis it reduces (``step`` 2; all of
them unless the voxels are anisotropic, see :func:`chunkreg.volume.plan_flow`); its voxel ``i``
covers voxels ``2i`` and ``2i + 1`` of level ``L`` there, so its centre lies at ``2i + 0.5`` in
level-``L`` coordinates, and a displacement of one level-``L + 1`` voxel is two level-``L``
voxels. Along an axis of ``step`` 1 both levels share the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "PYRAMID_DEPTH",
    "compose_flows",
    "downsample_region",
    "downsample_source",
    "initial_flow",
    "initial_flow_points",
    "level_step",
    "prewarp",
    "refine_region",
    "upsample_flow_region",
    "upsample_source",
]

#: Gaussian blur before halving, as the kernels' pyramid (``sigma = downscale / 3``).
PYRAMID_SIGMA = 2.0 / 3.0
_TRUNCATE = 4.0
#: Voxels of the finer level a downsampled voxel depends on beyond its own two.
PYRAMID_DEPTH = int(_TRUNCATE * PYRAMID_SIGMA + 0.5)
#: Size ratio between consecutive levels.
FACTOR = 2
#: Gaussian blur (voxels of the finer level) of an upsampled flow before it starts a refinement.
INITIAL_SIGMA = 1.5
_INITIAL_DEPTH = int(_TRUNCATE * INITIAL_SIGMA + 0.5)


def level_step(fine_shape: Sequence[int], coarse_shape: Sequence[int]) -> tuple[int, ...]:
    """Per axis, how many voxels of a level one voxel of the next coarser level spans (1 or 2)."""
    return tuple(1 if m == n else FACTOR for n, m in zip(fine_shape, coarse_shape, strict=True))


def _steps(step, ndim: int) -> tuple[int, ...]:
    return (FACTOR,) * ndim if step is None else tuple(int(s) for s in step)


def downsample_source(
    core: Sequence[slice], fine_shape: Sequence[int], step: Sequence[int] | None = None
) -> tuple[slice, ...]:
    """Region of the finer level that a region ``core`` of the coarser level is computed from.

    ``core`` times ``step`` (default 2 per axis), grown by :data:`PYRAMID_DEPTH` for the blur
    along the axes halved, clipped to ``fine_shape``.
    """
    step = _steps(step, len(core))
    return tuple(
        slice(max(f * c.start - d, 0), min(f * c.stop + d, n))
        for c, n, f in zip(core, fine_shape, step, strict=True)
        for d in [PYRAMID_DEPTH if f > 1 else 0]
    )


def downsample_region(
    region: np.ndarray,
    region_start: Sequence[int],
    core: Sequence[slice],
    fine_shape,
    step: Sequence[int] | None = None,
) -> np.ndarray:
    """One pyramid step (Gaussian blur, then the mean of each 2 x 2 (x 2) block) for a region.

    Along the axes where ``step`` is 1 (default: none) neither the blur nor the mean applies.

    Parameters
    ----------
    region : ndarray
        The finer level over ``downsample_source(core, fine_shape)``, starting at
        ``region_start``.
    region_start : sequence of int
        Position of ``region``'s first voxel in the finer level.
    core : sequence of slice
        The region of the coarser level to compute (coarse voxel indices).
    fine_shape : sequence of int
        Shape of the whole finer level.

    Returns
    -------
    ndarray of float32, shape of ``core``
        Equal to the same step applied to the whole finer level, restricted to ``core``: the
        blur reflects at the level's edges only (elsewhere the region holds the voxels it
        needs), and a last block that overhangs an odd-sized axis repeats the edge voxel.
    """
    step = _steps(step, region.ndim)
    sigma = [PYRAMID_SIGMA if f > 1 else 0.0 for f in step]
    blurred = ndi.gaussian_filter(
        np.asarray(region, dtype=np.float32), sigma, mode="reflect", truncate=_TRUNCATE
    )
    pick, pad = [], []
    for c, s, n, f in zip(core, region_start, fine_shape, step, strict=True):
        a, b = f * c.start, min(f * c.stop, n)
        pick.append(slice(a - s, b - s))
        pad.append((0, f * (c.stop - c.start) - (b - a)))
    out = blurred[tuple(pick)]
    if any(p[1] for p in pad):
        out = np.pad(out, pad, mode="edge")
    for axis, f in enumerate(step):
        if f == 1:
            continue
        n = out.shape[axis]
        out = out.reshape((*out.shape[:axis], n // f, f, *out.shape[axis + 1 :]))
        out = out.mean(axis=axis + 1, dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _positions(region: slice, coarse_n: int, factor: int = FACTOR) -> np.ndarray:
    """Coarse coordinates of the fine voxels of ``region`` (clamped to the coarse level)."""
    x = np.arange(region.start, region.stop, dtype=np.float64)
    return np.clip((x + 0.5) / factor - 0.5, 0.0, coarse_n - 1.0)


def _keys(t: np.ndarray) -> list[np.ndarray]:
    """Weights of Keys' cubic convolution (a = -0.5) for the taps -1, 0, 1, 2 at fraction t."""
    t2, t3 = t * t, t * t * t
    return [
        -0.5 * t3 + t2 - 0.5 * t,
        1.5 * t3 - 2.5 * t2 + 1.0,
        -1.5 * t3 + 2.0 * t2 + 0.5 * t,
        0.5 * t3 - 0.5 * t2,
    ]


def upsample_source(
    fine: Sequence[slice], coarse_shape: Sequence[int], step: Sequence[int] | None = None
) -> tuple[slice, ...]:
    """Region of the coarser flow that :func:`upsample_flow_region` needs for ``fine``."""
    out = []
    for s, m, f in zip(fine, coarse_shape, _steps(step, len(fine)), strict=True):
        p = _positions(slice(s.start, s.stop), m, f)
        lo = max(math.floor(p[0]) - 1, 0)
        hi = min(math.floor(p[-1]) + 3, m)
        out.append(slice(lo, hi))
    return tuple(out)


def upsample_flow_region(
    coarse: np.ndarray,
    coarse_start: Sequence[int],
    fine: Sequence[slice],
    coarse_shape,
    step: Sequence[int] | None = None,
) -> np.ndarray:
    """A coarser level's flow, resampled onto a region of the finer level.

    Separable cubic convolution (Keys, ``a = -0.5``): local (four coarse voxels per axis, so a
    region is computed exactly from a slightly larger coarse region), continuous with its first
    derivative, and exact for quadratic fields, so it adds no pattern of its own at the
    two-voxel period of the upsampling (linear interpolation would: its slope changes at every
    coarse voxel centre, which the seam metric reads as steps).

    Parameters
    ----------
    coarse : ndarray, shape (ndim, *R)
        The coarser flow over ``upsample_source(fine, coarse_shape)``, starting at
        ``coarse_start``.
    coarse_start : sequence of int
        Position of ``coarse[:, 0, ...]`` in the coarser level.
    fine : sequence of slice
        Region of the finer level to fill.
    coarse_shape : sequence of int
        Shape of the whole coarser level.
    step : sequence of int, optional
        Per axis, 2 where the coarser level halves the finer one, 1 where both share the grid
        (the values along it are kept); default 2 everywhere.

    Returns
    -------
    ndarray of float32, shape (ndim, *fine_shape)
        Displacements in voxels of the finer level (each coarse component times its axis's
        step), the same as upsampling the whole coarser flow; beyond the coarse voxel centres
        at the level's edges the edge value is repeated.
    """
    out = np.asarray(coarse, dtype=np.float32)
    ndim = out.shape[0]
    step = _steps(step, ndim)
    for axis, (s, start, m) in enumerate(zip(fine, coarse_start, coarse_shape, strict=True)):
        out = _upsample_axis(out, axis, s, start, m, step[axis])
    factors = np.asarray(step, dtype=np.float32).reshape((ndim,) + (1,) * ndim)
    return np.ascontiguousarray(out * factors, dtype=np.float32)


def _upsample_axis(
    values: np.ndarray, axis: int, fine: slice, start: int, m: int, factor: int = FACTOR
):
    """:func:`upsample_flow_region` along one spatial axis (values not scaled).

    Along an axis of ``factor`` 1 both levels share the grid: the values are only cropped.
    """
    if factor == 1:
        index = [slice(None)] * values.ndim
        index[axis + 1] = slice(fine.start - start, fine.stop - start)
        return values[tuple(index)]
    p = _positions(fine, m, factor)
    i0 = np.floor(p).astype(np.intp)
    t = p - i0
    shape = (-1,) + (1,) * (values.ndim - 2 - axis)
    acc = None
    for k, w in zip((-1, 0, 1, 2), _keys(t), strict=True):
        idx = np.clip(i0 + k, 0, m - 1) - start
        term = np.take(values, idx, axis=axis + 1) * w.astype(np.float32).reshape(shape)
        acc = term if acc is None else acc + term
    return acc


def initial_flow(
    read_coarse: Callable[[tuple[slice, ...]], np.ndarray],
    region: Sequence[slice],
    fine_shape: Sequence[int],
    coarse_shape: Sequence[int],
    step: Sequence[int] | None = None,
) -> np.ndarray:
    """The initial flow of a refinement over ``region``: upsampled, then slightly blurred.

    The coarser flow varies from voxel to voxel by its estimation noise; upsampled, that noise
    has a two-voxel period that a refinement would keep (it only adds a window-smooth residual)
    and that reads as steps at even positions. A Gaussian blur of :data:`INITIAL_SIGMA` voxels
    removes it; measured, it also lowers the endpoint error (docs/tiling.md). The blur is
    computed from a region grown by its reach, so the result equals blurring the whole
    upsampled flow (``mode="nearest"`` at the level's edges).

    Parameters
    ----------
    read_coarse : callable
        ``read_coarse(slices) -> ndarray`` of shape ``(ndim, *region_shape)``: reads the coarser
        flow (all components) over the given region of the coarser level.
    region : sequence of slice
        Region of the finer level.
    fine_shape, coarse_shape : sequence of int
        Shapes of the finer and coarser levels.
    step : sequence of int, optional
        As for :func:`upsample_flow_region`; the blur only runs along the axes upsampled.

    Returns
    -------
    ndarray of float32, shape (ndim, *region_shape)
    """
    step = _steps(step, len(region))
    reach = [_INITIAL_DEPTH if f > 1 else 0 for f in step]
    grown = tuple(
        slice(max(s.start - d, 0), min(s.stop + d, n))
        for s, n, d in zip(region, fine_shape, reach, strict=True)
    )
    src = upsample_source(grown, coarse_shape, step)
    coarse = read_coarse(src)
    flow = upsample_flow_region(coarse, [s.start for s in src], grown, coarse_shape, step)
    sigma = [INITIAL_SIGMA if f > 1 else 0.0 for f in step]
    for component in flow:
        ndi.gaussian_filter(component, sigma, output=component, mode="nearest", truncate=_TRUNCATE)
    crop = tuple(
        slice(s.start - g.start, s.stop - g.start) for s, g in zip(region, grown, strict=True)
    )
    return np.ascontiguousarray(flow[(slice(None), *crop)])


def initial_flow_points(
    read_coarse: Callable[[tuple[slice, ...]], np.ndarray],
    region: Sequence[slice],
    points: Sequence[np.ndarray],
    fine_shape: Sequence[int],
    coarse_shape: Sequence[int],
    step: Sequence[int] | None = None,
) -> np.ndarray:
    """:func:`initial_flow` at the outer product of ``points`` only.

    For a kernel that needs the initial flow at a few voxels (DIS: its patch centres). The
    upsampling and the blur are separable, so they run one axis at a time, each keeping only
    the positions asked for before the next: a small part of the dense computation, with the
    same values (to float rounding).

    Parameters
    ----------
    read_coarse, region, fine_shape, coarse_shape, step
        As for :func:`initial_flow`.
    points : sequence of ndarray of int
        Positions per axis, local to ``region``.

    Returns
    -------
    ndarray of float32, shape (ndim, *[len(p) for p in points])
    """
    step = _steps(step, len(region))
    grown = tuple(
        slice(max(s.start - d, 0), min(s.stop + d, n))
        for s, n, f in zip(region, fine_shape, step, strict=True)
        for d in [_INITIAL_DEPTH if f > 1 else 0]
    )
    src = upsample_source(grown, coarse_shape, step)
    values = np.asarray(read_coarse(src), dtype=np.float32)
    for axis, (g, s, r, m) in enumerate(zip(grown, src, region, coarse_shape, strict=True)):
        values = _upsample_axis(values, axis, g, s.start, m, step[axis])
        if step[axis] > 1:
            ndi.gaussian_filter1d(values, INITIAL_SIGMA, axis=axis + 1, output=values,
                                  mode="nearest", truncate=_TRUNCATE)  # fmt: skip
        pick = np.asarray(points[axis], dtype=np.intp) + (r.start - g.start)
        values = np.take(values, pick, axis=axis + 1)
    values *= np.asarray(step, dtype=np.float32).reshape((-1,) + (1,) * len(step))
    return np.ascontiguousarray(values)


def prewarp(
    region: np.ndarray,
    region_start: Sequence[int],
    flow: np.ndarray,
    flow_start: Sequence[int],
    *,
    order: int = 3,
) -> np.ndarray:
    """Sample a region of the moving volume at ``x + flow(x)`` for the voxels ``x`` of a tile.

    ``region`` must hold every sample (plus the spline support); outside the volume the edge
    voxel repeats, as the kernels' ``warp(mode="edge")``. Returns float32 of ``flow.shape[1:]``.
    """
    ndim = region.ndim
    coords = np.array(flow, dtype=np.float64, copy=True)
    for axis in range(ndim):
        offset = flow_start[axis] - region_start[axis]
        line = np.arange(flow.shape[axis + 1], dtype=np.float64) + offset
        coords[axis] += line.reshape((-1,) + (1,) * (ndim - 1 - axis))
    data = np.asarray(region, dtype=np.float32)
    return ndi.map_coordinates(data, coords, output=np.float32, order=order, mode="nearest")


def compose_flows(residual: np.ndarray, initial: np.ndarray, keep: Sequence[slice]) -> np.ndarray:
    """Total displacement ``r(x) + u0(x + r(x))`` of a pre-warp by ``u0`` then a residual ``r``.

    Moving sampled at ``y + u0(y)`` and then at ``x + r(x)`` is moving sampled at
    ``x + r(x) + u0(x + r(x))``. Both flows cover the same region; the result covers ``keep``
    (slices into that region), with ``u0`` interpolated linearly and clamped at the region's
    edges.
    """
    ndim = residual.shape[0]
    r = residual[(slice(None), *keep)].astype(np.float64)
    coords = r.copy()
    for axis, s in enumerate(keep):
        line = np.arange(s.start, s.stop, dtype=np.float64)
        coords[axis] += line.reshape((-1,) + (1,) * (ndim - 1 - axis))
    out = np.empty(r.shape, dtype=np.float32)
    for axis in range(ndim):
        ndi.map_coordinates(
            np.asarray(initial[axis], dtype=np.float32), coords, output=out[axis], order=1,
            mode="nearest",
        )  # fmt: skip
    out += r.astype(np.float32)
    return out


def refine_region(
    reference: np.ndarray,
    moving_region: np.ndarray,
    moving_start: Sequence[int],
    initial: np.ndarray,
    read_start: Sequence[int],
    solve: Callable[[np.ndarray, np.ndarray], np.ndarray],
    keep: Sequence[slice],
) -> np.ndarray:
    """Refine an initial flow on one tile: pre-warp the moving image, solve, compose.

    The moving image is first resampled at ``x + initial(x)`` (cubic), from a region of the
    moving volume read wherever the initial flow points, so the tile's halo need not cover the
    displacement itself: ``solve`` only looks for the small residual motion between the
    reference and the pre-warped moving image. The total flow is the composition of both.

    Parameters
    ----------
    reference : ndarray, shape S
        The reference over the tile's read region, which starts at ``read_start``.
    moving_region : ndarray
        The part of the moving volume the pre-warp samples, starting at ``moving_start``.
    moving_start : sequence of int
        Position of ``moving_region``'s first voxel.
    initial : ndarray, shape (ndim, *S)
        Initial flow over the read region (from the coarser level).
    read_start : sequence of int
        Position of the read region's first voxel.
    solve : callable
        ``solve(reference, moving) -> flow`` of shape ``(ndim, *S)``: the residual.
    keep : sequence of slice
        Part of the read region (local slices) to return.

    Returns
    -------
    ndarray of float32, shape (ndim, *keep_shape)
    """
    warped = prewarp(moving_region, moving_start, initial, read_start)
    residual = np.asarray(solve(reference, warped))
    expected = (reference.ndim, *reference.shape)
    if residual.shape != expected:
        raise ValueError(f"the kernel returned shape {residual.shape}, expected {expected}")
    return compose_flows(residual, initial, keep)
