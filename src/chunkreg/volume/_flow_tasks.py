"""The flow tasks of one level: a whole level in memory, or one tile (with or without a coarser
flow to refine). Each runs on a worker, reads its own inputs and writes outputs it alone owns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_finite
from ..engine._blend import QC_STEP, QC_SUBSAMPLE_FROM, Scratch, describe_tile
from ..errors import InputError
from ..io import ArrayRef, read_region
from ..registration import normalized_cross_correlation
from ..registration._methods import kernel
from ..registration._multiscale import (
    initial_flow,
    initial_flow_points,
    level_step,
    refine_region,
)
from ..registration._samplers import sample_bounds, sample_region
from ._intensity import IDENTITY, Intensity
from ._levels import REFINE_MOTION

__all__ = ["LevelJob", "Residual", "TileTask", "WholeTask", "flow_tile", "whole_level"]


def _starts(region) -> list[int]:
    return [s.start for s in region]


def _check_shape(flow, expected) -> np.ndarray:
    if np.shape(flow) != expected:
        raise ValueError(f"the kernel returned shape {np.shape(flow)}, expected {expected}")
    return np.asarray(flow)


@dataclass(frozen=True)
class CentreFlow:
    """An initial flow known at the outer product of ``points`` (local positions per axis)."""

    points: list
    values: np.ndarray
    patch_size: int

    def __call__(self, points) -> np.ndarray:
        if not all(np.array_equal(a, b) for a, b in zip(points, self.points, strict=True)):
            raise ValueError("the initial flow was computed at other patch centres")
        return self.values


@dataclass(frozen=True)
class Residual:
    """How a tile refines the coarser level's flow.

    Called, ``solve(reference, moving) -> flow`` for the refinement of a pre-warped tile:
    iLK and TV-L1 run one pyramid level (no image pyramid: the motion left is small); a
    custom kernel is called as it is. DIS refines the initial flow itself (:meth:`refine`).
    """

    method: Any
    params: dict = field(hash=False)

    def __call__(self, reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
        if callable(self.method):
            return self.method(reference, moving, **self.params)
        from ..registration import coarse_to_fine, ilk_solver, tvl1_solver

        solver = (ilk_solver if self.method == "ilk" else tvl1_solver)(**self.params)
        return coarse_to_fine(reference, moving, solver, num_levels=1)

    def initial(self, read_coarse, read, fine_shape, coarse_shape, step=None):
        """The initial flow over the tile's ``read`` region: dense, or for DIS at its patch
        centres only (a :class:`CentreFlow`: DIS reads it nowhere else). ``step``: per axis,
        2 where the coarser level halves this one, 1 where both share the grid (default 2)."""
        if self.method != "dis":
            return initial_flow(read_coarse, read, fine_shape, coarse_shape, step)
        from ..registration._optical_flow_dis import patch_centres, resolve_params

        shape = tuple(r.stop - r.start for r in read)
        params = resolve_params(self.params, len(shape))
        points = patch_centres(shape, params, _starts(read))
        values = initial_flow_points(read_coarse, read, points, fine_shape, coarse_shape,
                                     step)  # fmt: skip
        return CentreFlow(points, values, params.patch_size)

    def moving_bounds(self, initial, read, shape) -> tuple[slice, ...]:
        """Region of the moving volume that refining ``initial`` over ``read`` samples."""
        from ._warp_volume import sample_bounds  # it imports this package's flow

        if not isinstance(initial, CentreFlow):  # cubic pre-warp
            return sample_bounds(initial, read, shape, 3)
        # where the patches start, moved by the residual; a patch's pixels lie within half a
        # patch of its centre, and linear sampling needs the next voxel
        grow = REFINE_MOTION + initial.patch_size // 2 + 2
        out = []
        for axis, (r, n) in enumerate(zip(read, shape, strict=True)):
            view = [1] * len(read)
            view[axis] = -1
            pos = initial.values[axis] + (r.start + initial.points[axis]).reshape(view)
            lo = math.floor(float(pos.min())) - grow
            hi = math.floor(float(pos.max())) + grow + 1
            lo = min(max(lo, 0), n - 1)
            out.append(slice(lo, max(min(hi, n), lo + 1)))
        return tuple(out)

    def refine(self, reference, moving_region, moving_start, initial, read_start, keep):
        """The total flow over ``keep`` from ``initial`` (see :func:`refine_region`).

        DIS refines the initial flow itself, sampling the moving region where it points
        (:func:`chunkreg.registration._optical_flow_dis.refine_flow_dis`: one interpolation,
        the patch grid on the volume's multiples of its stride); the others solve for the
        residual between the reference and the pre-warped moving region.
        """
        if self.method != "dis":
            return refine_region(
                reference, moving_region, moving_start, initial, read_start, self, keep
            )
        from ..registration._optical_flow_dis import refine_flow_dis, resolve_params

        params = resolve_params(self.params, reference.ndim)
        offset = [m - r for m, r in zip(moving_start, read_start, strict=True)]
        flow = refine_flow_dis(reference, moving_region.astype(reference.dtype, copy=False),
                               initial, params, moving_offset=offset,
                               grid_start=read_start)  # fmt: skip
        return np.asarray(flow[(slice(None), *keep)], dtype=np.float32)


def _read(array, region, intensity: Intensity, name: str, task):
    """A region of an input as kernel intensities (float32, checked finite); and its bytes."""
    raw = read_region(array, region, name)
    values = intensity(raw)
    check_finite(values, f"{name} in {task}")
    return values, raw.nbytes


def _flat(ref, mov, intensities, core=None) -> bool:
    """Whether the reference or the moving image has no usable texture over a tile's core
    (``core``: slices of both regions; None: all of them)."""
    if core is not None:
        ref, mov = ref[core], mov[core]
    return intensities[0].flat(ref) or intensities[1].flat(mov)


@dataclass(frozen=True)
class WholeTask:
    """The flow of a whole (coarse) level in one task."""

    reference: ArrayRef
    moving: ArrayRef
    output: ArrayRef
    method: Any
    params: dict = field(hash=False)
    level: int = 0
    intensities: tuple[Intensity, Intensity] = (IDENTITY, IDENTITY)

    def __str__(self) -> str:
        return f"whole level {self.level}"


def whole_level(task: WholeTask) -> dict:
    """Run the kernel (with its own image pyramid) over a whole level and write the flow."""
    t0 = time.perf_counter()
    arrays = task.reference.open(), task.moving.open()
    everything = tuple(slice(0, n) for n in arrays[0].shape)
    ref, ref_bytes = _read(arrays[0], everything, task.intensities[0],
                           "reference", task)  # fmt: skip
    mov, mov_bytes = _read(arrays[1], everything, task.intensities[1],
                           "moving", task)  # fmt: skip
    t1 = time.perf_counter()
    if _flat(ref, mov, task.intensities):  # nothing to match: zero flow, not noise
        flow = np.zeros((ref.ndim, *ref.shape), dtype=np.float32)
    else:
        flow = _check_shape(kernel(task.method)(ref, mov, **task.params), (ref.ndim, *ref.shape))
        flow = np.ascontiguousarray(flow, dtype=np.float32)
    t2 = time.perf_counter()
    task.output.open(mode="r+")[...] = flow
    return {
        "bytes_read": ref_bytes + mov_bytes,
        "bytes_written": flow.nbytes,
        "seconds": t2 - t1,
        "read_seconds": t1 - t0,
    }


@dataclass(frozen=True)
class LevelJob:
    """What the tile tasks of one level share (small and picklable)."""

    reference: ArrayRef
    moving: ArrayRef
    coarse: ArrayRef | None  # the level above's flow, to refine; None: the kernel's pyramid
    scratch: Scratch
    method: Any
    params: dict = field(hash=False)
    level: int = 0
    intensities: tuple[Intensity, Intensity] = (IDENTITY, IDENTITY)


@dataclass(frozen=True)
class TileTask:
    job: LevelJob
    number: int

    def __str__(self) -> str:
        where = f"level {self.job.level} " if self.job.level else ""
        return where + describe_tile(self.job.scratch.grid.tile(self.number))


def _quality(reference, moving, flow, core) -> tuple[float, float]:
    """NCC of the reference and the moving volume over a tile's core, before and after warping
    the moving one by the tile's flow (linear interpolation).

    ``reference`` is the reference over the core, ``flow`` the tile's flow there; ``moving`` is
    ``(array, region, start, intensity)``: the moving zarr array, a part of it already in memory
    (as kernel intensities), used where it holds what is needed, and how to turn the array's
    values into intensities elsewhere. Cores of ``QC_SUBSAMPLE_FROM`` voxels or more are measured
    on every ``QC_STEP``-th voxel per axis (in 3-D an eighth of the work, 32768 samples or more).
    """
    array, region, start, intensity = moving
    step = QC_STEP if reference.size >= QC_SUBSAMPLE_FROM else 1
    sub = (slice(None, None, step),) * reference.ndim
    flow = flow[(slice(None), *sub)]

    def part(bounds):
        inside = all(
            b.start >= s and b.stop <= s + n
            for b, s, n in zip(bounds, start, region.shape, strict=True)
        )
        if inside:
            local = tuple(
                slice(b.start - s, b.stop - s) for b, s in zip(bounds, start, strict=True)
            )
            return region[local], [b.start for b in bounds]
        return intensity(read_region(array, bounds, "moving")), [b.start for b in bounds]

    values, _ = part(core)
    before = values[sub]
    values, origin = part(sample_bounds(flow, core, array.shape, 1))
    after = sample_region(values, origin, flow, [c.start for c in core], order=1, step=step)
    reference = reference[sub]
    return (
        normalized_cross_correlation(reference, before),
        normalized_cross_correlation(reference, after),
    )


def flow_tile(task: TileTask) -> dict:
    """Compute one tile's flow over its blend region and write it to the scratch pieces."""
    job = task.job
    scratch = job.scratch
    tile = scratch.grid.tile(task.number)
    blend = scratch.band_grid.tile(task.number)
    keep = tuple(
        slice(b.start - r.start, b.stop - r.start)
        for b, r in zip(blend.read, tile.read, strict=True)
    )
    t0 = time.perf_counter()
    intensities = job.intensities
    ref_array = job.reference.open()
    ref_shape = ref_array.shape
    ref, read = _read(ref_array, tile.read, intensities[0], "reference", task)
    mov_array = job.moving.open()
    if job.coarse is None:
        mov, mov_bytes = _read(mov_array, tile.read, intensities[1], "moving", task)
        read += mov_bytes
        t1 = time.perf_counter()
        flat = _flat(ref, mov, intensities, tile.core_in_read)
        if flat:  # nothing to match: zero flow, flagged, not noise
            values = np.zeros((ref.ndim, *blend.read_shape), dtype=np.float32)
        else:
            flow = _check_shape(kernel(job.method)(ref, mov, **job.params), (ref.ndim, *ref.shape))
            values = np.asarray(flow[(slice(None), *keep)], dtype=np.float32)
        mov_start = _starts(tile.read)
    else:
        coarse = job.coarse.open()
        read_bytes = [0]

        def read_coarse(region):
            values = coarse[(slice(None), *region)]
            if not np.all(np.isfinite(values)):
                raise InputError(
                    f"the flow of level {job.level + 1} is incomplete (NaN) where {task} needs "
                    "it; run the same command again to finish it."
                )
            read_bytes[0] += values.nbytes
            return values

        residual = Residual(job.method, job.params)
        initial = residual.initial(read_coarse, tile.read, ref_shape, coarse.shape[1:],
                                   level_step(ref_shape, coarse.shape[1:]))  # fmt: skip
        bounds = residual.moving_bounds(initial, tile.read, mov_array.shape)
        mov, mov_bytes = _read(mov_array, bounds, intensities[1], "moving", task)
        region = mov
        mov_start = _starts(bounds)
        read += mov_bytes + read_bytes[0]
        t1 = time.perf_counter()
        # the moving region lies where the coarser flow points: judged whole
        flat = intensities[0].flat(ref[tile.core_in_read]) or intensities[1].flat(mov)
        if flat:  # nothing to match: zero flow, flagged, not the upsampled neighbours' motion
            values = np.zeros((ref.ndim, *blend.read_shape), dtype=np.float32)
        else:
            values = residual.refine(
                ref, region, _starts(bounds), initial, _starts(tile.read), keep
            )  # fmt: skip
    t2 = time.perf_counter()
    written = scratch.write(tile.index, values)
    t3 = time.perf_counter()
    if scratch.qc:  # measured here, where both volumes are in memory; the blend reports it
        in_read = tuple(
            slice(c.start - r.start, c.stop - r.start)
            for c, r in zip(tile.core, tile.read, strict=True)
        )
        in_blend = tuple(
            slice(c.start - b.start, c.stop - b.start)
            for c, b in zip(tile.core, blend.read, strict=True)
        )
        scratch.write_qc(
            task.number,
            *_quality(
                ref[in_read], (mov_array, mov, mov_start, intensities[1]),
                values[(slice(None), *in_blend)], tile.core,
            ),
            flat,
        )  # fmt: skip
    return {
        "bytes_read": read,
        "bytes_written": written,
        "seconds": t2 - t1,
        "read_seconds": t1 - t0,
        "write_seconds": t3 - t2,
        "qc_seconds": time.perf_counter() - t3,
    }
