"""The moving volume seen through an affine transform, on the reference grid.

:class:`AffineRef` is a picklable stand-in for an :class:`~chunkreg.io.ArrayRef`: its
``open()`` returns an :class:`AffineView`, which reads like a read-only zarr array of the
reference's shape whose voxel ``x`` is the moving volume sampled at ``matrix @ x``. Indexing a
region reads only the part of the moving volume the region maps to (plus the spline support)
and resamples it, so the tiled workflows (flow, blockwise shifts) given one compute only the
motion left after the affine, with no other change to their tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io import ArrayRef, read_region
from ..io._flow_layout import recorded_affine
from ..registration._affine_kernels import affine_bounds, resample_affine
from ._intensity import to_float

__all__ = ["AffineRef", "AffineView", "through_affine"]

#: Spline order of the resampling: cubic keeps the texture the local kernels measure.
VIEW_ORDER = 3


def _region(key, shape) -> tuple[slice, ...]:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape) or not all(isinstance(k, slice) for k in key):
        raise IndexError(f"an affine view takes one slice per axis, got {key!r}")
    out = []
    for k, n in zip(key, shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            raise IndexError("an affine view takes slices with step 1")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


class AffineView:
    """Read-only array-like: ``view[region]`` is the moving volume resampled at ``matrix @ x``
    (float32; integers scaled by their dtype's range, as the kernels scale them).

    Parameters
    ----------
    array : zarr.Array
        The moving volume.
    matrix : ndarray, shape (ndim + 1, ndim + 1)
        Reference voxel to moving voxel coordinates.
    shape : tuple of int
        Shape of the reference grid the view covers.
    chunks : tuple of int
        Chunk shape reported (the reference's).
    order : int
        Spline order of the resampling.
    """

    def __init__(self, array, matrix, shape, chunks, order: int = VIEW_ORDER) -> None:
        self.array = array
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.order = order
        self.dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        region = _region(key, self.shape)
        if any(s.stop <= s.start for s in region):
            return np.zeros(tuple(s.stop - s.start for s in region), dtype=self.dtype)
        bounds = affine_bounds(self.matrix, region, self.array.shape, self.order)
        # integers scaled by their dtype's range first, as the kernels (and the tiles'
        # intensity mapping) expect of what they read
        source = to_float(read_region(self.array, bounds, "moving"))
        return resample_affine(
            source, [b.start for b in bounds], self.matrix, region, order=self.order
        )


@dataclass(frozen=True)
class AffineRef:
    """Where to find the moving volume and how to see it on the reference grid (picklable)."""

    source: ArrayRef
    matrix: tuple[tuple[float, ...], ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    order: int = VIEW_ORDER

    def open(self, mode: str = "r") -> AffineView:
        """Open the view (read-only)."""
        if mode != "r":
            raise ValueError("an affine view of the moving volume is read-only")
        return AffineView(self.source.open(), self.matrix, self.shape, self.chunks, self.order)

    def __str__(self) -> str:
        return f"{self.source} through the initial affine"


def through_affine(source: ArrayRef, matrix, shape, chunks) -> ArrayRef | AffineRef:
    """``source`` seen through ``matrix`` on a grid of ``shape``; ``source`` if matrix is None."""
    if matrix is None:
        return source
    m = tuple(tuple(float(v) for v in row) for row in np.asarray(matrix, dtype=np.float64))
    return AffineRef(source, m, tuple(int(n) for n in shape), tuple(int(c) for c in chunks))


def sample_through_affine(
    moving, flow_tile, core, matrix, *, order: int = 1, mode: str = "edge", cval: float = 0.0
) -> tuple[np.ndarray, int]:
    """Warp one output tile by an affine, or an affine after a displacement field.

    The output at ``x`` is the moving volume at ``matrix @ x`` (``flow_tile`` None), or at
    ``matrix @ (x + flow(x))`` (the flow found after resampling through ``matrix``). Reads only
    the moving region those positions fall in, plus the interpolation support.

    Parameters
    ----------
    moving : zarr.Array
        The moving volume.
    flow_tile : ndarray, shape (ndim, *T), or None
        The residual displacements of the tile's voxels.
    core : tuple of slice
        The tile (output voxels).
    matrix : ndarray, shape (ndim + 1, ndim + 1)
        Reference (output) voxel to moving voxel coordinates.
    order, mode, cval
        As for :func:`chunkreg.volume.warp_volume`.

    Returns
    -------
    values : ndarray of float32 or float64, shape T
    bytes_read : int
        Bytes of the moving region read.
    """
    from scipy import ndimage

    from ..registration._affine_kernels import _MODES, _PREFILTER_DEPTH

    m = np.asarray(matrix, dtype=np.float64)
    if flow_tile is None:
        bounds = affine_bounds(m, core, moving.shape, order)
        region = np.asarray(read_region(moving, bounds, "moving"))
        values = resample_affine(region, [b.start for b in bounds], m, core, order=order,
                                 mode=mode, cval=cval)  # fmt: skip
        return values, region.nbytes
    ndim = len(core)
    coords = np.array(flow_tile, dtype=np.float64, copy=True)
    for axis, s in enumerate(core):
        coords[axis] += np.arange(s.start, s.stop, dtype=np.float64).reshape(
            (-1,) + (1,) * (ndim - 1 - axis)
        )
    mapped = np.tensordot(m[:ndim, :ndim], coords, axes=1)
    del coords
    margin = order // 2 + 2 + (_PREFILTER_DEPTH if order > 1 else 0)
    bounds = []
    for axis, n in enumerate(moving.shape):
        mapped[axis] += m[axis, ndim]
        lo = min(max(int(np.floor(mapped[axis].min())) - margin, 0), n - 1)
        hi = max(min(int(np.floor(mapped[axis].max())) + margin + 1, n), lo + 1)
        bounds.append(slice(lo, hi))
        mapped[axis] -= lo
    region = np.asarray(read_region(moving, tuple(bounds), "moving"))
    dtype = np.float64 if region.dtype == np.float64 else np.float32
    values = ndimage.map_coordinates(region.astype(dtype, copy=False), mapped, output=dtype,
                                     order=order, mode=_MODES[mode], cval=cval)  # fmt: skip
    return values, region.nbytes


def warp_transform(moving, flow, reference, affine) -> tuple[np.ndarray | None, tuple[int, ...]]:
    """The affine a warp applies and the output shape, from its inputs.

    A flow computed after an initial affine records it (attribute ``initial_affine``); its
    displacements are the residual, so the warp applies that affine after the flow. An
    ``affine`` given as well must be the same one.
    """
    from ..errors import InputError
    from ._affine_result import resolve_affine

    given = resolve_affine(affine, moving.ndim)
    recorded = None if flow is None else recorded_affine(flow)
    if given is not None and recorded is not None and not np.allclose(given, recorded, atol=1e-9):
        raise InputError(
            "the flow was computed after an initial affine (recorded in its attributes) and "
            "affine= gives a different one; leave affine out (the flow's own is applied) or give "
            "the same matrix."
        )
    matrix = given if given is not None else recorded
    if flow is None and matrix is None:
        raise InputError("give a displacement field (flow), an affine, or both.")
    if matrix is None:  # the flow's grid is the moving volume's
        shape = tuple(moving.shape)
    elif flow is not None:  # the flow's grid is the reference's
        shape = tuple(flow.shape[1:])
    elif reference is not None:
        shape = tuple(reference.shape)
    else:
        shape = tuple(moving.shape)
    return matrix, shape


def describe_transform(matrix, has_flow: bool) -> str:
    """One line saying what a warp applies."""
    if matrix is None:
        return "transform: the displacement field, x -> x + flow(x)"
    rows = "; ".join(" ".join(f"{v:.4g}" for v in row) for row in np.asarray(matrix)[:-1])
    if has_flow:
        return f"transform: the flow, then the affine [{rows}]: x -> A (x + flow(x))"
    return f"transform: the affine [{rows}]: x -> A x"
