"""Worker-side batch functions of :func:`register_timeseries`.

Each task handles a contiguous batch of frames: it opens the input and the output group
itself, reads its frames once, and writes whole chunks of the output tables and of the
corrected stack (batches are multiples of the output's time chunk), so tasks never share a
chunk. The reference (and its spectrum) is prepared once per batch.

* Fixed reference: :func:`register_batch` measures, corrects and scores every frame in one
  pass; :func:`fixup_batch` later redoes the few frames whose shifts were replaced (low
  quality), rewriting only their chunks.
* ``"previous"``: :func:`estimate_batch` measures the links, the client solves the drift, then
  :func:`apply_batch` corrects and scores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..io import read_region
from ._bidiphase import correct_bidiphase
from ._estimate import FrameRegistrar
from ._frames import (
    cast_frame,
    check_frames_finite,
    fourier_shift_frame,
    linear_shift_frame,
    ncc,
    overlap_ncc,
)
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

__all__ = [
    "Batch",
    "Job",
    "apply_batch",
    "estimate_batch",
    "fixup_batch",
    "measure_pairs",
    "register_batch",
]


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
    bidiphase: float = 0.0  # scan-phase offset of the odd lines, corrected as frames are read
    #: Multi-channel input: ArrayRef of the whole stack (``stack`` is its registration
    #: channel); every channel is corrected by the registration channel's shifts.
    channels: Any = None
    full_time_axis: int = 0  # axis of time in the whole stack
    channel_axis: int = 1  # axis of the channels in the whole stack
    channel: int = 0  # the registration channel
    n_channels: int = 0  # 0: a single-channel input

    @property
    def out_frame(self) -> tuple[int, ...]:
        """Shape of one time point of the corrected stack: (channels,) then the frame."""
        return ((self.n_channels,) if self.n_channels else ()) + tuple(self.frame_shape)

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


def read_frames(
    stack: zarr.Array, time_axis: int, start: int, stop: int, bidiphase: float = 0.0
) -> np.ndarray:
    """Read frames ``start:stop`` as float32, time first, scan phase corrected.

    A chunk that cannot be decoded, or a frame holding NaN or infinite values, raises an
    :class:`~chunkreg.errors.InputError` naming the chunk or the frame.
    """
    index = tuple(
        slice(start, stop) if axis == time_axis else slice(0, n)
        for axis, n in enumerate(stack.shape)
    )
    block = np.moveaxis(np.asarray(read_region(stack, index, "stack")), time_axis, 0)
    block = block.astype(np.float32)
    check_frames_finite(block, start)
    return correct_bidiphase(block, bidiphase)


def read_channel_frames(job: Job, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` of every channel as float32, ``(time, channel, *frame)``, scan
    phase corrected (channel ``job.channel`` equals :func:`read_frames` of ``job.stack``)."""
    stack = job.channels.open()
    index = tuple(
        slice(start, stop) if axis == job.full_time_axis else slice(0, n)
        for axis, n in enumerate(stack.shape)
    )
    block = np.asarray(read_region(stack, index, "stack"))
    block = np.moveaxis(block, (job.full_time_axis, job.channel_axis), (0, 1))
    block = block.astype(np.float32)
    check_frames_finite(block, start)
    return correct_bidiphase(block, job.bidiphase)


def _read(job: Job, stack, start: int, stop: int):
    """(registration-channel frames, all channels or None): all channels read once when the
    corrected stack has several."""
    if job.n_channels and job.apply:
        everything = read_channel_frames(job, start, stop)
        return everything[:, job.channel], everything
    return read_frames(stack, job.time_axis, start, stop, job.bidiphase), None


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


def _roi_mask(group: zarr.Group, job: Job):
    """The mask over the region of interest (what registration sees), or None."""
    mask = _mask(group, job)
    return None if mask is None else mask[job.roi_slices]


def _opened(job: Job) -> tuple[zarr.Group, zarr.Array]:
    """What a task of ``job`` works on: the output group (writable) and the stack."""
    return _open_group(job), job.stack.open()


class _Corrector:
    """Corrects frames of one job and scores them (shared by every pass)."""

    def __init__(self, job: Job, group: zarr.Group) -> None:
        self.job = job
        self.roi = job.roi_slices
        self.mask = _mask(group, job)
        self.mask_e = None if self.mask is None else self.mask[self.roi]
        self.weights = None if self.mask is None else self.mask.astype(np.float32)
        self.grid = job.grid() if job.piecewise is not None else None
        self.reference = None
        if job.mode == "fixed":
            self.reference = np.asarray(group["reference"][...], dtype=np.float32)

    def correct(self, frame, shift, patch_shifts=None):
        """Return the corrected frame (NaN where it has no data) and its valid ROI pixels.

        A corrected ROI pixel is valid when it was moved there from inside the ROI (and the
        mask) of the raw frame, so the quality compares only what the estimate looked at.
        """
        moved, field = self._move(frame, shift, patch_shifts)
        if field is None and self.mask is None:  # the valid pixels form a box
            return moved, self._box(shift)
        valid = np.isfinite(moved[self.roi])
        if self.roi != tuple(slice(0, n) for n in self.job.frame_shape):
            valid &= self._from_roi(shift, field)
        if self.mask is not None:
            if field is not None:
                moved_mask = warp_frame(self.weights, field) > 0.5
            else:
                moved_mask = linear_shift_frame(self.weights, shift) > 0.5
            valid &= moved_mask[self.roi]
        return moved, valid

    def _move(self, frame, shift, patch_shifts=None):
        """The frame moved by a rigid shift or the patch shifts' field (NaN where no data)."""
        if patch_shifts is not None:
            field = dense_shift_field(self.grid, patch_shifts, smooth=self.job.piecewise.smooth)
            return warp_frame(frame, field, fill_value=np.nan), field
        return shift_frame(frame, shift, self.job, np.nan), None

    def output_all(self, moved, channels, shift, dtype, patch_shifts=None):
        """The corrected time point in the output dtype: ``moved`` (the registration frame
        corrected), or with ``channels`` (every channel's frame) each channel corrected by
        the same shift (patch shifts)."""
        if channels is None:
            return self.output(moved, dtype)
        out = np.empty(channels.shape, dtype)
        for c, frame in enumerate(channels):
            same = c == self.job.channel
            out[c] = self.output(moved if same else self._move(frame, shift, patch_shifts)[0],
                                 dtype)  # fmt: skip
        return out

    def _box(self, shift) -> tuple[slice, ...]:
        """ROI-relative box of a rigidly shifted frame's pixels that came from the ROI."""
        box = []
        for sl, s in zip(self.roi, shift, strict=True):
            s = float(s)
            lo = max(sl.start, math.ceil(sl.start + s - 1e-6))
            hi = min(sl.stop, math.floor(sl.stop - 1 + s + 1e-6) + 1)
            box.append(slice(lo - sl.start, max(lo, hi) - sl.start))
        return tuple(box)

    def _as_mask(self, valid) -> np.ndarray:
        if not isinstance(valid, tuple):
            return valid
        out = np.zeros(tuple(s.stop - s.start for s in self.roi), bool)
        out[valid] = True
        return out

    def _from_roi(self, shift, field):
        """ROI pixels of the corrected frame whose source ``x - shift`` lies in the ROI."""
        inside = np.ones(tuple(s.stop - s.start for s in self.roi), bool)
        for axis, sl in enumerate(self.roi):
            view = [1] * len(self.roi)
            view[axis] = sl.stop - sl.start
            x = np.arange(sl.start, sl.stop, dtype=np.float32).reshape(view)
            source = x - (field[axis][self.roi] if field is not None else np.float32(shift[axis]))
            inside &= (source >= sl.start) & (source <= sl.stop - 1)
        return inside

    def score(self, raw, moved, valid, previous=None):
        """Quality before/after: NCC with the reference (or with ``previous``'s pair)."""
        raw_e, cor_e = raw[self.roi], moved[self.roi]
        if previous is None:
            ref_e = self.reference[self.roi]
            before = ncc(ref_e, raw_e, self.mask_e)
            if isinstance(valid, tuple):  # a box: no boolean gathers
                after = ncc(ref_e[valid], cor_e[valid])
            else:
                after = ncc(ref_e, cor_e, valid if self.mask_e is None else valid & self.mask_e)
            return before, after
        prev_raw, prev_moved, prev_valid = previous
        before = ncc(prev_raw[self.roi], raw_e, self.mask_e)
        after = ncc(prev_moved[self.roi], cor_e, self._as_mask(valid) & self._as_mask(prev_valid))
        return before, after

    def output(self, moved, dtype):
        """The corrected frame in the output dtype (``fill_value`` where it has no data).

        Overwrites the NaN of ``moved`` in place (callers score it before).
        """
        return cast_frame(np.nan_to_num(moved, copy=False, nan=self.job.fill_value), dtype)


def _nbytes(job: Job, n_frames: int, stack) -> int:
    per = (
        int(np.prod(job.out_frame))
        if job.n_channels and job.apply
        else int(np.prod(job.frame_shape))
    )
    return n_frames * per * stack.dtype.itemsize


def register_batch(batch: Batch) -> dict:
    """Fixed reference: measure, correct and score the frames of one batch in one pass."""
    t0 = time.perf_counter()
    job = batch.job
    group, stack = _opened(job)
    fix = _Corrector(job, group)
    reference, roi = fix.reference, fix.roi
    correlator = registrar(job, np.ascontiguousarray(reference[roi]), fix.mask_e)
    frames, channels = _read(job, stack, batch.start, batch.stop)
    n, ndim = len(frames), len(job.frame_shape)
    shifts = np.zeros((n, ndim))
    error, phasediff, before, after = (np.zeros(n) for _ in range(4))
    if job.piecewise is not None:
        up = job.piecewise.upsample_factor or job.upsample_factor
        patch_corr = PatchCorrelator(
            reference_patches(fix.grid, reference),
            upsample_factor=up,
            normalization=job.normalization,
        )
        refine = job.piecewise.refine_for(fix.grid)
        grid_shifts = np.zeros((n, *fix.grid.counts, ndim), np.float32)
        outliers = np.zeros((n, *fix.grid.counts), bool)
    out = group["corrected"] if job.apply else None
    corrected = np.empty((n, *job.out_frame), out.dtype) if job.apply else None
    for i, frame in enumerate(frames):
        shifts[i], error[i], phasediff[i] = correlator.register(np.ascontiguousarray(frame[roi]))
        patches = None
        if job.piecewise is not None:
            ps, pq = patch_shifts(fix.grid, patch_corr, frame, shifts[i], refine=refine)
            patches, outliers[i] = replace_outliers(
                ps,
                pq,
                shifts[i],
                max_deviation=job.piecewise.max_deviation,
                min_relative_quality=job.piecewise.min_relative_quality,
            )
            grid_shifts[i] = patches
        moved, valid = fix.correct(frame, shifts[i], patches)
        before[i], after[i] = fix.score(frame, moved, valid)
        if corrected is not None:
            every = None if channels is None else channels[i]
            corrected[i] = fix.output_all(moved, every, shifts[i], out.dtype, patches)
    rows = slice(batch.start, batch.stop)
    written = 0
    if corrected is not None:
        out[rows] = corrected
        written += corrected.nbytes
    for name, values in (
        ("measured_shifts", shifts),
        ("error", error),
        ("phasediff", phasediff),
        ("quality_before", before),
        ("quality_after", after),
    ):
        group[name][rows] = values
        written += values.nbytes
    if job.piecewise is not None:
        group["patch_shifts"][rows] = grid_shifts
        group["patch_outliers"][rows] = outliers
        written += grid_shifts.nbytes + outliers.nbytes
    return {
        "bytes_read": _nbytes(job, n, stack),
        "bytes_written": written,
        "seconds": time.perf_counter() - t0,
    }


def fixup_batch(batch: Batch) -> dict:
    """Fixed reference: redo the low-quality frames of a batch with their final shifts.

    Their shifts were interpolated from the neighbouring frames after the first pass; the
    output chunks holding them are recomputed (the other frames in those chunks come out
    identical) and the batch's quality rows updated. This task is the only writer of the
    batch's chunks at this stage.
    """
    t0 = time.perf_counter()
    job = batch.job
    group = _open_group(job)
    rows = slice(batch.start, batch.stop)
    low = np.asarray(group["low_quality"][rows])
    if not low.any():
        return {"seconds": time.perf_counter() - t0}
    stack = job.stack.open()
    fix = _Corrector(job, group)
    shifts = np.asarray(group["shifts"][rows])
    grid_shifts = np.asarray(group["patch_shifts"][rows]) if job.piecewise is not None else None
    before = np.asarray(group["quality_before"][rows])
    after = np.asarray(group["quality_after"][rows])
    out = group["corrected"] if job.apply else None
    chunk = out.chunks[0] if out is not None else 1
    flagged = np.flatnonzero(low) + batch.start
    n_read = 0
    for c in np.unique(flagged // chunk):
        lo, hi = int(c) * chunk, min((int(c) + 1) * chunk, job.n_time)
        frames, channels = _read(job, stack, lo, hi)
        n_read += hi - lo
        corrected = np.empty((hi - lo, *job.out_frame), out.dtype) if out is not None else None
        for t in range(lo, hi):
            j = t - batch.start
            if out is None and not low[j]:
                continue
            patches = None if low[j] or grid_shifts is None else grid_shifts[j]
            moved, valid = fix.correct(frames[t - lo], shifts[j], patches)
            if low[j]:
                before[j], after[j] = fix.score(frames[t - lo], moved, valid)
            if corrected is not None:
                every = None if channels is None else channels[t - lo]
                corrected[t - lo] = fix.output_all(moved, every, shifts[j], out.dtype, patches)
        if corrected is not None:
            out[lo:hi] = corrected
    group["quality_after"][rows] = after
    return {"bytes_read": _nbytes(job, n_read, stack), "seconds": time.perf_counter() - t0}


def estimate_batch(batch: Batch) -> dict:
    """``"previous"``, phase 1: measure the links ``(t - s, t)`` ending in the batch."""
    t0 = time.perf_counter()
    job = batch.job
    group, stack = _opened(job)
    nbytes = _estimate_links(batch, group, stack, job.roi_slices, _roi_mask(group, job))
    return {"bytes_read": nbytes, "seconds": time.perf_counter() - t0}


def _estimate_links(batch: Batch, group, stack, roi, mask_e) -> int:
    """Measure the links ``(t - s, t)`` ending in the batch; return the bytes read."""
    job = batch.job
    lo = max(batch.start - 1, 0)
    frames = read_frames(stack, job.time_axis, lo, batch.stop, job.bidiphase)
    extra: dict[int, np.ndarray] = {}

    def frame_at(t: int) -> np.ndarray:
        if lo <= t < batch.stop:
            return frames[t - lo]
        if t not in extra:
            extra[t] = read_frames(stack, job.time_axis, t, t + 1, job.bidiphase)[0]
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
    group, stack = _opened(job)
    roi = job.roi_slices
    mask_e = _roi_mask(group, job)
    shifts, quality = [], []
    for a, b in pairs:
        ref_e = np.ascontiguousarray(
            read_frames(stack, job.time_axis, a, a + 1, job.bidiphase)[0][roi]
        )
        moving = np.ascontiguousarray(
            read_frames(stack, job.time_axis, b, b + 1, job.bidiphase)[0][roi]
        )
        s, _, _ = registrar(job, ref_e, mask_e).register(moving)
        shifts.append(s.tolist())
        quality.append(overlap_ncc(ref_e, moving, s, mask_e))
    return {"pairs": [list(p) for p in pairs], "shifts": shifts, "quality": quality}


def apply_batch(batch: Batch) -> dict:
    """``"previous"``, phase 2: correct one batch with the solved drift; write frames and quality."""
    t0 = time.perf_counter()
    job = batch.job
    group, stack = _opened(job)
    fix = _Corrector(job, group)
    lo = max(batch.start - 1, 0)
    frames, channels = _read(job, stack, lo, batch.stop)
    shifts = np.asarray(group["shifts"][lo : batch.stop])
    n = batch.stop - batch.start
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    out = group["corrected"] if job.apply else None
    corrected = np.empty((n, *job.out_frame), out.dtype) if job.apply else None
    previous = None
    for i, frame in enumerate(frames):
        moved, valid = fix.correct(frame, shifts[i])
        t = lo + i
        if t >= batch.start:
            j = t - batch.start
            if previous is not None:
                before[j], after[j] = fix.score(frame, moved, valid, previous)
            if corrected is not None:
                every = None if channels is None else channels[i]
                corrected[j] = fix.output_all(moved, every, shifts[i], out.dtype)
        previous = (frame, moved, valid)
    rows = slice(batch.start, batch.stop)
    written = 0
    if corrected is not None:
        out[rows] = corrected
        written = corrected.nbytes
    group["quality_before"][rows] = before
    group["quality_after"][rows] = after
    return {
        "bytes_read": _nbytes(job, len(frames), stack),
        "bytes_written": written + before.nbytes + after.nbytes,
        "seconds": time.perf_counter() - t0,
    }
