"""Similarity measures used as quality scores (pure numpy)."""

from __future__ import annotations

import numpy as np

__all__ = ["normalized_cross_correlation"]


def normalized_cross_correlation(a, b, mask=None) -> float:
    """Pearson correlation of two equally shaped arrays, optionally inside a mask.

    Parameters
    ----------
    a, b : ndarray
        Arrays of the same shape.
    mask : ndarray of bool, optional
        Only pixels where ``mask`` is true are compared.

    Returns
    -------
    float
        Value in [-1, 1]; 0.0 when either input is constant (nothing to compare), so a blank
        tile or frame scores as "no evidence" rather than raising.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arrays must have the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        a, b = a[mask], b[mask]
    if a.size < 2:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt(np.dot(a.ravel(), a.ravel()) * np.dot(b.ravel(), b.ravel()))
    if not np.isfinite(denom) or denom <= 1e-12 * max(a.size, 1):
        return 0.0
    return float(np.clip(np.dot(a.ravel(), b.ravel()) / denom, -1.0, 1.0))
