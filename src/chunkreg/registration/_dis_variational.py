"""Variational refinement of a dense flow (the last step of each DIS pyramid level).

Minimises, around the current flow ``U``, the energy

    E(U) = sum_x psi_d((I1(x + U) - I0(x)) / c) + smoothness * sum_x psi_s(|grad U|^2)

with Charbonnier penalties ``psi(s) = sqrt(s + eps^2)`` (robust to occlusions and motion
edges; the smoothness penalty may also be quadratic), ``c`` the images' contrast (so the
weights do not depend on the intensity scale).
Each warp linearises the data term at the current flow and freezes the penalties' weights
(iteratively reweighted least squares); then ``iterations`` sweeps update every pixel's flow
vector by solving its ``ndim x ndim`` system exactly, with the neighbours' flows fixed. The
data part of that system is rank one, ``h hᵀ``, so the solve is a Sherman-Morrison formula,
the same in any number of dimensions. Each sweep is red-black and over-relaxed (factor
``OMEGA``): the voxels of one checkerboard colour depend only on the other colour, so each
half-sweep is a vectorised update. In 2-D and 3-D the sweeps run compiled
(:mod:`._dis_sweeps`); otherwise on sub-lattices (2-D) or slabs (3-D+) with numpy. The only
full-size buffers are ``h`` and ``h b`` (ndim each) and the smoothness weights. Private to
:mod:`chunkreg.registration`.
"""

from __future__ import annotations

from itertools import product

import numpy as np
from scipy import ndimage as ndi

from ._dis_sweeps import diffusivity as compiled_diffusivity
from ._dis_sweeps import linearise as compiled_linearise
from ._dis_sweeps import sweep as compiled_sweep
from ._dis_sweeps import warp_region as compiled_warp
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


def _linearise(reference, moving, flow, contrast, h, hb, slabs, scratch):
    """Fill ``h`` (weighted gradients) and ``hb`` (``h`` times the weighted offsets).

    The linearised, weighted data residual at flow ``U`` is ``h . U + b``.
    """
    ndim = reference.ndim
    warped = _warp(moving, flow, np.empty_like(reference), scratch[0])
    gw, g0 = scratch
    for s0, s1 in slabs:
        m = s1 - s0
        gradient_rows(warped, s0, s1, gw[:, :m])
        gradient_rows(reference, s0, s1, g0[:, :m])
        hs = h[:, s0:s1]
        np.add(gw[:, :m], g0[:, :m], out=hs)
        hs *= 0.5 / contrast
        bs = np.subtract(warped[s0:s1], reference[s0:s1])
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
        np.multiply(hs, bs, out=hb[:, s0:s1])


def _warp(moving, flow, out, coords):
    """``moving`` sampled linearly at ``x + flow(x)`` (edges clamped) into ``out``.

    ``moving`` may be another region than the reference's (a tile's moving region, read
    where the flow points): ``flow`` then holds displacements into its local coordinates.
    """
    if moving.shape == out.shape:
        return warp_into(moving, flow, out, coords=coords)
    if not compiled_warp(moving, flow, out):
        grid = np.indices(out.shape, dtype=flow.dtype)
        grid += flow
        ndi.map_coordinates(moving, grid, output=out, order=1, mode="nearest")
    return out


def _diffusivity(flow, phi, slabs, scale: float) -> None:
    """Smoothness weights ``scale / sqrt(|grad U|^2 + eps^2)`` (forward differences).

    With ``scale = smoothness / 2``, an edge weighs the sum of its two ends' values.
    """
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
    np.divide(scale, phi, out=phi)


_BOARDS: dict = {}


def _checkerboard(shape: tuple[int, ...], parity: int) -> np.ndarray:
    """Boolean mask of the voxels whose index sum has ``parity`` (cached per shape)."""
    key = (shape, parity)
    if key not in _BOARDS:
        total = sum(np.indices(shape, sparse=True))
        _BOARDS.clear() if len(_BOARDS) > 16 else None
        _BOARDS[key] = (total % 2) == parity
    return _BOARDS[key]


def _neighbour_pairs(ndim: int, m: int, ext: int, off: int):
    """(target in the slab, target in the extended rows, neighbour in the extended rows).

    The slab is rows ``off ... off + m - 1`` of the extended rows ``0 ... ext - 1`` (the slab
    plus the rows just above and below it, where the array has them); each entry is one
    axis and direction, restricted to the voxels whose neighbour exists.
    """
    full = (slice(None),) * (ndim - 1)
    pairs = []
    below = min(m, ext - off - 1)  # targets 0 .. below-1 have a row below
    if below > 0:
        pairs.append(
            ((slice(0, below), *full), (slice(off, off + below), *full),
             (slice(off + 1, off + 1 + below), *full))
        )  # fmt: skip
    start = max(0, 1 - off)  # targets start .. m-1 have a row above
    if start < m:
        pairs.append(
            ((slice(start, m), *full), (slice(off + start, off + m), *full),
             (slice(off + start - 1, off + m - 1), *full))
        )  # fmt: skip
    rows = slice(off, off + m)
    for axis in range(1, ndim):
        first = _along(ndim, axis, slice(0, -1))[1:]
        second = _along(ndim, axis, slice(1, None))[1:]
        pairs.append(((slice(None), *first), (rows, *first), (rows, *second)))
        pairs.append(((slice(None), *second), (rows, *second), (rows, *first)))
    return pairs


_COUNTS: dict = {}


def _neighbour_counts(shape: tuple[int, ...], ext: int, off: int, dtype) -> np.ndarray:
    """Number of neighbours of each voxel of a slab (the quadratic penalty's weight sums)."""
    key = (shape, ext, off, np.dtype(dtype).str)
    if key not in _COUNTS:
        counts = np.zeros(shape, dtype=dtype)
        for target, _, _ in _neighbour_pairs(len(shape), shape[0], ext, off):
            counts[target] += 1
        if len(_COUNTS) > 64:
            _COUNTS.clear()
        _COUNTS[key] = counts
    return _COUNTS[key]


def _sweep(flow, h, hb, phi, smoothness, slabs, parity, omega) -> None:
    """Update the voxels of one checkerboard colour, slab by slab (see the module docstring).

    ``phi`` holds half the edge weights per voxel, smoothness included (an edge weighs the
    ends); None means the quadratic penalty (every edge weighs 1).
    """
    ndim = flow.shape[0]
    n0 = flow.shape[1]
    comps = (slice(None),)
    for s0, s1 in slabs:
        m = s1 - s0
        lo, hi = max(s0 - 1, 0), min(s1 + 1, n0)
        off = s0 - lo
        u_ext = flow[:, lo:hi]
        u = u_ext[:, off : off + m]
        pairs = _neighbour_pairs(ndim, m, hi - lo, off)
        total = np.zeros(u.shape, dtype=flow.dtype)
        if phi is None:
            weight_sum = _neighbour_counts(u.shape[1:], hi - lo, off, flow.dtype) * smoothness
            for target, _, there in pairs:
                total[comps + target] += u_ext[comps + there]
            total *= smoothness
        else:
            p_ext = phi[lo:hi]
            weight_sum = np.zeros(u.shape[1:], dtype=flow.dtype)
            scratch = np.empty_like(weight_sum)
            for target, here, there in pairs:
                w = scratch[target]
                np.add(p_ext[here], p_ext[there], out=w)
                weight_sum[target] += w
                total[comps + target] += w * u_ext[comps + there]
        # (h hᵀ + c I) u = c * mean_neighbours - h b, with c = smoothness * weight_sum
        hs = h[:, s0:s1]
        total -= hb[:, s0:s1]
        hr = np.einsum("k...,k...->...", hs, total)
        norm = np.einsum("k...,k...->...", hs, hs)
        norm += weight_sum
        hr /= norm
        total -= hs * hr
        total /= weight_sum
        # over-relaxed update of the voxels of one colour of the checkerboard
        total -= u
        total *= omega
        total += u
        np.copyto(u, total, where=_checkerboard(u.shape[1:], (s0 + parity) % 2))


def _lattice(offset) -> tuple[slice, ...]:
    return (slice(None), *(slice(o, None, 2) for o in offset))


def _sweep_colour(flow, h, hb, phi, smoothness, colour: int, omega: float) -> None:
    """Over-relaxed update of the voxels of one checkerboard colour, computed for them only.

    A colour is the union of the sub-lattices ``x = offset + 2 * i`` whose offset (0 or 1 per
    axis) has that parity; a voxel's neighbours along axis ``k`` lie on the sub-lattice with
    ``offset[k]`` flipped, at index ``i`` or ``i -+ 1``. So every array operation runs over
    one sub-lattice (a strided view) and the other colour is never computed. ``phi`` holds
    half the edge weights per voxel (see :func:`_diffusivity`); None: quadratic penalty.
    """
    ndim = flow.shape[0]
    for offset in product((0, 1), repeat=ndim):
        if sum(offset) % 2 != colour:
            continue
        index = _lattice(offset)
        u = flow[index]
        if 0 in u.shape:
            continue
        shape = u.shape[1:]
        total = np.zeros(u.shape, dtype=flow.dtype)
        weight_sum = np.zeros(shape, dtype=flow.dtype)
        w_buf = np.empty(shape, dtype=flow.dtype)
        t_buf = np.empty(shape, dtype=flow.dtype)
        p = None if phi is None else phi[index[1:]]
        for k in range(ndim):
            other = list(offset)
            other[k] = 1 - offset[k]
            o_index = _lattice(other)
            un = flow[o_index]
            pn = None if phi is None else phi[o_index[1:]]
            for delta in (0, 1) if offset[k] else (-1, 0):
                a, b = max(0, -delta), min(shape[k], un.shape[k + 1] - delta)
                if b <= a:
                    continue
                t = _along(ndim, k, slice(a, b))
                n = _along(ndim, k, slice(a + delta, b + delta))
                if p is None:
                    weight_sum[t] += smoothness
                    for c in range(ndim):
                        total[c][t] += un[c][n]
                else:
                    w = w_buf[t]
                    np.add(p[t], pn[n], out=w)
                    weight_sum[t] += w
                    tmp = t_buf[t]
                    for c in range(ndim):
                        np.multiply(un[c][n], w, out=tmp)
                        total[c][t] += tmp
        if p is None:
            total *= smoothness
        # (h hᵀ + c I) u = c * mean_neighbours - h b, c the weight sum
        hs = h[index]
        total -= hb[index]
        hr = np.multiply(hs[0], total[0])
        norm = np.square(hs[0])
        for c in range(1, ndim):
            np.multiply(hs[c], total[c], out=t_buf)
            hr += t_buf
            np.square(hs[c], out=t_buf)
            norm += t_buf
        norm += weight_sum
        hr /= norm
        for c in range(ndim):
            np.multiply(hs[c], hr, out=t_buf)
            total[c] -= t_buf
            total[c] /= weight_sum
            total[c] -= u[c]
            total[c] *= omega
            u[c] += total[c]


def variational_refine(
    reference: np.ndarray,
    moving: np.ndarray,
    flow: np.ndarray,
    *,
    iterations: int,
    smoothness: float,
    contrast: float,
    robust: bool = True,
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
    hb = np.empty((ndim, *shape), dtype=dtype)
    phi = np.empty(shape, dtype=dtype) if robust else None
    scratch = None
    warped = np.empty_like(reference) if ndim == 3 else None  # for the compiled pass
    for _ in range(warps):
        # 3-D: the warp and the linearisation in one compiled pass
        if warped is None or not compiled_linearise(
            reference, moving, flow, contrast, DATA_EPS, h, hb, warped
        ):
            if scratch is None:
                scratch = (
                    np.empty((ndim, rows, *shape[1:]), dtype=dtype),
                    np.empty((ndim, rows, *shape[1:]), dtype=dtype),
                )
            _linearise(reference, moving, flow, contrast, h, hb, slabs, scratch)
        for _ in range(iterations):
            if robust and not compiled_diffusivity(flow, phi, 0.5 * smoothness, SMOOTH_EPS):
                _diffusivity(flow, phi, slabs, 0.5 * smoothness)
            if compiled_sweep(flow, h, hb, phi, smoothness, OMEGA):
                continue
            for colour in (0, 1):
                if ndim <= 2:  # sub-lattices measured faster in 2-D, slabs in 3-D
                    _sweep_colour(flow, h, hb, phi, smoothness, colour, OMEGA)
                else:
                    _sweep(flow, h, hb, phi, smoothness, slabs, colour, OMEGA)
    return flow
