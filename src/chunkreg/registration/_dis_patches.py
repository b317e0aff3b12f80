"""Patch search and densification of dense inverse search (DIS), vectorised over patches.

On one pyramid level, the reference is cut into square (cubic) patches of ``patch_size``
pixels on a regular grid of step ``patch_stride``. Each patch gets one displacement ``u``,
found by inverse-compositional Gauss-Newton on the sum of squared differences between the
reference patch and the moving image sampled at ``x + u``: the patch's gradients and their
Hessian are those of the fixed reference patch, so they are computed once, and every
iteration only samples the moving image (one gather of a ``(patch_size + 1)**ndim`` block per
patch, then a linear blend with per-patch weights) and accumulates. The search runs in two
passes; between them each patch also tries its grid neighbours' displacements (spatial
propagation). The compiled kernels of :mod:`._dis_search` do this patch by patch; the numpy
path here (the reference the tests compare them with) updates all patches of a batch of
patch-grid rows at once, batches bounding the memory.

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

__all__ = ["PatchGrid", "patch_flow"]

#: Patch pixels per batch: the per-patch arrays of a batch stay cache-sized.
_BATCH_PIXELS = 1 << 17
#: Tikhonov damping of the patch Hessians, relative to their trace.
_DAMPING = 1e-3
#: Use the compiled kernels of :mod:`._dis_search`.
_COMPILED = True


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
    def parts(self) -> int:
        """Grid cells (of ``stride`` pixels) a patch spans along each axis."""
        return math.ceil(self.size / self.stride)

    @property
    def cells(self) -> tuple[int, ...]:
        """Cells of ``stride`` pixels covering all patches, along each axis."""
        return tuple(c + self.parts - 1 for c in self.counts)

    @property
    def canvas(self) -> tuple[int, ...]:
        """Shape of whole cells covering all patches (>= ``shape`` along every axis)."""
        return tuple(c * self.stride for c in self.cells)

    def pad_widths(self) -> list[tuple[int, int]]:
        """Padding per axis so that every patch, displaced within the margin, is in bounds."""
        return [
            (self.margin, self.margin + max(0, c - n) + 1)
            for n, c in zip(self.shape, self.canvas, strict=True)
        ]


def _batches(counts: tuple[int, ...], size: int, ndim: int) -> list[tuple[int, int]]:
    """Split the patch-grid rows (axis 0) into batches of about ``_BATCH_PIXELS`` pixels.

    Small levels get smaller batches (an eighth of their patch pixels, at least 2**14), so
    the batch buffers stay a small multiple of the image.
    """
    per_row = math.prod(counts[1:]) * size**ndim
    target = min(_BATCH_PIXELS, max(1 << 14, per_row * counts[0] // 8))
    step = max(1, target // max(per_row, 1))
    return [(a, min(a + step, counts[0])) for a in range(0, counts[0], step)]


def _block_offsets(shape: tuple[int, ...], width: int) -> np.ndarray:
    """Flat offsets, in an array of ``shape``, of a ``width``-wide block: shape (width,)*ndim."""
    strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]
    offsets = np.zeros((width,) * len(shape), dtype=np.intp)
    for axis, stride in enumerate(strides):
        view = [1] * len(shape)
        view[axis] = width
        offsets += (np.arange(width, dtype=np.intp) * stride).reshape(view)
    return offsets


class _Blocks:
    """Gathers of ``width``-wide blocks of a padded image, patch index last: (w,...,w, P)."""

    def __init__(self, image: np.ndarray, width: int) -> None:
        self.flat = image.reshape(-1)
        self.strides = np.array(
            [math.prod(image.shape[k + 1 :]) for k in range(image.ndim)], dtype=np.intp
        )
        self.offsets = _block_offsets(image.shape, width)[..., np.newaxis]

    def __call__(self, corner: np.ndarray) -> np.ndarray:
        """Blocks whose first pixel is at ``corner`` (integer array, shape (ndim, P))."""
        base = np.einsum("k,kp->p", self.strides, corner)
        return np.take(self.flat, self.offsets + base)


def _lerp(blocks: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Linear blend of ``(w+1,)*ndim + (P,)`` blocks along each axis by ``frac`` (ndim, P)."""
    out = blocks
    for axis, weight in enumerate(frac):
        lo = out[(slice(None),) * axis + (slice(0, -1),)]
        step = np.subtract(out[(slice(None),) * axis + (slice(1, None),)], lo)
        step *= weight
        step += lo
        out = step
    return out


def _template(blocks: np.ndarray, normalize: bool):
    """Reference patches, their gradients (central differences) and inverse Hessians.

    ``blocks`` holds each patch with one pixel of context per side, ``(size+2,)*ndim + (P,)``.
    Returns ``template`` (X, P), ``grads`` (ndim, X, P) and ``hinv`` (ndim, ndim, P), with
    ``X = size**ndim``.
    """
    ndim = blocks.ndim - 1
    count = blocks.shape[-1]
    inner = (slice(1, -1),) * ndim
    template = np.ascontiguousarray(blocks[inner]).reshape(-1, count)
    grads = np.empty((ndim, template.shape[0], count), dtype=blocks.dtype)
    for axis in range(ndim):
        fwd, bwd = list(inner), list(inner)
        fwd[axis], bwd[axis] = slice(2, None), slice(0, -2)
        g = np.subtract(blocks[tuple(fwd)], blocks[tuple(bwd)])
        g *= 0.5
        grads[axis] = g.reshape(-1, count)
    if normalize:
        grads -= grads.mean(axis=1, keepdims=True)
        template = template - template.mean(axis=0)
    hessian = np.empty((count, ndim, ndim), dtype=blocks.dtype)
    for k in range(ndim):
        for j in range(k, ndim):
            hessian[:, k, j] = hessian[:, j, k] = np.einsum("xp,xp->p", grads[k], grads[j])
    trace = np.trace(hessian, axis1=1, axis2=2)
    # Damping: flat or pure-edge patches move only where they have texture.
    damp = _DAMPING * trace / ndim + 1e-12
    for k in range(ndim):
        hessian[:, k, k] += damp
    hinv = np.moveaxis(np.linalg.inv(hessian), 0, -1)
    return template, grads, np.ascontiguousarray(hinv)


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
    interpolate: bool = True,
) -> np.ndarray:
    """One level of DIS: patch search from ``flow`` (dense) and densification.

    Parameters
    ----------
    reference, moving : ndarray, shape S
        The level's images, of one float dtype. ``moving`` may have another shape (a region
        of a larger image): displacements are then into its local coordinates.
    flow : ndarray, shape (ndim, ...), or callable
        Initial dense flow, of this level's shape or a coarser one; each patch starts from
        its value at the patch centre. A callable ``flow(centres)`` returns it at the patch
        centres only: ``centres`` holds the centres' pixel positions per axis, and the
        result has shape ``(ndim, *[len(c) for c in centres])``.
    size, stride : int
        Patch width and grid step, in pixels.
    iterations : int
        Gauss-Newton iterations per patch.
    normalize : bool
        Compare patches after subtracting their means (robust to brightness offsets).
    floor : float
        Smallest residual in the densification weights ``1 / max(|residual|, floor)``.
    interpolate : bool
        With ``stride == size`` (patches tiling the image), interpolate the patches'
        displacements linearly between their centres rather than giving each pixel its
        patch's (see :func:`_interpolate_patches`).

    Returns
    -------
    ndarray, shape (ndim, *S)
        The dense flow, same dtype as ``reference`` (a view into a slightly larger array).
    """
    ndim = reference.ndim
    dtype = reference.dtype
    shape = reference.shape
    margin = max(2, size)
    grid = PatchGrid(shape, size, stride, margin)
    counts = grid.counts
    pads = grid.pad_widths()
    ref_pad = np.pad(reference, pads, mode="edge")
    # a moving image of another shape (a tile's moving region) gets a patch and the margin
    # beyond both of its ends
    pads_moving = pads if moving.shape == shape else [(margin, margin + size + 1)] * ndim
    mov_pad = np.pad(moving, pads_moving, mode="edge")
    upper = np.array([n - size - 1 for n in mov_pad.shape], dtype=dtype)[:, np.newaxis]

    # Initial displacement of every patch: the (coarser) flow at the patch centre.
    centres = [
        np.minimum(np.arange(c) * stride + size // 2, n - 1)
        for c, n in zip(counts, shape, strict=True)
    ]
    if callable(flow):  # given at the patch centres only
        init = np.asarray(flow(centres), dtype=dtype)
    else:
        init = _sample_grid(flow, centres, shape)  # (ndim, *counts)
    if _COMPILED:
        return _compiled_patch_flow(
            ref_pad, mov_pad, init, grid, iterations, normalize, floor, interpolate
        )
    ref_blocks = _Blocks(ref_pad, size + 2)
    mov_blocks = _Blocks(mov_pad, size + 1)
    grid_axes = [np.arange(c) * stride + margin for c in counts[1:]]
    batches = _batches(counts, size, ndim)
    first = iterations // 2
    state = init.astype(dtype, copy=True)
    num = np.zeros((ndim, *grid.canvas), dtype=dtype)
    den = np.zeros(grid.canvas, dtype=dtype)
    # Pass 1: half the iterations from the coarse flow. Pass 2: each patch also tries its
    # grid neighbours' results of pass 1 (spatial propagation), then the other half.
    for last in (False, True):
        previous = state.copy() if last else None
        for r0, r1 in batches:
            rows = np.arange(r0, r1) * stride + margin
            corner = np.stack(
                [g.ravel() for g in np.meshgrid(rows, *grid_axes, indexing="ij")]
            )  # (ndim, P): padded position of each patch's first pixel
            search = _Search(ref_blocks, mov_blocks, corner, upper, normalize)
            u = state[:, r0:r1].reshape(ndim, -1).copy()
            if last:
                candidates = [
                    _neighbours(previous, r0, r1, axis, step)
                    for axis in range(ndim)
                    for step in (-1, 1)
                ]
                u = search.best_of(u, candidates)
            u = search.run(u, first if not last else iterations - first)
            state[:, r0:r1] = u.reshape(ndim, r1 - r0, *counts[1:])
            if last:
                err = search.residual(u)
                np.abs(err, out=err)
                np.maximum(err, floor, out=err)
                weights = np.reciprocal(err).reshape(*(size,) * ndim, r1 - r0, *counts[1:])
                disp = u.reshape(ndim, r1 - r0, *counts[1:])
                _accumulate(num, den, weights, disp, grid, r0)
    if stride == size and interpolate:
        return _interpolate_patches(state.astype(dtype), grid)
    crop = tuple(slice(0, n) for n in shape)
    out = num[(slice(None), *crop)]
    out /= den[crop]
    return np.ascontiguousarray(out)


def _sample_grid(flow: np.ndarray, centres: list[np.ndarray], shape) -> np.ndarray:
    """Sample a flow given on a grid of any size at pixel ``centres`` of a level of ``shape``.

    Linear interpolation, pixel-centre aligned, values scaled by the size ratio; exact (a
    plain gather) when the flow already has the level's shape.
    """
    ndim = flow.shape[0]
    out = []
    for k in range(ndim):
        values = flow[k]
        for axis, (pos, n) in enumerate(zip(centres, shape, strict=True)):
            m = flow.shape[axis + 1]
            if m == n:
                values = np.take(values, pos, axis=axis)
                continue
            x = np.clip((pos + 0.5) * (m / n) - 0.5, 0, m - 1)
            lo = np.minimum(np.floor(x).astype(np.intp), max(m - 2, 0))
            hi = np.minimum(lo + 1, m - 1)
            view = [1] * values.ndim
            view[axis] = len(pos)
            w = (x - lo).astype(flow.dtype).reshape(view)
            a = np.take(values, lo, axis=axis)
            values = a + w * (np.take(values, hi, axis=axis) - a)
        out.append(values * flow.dtype.type(shape[k] / flow.shape[k + 1]))
    return np.stack(out)


def _compiled_patch_flow(
    ref_pad, mov_pad, init, grid: PatchGrid, iterations, normalize, floor, interpolate=True
):
    """:func:`patch_flow` by the compiled kernels of :mod:`._dis_search`."""
    from ._dis_search import densify, search

    ndim = ref_pad.ndim
    counts = grid.counts
    size = grid.size
    strides = np.array([math.prod(ref_pad.shape[k + 1 :]) for k in range(ndim)], np.int64)
    offs = _block_offsets(ref_pad.shape, size).ravel().astype(np.int64)
    if mov_pad.shape == ref_pad.shape:
        mov_strides, mov_offs = strides, offs
    else:
        mov_strides = np.array([math.prod(mov_pad.shape[k + 1 :]) for k in range(ndim)], np.int64)
        mov_offs = _block_offsets(mov_pad.shape, size).ravel().astype(np.int64)
    corners = np.array(list(product((0, 1), repeat=ndim)), dtype=np.int64)
    axes = [np.arange(c, dtype=np.int64) * grid.stride for c in counts]
    cells = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    origins = np.ascontiguousarray(cells + grid.margin)
    upper = np.array([n - size - 1 for n in mov_pad.shape], dtype=np.float64)
    ref_flat, mov_flat = ref_pad.reshape(-1), mov_pad.reshape(-1)
    state = np.ascontiguousarray(init.reshape(ndim, -1).T, dtype=np.float64)
    first = iterations // 2
    out = np.empty_like(state)
    search(ref_flat, mov_flat, strides, offs, mov_strides, mov_offs, corners, origins,
           np.array(counts, np.int64), state, first, iterations - first, normalize, upper,
           _DAMPING, out)  # fmt: skip
    state = out
    if grid.stride == size and interpolate:
        return _interpolate_patches(state.T.astype(ref_pad.dtype).reshape(ndim, *counts), grid)
    canvas = grid.canvas
    num = np.zeros((ndim, math.prod(canvas)), dtype=ref_pad.dtype)
    den = np.zeros(math.prod(canvas), dtype=ref_pad.dtype)
    cstrides = np.array([math.prod(canvas[k + 1 :]) for k in range(ndim)], np.int64)
    canvas_starts = cells @ cstrides
    canvas_offs = _block_offsets(canvas, size).ravel().astype(np.int64)
    densify(ref_flat, mov_flat, strides, offs, mov_strides, mov_offs, corners, origins, state,
            normalize, upper, float(floor), canvas_starts, canvas_offs, num, den)  # fmt: skip
    crop = tuple(slice(0, n) for n in grid.shape)
    out = num.reshape(ndim, *canvas)[(slice(None), *crop)]
    out /= den.reshape(canvas)[crop]
    return np.ascontiguousarray(out)


def _interpolate_patches(disp: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """Dense flow from the displacements of patches that tile the image (``stride == size``).

    Each pixel lies in exactly one patch, so the weighted average would give every pixel
    its patch's displacement: a flow of constant blocks, whose steps at the patch borders
    the refinement's few sweeps do not remove. Instead the displacements, taken at the
    patch centres, are interpolated linearly (separably; clamped beyond the outer
    centres).
    """
    corners = []
    for axis, n in enumerate(grid.shape):
        m = disp.shape[axis + 1]
        x = (np.arange(n, dtype=np.float64) - (grid.size - 1) / 2) / grid.stride
        np.clip(x, 0, m - 1, out=x)
        lo = np.minimum(np.floor(x).astype(np.intp), max(m - 2, 0))
        hi = np.minimum(lo + 1, m - 1)
        corners.append((lo, hi, (x - lo).astype(disp.dtype)))
    if _COMPILED and disp.shape[0] == 3:
        from ._dis_search import interpolate_3d

        out = np.empty((3, *grid.shape), dtype=disp.dtype)
        interpolate_3d(np.ascontiguousarray(disp), *(a for c in corners for a in c), out)
        return out
    out = disp
    for axis, (n, (lo, hi, w)) in enumerate(zip(grid.shape, corners, strict=True)):
        view = [1] * out.ndim
        view[axis + 1] = n
        w = w.reshape(view)
        a = np.take(out, lo, axis=axis + 1)
        b = np.take(out, hi, axis=axis + 1)
        b -= a
        b *= w
        b += a
        out = b
    return np.ascontiguousarray(out)


def _neighbours(state: np.ndarray, r0: int, r1: int, axis: int, step: int) -> np.ndarray:
    """Displacements of each patch's grid neighbour ``step`` along ``axis`` (edge: itself)."""
    ndim = state.shape[0]
    n = state.shape[axis + 1]
    index = np.clip(np.arange(n) + step, 0, n - 1)
    shifted = np.take(state, index, axis=axis + 1) if axis else None
    if axis == 0:
        rows = np.clip(np.arange(r0, r1) + step, 0, n - 1)
        return state[:, rows].reshape(ndim, -1)
    return shifted[:, r0:r1].reshape(ndim, -1)


def _accumulate(num, den, weights, disp, grid: PatchGrid, r0: int) -> None:
    """Add each patch pixel's weight (and weighted displacement) to the dense canvases.

    The canvases are viewed as cells of ``stride`` pixels, shape ``(cells_0, stride,
    cells_1, stride, ...)``; the pixels at offsets ``q * stride ... (q + 1) * stride - 1`` of
    a patch in grid cell ``i`` fall into cell ``i + q`` along that axis, so each combination
    of such parts over the axes is one vectorised addition over all patches of the batch.
    """
    ndim = disp.shape[0]
    s = grid.stride
    rows = disp.shape[1]
    view_shape = [n for c in grid.cells for n in (c, s)]
    den_view = den.reshape(view_shape)
    num_views = [n.reshape(view_shape) for n in num]
    # weights: (size,)*ndim + (rows, *counts[1:]) -> interleave (cell, offset) per axis
    order = [ax for k in range(ndim) for ax in (ndim + k, k)]
    w_all = weights.transpose(order)
    d_all = [d.reshape([n for c in d.shape for n in (c, 1)]) for d in disp]
    counts = (rows, *grid.counts[1:])
    for parts in product(range(grid.parts), repeat=ndim):
        src, dst = [], []
        for k, q in enumerate(parts):
            lo, hi = q * s, min((q + 1) * s, grid.size)
            start = (r0 if k == 0 else 0) + q
            src += [slice(None), slice(lo, hi)]
            dst += [slice(start, start + counts[k]), slice(0, hi - lo)]
        w = w_all[tuple(src)]
        den_view[tuple(dst)] += w
        for k in range(ndim):
            num_views[k][tuple(dst)] += w * d_all[k]


class _Search:
    """Inverse-compositional Gauss-Newton for one batch of patches (patch index last)."""

    def __init__(self, ref_blocks, mov_blocks, corner, upper, normalize: bool) -> None:
        self.template, self.grads, self.hinv = _template(ref_blocks(corner - 1), normalize)
        self.mov_blocks = mov_blocks
        self.origin = corner.astype(self.template.dtype)
        self.upper = upper
        self.lo = -self.origin
        self.hi = upper - self.origin
        self.normalize = normalize
        self.tmp = np.empty_like(self.template)

    def residual(self, disp: np.ndarray) -> np.ndarray:
        """Moving patch at ``disp`` minus the reference patch, shape (X, P)."""
        pos = self.origin + disp
        base = np.floor(pos)
        np.minimum(base, self.upper - 1, out=base)
        pos -= base
        warped = _lerp(self.mov_blocks(base.astype(np.intp)), pos)
        warped = warped.reshape(self.template.shape)
        if self.normalize:
            mean = np.add.reduce(warped, axis=0)
            mean *= 1.0 / warped.shape[0]
            warped -= mean
        warped -= self.template
        return warped

    def ssd(self, err: np.ndarray) -> np.ndarray:
        np.multiply(err, err, out=self.tmp)
        return self.tmp.sum(axis=0)

    def best_of(self, u: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        """Per patch, the displacement of lowest SSD among ``u`` and ``candidates``."""
        best = u.copy()
        best_err = self.ssd(self.residual(u))
        for cand in candidates:
            cand = np.clip(cand, self.lo, self.hi)
            err = self.ssd(self.residual(cand))
            better = err < best_err
            best[:, better] = cand[:, better]
            best_err[better] = err[better]
        return best

    def run(self, u: np.ndarray, iterations: int) -> np.ndarray:
        """``iterations`` Gauss-Newton steps from ``u``; per patch the best visited."""
        ndim = u.shape[0]
        np.clip(u, self.lo, self.hi, out=u)
        best = u.copy()
        best_err = np.full(u.shape[1], np.inf, dtype=u.dtype)
        b = np.empty_like(u)
        tmp = self.tmp
        for it in range(iterations + 1):
            err = self.residual(u)
            np.multiply(err, err, out=tmp)
            ssd = tmp.sum(axis=0)
            better = ssd < best_err
            best[:, better] = u[:, better]
            best_err[better] = ssd[better]
            if it == iterations:
                break
            for k in range(ndim):
                np.multiply(self.grads[k], err, out=tmp)
                tmp.sum(axis=0, out=b[k])
            for k in range(ndim):
                u[k] -= (self.hinv[k] * b).sum(axis=0)
            np.clip(u, self.lo, self.hi, out=u)
        return best
