"""Pure kernels of the global affine estimation (numpy/scipy only, no I/O).

A reference block is compared with the moving volume resampled through the current estimate
over the same voxels; the shift that registers them (windowed phase correlation) turns the
block's centre into a point correspondence: reference point ``c`` shows what the moving volume
shows at ``matrix @ (c - shift)``. A robust fit of many such pairs is the next estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._affine import apply_affine
from ._block_kernels import estimate_shift, shifted_ncc

__all__ = [
    "affine_bounds",
    "block_match",
    "inside_fraction",
    "resample_affine",
]

_MODES = {"edge": "nearest", "constant": "grid-constant"}
_PREFILTER_DEPTH = 12  # voxels beyond the needed box so a cubic prefilter matches the volume's


def affine_bounds(matrix, region: Sequence[slice], shape, order: int) -> tuple[slice, ...]:
    """Region of the moving volume that resampling ``region`` (reference voxels) needs.

    The box around the images of the region's corners (exact for an affine map), grown by the
    spline support of ``order`` (and a prefilter margin for ``order > 1``), clipped to the
    volume ``shape`` but never empty.
    """
    ndim = len(region)
    corners = (
        np.array(np.meshgrid(*[(s.start, s.stop - 1) for s in region], indexing="ij"))
        .reshape(ndim, -1)
        .T
    )
    mapped = apply_affine(matrix, corners)
    margin = order // 2 + 2 + (_PREFILTER_DEPTH if order > 1 else 0)
    out = []
    for axis, n in enumerate(shape):
        lo = math.floor(mapped[:, axis].min()) - margin
        hi = math.floor(mapped[:, axis].max()) + margin + 1
        lo = min(max(lo, 0), n - 1)
        out.append(slice(lo, max(min(hi, n), lo + 1)))
    return tuple(out)


def inside_fraction(matrix, region: Sequence[slice], shape, samples: int = 8) -> float:
    """Fraction of ``region`` (on a ``samples``-per-axis grid) that maps inside a volume of
    ``shape``: the rest would be resampled from beyond its edges, where there is no data."""
    axes = [np.linspace(s.start, s.stop - 1, min(samples, s.stop - s.start)) for s in region]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(region))
    mapped = apply_affine(matrix, points)
    inside = np.all((mapped >= 0) & (mapped <= np.asarray(shape) - 1), axis=1)
    return float(inside.mean())


def resample_affine(
    source: np.ndarray,
    source_start: Sequence[int],
    matrix,
    region: Sequence[slice],
    *,
    order: int = 1,
    mode: str = "edge",
    cval: float = 0.0,
) -> np.ndarray:
    """Sample the moving volume at ``matrix @ x`` for the reference voxels ``x`` of ``region``.

    Parameters
    ----------
    source : ndarray
        Part of the moving volume (at least :func:`affine_bounds` of ``region``) whose first
        voxel is ``source_start``.
    source_start : sequence of int
        Position of ``source``'s first voxel in the moving volume.
    matrix : ndarray, shape (ndim + 1, ndim + 1)
        Reference to moving voxel coordinates.
    region : sequence of slice
        Reference voxels to compute.
    order : int
        Spline order, 0 to 5.
    mode : {"edge", "constant"}
        Outside the moving volume: repeat the edge voxel, or ``cval``.
    cval : float
        Fill value for ``mode="constant"``.

    Returns
    -------
    ndarray of float32 (float64 for float64 input), shape of ``region``
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0] - 1
    dtype = np.float64 if source.dtype == np.float64 else np.float32
    start = np.array([s.start for s in region], dtype=np.float64)
    offset = m[:n, :n] @ start + m[:n, n] - np.asarray(source_start, dtype=np.float64)
    return ndimage.affine_transform(
        np.asarray(source, dtype=dtype),
        m[:n, :n],
        offset=offset,
        output_shape=tuple(s.stop - s.start for s in region),
        output=dtype,
        order=order,
        mode=_MODES[mode],
        cval=cval,
    )


def block_match(
    reference: np.ndarray,
    warped: np.ndarray,
    *,
    upsample_factor: int = 20,
    min_std: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Shift registering a warped moving block onto its reference block, and its quality.

    Returns
    -------
    shift : ndarray of float64, shape (ndim,)
        NaN when a block is constant (blank), or at most ``min_std``.
    quality : float
        NCC between the reference and the warped block shifted by ``shift`` (NaN if none).
    """
    nan = np.full(reference.ndim, np.nan)
    std_r, std_m = float(reference.std()), float(warped.std())
    if not (std_r > min_std and std_m > min_std and math.isfinite(std_r + std_m)):
        return nan, float("nan")
    shift, _ = estimate_shift(reference, warped, upsample_factor=upsample_factor)
    if not np.all(np.isfinite(shift)):
        return nan, float("nan")
    return shift, shifted_ncc(reference, warped, shift)


def block_regions(shape, block, *, max_blocks: int | None = None) -> list[tuple[slice, ...]]:
    """Blocks of ``block`` voxels tiling ``shape`` (the last ones may be smaller, but at least
    half a block), thinned to an evenly spread subset of at most ``max_blocks``."""
    axes = []
    for n, b in zip(shape, block, strict=True):
        starts = list(range(0, max(n - b // 2, 1), b))
        axes.append(starts)
    if max_blocks is not None:
        while np.prod([len(a) for a in axes]) > max_blocks:
            longest = max(range(len(axes)), key=lambda i: len(axes[i]))
            keep = np.linspace(0, len(axes[longest]) - 1, len(axes[longest]) - 1)
            axes[longest] = [axes[longest][round(k)] for k in keep]
    grids = np.meshgrid(*[np.asarray(a) for a in axes], indexing="ij")
    starts = np.stack([g.ravel() for g in grids], axis=-1)
    return [
        tuple(slice(int(s), min(int(s) + b, n)) for s, b, n in zip(row, block, shape, strict=True))
        for row in starts
    ], tuple(len(a) for a in axes)


def centre(region: Sequence[slice]) -> np.ndarray:
    """Centre of a region, in voxels."""
    return np.array([(s.start + s.stop - 1) / 2 for s in region], dtype=np.float64)


def correspondence(matrix, region: Sequence[slice], shift) -> tuple[np.ndarray, np.ndarray]:
    """Reference point (the block's centre) and the moving point it shows, given the shift
    registering the block of the moving volume resampled through ``matrix``."""
    c = centre(region)
    return c, apply_affine(matrix, c - np.asarray(shift, dtype=np.float64))


def _iteration(ref, mov, matrix, regions, fit: dict):
    """One pass: resample through ``matrix``, match every block, fit; (matrix, stage) or None
    when no block matched (or no consensus was found)."""
    from ..errors import InputError
    from ._affine import ransac_affine, transform_residuals

    ndim = ref.ndim
    whole = tuple(slice(0, n) for n in ref.shape)
    warped = resample_affine(mov, (0,) * ndim, matrix, whole, order=1)
    src, dst = [], []
    for region in regions:
        shift, quality = block_match(ref[region], warped[region],
                                     upsample_factor=fit["upsample_factor"],
                                     min_std=fit["min_std"])  # fmt: skip
        if np.all(np.isfinite(shift)) and quality > fit["min_quality"]:
            c, m = correspondence(matrix, region, shift)
            src.append(c)
            dst.append(m)
    try:
        new, inliers = ransac_affine(np.array(src).reshape(-1, ndim),
                                     np.array(dst).reshape(-1, ndim), model=fit["model"],
                                     threshold=fit["threshold"], seed=fit["seed"])  # fmt: skip
    except InputError:
        return None
    r = transform_residuals(new, np.array(src), np.array(dst))[inliers]
    return new, {"pairs": len(src), "inliers": int(inliers.sum()),
                 "rms": float(np.sqrt(np.mean(r**2)))}  # fmt: skip


def _start(ref, mov, turn, upsample_factor: int) -> np.ndarray:
    """A starting estimate: the rotation ``turn`` (about the centre), then the translation a
    global phase correlation finds between the reference and the moving volume turned so."""
    ndim = ref.ndim
    whole = tuple(slice(0, n) for n in ref.shape)
    turned = resample_affine(mov, (0,) * ndim, turn, whole, order=1, mode="constant",
                             cval=float(mov.mean()))  # fmt: skip
    shift, _ = estimate_shift(ref, turned, upsample_factor=upsample_factor)
    move = np.eye(ndim + 1)
    if np.all(np.isfinite(shift)):
        move[:ndim, ndim] = -shift
    return turn @ move


def _turns(shape, degrees: float = 8.0) -> list[np.ndarray]:
    """Rotations about the volume's centre by +-``degrees`` and twice that (2-D), or by
    +-``degrees`` about each axis (3-D): starting points for large rotations."""
    from ._affine import rotation_matrix

    ndim = len(shape)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    if ndim == 2:
        angles = [[a] for a in (-2 * degrees, -degrees, degrees, 2 * degrees)]
    else:
        angles = [np.roll([sign * degrees, 0.0, 0.0], k) for k in range(3) for sign in (-1, 1)]
    out = []
    for a in angles:
        turn = np.eye(ndim + 1)
        rot = rotation_matrix(np.radians(a), ndim=ndim)
        turn[:ndim, :ndim] = rot
        turn[:ndim, ndim] = centre - rot @ centre
        out.append(turn)
    return out


def estimate_in_memory(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    model: str = "affine",
    block,
    iterations: int = 6,
    threshold: float = 1.5,
    upsample_factor: int = 20,
    min_std: float = 0.0,
    seed: int = 0,
    initial=None,
    min_quality: float = 0.2,
) -> tuple[np.ndarray, list[dict]]:
    """Estimate the affine between two (coarse) volumes held in memory.

    A global phase correlation gives the starting translation (unless ``initial`` is given).
    Each iteration then resamples the moving volume through the estimate, measures every
    block's shift, and refits the transform to the correspondences by RANSAC and least
    squares. When the first iteration finds a weak consensus (fewer than half of the matched
    blocks, as after a large rotation), starts rotated about the centre (each with its own
    global phase correlation) are tried too and the one with the largest consensus is kept. While far off, a similarity is fitted (it cannot
    chase a wrong consensus as a general affine can), then ``model``; stops once the estimate
    moves no voxel by more than 0.05.

    Returns
    -------
    matrix : ndarray, shape (ndim + 1, ndim + 1)
        Reference to moving voxels of these arrays.
    stages : list of dict
        Per iteration: ``pairs``, ``inliers``, ``rms``.

    Raises
    ------
    InputError
        No start yields a consensus (no usable blocks).
    """
    from ..errors import InputError
    from ._affine import min_samples

    ndim = reference.ndim
    ref = np.asarray(reference, dtype=np.float32)
    mov = np.asarray(moving, dtype=np.float32)
    if initial is None:
        matrix = _start(ref, mov, np.eye(ndim + 1), upsample_factor)
    else:
        matrix = np.asarray(initial, dtype=np.float64)
    regions, _ = block_regions(ref.shape, block)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in ref.shape], indexing="ij"))
    corners = corners.reshape(ndim, -1).T
    fitted = "similarity" if model == "affine" else model
    fit = {"model": fitted, "threshold": threshold, "seed": seed, "min_std": min_std,
           "min_quality": min_quality, "upsample_factor": upsample_factor}  # fmt: skip
    first = _iteration(ref, mov, matrix, regions, fit)
    weak = first is None or first[1]["inliers"] < max(0.5 * first[1]["pairs"],
                                                      3 * min_samples(fitted, ndim))  # fmt: skip
    if weak and model != "translation" and initial is None:
        tries = [first] + [_iteration(ref, mov, _start(ref, mov, turn, upsample_factor),
                                      regions, fit) for turn in _turns(ref.shape)]  # fmt: skip
        tries = [t for t in tries if t is not None]
        first = max(tries, key=lambda t: t[1]["inliers"], default=None)
    if first is None:
        raise InputError(
            "no block of the coarse level matched (blank or unrelated volumes?); check the "
            "inputs, or lower min_quality / use a finer level."
        )
    matrix, stage = first
    stages = [stage]
    for _ in range(iterations - 1):
        step = _iteration(ref, mov, matrix, regions, fit)
        if step is None:
            break
        new, stage = step
        stages.append(stage)
        moved = np.abs(apply_affine(new, corners) - apply_affine(matrix, corners)).max()
        matrix = new
        if moved < 0.05 or (fit["model"] != model and moved < 1.0):
            if fit["model"] == model:
                break
            fit["model"] = model
    return matrix, stages
