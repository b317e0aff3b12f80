"""Quality-control arithmetic: did registration make images worse, do tile borders show seams.

Pure numpy; the ``qc`` group these numbers are stored in is :mod:`chunkreg.io._qc`'s.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REGRESSION_MARGIN", "combine_seam_sums", "qc_regressions"]

#: A tile (block) whose NCC after registration is lower than before by more than this is a
#: regression.
REGRESSION_MARGIN = 0.05


def qc_regressions(
    ncc_before, ncc_after, *, skip=None, label: str = "tile", margin: float = REGRESSION_MARGIN
) -> list[str]:
    """Warnings where registration made the quality control worse.

    Parameters
    ----------
    ncc_before, ncc_after : array_like
        NCC with the reference per tile (or block), before and after registration; NaN for
        tiles not measured.
    skip : array_like of bool, optional
        Tiles to leave out (e.g. those without texture).
    label : str
        What a grid cell is called in the messages.
    margin : float
        A cell regresses when its NCC drops by more than this.

    Returns
    -------
    list of str
        Empty when nothing got worse: otherwise one line for a lower median NCC after than
        before, and one naming the cells whose NCC dropped by more than ``margin``.

    Examples
    --------
    >>> qc_regressions([0.9, 0.8, 0.7], [0.95, 0.85, 0.4])
    ['1 of 3 tiles got worse by more than 0.05 in NCC (largest drop 0.300, tile 2)']
    """
    before = np.asarray(ncc_before, dtype=np.float64).ravel()
    after = np.asarray(ncc_after, dtype=np.float64).ravel()
    keep = np.isfinite(before) & np.isfinite(after)
    if skip is not None:
        keep &= ~np.asarray(skip, dtype=bool).ravel()
    if not keep.any():
        return []
    out = []
    median_before, median_after = np.median(before[keep]), np.median(after[keep])
    if median_after < median_before:
        out.append(
            f"registration made the images less similar: median NCC per {label} "
            f"{median_before:.3f} before, {median_after:.3f} after"
        )
    drop = np.where(keep, before - after, -np.inf)
    worse = np.flatnonzero(drop > margin)
    if worse.size:
        worst = int(np.argmax(drop))
        out.append(
            f"{worse.size} of {int(keep.sum())} {label}s got worse by more than {margin:g} in "
            f"NCC (largest drop {drop[worst]:.3f}, {label} {worst})"
        )
    return out


def combine_seam_sums(sums: np.ndarray, *, floor: float = 1e-3) -> float:
    """Seam metric from :func:`seam_sums` totals.

    Parameters
    ----------
    sums : ndarray, shape (3, ndim)
        Totals of :func:`seam_sums` over the regions of a field.
    floor : float
        Differences this small (in voxels) count as no change: ``floor`` is added per border
        pair to both sides of the ratio, so a (nearly) constant field scores 1 rather than an
        arbitrary ratio of rounding errors.

    Returns
    -------
    float
        ``(sum of border differences + floor * n) / (sum of neighbouring differences +
        floor * n)`` over the ``n`` border pairs: about 1 for a smooth field, above 1.1 when the
        field jumps at tile borders. NaN when no pair crosses a border (a single tile).
    """
    sums = np.asarray(sums, dtype=np.float64)
    n = sums[2].sum()
    if n == 0:
        return float("nan")
    return float((sums[0].sum() + floor * n) / (sums[1].sum() + floor * n))
