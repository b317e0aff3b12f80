"""Compiled patch search and densification of DIS (numba), in any number of dimensions.

The same algorithm as the numpy path of :func:`._dis_patches.patch_flow` (which it
replaces where numba is available), patch by patch in one fused loop: the reference
patch, its gradients and inverse Hessian are built once per patch, then each Gauss-Newton
iteration samples the moving image linearly at ``x + u`` (the ``2**ndim`` corner weights
are the same for all pixels of a patch), accumulates ``b = sum g e`` and steps
``u -= H⁻¹ b``. Images are flat (padded) arrays addressed by precomputed offsets, so one
kernel serves 2-D and 3-D. Private to :mod:`chunkreg.registration`.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["densify", "interpolate_3d", "search"]


@numba.njit(cache=True, nogil=True, fastmath=True)
def _residual(ctx, origin, u, template, err, work):
    """Fill ``err`` with the moving patch at ``u`` minus the template; return the SSD.

    ``ctx`` is ``(mov, strides, offs, corners, shifts, upper, normalize, size, tmp1, tmp2)``
    (the corners' flat shifts are ``corners @ strides``; ``tmp1``, ``tmp2``: scratch of
    :func:`_sample_3d`); ``work`` is float scratch of shape (2, max(ndim, 2**ndim)).
    """
    mov, strides, offs, corners, shifts, upper, normalize, size, tmp1, tmp2 = ctx
    ndim = strides.shape[0]
    base = 0
    frac = work[0]
    weights = work[1]
    for k in range(ndim):
        pos = origin[k] + u[k]
        fl = np.floor(pos)
        if fl > upper[k] - 1:
            fl = upper[k] - 1
        frac[k] = pos - fl
        base += np.int64(fl) * strides[k]
    total = 0.0
    if ndim == 3:
        _sample_3d(mov, strides, base, frac, size, err, tmp1, tmp2)
        for x in range(offs.shape[0]):
            total += err[x]
    else:
        ncorner = corners.shape[0]
        for c in range(ncorner):
            w = 1.0
            for k in range(ndim):
                w *= frac[k] if corners[c, k] else 1.0 - frac[k]
            weights[c] = w
        for x in range(offs.shape[0]):
            idx = base + offs[x]
            v = 0.0
            for c in range(ncorner):
                v += weights[c] * mov[idx + shifts[c]]
            err[x] = v
            total += v
    mean = total / offs.shape[0] if normalize else 0.0
    ssd = 0.0
    for x in range(offs.shape[0]):
        e = err[x] - mean - template[x]
        err[x] = e
        ssd += e * e
    return ssd


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sample_3d(mov, strides, base, frac, n, out, tmp1, tmp2):
    """A cubic patch of ``n`` voxels per axis sampled linearly at ``base + frac`` into
    ``out``: one axis at a time (``(n+1)**2 n + (n+1) n**2 + n**3`` blends instead of
    ``8 n**3`` products); ``tmp1`` and ``tmp2`` hold ``(n+1)**2 n`` values."""
    s0, s1 = strides[0], strides[1]
    f0, f1, f2 = frac[0], frac[1], frac[2]
    idx = 0
    for z in range(n + 1):
        for y in range(n + 1):
            row = base + z * s0 + y * s1
            for x in range(n):
                a = mov[row + x]
                tmp1[idx] = a + f2 * (mov[row + x + 1] - a)
                idx += 1
    idx = 0
    for z in range(n + 1):
        for y in range(n):
            r0 = (z * (n + 1) + y) * n
            for x in range(n):
                a = tmp1[r0 + x]
                tmp2[idx] = a + f1 * (tmp1[r0 + n + x] - a)
                idx += 1
    plane = n * n
    for i in range(n * plane):
        a = tmp2[i]
        out[i] = a + f0 * (tmp2[i + plane] - a)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _shifts(corners, strides):
    """Flat offset of each corner of the interpolation cell."""
    out = np.zeros(corners.shape[0], dtype=np.int64)
    for c in range(corners.shape[0]):
        for k in range(strides.shape[0]):
            out[c] += corners[c, k] * strides[k]
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _setup(mov, strides, offs, corners, upper, normalize):
    """Per-call scratch (template, residual, work) and the residual's context tuple."""
    npix = offs.shape[0]
    ndim = strides.shape[0]
    work = np.empty((2, max(ndim, corners.shape[0])))
    size = round(npix ** (1.0 / ndim))
    tmp1 = np.empty((size + 1) ** 2 * size)
    tmp2 = np.empty((size + 1) ** 2 * size)
    ctx = (mov, strides, offs, corners, _shifts(corners, strides), upper, normalize, size,
           tmp1, tmp2)  # fmt: skip
    return np.empty(npix), np.empty(npix), work, ctx


@numba.njit(cache=True, nogil=True, fastmath=True)
def _patch_origin(origins, p, strides, origin):
    """Copy patch ``p``'s origin into ``origin``; return its flat index."""
    start = 0
    for k in range(strides.shape[0]):
        origin[k] = origins[p, k]
        start += origins[p, k] * strides[k]
    return start


@numba.njit(cache=True, nogil=True, fastmath=True)
def _clip(u, origin, upper):
    for k in range(u.shape[0]):
        lo = -origin[k]
        hi = upper[k] - origin[k]
        if u[k] < lo:
            u[k] = lo
        elif u[k] > hi:
            u[k] = hi


@numba.njit(cache=True, nogil=True, fastmath=True)
def _template(ref, strides, offs, start, normalize, damping, template, grads, hessian, inv):
    """Reference patch at flat index ``start``, its gradients and inverse Hessian (``inv``)."""
    ndim = strides.shape[0]
    npix = offs.shape[0]
    for x in range(npix):
        idx = start + offs[x]
        template[x] = ref[idx]
        for k in range(ndim):
            grads[k, x] = 0.5 * (ref[idx + strides[k]] - ref[idx - strides[k]])
    if normalize:
        m = template.mean()
        for x in range(npix):
            template[x] -= m
        for k in range(ndim):
            m = grads[k].mean()
            for x in range(npix):
                grads[k, x] -= m
    for k in range(ndim):
        for j in range(k, ndim):
            s = 0.0
            for x in range(npix):
                s += grads[k, x] * grads[j, x]
            hessian[k, j] = s
            hessian[j, k] = s
    trace = 0.0
    for k in range(ndim):
        trace += hessian[k, k]
    damp = damping * trace / ndim + 1e-12
    for k in range(ndim):
        hessian[k, k] += damp
    _inverse(hessian, inv)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _inverse(a, inv):
    """Invert a small symmetric positive definite matrix ``a`` (overwritten) into ``inv``."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            inv[i, j] = 1.0 if i == j else 0.0
    for i in range(n):
        d = 1.0 / a[i, i]
        for j in range(n):
            a[i, j] *= d
            inv[i, j] *= d
        for r in range(n):
            if r != i:
                f = a[r, i]
                for j in range(n):
                    a[r, j] -= f * a[i, j]
                    inv[r, j] -= f * inv[i, j]


@numba.njit(cache=True, nogil=True, fastmath=True)
def _project(grads, err, out):
    """``out[k] = sum_x grads[k, x] * err[x]``: the Gauss-Newton right-hand side."""
    for k in range(grads.shape[0]):
        s = 0.0
        for x in range(err.shape[0]):
            s += grads[k, x] * err[x]
        out[k] = s


@numba.njit(cache=True, nogil=True, fastmath=True)
def _descend(ctx, origin, upper, template, grads, hinv, err, work, best_err, best, best_b, u,
             trial, cands, iterations, best_ssd, known):  # fmt: skip
    """From ``best`` (SSD ``best_ssd``; its right-hand side in ``best_b`` if ``known``, else
    its residual in ``best_err``): try ``cands`` (C, ndim), then ``iterations`` Gauss-Newton
    steps. Leaves the lowest-SSD displacement in ``best`` with its right-hand side in
    ``best_b``; returns its SSD."""
    ndim = best.shape[0]
    for c in range(cands.shape[0]):
        same = True
        for k in range(ndim):
            trial[k] = cands[c, k]
        _clip(trial, origin, upper)
        for k in range(ndim):
            same = same and trial[k] == best[k]
        if same:  # e.g. a neighbour beyond the grid's edge, which is the patch itself
            continue
        ssd = _residual(ctx, origin, trial, template, err, work)
        if ssd < best_ssd:
            best_ssd = ssd
            best[:] = trial
            best_err[:] = err
            known = False
    u[:] = best
    for it in range(iterations):
        if it == 0:  # the right-hand side at u = best
            if not known:
                _project(grads, best_err, best_b)
                known = True
            trial[:] = best_b
        else:
            _project(grads, err, trial)
        for k in range(ndim):
            step = 0.0
            for j in range(ndim):
                step += hinv[k, j] * trial[j]
            u[k] -= step
        _clip(u, origin, upper)
        ssd = _residual(ctx, origin, u, template, err, work)
        if ssd < best_ssd:
            best_ssd = ssd
            best[:] = u
            best_err[:] = err
            known = False
    if not known:
        _project(grads, best_err, best_b)
    return best_ssd


@numba.njit(cache=True, nogil=True, fastmath=True)
def search(
    ref,
    mov,
    strides,
    offs,
    mov_strides,
    mov_offs,
    corners,
    origins,
    counts,
    init,
    first,
    second,
    normalize,
    upper,
    damping,
    out,
):
    """Both passes of the patch search: ``first`` Gauss-Newton iterations from ``init``,
    then, after trying the grid neighbours' results (spatial propagation), ``second`` more.

    ``strides`` and ``offs`` address ``ref`` (flat), ``mov_strides`` and ``mov_offs`` the
    moving image (which may have another shape). ``origins`` (P, ndim) are the padded
    positions of the patches' first pixels (in both images), in C order over the patch grid
    of shape ``counts``; ``init`` (P, ndim) the starting displacements. ``out`` (P, ndim)
    receives, per patch, the displacement of lowest SSD visited.

    The passes run as a wavefront over the planes of the grid (axis 0): the first pass of
    plane ``a`` precedes the second of plane ``a - 1``, which needs the first-pass results
    of planes ``a - 2 ... a`` only. So each patch's template, gradients and inverse Hessian
    are built once and kept for two planes, and the second pass starts from the first's
    SSD and right-hand side instead of evaluating that displacement again.
    """
    count, ndim = origins.shape
    npix = offs.shape[0]
    plane = count // counts[0]
    _, err, work, ctx = _setup(mov, mov_strides, mov_offs, corners, upper, normalize)
    ring_t = np.empty((2, plane, npix))
    ring_g = np.empty((2, plane, ndim, npix))
    ring_h = np.empty((2, plane, ndim, ndim))
    hessian = np.empty((ndim, ndim))
    state = np.empty((count, ndim))  # first-pass results
    scores = np.empty((count, 1 + ndim))  # their SSD and right-hand side
    steps = np.empty(ndim, dtype=np.int64)  # flat index step per grid axis
    steps[ndim - 1] = 1
    for k in range(ndim - 2, -1, -1):
        steps[k] = steps[k + 1] * counts[k + 1]
    cands = np.empty((2 * ndim, ndim))
    none = np.empty((0, ndim))
    best_err = np.empty(npix)
    u = np.empty(ndim)
    best = np.empty(ndim)
    best_b = np.empty(ndim)
    trial = np.empty(ndim)
    origin = np.empty(ndim)
    for a in range(counts[0] + 1):
        if a < counts[0]:  # first pass over plane a
            slot = a % 2
            for j in range(plane):
                p = a * plane + j
                start = _patch_origin(origins, p, strides, origin)
                tpl = ring_t[slot, j]
                grads = ring_g[slot, j]
                hinv = ring_h[slot, j]
                _template(ref, strides, offs, start, normalize, damping, tpl, grads, hessian,
                          hinv)  # fmt: skip
                for k in range(ndim):
                    best[k] = init[p, k]
                _clip(best, origin, upper)
                ssd = _residual(ctx, origin, best, tpl, err, work)
                best_err[:] = err
                ssd = _descend(ctx, origin, upper, tpl, grads, hinv, err, work, best_err, best,
                               best_b, u, trial, none, first, ssd, False)  # fmt: skip
                scores[p, 0] = ssd
                for k in range(ndim):
                    state[p, k] = best[k]
                    scores[p, k + 1] = best_b[k]
        if a >= 1:  # second pass over plane a - 1
            slot = (a - 1) % 2
            for j in range(plane):
                p = (a - 1) * plane + j
                _patch_origin(origins, p, strides, origin)
                rest = p
                c = 0
                for k in range(ndim):
                    index = rest // steps[k]
                    rest -= index * steps[k]
                    for step in (-1, 1):
                        q = p
                        if 0 <= index + step < counts[k]:
                            q = p + step * steps[k]
                        for m in range(ndim):
                            cands[c, m] = state[q, m]
                        c += 1
                for k in range(ndim):
                    best[k] = state[p, k]
                    best_b[k] = scores[p, k + 1]
                _descend(ctx, origin, upper, ring_t[slot, j], ring_g[slot, j], ring_h[slot, j],
                         err, work, best_err, best, best_b, u, trial, cands, second,
                         scores[p, 0], True)  # fmt: skip
                for k in range(ndim):
                    out[p, k] = best[k]


@numba.njit(cache=True, nogil=True, fastmath=True)
def densify(
    ref,
    mov,
    strides,
    offs,
    mov_strides,
    mov_offs,
    corners,
    origins,
    disp,
    normalize,
    upper,
    floor,
    canvas_starts,
    canvas_offs,
    num,
    den,
):
    """Add each patch pixel's weight ``1 / max(|residual|, floor)`` (and weighted
    displacement) to the flat canvases ``den`` and ``num`` (ndim, size)."""
    count, ndim = origins.shape
    npix = offs.shape[0]
    template, err, work, ctx = _setup(mov, mov_strides, mov_offs, corners, upper, normalize)
    origin = np.empty(ndim)
    u = np.empty(ndim)
    for p in range(count):
        start = _patch_origin(origins, p, strides, origin)
        for k in range(ndim):
            u[k] = disp[p, k]
        total = 0.0
        for x in range(npix):
            template[x] = ref[start + offs[x]]
            total += template[x]
        if normalize:
            m = total / npix
            for x in range(npix):
                template[x] -= m
        _residual(ctx, origin, u, template, err, work)
        cstart = canvas_starts[p]
        for x in range(npix):
            e = abs(err[x])
            w = 1.0 / (e if e > floor else floor)
            idx = cstart + canvas_offs[x]
            den[idx] += w
            for k in range(ndim):
                num[k, idx] += w * u[k]


@numba.njit(cache=True, nogil=True, fastmath=True)
def interpolate_3d(disp, lo0, hi0, w0, lo1, hi1, w1, lo2, hi2, w2, out):
    """``out[c, k, i, j]``: ``disp[c]`` (a coarse grid) interpolated linearly at the
    fractional grid positions given per output axis by ``lo``, ``hi`` (corner indices) and
    ``w`` (the upper corner's weight), one axis after the other, as
    :func:`._dis_patches._interpolate_patches` does with numpy."""
    row = np.empty(disp.shape[3], dtype=out.dtype)
    for c in range(out.shape[0]):
        d = disp[c]
        for k in range(out.shape[1]):
            a0, b0, f0 = lo0[k], hi0[k], w0[k]
            for i in range(out.shape[2]):
                a1, b1, f1 = lo1[i], hi1[i], w1[i]
                for q in range(row.shape[0]):
                    p0 = d[a0, a1, q] + f0 * (d[b0, a1, q] - d[a0, a1, q])
                    p1 = d[a0, b1, q] + f0 * (d[b0, b1, q] - d[a0, b1, q])
                    row[q] = p0 + f1 * (p1 - p0)
                for j in range(out.shape[3]):
                    a = row[lo2[j]]
                    out[c, k, i, j] = a + w2[j] * (row[hi2[j]] - a)
