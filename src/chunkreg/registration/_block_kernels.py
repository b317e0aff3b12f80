"""Pure per-block kernels of blockwise rigid registration (numpy/scipy only, no I/O).

A block's shift is estimated by windowed phase cross-correlation, refined once on the parts of
the two blocks that show the same content at the integer shift, and scored by the normalised
cross-correlation between the reference block and the moving block after shifting.
Blocks whose shift disagrees with their neighbours' are outliers; unusable blocks are filled
from their reliable neighbours.
"""

from __future__ import annotations

import itertools

import numpy as np

from ._metrics import normalized_cross_correlation
from ._phase_cross_correlation import phase_cross_correlation

__all__ = [
    "common_regions",
    "estimate_shift",
    "fill_unreliable",
    "find_outliers",
    "hann_window",
    "shifted_ncc",
]


def hann_window(shape) -> np.ndarray:
    """Separable Hann window of ``shape`` (float32), 1 along axes of length 1 or 2."""
    window = np.ones((), dtype=np.float32)
    for n in shape:
        w = np.hanning(n + 2)[1:-1] if n > 2 else np.ones(n)
        window = np.multiply.outer(window, w.astype(np.float32))
    return window


def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample_factor: int = 10,
    normalization: str | None = None,
) -> tuple[np.ndarray, float]:
    """Shift registering ``moving`` onto ``reference``, by windowed phase cross-correlation.

    Both blocks have their mean removed and are multiplied by a Hann window, which suppresses
    the wrap-around edges that bias correlation of non-periodic blocks.

    Parameters
    ----------
    reference, moving : ndarray, shape (M, N[, P])
        Blocks of equal shape.
    upsample_factor : int
        Sub-pixel precision is ``1 / upsample_factor`` pixel.
    normalization : {None, "phase"}
        Passed to :func:`chunkreg.phase_cross_correlation`. None (plain cross-correlation) is
        more robust on small, band-limited or noisy blocks.

    Returns
    -------
    shift : ndarray of float64, shape (ndim,)
        ``ndimage.shift(moving, shift)`` approximates ``reference``; NaN if the correlation
        failed (e.g. a constant block).
    error : float
        Translation-invariant normalised RMS error of the correlation (0 is a perfect match);
        NaN on failure.
    """
    window = hann_window(reference.shape)
    ref = (reference - reference.mean(dtype=np.float64)).astype(np.float32) * window
    mov = (moving - moving.mean(dtype=np.float64)).astype(np.float32) * window
    if not (np.any(ref) and np.any(mov)):  # a constant block: nothing to correlate
        return np.full(reference.ndim, np.nan), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        shift, error, _ = phase_cross_correlation(
            ref,
            mov,
            upsample_factor=upsample_factor,
            normalization=normalization,
        )  # returns (shifts, error, phasediff) by default
    shift = np.asarray(shift, dtype=np.float64)
    if not np.all(np.isfinite(shift)):
        return np.full(reference.ndim, np.nan), float("nan")
    return shift, float(error)


def common_regions(shape, integer_shift) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Parts of two equally shaped blocks that show the same content, given a block's shift.

    If ``ndimage.shift(moving, k)`` matches ``reference`` for an integer ``k``, then
    ``reference[R]`` matches ``moving[R - k]``; this returns the largest such ``R`` inside the
    block and ``R - k`` (local slices), or ``None`` if they do not overlap.

    Examples
    --------
    >>> common_regions((10, 8), (3, -2))
    ((slice(3, 10, None), slice(0, 6, None)), (slice(0, 7, None), slice(2, 8, None)))
    """
    ref_region, mov_region = [], []
    for n, k in zip(shape, integer_shift, strict=True):
        lo, hi = max(0, int(k)), min(n, n + int(k))
        if hi <= lo:
            return None
        ref_region.append(slice(lo, hi))
        mov_region.append(slice(lo - int(k), hi - int(k)))
    return tuple(ref_region), tuple(mov_region)


def shifted_ncc(
    reference: np.ndarray,
    moving: np.ndarray,
    shift,
    *,
    region: tuple[slice, ...] | None = None,
) -> float:
    """NCC between ``reference(x)`` and ``moving(x - shift)`` over ``region``.

    ``moving`` is sampled with (separable) linear interpolation; positions whose sample would
    fall outside ``moving`` are left out.

    Parameters
    ----------
    reference, moving : ndarray
        Arrays of equal shape (the same region of both volumes).
    shift : sequence of float
        Shift registering ``moving`` onto ``reference``; may be fractional.
    region : tuple of slice, optional
        Part of the arrays to compare (e.g. the block's core); all of it by default.

    Returns
    -------
    float
        Value in [-1, 1]; 0.0 when nothing valid remains or either side is constant.
    """
    shift = np.asarray(shift, dtype=np.float64)
    if region is None:
        region = tuple(slice(0, n) for n in reference.shape)
    # valid x satisfy 0 <= x - shift <= n - 1
    valid = []
    for s, d, n in zip(region, shift, reference.shape, strict=True):
        lo = max(s.start, int(np.ceil(d)))
        hi = min(s.stop, int(np.floor(n - 1 + d)) + 1)
        if hi <= lo:
            return 0.0
        valid.append(slice(lo, hi))
    valid = tuple(valid)
    # separable linear interpolation at x - shift = x + k + t, t in [0, 1)
    k = np.floor(-shift).astype(int)
    t = -shift - k
    sampled = np.zeros(tuple(v.stop - v.start for v in valid))
    for corner in itertools.product((0, 1), repeat=reference.ndim):
        weight = float(np.prod([t[a] if c else 1 - t[a] for a, c in enumerate(corner)]))
        if weight == 0.0:
            continue
        part = tuple(
            slice(v.start + d + c, v.stop + d + c) for v, d, c in zip(valid, k, corner, strict=True)
        )
        sampled += weight * moving[part]
    return normalized_cross_correlation(reference[valid], sampled)


def _neighbour_stack(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each cell's neighbours' values (faces, edges, corners), NaN where unknown or outside.

    ``values`` is ``(*grid_shape, ndim)``; the result is ``(3**grid_ndim - 1, *grid_shape,
    ndim)``.
    """
    grid_shape = known.shape
    padded = np.pad(
        np.where(known[..., None], values, np.nan),
        [*[(1, 1)] * known.ndim, (0, 0)],
        "constant",
        constant_values=np.nan,
    )
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=known.ndim) if any(o)]
    return np.stack(
        [
            padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, grid_shape, strict=True))]
            for off in offsets
        ]
    )


def fill_unreliable(shifts: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """Fill unreliable grid cells from the median of their filled neighbours, ring by ring.

    Each pass fills every unreliable cell that touches (faces, edges or corners) a cell known
    after the previous pass, with the component-wise median of those neighbours, until the
    grid is full. Reliable cells are returned unchanged.

    Parameters
    ----------
    shifts : ndarray, shape (*grid_shape, ndim)
        Per-block shifts; values of unreliable cells are ignored (may be NaN).
    reliable : ndarray of bool, shape grid_shape
        Which cells to trust.

    Returns
    -------
    ndarray of float64, shape (*grid_shape, ndim)
        All zeros if no cell is reliable (nothing to fill from).

    Examples
    --------
    >>> import numpy as np
    >>> shifts = np.array([[[1.0], [np.nan], [3.0]]])
    >>> fill_unreliable(shifts, np.array([[True, False, True]]))[..., 0]
    array([[1., 2., 3.]])
    """
    shifts = np.asarray(shifts, dtype=np.float64)
    known = np.asarray(reliable, dtype=bool).copy()
    grid_shape = known.shape
    if shifts.shape[:-1] != grid_shape:
        raise ValueError(f"shifts {shifts.shape} do not match reliable {grid_shape}")
    out = np.where(known[..., None], shifts, 0.0)
    if not known.any():
        return out
    while not known.all():
        stack = _neighbour_stack(out, known)  # (n_offsets, *grid_shape, ndim)
        count = np.isfinite(stack[..., 0]).sum(axis=0)
        todo = ~known & (count > 0)
        out[todo] = np.nanmedian(stack[:, todo], axis=0)
        known |= todo
    return out


def find_outliers(
    shifts: np.ndarray,
    reliable: np.ndarray,
    max_deviation: float,
    *,
    min_neighbours: int = 2,
) -> np.ndarray:
    """Reliable grid cells whose shift disagrees with their reliable neighbours' median.

    A cell is an outlier when the Euclidean norm of its shift minus the component-wise median
    of its reliable neighbours' shifts (faces, edges and corners) exceeds ``max_deviation``;
    cells with fewer than ``min_neighbours`` reliable neighbours are not judged. The rule is
    iterated: each pass flags only the cells whose deviation is the largest in their
    neighbourhood, removes them from the reliable set and measures again, until no cell
    exceeds the limit. A single pass would also flag the good neighbours of an outlier whose
    median it drags (the median of two neighbours is their mean), and would miss a second
    outlier whose median the first one dragged towards it.

    Parameters
    ----------
    shifts : ndarray, shape (*grid_shape, ndim)
        Per-block shifts; values of unreliable cells are ignored (may be NaN).
    reliable : ndarray of bool, shape grid_shape
        Cells to judge and to judge by.
    max_deviation : float
        Largest accepted distance, in voxels, from the neighbours' median.
    min_neighbours : int
        Fewest reliable neighbours needed to judge a cell.

    Returns
    -------
    ndarray of bool, shape grid_shape
        The outliers (a subset of ``reliable``).

    Examples
    --------
    >>> import numpy as np
    >>> shifts = np.array([[0.0], [0.5], [9.0], [1.0], [1.5]])[None]  # a 1 x 5 grid, 1-D shifts
    >>> find_outliers(shifts, np.ones((1, 5), dtype=bool), 3.0)
    array([[False, False,  True, False, False]])
    """
    shifts = np.asarray(shifts, dtype=np.float64)
    good = np.asarray(reliable, dtype=bool).copy()
    if shifts.shape[:-1] != good.shape:
        raise ValueError(f"shifts {shifts.shape} do not match reliable {good.shape}")
    outlier = np.zeros_like(good)
    while True:
        stack = _neighbour_stack(shifts, good)
        judged = good & (np.isfinite(stack[..., 0]).sum(axis=0) >= min_neighbours)
        deviation = np.full(good.shape, -np.inf)
        median = np.nanmedian(stack[:, judged], axis=0)
        deviation[judged] = np.linalg.norm(shifts[judged] - median, axis=-1)
        over = deviation > max_deviation
        if not over.any():
            return outlier
        # the worst cell of each neighbourhood: its neighbours are judged again without it
        around = _neighbour_stack(np.where(over, deviation, np.nan)[..., None], over)
        with np.errstate(invalid="ignore"):
            worst = over & ~(around[..., 0] > deviation).any(axis=0)
        outlier |= worst
        good &= ~worst
