"""Compiled red-black relaxation sweeps of the DIS variational refinement (2-D and 3-D).

The same update as :func:`._dis_variational._sweep_colour`, voxel by voxel in one fused loop
(numba): per sweep, every voxel of one checkerboard colour, then of the other, solves its
``ndim x ndim`` system ``(h hᵀ + c I) u = sum_neighbours w u_n - h b`` (``c`` the sum of its
edge weights ``w``) by the Sherman-Morrison formula and moves over-relaxed towards the
solution. numpy needs about 25 passes over memory for this; the loop reads each array once,
which makes the refinement 5-10x faster. Private to :mod:`chunkreg.registration`.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["diffusivity", "sweep"]


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sweep_2d(u, h, hb, phi, alpha, omega, robust):  # pragma: no cover - compiled
    ny, nx = u.shape[1], u.shape[2]
    for colour in range(2):
        for i in range(ny):
            for j in range((i + colour) % 2, nx, 2):
                p = phi[i, j] if robust else 0.0
                wsum = 0.0
                t0 = 0.0
                t1 = 0.0
                if i > 0:
                    w = p + phi[i - 1, j] if robust else alpha
                    wsum += w
                    t0 += w * u[0, i - 1, j]
                    t1 += w * u[1, i - 1, j]
                if i < ny - 1:
                    w = p + phi[i + 1, j] if robust else alpha
                    wsum += w
                    t0 += w * u[0, i + 1, j]
                    t1 += w * u[1, i + 1, j]
                if j > 0:
                    w = p + phi[i, j - 1] if robust else alpha
                    wsum += w
                    t0 += w * u[0, i, j - 1]
                    t1 += w * u[1, i, j - 1]
                if j < nx - 1:
                    w = p + phi[i, j + 1] if robust else alpha
                    wsum += w
                    t0 += w * u[0, i, j + 1]
                    t1 += w * u[1, i, j + 1]
                if wsum <= 0.0:
                    continue
                t0 -= hb[0, i, j]
                t1 -= hb[1, i, j]
                h0 = h[0, i, j]
                h1 = h[1, i, j]
                hr = (h0 * t0 + h1 * t1) / (h0 * h0 + h1 * h1 + wsum)
                u[0, i, j] += omega * ((t0 - h0 * hr) / wsum - u[0, i, j])
                u[1, i, j] += omega * ((t1 - h1 * hr) / wsum - u[1, i, j])


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sweep_3d(u, h, hb, phi, alpha, omega, robust):  # pragma: no cover - compiled
    nz, ny, nx = u.shape[1], u.shape[2], u.shape[3]
    for colour in range(2):
        for k in range(nz):
            for i in range(ny):
                for j in range((k + i + colour) % 2, nx, 2):
                    p = phi[k, i, j] if robust else 0.0
                    wsum = 0.0
                    t0 = 0.0
                    t1 = 0.0
                    t2 = 0.0
                    for dk, di, dj in (
                        (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)
                    ):  # fmt: skip
                        kk, ii, jj = k + dk, i + di, j + dj
                        if kk < 0 or kk >= nz or ii < 0 or ii >= ny or jj < 0 or jj >= nx:
                            continue
                        w = p + phi[kk, ii, jj] if robust else alpha
                        wsum += w
                        t0 += w * u[0, kk, ii, jj]
                        t1 += w * u[1, kk, ii, jj]
                        t2 += w * u[2, kk, ii, jj]
                    if wsum <= 0.0:
                        continue
                    t0 -= hb[0, k, i, j]
                    t1 -= hb[1, k, i, j]
                    t2 -= hb[2, k, i, j]
                    h0 = h[0, k, i, j]
                    h1 = h[1, k, i, j]
                    h2 = h[2, k, i, j]
                    hr = (h0 * t0 + h1 * t1 + h2 * t2) / (h0 * h0 + h1 * h1 + h2 * h2 + wsum)
                    u[0, k, i, j] += omega * ((t0 - h0 * hr) / wsum - u[0, k, i, j])
                    u[1, k, i, j] += omega * ((t1 - h1 * hr) / wsum - u[1, k, i, j])
                    u[2, k, i, j] += omega * ((t2 - h2 * hr) / wsum - u[2, k, i, j])


@numba.njit(cache=True, nogil=True, fastmath=True)
def _diffusivity_2d(u, phi, scale, eps2):  # pragma: no cover - compiled
    ny, nx = u.shape[1], u.shape[2]
    for i in range(ny):
        for j in range(nx):
            s = eps2
            for c in range(2):
                if i < ny - 1:
                    d = u[c, i + 1, j] - u[c, i, j]
                    s += d * d
                if j < nx - 1:
                    d = u[c, i, j + 1] - u[c, i, j]
                    s += d * d
            phi[i, j] = scale / np.sqrt(s)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _diffusivity_3d(u, phi, scale, eps2):  # pragma: no cover - compiled
    nz, ny, nx = u.shape[1], u.shape[2], u.shape[3]
    for k in range(nz):
        for i in range(ny):
            for j in range(nx):
                s = eps2
                for c in range(3):
                    if k < nz - 1:
                        d = u[c, k + 1, i, j] - u[c, k, i, j]
                        s += d * d
                    if i < ny - 1:
                        d = u[c, k, i + 1, j] - u[c, k, i, j]
                        s += d * d
                    if j < nx - 1:
                        d = u[c, k, i, j + 1] - u[c, k, i, j]
                        s += d * d
                phi[k, i, j] = scale / np.sqrt(s)


def diffusivity(flow, phi, scale: float, eps: float) -> bool:
    """``phi = scale / sqrt(|grad U|^2 + eps^2)`` (forward differences); False if not 2-D/3-D."""
    ndim = flow.shape[0]
    if ndim not in (2, 3):
        return False
    kernel = _diffusivity_2d if ndim == 2 else _diffusivity_3d
    kernel(flow, phi, float(scale), float(eps) ** 2)
    return True


def sweep(flow, h, hb, phi, smoothness: float, omega: float) -> bool:
    """One red-black sweep in place; False (nothing done) for other than 2 or 3 dimensions.

    ``phi`` holds half the edge weights per voxel, smoothness included; None: quadratic
    penalty (every edge weighs ``smoothness``).
    """
    ndim = flow.shape[0]
    if ndim not in (2, 3):
        return False
    robust = phi is not None
    weights = phi if robust else np.zeros((1,) * ndim, dtype=flow.dtype)
    kernel = _sweep_2d if ndim == 2 else _sweep_3d
    kernel(flow, h, hb, weights, float(smoothness), float(omega), robust)
    return True
