"""Affine transforms of voxel coordinates: fitting to point pairs, RANSAC, matrix helpers.

Every matrix is homogeneous, ``(ndim + 1, ndim + 1)``, in array axis order (``z, y, x``), and
maps *reference* voxel coordinates to *moving* voxel coordinates: a point ``p`` of the
reference shows what the moving volume shows at ``matrix @ [*p, 1]``. So
``scipy.ndimage.affine_transform(moving, matrix)`` resamples the moving volume onto the
reference grid, the same convention as :func:`chunkreg.warp` with a displacement field.

Pure numpy: no dask, no zarr.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = [
    "MODELS",
    "apply_affine",
    "as_matrix",
    "compose_affine",
    "fit_affine",
    "invert_affine",
    "level_matrix",
    "min_samples",
    "ransac_affine",
    "rotation_matrix",
    "transform_residuals",
]

#: Transform models, fewest degrees of freedom first.
MODELS = ("translation", "rigid", "similarity", "affine")


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise InputError(f"model must be one of {MODELS}, got {model!r}.")


def as_matrix(matrix, ndim: int | None = None) -> np.ndarray:
    """Validate a homogeneous affine matrix and return it as float64.

    Parameters
    ----------
    matrix : array_like, shape (ndim + 1, ndim + 1) or (ndim, ndim + 1)
        The last row ``[0, ..., 0, 1]`` may be left out.
    ndim : int, optional
        Number of spatial axes the matrix must have.

    Returns
    -------
    ndarray of float64, shape (ndim + 1, ndim + 1)

    Raises
    ------
    InputError
        Wrong shape, non-finite values, a bad last row or a singular linear part.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2 or m.shape[0] not in (m.shape[1] - 1, m.shape[1]):
        raise InputError(
            f"an affine matrix must be (ndim + 1) x (ndim + 1) (or ndim x (ndim + 1)), got shape "
            f"{m.shape}."
        )
    if m.shape[0] == m.shape[1] - 1:
        m = np.vstack([m, np.eye(1, m.shape[1], m.shape[1] - 1)])
    n = m.shape[0] - 1
    if ndim is not None and n != ndim:
        raise InputError(
            f"the affine matrix is for {n}-D coordinates ({m.shape[0]} x {m.shape[1]}) but the "
            f"volumes are {ndim}-D; give a {ndim + 1} x {ndim + 1} matrix."
        )
    if not np.all(np.isfinite(m)):
        raise InputError("the affine matrix has NaN or infinite values.")
    if not np.allclose(m[-1], np.eye(1, n + 1, n)[0]):
        raise InputError(
            f"the last row of a homogeneous affine matrix must be [0, ..., 0, 1], got {m[-1]}."
        )
    if abs(np.linalg.det(m[:n, :n])) < 1e-12:
        raise InputError("the affine matrix is singular (its linear part has determinant 0).")
    return m


def apply_affine(matrix, points) -> np.ndarray:
    """Map points ``(..., ndim)`` by a homogeneous matrix: ``matrix @ [*p, 1]``."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    n = m.shape[0] - 1
    return p @ m[:n, :n].T + m[:n, n]


def compose_affine(*matrices) -> np.ndarray:
    """The matrix applying the last one first: ``compose_affine(a, b) = a @ b``.

    With chunkreg's convention (reference to moving coordinates), ``compose_affine(a, b)`` maps
    a point by ``b`` and then by ``a``.
    """
    out = np.asarray(matrices[0], dtype=np.float64)
    for m in matrices[1:]:
        out = out @ np.asarray(m, dtype=np.float64)
    return out


def invert_affine(matrix) -> np.ndarray:
    """Inverse of a homogeneous affine matrix (moving to reference coordinates)."""
    m = as_matrix(matrix)
    n = m.shape[0] - 1
    out = np.eye(n + 1)
    inv = np.linalg.inv(m[:n, :n])
    out[:n, :n] = inv
    out[:n, n] = -inv @ m[:n, n]
    return out


def level_matrix(matrix, factor) -> np.ndarray:
    """The same transform in the voxels of a grid ``factor`` times coarser (one per axis or
    one for all).

    Voxel ``i`` of the coarse grid covers input voxels ``factor * i ... factor * (i + 1) - 1``
    (block means, chunkreg's pyramid convention), so its centre is at
    ``factor * i + (factor - 1) / 2``. The result maps coarse reference voxels to coarse moving
    voxels; ``factor < 1`` goes the other way (``level_matrix(m, 1 / f)`` undoes
    ``level_matrix(m, f)``).
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0] - 1
    to_fine = np.eye(n + 1)
    for axis, a in enumerate(np.broadcast_to(np.asarray(factor, dtype=np.float64), (n,))):
        if a >= 1:
            to_fine[axis, axis] = a
            to_fine[axis, n] = (a - 1) / 2
        else:  # the inverse of the coarse-to-fine map of 1 / factor
            f = 1 / a
            to_fine[axis, axis] = 1 / f
            to_fine[axis, n] = -(f - 1) / 2 / f
    return invert_affine(to_fine) @ m @ to_fine


def rotation_matrix(angles, *, ndim: int | None = None) -> np.ndarray:
    """Rotation by ``angles`` (radians): one angle in 2-D, three (about axes 0, 1, 2) in 3-D.

    Returns the ``(ndim, ndim)`` linear part, in array axis order.
    """
    angles = np.atleast_1d(np.asarray(angles, dtype=np.float64))
    ndim = ndim or (2 if angles.size == 1 else 3)

    def plane(i, j, a):
        r = np.eye(ndim)
        c, s = math.cos(a), math.sin(a)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    if ndim == 2:
        return plane(0, 1, angles[0])
    if angles.size != 3:
        raise InputError(f"a 3-D rotation takes three angles, got {angles.size}.")
    return plane(1, 2, angles[0]) @ plane(0, 2, angles[1]) @ plane(0, 1, angles[2])


def min_samples(model: str, ndim: int) -> int:
    """Fewest point pairs that determine a transform of ``model`` in ``ndim`` dimensions."""
    _check_model(model)
    return {"translation": 1, "rigid": ndim, "similarity": ndim, "affine": ndim + 1}[model]


def _umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray, scale: bool) -> np.ndarray:
    """Weighted least-squares rotation (+ uniform scale) and translation, src -> dst.

    Umeyama (1991): the SVD of the weighted cross-covariance, with the sign of the smallest
    singular vector fixed so the result is a proper rotation (no reflection).
    """
    n = src.shape[1]
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(n)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = (u * sign) @ vt
    c = 1.0
    if scale:
        var = float(w @ (s0**2).sum(axis=1))
        c = float((sigma * sign).sum() / var) if var > 0 else 1.0
    out = np.eye(n + 1)
    out[:n, :n] = c * rot
    out[:n, n] = mu_d - c * rot @ mu_s
    return out


def _pairs(reference_points, moving_points, model: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated point arrays (float64, both (n, ndim)) and the model's minimal sample size."""
    _check_model(model)
    src = np.asarray(reference_points, dtype=np.float64)
    dst = np.asarray(moving_points, dtype=np.float64)
    if src.ndim != 2 or src.shape != dst.shape:
        raise InputError(f"point arrays must both be (n, ndim), got {src.shape} and {dst.shape}.")
    return src, dst, min_samples(model, src.shape[1])


def fit_affine(
    reference_points, moving_points, *, model: str = "affine", weights=None
) -> np.ndarray:
    """Least-squares transform mapping reference points onto moving points.

    Parameters
    ----------
    reference_points, moving_points : array_like, shape (n, ndim)
        Corresponding points, in voxels (array axis order).
    model : {"affine", "similarity", "rigid", "translation"}
        ``"affine"``: general linear part (ordinary least squares); ``"similarity"``: rotation
        and uniform scale, ``"rigid"``: rotation only (both by the Umeyama/Kabsch SVD);
        ``"translation"``: the mean offset.
    weights : array_like, shape (n,), optional
        Non-negative weight per pair.

    Returns
    -------
    ndarray of float64, shape (ndim + 1, ndim + 1)

    Raises
    ------
    InputError
        Too few pairs for the model, mismatched shapes, or degenerate points (e.g. all on one
        plane for a 3-D affine).

    References
    ----------
    .. [1] Umeyama, S. (1991). Least-squares estimation of transformation parameters between
       two point patterns. IEEE TPAMI 13(4), 376-380. :DOI:`10.1109/34.88573`
    """
    src, dst, need = _pairs(reference_points, moving_points, model)
    n_points, ndim = src.shape
    if n_points < need:
        raise InputError(
            f"a {model} transform in {ndim}-D needs at least {need} point pairs, got {n_points}."
        )
    w = np.ones(n_points) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_points,) or np.any(w < 0) or not w.sum() > 0:
        raise InputError("weights must be n non-negative numbers, not all zero.")
    out = np.eye(ndim + 1)
    if model == "translation":
        out[:ndim, ndim] = (w / w.sum()) @ (dst - src)
        return out
    if model in ("rigid", "similarity"):
        return _umeyama(src, dst, w, scale=model == "similarity")
    design = np.hstack([src, np.ones((n_points, 1))]) * np.sqrt(w)[:, None]
    if np.linalg.matrix_rank(design, tol=1e-8 * max(1.0, np.abs(design).max())) < ndim + 1:
        raise InputError(
            f"the {n_points} points do not span {ndim}-D space (collinear or coplanar); an "
            "affine transform is undetermined. Use more blocks or a model with fewer degrees of "
            "freedom (similarity, rigid, translation)."
        )
    solution, *_ = np.linalg.lstsq(design, dst * np.sqrt(w)[:, None], rcond=None)
    out[:ndim, :] = solution.T
    return out


def transform_residuals(matrix, reference_points, moving_points) -> np.ndarray:
    """Distance (voxels) between each moving point and its reference point mapped by ``matrix``."""
    predicted = apply_affine(matrix, reference_points)
    return np.linalg.norm(predicted - np.asarray(moving_points, dtype=np.float64), axis=-1)


def ransac_affine(
    reference_points,
    moving_points,
    *,
    model: str = "affine",
    threshold: float = 2.0,
    max_trials: int = 500,
    seed: int = 0,
    weights=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust fit: RANSAC over minimal samples, then least squares on the inliers.

    Each trial fits ``model`` to a random minimal sample and counts the pairs whose residual is
    at most ``threshold``; the largest consensus (ties: the smaller summed residual) wins. The
    transform is then refitted by least squares to its inliers and the inliers re-evaluated,
    until they stop changing (at most five times).

    Parameters
    ----------
    reference_points, moving_points : array_like, shape (n, ndim)
        Corresponding points (e.g. block centres and where they were found).
    model : {"affine", "similarity", "rigid", "translation"}
        See :func:`fit_affine`.
    threshold : float
        Largest residual, in voxels, of an inlier.
    max_trials : int
        Random samples drawn.
    seed : int
        Seed of the sampling: the same inputs give the same result.
    weights : array_like, shape (n,), optional
        Weights of the final least-squares fits.

    Returns
    -------
    matrix : ndarray of float64, shape (ndim + 1, ndim + 1)
    inliers : ndarray of bool, shape (n,)

    Raises
    ------
    InputError
        Fewer pairs than the model needs, or no sample yielding a transform.
    """
    src, dst, need = _pairs(reference_points, moving_points, model)
    n_points, ndim = src.shape
    if n_points < need:
        raise InputError(
            f"too few usable blocks for a {model} transform in {ndim}-D: {n_points}, need at "
            f"least {need} (more with outliers). Use smaller blocks, a lower level or a model "
            "with fewer degrees of freedom."
        )
    rng = np.random.default_rng(seed)
    best = (-1, np.inf)
    best_matrix = None
    with np.errstate(all="ignore"):
        for _ in range(max_trials if n_points > need else 1):
            sample = rng.choice(n_points, size=need, replace=False)
            try:
                m = fit_affine(src[sample], dst[sample], model=model)
            except (InputError, np.linalg.LinAlgError):
                continue
            if not np.all(np.isfinite(m)):
                continue
            r = transform_residuals(m, src, dst)
            inside = r <= threshold
            score = (int(inside.sum()), float(r[inside].sum()))
            if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
                best, best_matrix = score, m
    if best_matrix is None or best[0] < need:
        raise InputError(
            f"RANSAC found no {model} transform consistent with {need} or more of the "
            f"{n_points} block correspondences within {threshold} voxels; the volumes may not "
            "overlap, or raise the threshold."
        )
    w = np.ones(n_points) if weights is None else np.asarray(weights, dtype=np.float64)
    matrix = best_matrix
    inliers = transform_residuals(matrix, src, dst) <= threshold
    for _ in range(5):
        if inliers.sum() < need or not w[inliers].sum() > 0:
            break
        try:
            matrix = fit_affine(src[inliers], dst[inliers], model=model, weights=w[inliers])
        except InputError:
            break
        updated = transform_residuals(matrix, src, dst) <= threshold
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    return matrix, inliers
