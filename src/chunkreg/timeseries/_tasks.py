"""Worker-side batch functions of :func:`register_timeseries`.

Each task handles a contiguous batch of frames: it opens the input and the output group
itself, reads its frames once, and writes whole chunks of the output tables and of the
corrected stack (batches are multiples of the output's time chunk), so tasks never share a
chunk. The reference (and its spectrum) is prepared once per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ._estimate import FrameRegistrar
from ._frames import cast_frame, fourier_shift_frame, linear_shift_frame, ncc, overlap_ncc
from ._links import link_targets
from ._patches import PatchCorrelator
from ._piecewise import (
    PatchGrid,
    PiecewiseOptions,
    dense_shift_field,
    patch_shifts,
    reference_patches,
    replace_outliers,
    warp_frame,
)

__all__ = ["Batch", "Job", "apply_batch", "estimate_batch", "measure_pairs"]


@dataclass(frozen=True)
class Job:
    """Everything a task needs besides its frame range (small and picklable)."""

    stack: Any  # ArrayRef of the input
    output: Any  # store of the output group
    output_path: str
    time_axis: int
    n_time: int
    frame_shape: tuple[int, ...]
    mode: str  # "fixed" or "previous"
    strides: tuple[int, ...]
    upsample_factor: int
    normalization: str | None
    roi: tuple[tuple[int, int], ...]
    has_mask: bool
    piecewise: PiecewiseOptions | None
    interpolation: str
    fill_value: float
    apply: bool

    @property
    def roi_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.roi)

    def grid(self) -> PatchGrid:
        return PatchGrid(self.frame_shape, self.piecewise.patch, self.piecewise.overlap)


@dataclass(frozen=True)
class Batch:
    """Frames ``start`` to ``stop`` (exclusive) of a :class:`Job`."""

    job: Job
    index: int
    start: int
    stop: int

    def __str__(self) -> str:
        return f"batch {self.index} (frames {self.start}..{self.stop - 1})"


def _open_group(job: Job) -> zarr.Group:
    return zarr.open_group(job.output, path=job.output_path, mode="r+")


def read_frames(stack: zarr.Array, time_axis: int, start: int, stop: int) -> np.ndarray:
    """Read frames ``start:stop`` as float32, time first."""
    index = [slice(None)] * stack.ndim
    index[time_axis] = slice(start, stop)
    block = np.moveaxis(np.asarray(stack[tuple(index)]), time_axis, 0)
    return block.astype(np.float32)


def registrar(job: Job, reference: np.ndarray, mask=None, *, upsample_factor=None, refine=True):
    """A :class:`FrameRegistrar` with the job's settings."""
    return FrameRegistrar(
        reference,
        upsample_factor=upsample_factor or job.upsample_factor,
        normalization=job.normalization,
        mask=mask,
        refine=refine,
    )


def shift_frame(frame: np.ndarray, shift, job: Job, fill_value: float) -> np.ndarray:
    """Apply a rigid shift with the job's interpolation."""
    if job.interpolation == "fft":
        return fourier_shift_frame(frame, shift, fill_value=fill_value)
    return linear_shift_frame(frame, shift, fill_value=fill_value)


def _mask(group: zarr.Group, job: Job):
    return np.asarray(group["mask"][...], dtype=bool) if job.has_mask else None


def estimate_batch(batch: Batch) -> dict:
    """Phase 1: measure the shifts of one batch (against the reference, or pairwise links)."""
    t0 = time.perf_counter()
    job = batch.job
    group = _open_group(job)
    stack = job.stack.open()
    roi = job.roi_slices
    mask = _mask(group, job)
    mask_e = None if mask is None else mask[roi]
    if job.mode == "previous":
        nbytes = _estimate_links(batch, group, stack, roi, mask_e)
        return {"bytes_read": nbytes, "seconds": time.perf_counter() - t0}
    frames = read_frames(stack, job.time_axis, batch.start, batch.stop)
    reference = np.asarray(group["reference"][...], dtype=np.float32)
    ref_e = np.ascontiguousarray(reference[roi])
    correlator = registrar(job, ref_e, mask_e)
    n, ndim = len(frames), len(job.frame_shape)
    shifts = np.zeros((n, ndim))
    error, phasediff, quality = np.zeros(n), np.zeros(n), np.zeros(n)
    if job.piecewise is not None:
        grid = job.grid()
        up = job.piecewise.upsample_factor or job.upsample_factor
        patch_corr = PatchCorrelator(
            reference_patches(grid, reference), upsample_factor=up, normalization=job.normalization
        )
        grid_shifts = np.zeros((n, *grid.counts, ndim), np.float32)
        outliers = np.zeros((n, *grid.counts), bool)
    for i, frame in enumerate(frames):
        moving = np.ascontiguousarray(frame[roi])
        shifts[i], error[i], phasediff[i] = correlator.register(moving)
        quality[i] = overlap_ncc(ref_e, moving, shifts[i], mask_e)
        if job.piecewise is not None:
            ps, pq = patch_shifts(
                grid, patch_corr, frame, shifts[i], refine=job.piecewise.refine_for(grid)
            )
            ps, bad = replace_outliers(
                ps,
                pq,
                shifts[i],
                max_deviation=job.piecewise.max_deviation,
                min_relative_quality=job.piecewise.min_relative_quality,
            )
            grid_shifts[i], outliers[i] = ps, bad
    rows = slice(batch.start, batch.stop)
    group["measured_shifts"][rows] = shifts
    group["error"][rows] = error
    group["phasediff"][rows] = phasediff
    group["match_quality"][rows] = quality
    written = shifts.nbytes + 3 * error.nbytes
    if job.piecewise is not None:
        group["patch_shifts"][rows] = grid_shifts
        group["patch_outliers"][rows] = outliers
        written += grid_shifts.nbytes + outliers.nbytes
    return {
        "bytes_read": n * int(np.prod(job.frame_shape)) * stack.dtype.itemsize,
        "bytes_written": written,
        "seconds": time.perf_counter() - t0,
    }


def _estimate_links(batch: Batch, group, stack, roi, mask_e) -> int:
    """Measure the links ``(t - s, t)`` ending in the batch; return the bytes read."""
    job = batch.job
    lo = max(batch.start - 1, 0)
    frames = read_frames(stack, job.time_axis, lo, batch.stop)
    extra: dict[int, np.ndarray] = {}

    def frame_at(t: int) -> np.ndarray:
        if lo <= t < batch.stop:
            return frames[t - lo]
        if t not in extra:
            extra[t] = read_frames(stack, job.time_axis, t, t + 1)[0]
        return extra[t]

    n, k, ndim = batch.stop - batch.start, len(job.strides), len(job.frame_shape)
    shifts = np.full((n, k, ndim), np.nan)
    error, phasediff, quality = (np.full((n, k), np.nan) for _ in range(3))
    for t in range(batch.start, batch.stop):
        moving = np.ascontiguousarray(frame_at(t)[roi])
        for j, source in link_targets(t, job.strides):
            ref_e = np.ascontiguousarray(frame_at(source)[roi])
            i = t - batch.start
            shifts[i, j], error[i, j], phasediff[i, j] = registrar(job, ref_e, mask_e).register(
                moving
            )
            quality[i, j] = overlap_ncc(ref_e, moving, shifts[i, j], mask_e)
    rows = slice(batch.start, batch.stop)
    group["link_shifts"][rows] = shifts
    group["link_error"][rows] = error
    group["link_phasediff"][rows] = phasediff
    group["link_quality"][rows] = quality
    return (len(frames) + len(extra)) * int(np.prod(job.frame_shape)) * stack.dtype.itemsize


def measure_pairs(task: tuple[Job, tuple[tuple[int, int], ...]]) -> dict:
    """Measure extra links (bridges) ``(a, b)``: the shift registering ``b`` onto ``a``."""
    job, pairs = task
    group = _open_group(job)
    stack = job.stack.open()
    roi = job.roi_slices
    mask = _mask(group, job)
    mask_e = None if mask is None else mask[roi]
    shifts, quality = [], []
    for a, b in pairs:
        ref_e = np.ascontiguousarray(read_frames(stack, job.time_axis, a, a + 1)[0][roi])
        moving = np.ascontiguousarray(read_frames(stack, job.time_axis, b, b + 1)[0][roi])
        s, _, _ = registrar(job, ref_e, mask_e).register(moving)
        shifts.append(s.tolist())
        quality.append(overlap_ncc(ref_e, moving, s, mask_e))
    return {"pairs": [list(p) for p in pairs], "shifts": shifts, "quality": quality}


def apply_batch(batch: Batch) -> dict:
    """Phase 2: correct one batch with the final shifts; write frames and quality."""
    t0 = time.perf_counter()
    job = batch.job
    group = _open_group(job)
    stack = job.stack.open()
    roi = job.roi_slices
    mask = _mask(group, job)
    mask_e = None if mask is None else mask[roi]
    previous = job.mode == "previous"
    lo = max(batch.start - 1, 0) if previous else batch.start
    frames = read_frames(stack, job.time_axis, lo, batch.stop)
    shifts = np.asarray(group["shifts"][lo : batch.stop])
    low = np.asarray(group["low_quality"][lo : batch.stop])
    if job.piecewise is not None:
        grid = job.grid()
        grid_shifts = np.asarray(group["patch_shifts"][lo : batch.stop])
    reference = None if previous else np.asarray(group["reference"][...], dtype=np.float32)
    n = batch.stop - batch.start
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    out = group["corrected"] if job.apply else None
    corrected = np.empty((n, *job.frame_shape), out.dtype) if job.apply else None
    weights = None if mask is None else mask.astype(np.float32)
    prev_raw = prev_cor = prev_valid = None
    for i in range(len(frames)):
        frame = frames[i]
        if job.piecewise is not None and not low[i]:
            field = dense_shift_field(grid, grid_shifts[i], smooth=job.piecewise.smooth)
            moved = warp_frame(frame, field, fill_value=np.nan)
            moved_mask = None if mask is None else warp_frame(weights, field) > 0.5
        else:
            moved = shift_frame(frame, shifts[i], job, np.nan)
            moved_mask = None if mask is None else linear_shift_frame(weights, shifts[i]) > 0.5
        raw_e, cor_e = frame[roi], moved[roi]
        # pixels of the corrected frame that hold (unmasked) data
        valid = np.isfinite(cor_e) if mask is None else np.isfinite(cor_e) & moved_mask[roi]
        t = lo + i
        if t >= batch.start:
            j = t - batch.start
            if not previous:
                before[j] = ncc(reference[roi], raw_e, mask_e)
                after[j] = ncc(reference[roi], cor_e, valid if mask_e is None else valid & mask_e)
            elif prev_raw is not None:
                before[j] = ncc(prev_raw, raw_e, mask_e)
                after[j] = ncc(prev_cor, cor_e, valid & prev_valid)
            if corrected is not None:
                corrected[j] = cast_frame(
                    np.where(np.isnan(moved), job.fill_value, moved), out.dtype
                )
        prev_raw, prev_cor, prev_valid = raw_e, cor_e, valid
    rows = slice(batch.start, batch.stop)
    written = 0
    if corrected is not None:
        out[rows] = corrected
        written = corrected.nbytes
    group["quality_before"][rows] = before
    group["quality_after"][rows] = after
    return {
        "bytes_read": len(frames) * int(np.prod(job.frame_shape)) * stack.dtype.itemsize,
        "bytes_written": written + before.nbytes + after.nbytes,
        "seconds": time.perf_counter() - t0,
    }
