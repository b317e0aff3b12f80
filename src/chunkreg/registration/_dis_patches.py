"""Patch search and densification of dense inverse search (DIS), vectorised over patches.

On one pyramid level, the reference is cut into square (cubic) patches of ``patch_size``
pixels on a regular grid of step ``patch_stride``. Each patch gets one displacement ``u``,
found by inverse-compositional Gauss-Newton on the sum of squared differences between the
reference patch and the moving image sampled at ``x + u``: the patch's gradients and their
Hessian are those of the fixed reference patch, so they are computed once, and every
iteration only samples the moving image (one gather of a ``(patch_size + 1)**ndim`` block per
patch, then a linear blend with per-patch weights) and accumulates. All patches of a batch
of patch-grid rows are updated at once with numpy; batches bound the memory.

The dense flow is then the average of the patch displacements over the patches covering
each pixel, weighted by ``1 / max(|residual|, floor)`` of that patch at that pixel, so that a
patch straddling a motion boundary counts only where it fits. Private to
:mod:`chunkreg.registration`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["PatchGrid", "patch_flow"]

#: Patches per batch (bounds the memory of the per-patch blocks to a few MiB).
_BATCH_PIXELS = 1 << 19


@dataclass(frozen=True)
class PatchGrid:
    """A regular grid of patches over an image of ``shape``, padded by ``margin``.

    Patch ``i`` (a grid index per axis) covers pixels ``i * stride ... i * stride + size - 1``
    along each axis; the last patches may overhang the image by less than ``stride`` pixels,
    where the padded (edge-replicated) image supplies values.
    """

    shape: tuple[int, ...]
    size: int
    stride: int
    margin: int

    @property
    def counts(self) -> tuple[int, ...]:
        """Patches along each axis."""
        return tuple(max(1, math.ceil((n - self.size) / self.stride) + 1) for n in self.shape)

    @property
    def canvas(self) -> tuple[int, ...]:
        """Shape covered by all patches (>= ``shape`` along every axis)."""
        return tuple((c - 1) * self.stride + self.size for c in self.counts)

    def pad_widths(self) -> list[tuple[int, int]]:
        """Padding per axis so that every patch, displaced within the margin, is in bounds."""
        return [
            (self.margin, self.margin + max(0, c - n) + 1)
            for n, c in zip(self.shape, self.canvas, strict=True)
        ]


def _batches(counts: tuple[int, ...], size: int, ndim: int) -> list[tuple[int, int]]:
    """Split the patch-grid rows (axis 0) into batches of about ``_BATCH_PIXELS`` pixels."""
    per_row = math.prod(counts[1:]) * size**ndim
    step = max(1, _BATCH_PIXELS // max(per_row, 1))
    return [(a, min(a + step, counts[0])) for a in range(0, counts[0], step)]


def _lerp_blocks(blocks: np.ndarray, frac: np.ndarray, out_shape) -> np.ndarray:
    """Blend ``(P, s+1, ..., s+1)`` blocks linearly along each axis with per-patch ``frac``."""
    out = blocks
    ndim = frac.shape[1]
    for axis in range(ndim):
        lo = out[(slice(None),) * (axis + 1) + (slice(0, -1),)]
        hi = out[(slice(None),) * (axis + 1) + (slice(1, None),)]
        weight = frac[:, axis].reshape((-1,) + (1,) * ndim)
        step = hi - lo
        step *= weight
        step += lo
        out = step
    return out.reshape(out_shape)


def _template(ref_view, origin: np.ndarray, size: int, normalize: bool):
    """Reference patches, their gradients (central differences) and inverse Hessians.

    ``ref_view`` is the sliding window view of the padded reference with windows of
    ``size + 2`` (one pixel of context on each side for the gradient); ``origin`` holds the
    padded position of each patch's first pixel.
    """
    ndim = origin.shape[1]
    count = origin.shape[0]
    ext = ref_view[tuple(origin[:, k] - 1 for k in range(ndim))]  # (P, size+2, ...)
    inner = (slice(None),) + (slice(1, -1),) * ndim
    template = np.ascontiguousarray(ext[inner]).reshape(count, -1)
    grads = np.empty((count, ndim, size**ndim), dtype=template.dtype)
    for axis in range(ndim):
        fwd = list(inner)
        bwd = list(inner)
        fwd[axis + 1] = slice(2, None)
        bwd[axis + 1] = slice(0, -2)
        g = np.subtract(ext[tuple(fwd)], ext[tuple(bwd)])
        g *= 0.5
        grads[:, axis] = g.reshape(count, -1)
    if normalize:
        grads -= grads.mean(axis=2, keepdims=True)
        template = template - template.mean(axis=1, keepdims=True)
    hessian = np.einsum("pkx,plx->pkl", grads, grads, optimize=False)
    trace = np.trace(hessian, axis1=1, axis2=2)
    # Damping: flat or pure-edge patches move only where they have texture.
    damp = 1e-3 * trace / ndim + 1e-12
    for k in range(ndim):
        hessian[:, k, k] += damp
    return template, grads, np.linalg.inv(hessian)


def patch_flow(
    reference: np.ndarray,
    moving: np.ndarray,
    flow: np.ndarray,
    *,
    size: int,
    stride: int,
    iterations: int,
    normalize: bool,
    floor: float,
) -> np.ndarray:
    """One level of DIS: patch search from ``flow`` (dense) and densification.

    Parameters
    ----------
    reference, moving : ndarray, shape S
        The level's images, of one float dtype.
    flow : ndarray, shape (ndim, *S)
        Initial dense flow; each patch starts from its value at the patch centre.
    size, stride : int
        Patch width and grid step, in pixels.
    iterations : int
        Gauss-Newton iterations per patch.
    normalize : bool
        Compare patches after subtracting their means (robust to brightness offsets).
    floor : float
        Smallest residual in the densification weights ``1 / max(|residual|, floor)``.

    Returns
    -------
    ndarray, shape (ndim, *S)
        The dense flow, same dtype as ``reference``.
    """
    ndim = reference.ndim
    dtype = reference.dtype
    shape = reference.shape
    margin = max(2, size)
    grid = PatchGrid(shape, size, stride, margin)
    counts = grid.counts
    pads = grid.pad_widths()
    ref_pad = np.pad(reference, pads, mode="edge")
    mov_pad = np.pad(moving, pads, mode="edge")
    ref_view = sliding_window_view(ref_pad, (size + 2,) * ndim)
    mov_view = sliding_window_view(mov_pad, (size + 1,) * ndim)
    upper = np.array([n - size - 1 for n in mov_pad.shape], dtype=dtype)

    # Initial displacement of every patch: the dense flow at the patch centre.
    axes_idx = [np.minimum(np.arange(c) * stride + size // 2, n - 1) for c, n in zip(counts, shape)]
    init = np.stack([flow[k][np.ix_(*axes_idx)] for k in range(ndim)], axis=-1)  # (*counts, nd)

    num = np.zeros((ndim, *grid.canvas), dtype=dtype)
    den = np.zeros(grid.canvas, dtype=dtype)
    offsets = list(product(range(size), repeat=ndim))
    grid_axes = [np.arange(c) * stride + margin for c in counts[1:]]

    for r0, r1 in _batches(counts, size, ndim):
        rows = np.arange(r0, r1) * stride + margin
        origin = np.stack(
            [g.ravel() for g in np.meshgrid(rows, *grid_axes, indexing="ij")], axis=1
        ).astype(dtype)  # (P, nd) padded position of each patch's first pixel
        count = origin.shape[0]
        template, grads, hinv = _template(ref_view, origin.astype(np.intp), size, normalize)
        u = init[r0:r1].reshape(count, ndim).astype(dtype, copy=True)
        lo = -origin
        hi = upper - origin
        np.clip(u, lo, hi, out=u)

        def residual(disp):
            pos = origin + disp
            base = np.floor(pos)
            np.minimum(base, upper - 1, out=base)
            frac = pos - base
            blocks = mov_view[tuple(base[:, k].astype(np.intp) for k in range(ndim))]
            warped = _lerp_blocks(blocks, frac, template.shape)
            if normalize:
                warped -= warped.mean(axis=1, keepdims=True)
            warped -= template
            return warped

        best = u.copy()
        best_err = np.full(count, np.inf, dtype=dtype)
        for it in range(iterations + 1):
            err = residual(u)
            ssd = np.einsum("px,px->p", err, err)
            better = ssd < best_err
            best[better] = u[better]
            best_err[better] = ssd[better]
            if it == iterations:
                break
            b = np.einsum("pkx,px->pk", grads, err)
            du = np.einsum("pkl,pl->pk", hinv, b)
            u -= du
            np.clip(u, lo, hi, out=u)
        err = residual(best)
        np.abs(err, out=err)
        np.maximum(err, floor, out=err)
        weights = np.reciprocal(err).reshape(r1 - r0, *counts[1:], *(size,) * ndim)
        disp = best.reshape(r1 - r0, *counts[1:], ndim)
        for off in offsets:
            target = (slice(off[0] + r0 * stride, off[0] + (r1 - 1) * stride + 1, stride),) + tuple(
                slice(o, o + (c - 1) * stride + 1, stride)
                for o, c in zip(off[1:], counts[1:], strict=True)
            )
            w = weights[(slice(None),) * ndim + off]
            den[target] += w
            for k in range(ndim):
                num[k][target] += w * disp[..., k]
    crop = tuple(slice(0, n) for n in shape)
    out = num[(slice(None), *crop)]
    out /= den[crop]
    return np.ascontiguousarray(out)
