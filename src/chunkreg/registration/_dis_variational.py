"""Variational refinement of a dense flow (the last step of each DIS pyramid level).

Minimises, around the current flow ``U``, the energy

    E(U) = sum_x psi_d((I1(x + U) - I0(x)) / c) + smoothness * sum_x psi_s(|grad U|^2)

with Charbonnier penalties ``psi(s) = sqrt(s + eps^2)`` (robust to occlusions and motion
edges), ``c`` the images' contrast (so the weights do not depend on the intensity scale).
Each warp linearises the data term at the current flow and freezes the penalties' weights
(iteratively reweighted least squares); then ``iterations`` sweeps update every pixel's flow
vector by solving its ``ndim x ndim`` system exactly, with the neighbours' flows fixed. The
data part of that system is rank one, ``h hᵀ``, so the solve is a Sherman-Morrison formula,
the same in any number of dimensions. Sweeps run slab by slab along axis 0 and write each
slab back at once (Jacobi inside a slab, Gauss-Seidel between slabs), so the only
full-size buffers are ``h`` (ndim), the data offset and the smoothness weights. Private to
:mod:`chunkreg.registration`.
"""

from __future__ import annotations

import numpy as np

from ._filters import gradient_rows, row_slabs
from ._warp import warp_into

__all__ = ["variational_refine"]

#: Charbonnier epsilon of the data term, in units of the image contrast.
DATA_EPS = 1e-2
#: Charbonnier epsilon of the smoothness term, in pixels of flow per pixel.
SMOOTH_EPS = 1e-2
#: Over-relaxation factor of the red-black sweeps.
OMEGA = 1.6


def _along(ndim: int, axis: int, sl: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = sl
    return tuple(index)


def _linearise(reference, moving, flow, contrast, h, b, warped, slabs, scratch):
    """Fill ``h`` (weighted gradients) and ``b`` (weighted offsets) for the current flow."""
    ndim = reference.ndim
    warp_into(moving, flow, warped, coords=scratch[0])
    gw, g0 = scratch
    for s0, s1 in slabs:
        m = s1 - s0
        gradient_rows(warped, s0, s1, gw[:, :m])
        gradient_rows(reference, s0, s1, g0[:, :m])
        hs = h[:, s0:s1]
        np.add(gw[:, :m], g0[:, :m], out=hs)
        hs *= 0.5 / contrast
        bs = b[s0:s1]
        np.subtract(warped[s0:s1], reference[s0:s1], out=bs)
        bs *= 1.0 / contrast
        # weight of the Charbonnier data term at the linearisation point
        weight = np.square(bs)
        weight += DATA_EPS**2
        np.sqrt(weight, out=weight)
        np.reciprocal(weight, out=weight)
        np.sqrt(weight, out=weight)
        tmp = gw[0, :m]
        for k in range(ndim):
            np.multiply(hs[k], flow[k, s0:s1], out=tmp)
            bs -= tmp
        hs *= weight
        bs *= weight


def _diffusivity(flow, phi, slabs) -> None:
    """Smoothness weights ``1 / sqrt(|grad U|^2 + eps^2)`` (forward differences)."""
    ndim = flow.shape[0]
    n0 = flow.shape[1]
    for s0, s1 in slabs:
        ext = flow[:, s0 : min(s1 + 1, n0)]
        m = s1 - s0
        out = phi[s0:s1]
        out[...] = SMOOTH_EPS**2
        for k in range(ndim):
            comp = ext[k]
            d0 = np.diff(comp, axis=0)
            out[: d0.shape[0]] += np.square(d0)
            for axis in range(1, ndim):
                d = np.diff(comp[:m], axis=axis)
                out[_along(ndim, axis, slice(0, -1))] += np.square(d)
    np.sqrt(phi, out=phi)
    np.reciprocal(phi, out=phi)


_BOARDS: dict = {}


def _checkerboard(shape: tuple[int, ...], parity: int) -> np.ndarray:
    """Boolean mask of the voxels whose index sum has ``parity`` (cached per shape)."""
    key = (shape, parity)
    if key not in _BOARDS:
        total = sum(np.indices(shape, sparse=True))
        _BOARDS.clear() if len(_BOARDS) > 16 else None
        _BOARDS[key] = (total % 2) == parity
    return _BOARDS[key]


def _sweep(flow, h, b, phi, smoothness, slabs, parity, omega) -> None:
    """One relaxation sweep over all slabs (see the module docstring)."""
    ndim = flow.shape[0]
    n0 = flow.shape[1]
    for s0, s1 in slabs:
        m = s1 - s0
        lo, hi = max(s0 - 1, 0), min(s1 + 1, n0)
        off = s0 - lo
        u_ext = flow[:, lo:hi]
        p_ext = phi[lo:hi]
        p = p_ext[off : off + m]
        total = np.zeros((ndim, m, *flow.shape[2:]), dtype=flow.dtype)
        weight_sum = np.zeros(p.shape, dtype=flow.dtype)
        # axis 0, with the rows just outside the slab
        if off + m < hi - lo:  # a row below
            w = np.add(p_ext[off + 1 : off + m + 1], p)
            w *= 0.5
            weight_sum += w
            total += w * u_ext[:, off + 1 : off + m + 1]
        else:
            w = np.add(p_ext[off + 1 : off + m], p[:-1])
            w *= 0.5
            weight_sum[:-1] += w
            total[:, :-1] += w * u_ext[:, off + 1 : off + m]
        if off == 1:  # a row above
            w = np.add(p_ext[0:m], p)
            w *= 0.5
            weight_sum += w
            total += w * u_ext[:, 0:m]
        else:
            w = np.add(p[1:], p[:-1])
            w *= 0.5
            weight_sum[1:] += w
            total[:, 1:] += w * u_ext[:, off : off + m - 1]
        u = u_ext[:, off : off + m]
        for axis in range(1, ndim):
            first = _along(ndim, axis, slice(0, -1))
            second = _along(ndim, axis, slice(1, None))
            w = np.add(p[first], p[second])
            w *= 0.5
            weight_sum[first] += w
            weight_sum[second] += w
            for k in range(ndim):
                total[k][first] += w * u[k][second]
                total[k][second] += w * u[k][first]
        # (h hᵀ + c I) u = c * mean_neighbours - h b, with c = smoothness * weight_sum
        hs = h[:, s0:s1]
        weight_sum *= smoothness
        total *= smoothness
        total -= hs * b[s0:s1]
        hr = np.einsum("k...,k...->...", hs, total)
        norm = np.einsum("k...,k...->...", hs, hs)
        norm += weight_sum
        hr /= norm
        for k in range(ndim):
            total[k] -= hs[k] * hr
        total /= weight_sum
        # over-relaxed update of the voxels of one colour of the checkerboard
        total -= u
        total *= omega
        total += u
        np.copyto(u, total, where=_checkerboard(u.shape[1:], (s0 + parity) % 2))


def variational_refine(
    reference: np.ndarray,
    moving: np.ndarray,
    flow: np.ndarray,
    *,
    iterations: int,
    smoothness: float,
    contrast: float,
    warps: int = 1,
) -> np.ndarray:
    """Refine ``flow`` in place (see the module docstring) and return it."""
    if iterations <= 0 or warps <= 0:
        return flow
    shape = reference.shape
    ndim = reference.ndim
    dtype = reference.dtype
    slabs = row_slabs(shape)
    rows = slabs[0][1] - slabs[0][0]
    h = np.empty((ndim, *shape), dtype=dtype)
    b = np.empty(shape, dtype=dtype)
    phi = np.empty(shape, dtype=dtype)
    warped = np.empty(shape, dtype=dtype)
    scratch = (
        np.empty((ndim, rows, *shape[1:]), dtype=dtype),
        np.empty((ndim, rows, *shape[1:]), dtype=dtype),
    )
    for _ in range(warps):
        _linearise(reference, moving, flow, contrast, h, b, warped, slabs, scratch)
        for _ in range(iterations):
            _diffusivity(flow, phi, slabs)
            for parity in (0, 1):
                _sweep(flow, h, b, phi, smoothness, slabs, parity, OMEGA)
    return flow
