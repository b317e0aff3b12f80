"""``register_timeseries``: drift and motion correction of a zarr time series."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from ..engine import StageRunner, add_output_pyramid, workflow_scope
from ..engine._parts import StageParts
from ..errors import InputError
from ..io import (
    CompletionRecord,
    array_ref,
    check_inputs_stored,
    create_array,
    open_array,
    open_output_group,
    read_space,
    require_shared_store,
    write_space,
)
from ..io._arrays import resolve_shards
from ..registration._quality import qc_regressions
from ._bidiphase import estimate_bidiphase
from ._frames import fourier_shift_frame
from ._links import interpolate_missing, solve_drift
from ._piecewise import PatchGrid, PiecewiseOptions
from ._reference import ReferenceSpec, build_reference, parse_reference, parse_strides
from ._report import TimeseriesResult, write_csv
from ._tasks import (
    Batch,
    Job,
    apply_batch,
    estimate_batch,
    fixup_batch,
    measure_pairs,
    read_frames,
    register_batch,
    registrar,
)

__all__ = ["TimeseriesPlan", "plan_timeseries", "register_timeseries"]

_BATCH_BYTES = 64e6  # float32 bytes of frames per task by default
_MIN_QUALITY_FLOOR = 0.05


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _parse_roi(roi, frame_shape) -> tuple[tuple[int, int], ...]:
    if roi is None:
        return tuple((0, n) for n in frame_shape)
    if len(roi) != len(frame_shape):
        raise InputError(
            f"roi needs one slice or (start, stop) per frame axis ({len(frame_shape)}), got {roi!r}."
        )
    out = []
    for axis, (r, n) in enumerate(zip(roi, frame_shape, strict=True)):
        if isinstance(r, slice):
            if r.step not in (None, 1):
                raise InputError(f"roi slices must have step 1, got {r!r} along axis {axis}.")
            start, stop, _ = r.indices(n)
        else:
            start, stop = (int(v) for v in r)
        if not 0 <= start < stop <= n or stop - start < 8:
            raise InputError(
                f"roi along axis {axis} must lie within 0..{n} and span >= 8 pixels, got "
                f"{start}..{stop}."
            )
        out.append((start, stop))
    return tuple(out)


def _parse_mask(mask, frame_shape):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(frame_shape):
        raise InputError(f"mask has shape {mask.shape} but frames have shape {tuple(frame_shape)}.")
    if mask.dtype != bool:
        raise InputError(f"mask must be a boolean array, got dtype {mask.dtype}.")
    if not mask.any():
        raise InputError("mask is all False: nothing would be compared.")
    return mask


def _output_chunks(chunks, n_time, frame_shape, n_channels: int = 0) -> tuple[int, ...]:
    lead = (n_channels,) if n_channels else ()
    full = (n_time, *lead, *frame_shape)
    if chunks is None:  # a frame per chunk (a frame of one channel)
        return (1, *((1,) if n_channels else ()), *frame_shape)
    if len(chunks) != len(full):
        raise InputError(
            f"chunks needs {len(full)} values for the (time, {'channel, ' if lead else ''}"
            f"*frame) output, got {chunks!r}."
        )
    out = tuple(
        n if c in (None, -1) else _check_int(c, "chunks", 1)
        for c, n in zip(chunks, full, strict=True)
    )
    return tuple(min(c, n) for c, n in zip(out, full, strict=True))


def _batch_size(batch_size, time_chunk, frame_shape, n_time) -> int:
    if batch_size is None:
        frame_bytes = 4 * math.prod(frame_shape)
        batch_size = int(min(256, max(1, _BATCH_BYTES // frame_bytes)))
    else:
        batch_size = _check_int(batch_size, "batch_size", 1)
    batch_size = -(-batch_size // time_chunk) * time_chunk
    return max(1, min(batch_size, -(-n_time // time_chunk) * time_chunk))


def _resolve_min_quality(min_quality, values) -> float:
    if min_quality is None or min_quality == "auto":
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if finite.size else 0.0
        return max(0.5 * median, _MIN_QUALITY_FLOOR)
    if isinstance(min_quality, bool) or not isinstance(min_quality, numbers.Real):
        raise InputError(f"min_quality must be 'auto' or a number, got {min_quality!r}.")
    return float(min_quality)


def _resolve_bidiphase(bidiphase, array, time_axis: int, n_frames: int) -> float:
    """The scan-phase offset to correct: given, measured on the first frames, or 0."""
    if bidiphase is None:
        return 0.0
    if bidiphase == "auto":
        return estimate_bidiphase(read_frames(array, time_axis, 0, n_frames))
    if isinstance(bidiphase, bool) or not isinstance(bidiphase, numbers.Real):
        raise InputError(
            f"bidiphase must be 'auto', a number of pixels or None, got {bidiphase!r}."
        )
    if not math.isfinite(bidiphase):
        raise InputError(f"bidiphase must be finite, got {bidiphase!r}.")
    return float(bidiphase)


@dataclass(frozen=True)
class TimeseriesPlan:
    """What :func:`register_timeseries` would do: frames, reference, batches, output layout."""

    stack: zarr.Array
    time_axis: int
    n_time: int
    frame_shape: tuple[int, ...]
    spec: ReferenceSpec
    strides: tuple[int, ...]
    upsample_factor: int
    normalization: str | None
    options: PiecewiseOptions | None
    roi: tuple | None
    mask: np.ndarray | None
    interpolation: str
    fill_value: float
    bidiphase_offset: float
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    batch_size: int
    _signature: dict = field(repr=False)
    whole: zarr.Array | None = None  # the stack with every channel (multi-channel stacks)
    full_time_axis: int = 0  # the time axis counting the channel axis
    channel_axis: int | None = None
    channel: int | None = None  # the registration channel
    n_channels: int = 0
    out_frame: tuple[int, ...] = ()  # a corrected frame: (channels, *frame) or frame

    @property
    def n_batches(self) -> int:
        """Tasks of each pass: batches of consecutive frames."""
        return math.ceil(self.n_time / self.batch_size)

    def signature(self) -> dict:
        """What determines the output (stored in it; resume checks it)."""
        return dict(self._signature)

    def describe(self) -> str:
        """Human-readable plan."""
        kind = self.spec.kind
        passes = "estimate, then apply" if kind == "previous" else "register, then fix up"
        piecewise = (
            "rigid"
            if self.options is None
            else f"piecewise: patches of {self.options.patch} px overlapping by "
            f"{self.options.overlap} px"
        )
        return "\n".join(
            [
                f"stack: {self.stack.shape} ({self.stack.dtype}), chunks {self.stack.chunks}; "
                f"{self.n_time} frames of {self.frame_shape} along axis {self.time_axis}"
                + (f"; registered on channel {self.channel} of {self.n_channels}"
                   if self.n_channels else ""),
                f"reference: {kind}"
                + (f" (strides {self.strides})" if kind == "previous" else ""),
                f"registration: {piecewise}, upsample_factor {self.upsample_factor}, "
                f"normalization {self.normalization}, interpolation {self.interpolation}",
                f"tiles: {self.n_batches} batches of up to {self.batch_size} whole frames "
                f"(depth 0: a frame is registered alone), two passes ({passes})",
                f"output: chunks {self.chunks}" + (f", shards {self.shards}" if self.shards
                                                  else ""),
            ]
        )  # fmt: skip

    __str__ = describe


def plan_timeseries(
    stack,
    *,
    reference="first",
    upsample_factor: int = 10,
    normalization: str | None = None,
    piecewise=None,
    time_axis: int = 0,
    n_reference_frames: int = 20,
    strides=None,
    mask=None,
    roi=None,
    apply: bool = True,
    interpolation: str = "fft",
    fill_value: float = 0.0,
    min_quality="auto",
    bidiphase: str | float | None = None,
    chunks=None,
    shards="auto",
    batch_size: int | None = None,
    allow_sparse: bool = False,
    channel: int | None = None,
) -> TimeseriesPlan:
    """Check the inputs of :func:`register_timeseries` and plan the run; nothing is written.

    Parameters
    ----------
    stack, reference, upsample_factor, normalization, piecewise, time_axis, \
n_reference_frames, strides, mask, roi, apply, interpolation, fill_value, min_quality, \
bidiphase, chunks, shards, batch_size, allow_sparse, channel
        As for :func:`register_timeseries`.

    Returns
    -------
    TimeseriesPlan

    Raises
    ------
    InputError
        As :func:`register_timeseries` would, before anything is written.
    """
    whole = open_array(stack, name="stack")
    if isinstance(time_axis, bool) or not isinstance(time_axis, numbers.Integral):
        raise InputError(f"time_axis must be an integer, got {time_axis!r}.")
    if not -whole.ndim <= time_axis < whole.ndim:
        raise InputError(
            f"time_axis {time_axis} is out of range for a stack of {whole.ndim} dimensions."
        )
    full_time_axis = int(time_axis) % whole.ndim
    # a multi-channel stack is registered on one channel: the estimate reads only that one
    array, channel_axis, channel = _pick_channel(whole, channel, full_time_axis)
    n_channels = 0 if channel_axis is None else int(whole.shape[channel_axis])
    if array.ndim not in (3, 4):
        raise InputError(
            "stack must be a series of 2-D or 3-D frames (3 or 4 dimensions"
            + (", besides the channel axis" if n_channels else "")
            + f"), got shape {whole.shape}; a single image is not a series."
        )
    time_axis = full_time_axis - (1 if n_channels and channel_axis < full_time_axis else 0)
    n_time = int(array.shape[time_axis])
    frame_shape = tuple(int(n) for i, n in enumerate(array.shape) if i != time_axis)
    if n_time < 1 or min(frame_shape) < 8:
        raise InputError(f"stack {array.shape} has no frames or frames smaller than 8 pixels.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"stack must be numeric, got dtype {array.dtype}.")
    spec = parse_reference(reference, n_time, frame_shape, n_reference_frames)
    previous = spec.kind == "previous"
    if strides is not None and not previous:
        raise InputError("strides apply to reference='previous' only.")
    strides = parse_strides(strides, n_time) if previous else (1,)
    upsample_factor = _check_int(upsample_factor, "upsample_factor", 1)
    options = PiecewiseOptions.coerce(piecewise)
    if options is not None and previous:
        raise InputError(
            "piecewise correction needs a fixed reference ('first', 'mean', an index or an "
            "array), not 'previous'."
        )
    if options is not None and options.overlap >= min(options.patch, *frame_shape):
        raise InputError(
            f"piecewise overlap {options.overlap} must be smaller than the patch and the frame."
        )
    roi_t = _parse_roi(roi, frame_shape)
    mask = _parse_mask(mask, frame_shape)
    if normalization not in (None, "phase"):
        raise InputError(f"normalization must be None or 'phase', got {normalization!r}.")
    if interpolation not in ("fft", "linear"):
        raise InputError(f"interpolation must be 'fft' or 'linear', got {interpolation!r}.")
    if min_quality != "auto" and min_quality is not None:
        _resolve_min_quality(min_quality, np.zeros(0))
    out_chunks = _output_chunks(chunks, n_time, frame_shape, n_channels)
    out_frame = ((n_channels,) if n_channels else ()) + frame_shape
    time_first = full_time_axis == 0 and (not n_channels or channel_axis == 1)
    out_shards = resolve_shards(
        shards,
        chunks=out_chunks,
        shape=(n_time, *out_frame),
        like=whole if time_first else None,
    )
    batch = _batch_size(batch_size, (out_shards or out_chunks)[0], out_frame, n_time)
    check_inputs_stored({"stack": array}, allow_sparse)  # the store listing: after the cheap checks
    offset = _resolve_bidiphase(bidiphase, array, time_axis, min(n_time, n_reference_frames))
    sig = {
        "stack": {"shape": array.shape, "dtype": str(array.dtype), "chunks": array.chunks},
        "time_axis": time_axis,
        "reference": spec.describe(),
        "upsample_factor": upsample_factor,
        "normalization": normalization,
        "strides": strides,
        "piecewise": None if options is None else options.__dict__,
        "roi": roi_t,
        "mask": None if mask is None else ReferenceSpec("array", array=mask).describe()["sha1"],
        "interpolation": interpolation,
        "fill_value": float(fill_value),
        "min_quality": min_quality if min_quality in (None, "auto") else float(min_quality),
        "bidiphase": bidiphase if bidiphase in (None, "auto") else float(bidiphase),
        "apply": bool(apply),
        "chunks": out_chunks,
        **({"shards": out_shards} if out_shards else {}),
        "batch_size": batch,
    }
    if n_channels:  # recorded only for multi-channel stacks: older outputs still resume
        sig["channels"] = {"shape": whole.shape, "axis": channel_axis,
                                 "time_axis": full_time_axis, "channel": channel}  # fmt: skip
    return TimeseriesPlan(
        array, time_axis, n_time, frame_shape, spec, tuple(strides), upsample_factor,
        normalization, options, roi_t, mask, interpolation, float(fill_value), offset,
        out_chunks, out_shards, batch, sig, whole, full_time_axis, channel_axis, channel,
        n_channels, out_frame,
    )  # fmt: skip


def _pick_channel(array, channel, time_axis):
    """The registration channel of a multi-channel stack: (view, channel axis, channel), or
    ``(array, None, None)`` for a single-channel stack.

    The channel axis is the one named ``c`` (OME-Zarr axes, zarr ``dimension_names``); a
    plain stack has one only when ``channel`` is given: its first axis after time.
    """
    from ..io import ArrayView, recorded_axes

    names = recorded_axes(array)
    if names is not None:
        axis = names.index("c") if "c" in names else None
    elif channel is not None:
        axis = 1 if time_axis == 0 else 0
    else:
        axis = None
    if axis is None:
        if channel is not None:
            raise InputError(
                f"channel={channel} given, but the stack (shape {array.shape}, axes "
                f"{names or 'not named'}) has no channel axis: name it 'c' in its OME-Zarr axes "
                "or zarr dimension_names, or leave channel out."
            )
        return array, None, None
    if axis == time_axis:
        raise InputError(f"time_axis {time_axis} is the stack's channel axis 'c'.")
    if channel is None:
        channel = 0
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
        raise InputError(f"channel must be an integer >= 0, got {channel!r}.")
    n = int(array.shape[axis])
    if channel >= n:
        raise InputError(
            f"channel {channel} is out of range: the stack has {n} channel(s) along axis "
            f"{axis} (shape {array.shape}); give 0..{n - 1}."
        )
    return ArrayView(array, ((axis, int(channel)),)), axis, int(channel)


def register_timeseries(
    stack,
    output,
    *,
    reference="first",
    upsample_factor: int = 10,
    normalization: str | None = None,
    piecewise=None,
    time_axis: int = 0,
    channel: int | None = None,
    n_reference_frames: int = 20,
    strides=None,
    mask=None,
    roi=None,
    apply: bool = True,
    interpolation: str = "fft",
    fill_value: float = 0.0,
    min_quality="auto",
    bidiphase: str | float | None = None,
    chunks=None,
    shards="auto",
    batch_size: int | None = None,
    csv_path=None,
    allow_sparse: bool = False,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pyramid: bool | int = True,
) -> TimeseriesResult:
    """Measure and correct the drift and motion of a time series, frame by frame.

    Frames are registered by subpixel phase cross-correlation against a reference
    (``reference="first"``, a frame index, ``"mean"`` or an array) or against the frame before
    (``"previous"``, shifts accumulated into drift); optionally each frame is then corrected
    piecewise-rigidly (NoRMCorre-style [1]_). Frames are processed in batches on a Dask
    cluster, reading the input and writing the output zarr group directly, so memory does not
    grow with the movie (only O(T) shift tables are gathered). An interrupted run resumes:
    batches recorded as done are not redone.

    Parameters
    ----------
    stack : zarr.Array or str
        Time series of shape ``(T, *frame)`` (2-D or 3-D frames), or with time on another axis
        given by ``time_axis``. A path or an OME-Zarr multiscale group is opened read-only.
    output : str or zarr store
        Output zarr group. It holds ``shifts`` (T, ndim), ``measured_shifts``, ``error``,
        ``phasediff``, ``quality_before``, ``quality_after``, ``low_quality``, the ``reference``
        frame, ``patch_shifts`` (T, *grid, ndim) and ``patch_outliers`` when piecewise, the
        ``link_*`` tables (T, n_strides, ...) for ``"previous"``, and ``corrected``: the
        corrected stack, time first, in the input dtype, with OME-Zarr metadata.
    reference : {"first", "mean", "previous"}, int or ndarray
        What each frame is registered against: frame 0, frame ``reference``, the first
        ``n_reference_frames`` frames aligned to frame 0 and averaged, an external frame, or
        the previous frame. With ``"previous"`` every frame is linked to the one before and,
        for each longer stride ``s`` in ``strides``, every ``s``-th frame to the frame ``s``
        before; the drift is the least-squares solution of all links (anchored at frame 0),
        which keeps the accumulated error of long series small.
    upsample_factor : int
        Subpixel precision of the shifts: 1 / ``upsample_factor`` pixel.
    normalization : {None, "phase"}
        Normalisation of the cross-power spectrum. ``None`` (plain cross-correlation, as in
        NoRMCorre) is robust to the noise of fluorescence frames; ``"phase"`` whitens it
        (sharper peak, but noise beyond the optical cut-off is amplified).
    piecewise : bool, dict or PiecewiseOptions, optional
        Piecewise-rigid correction (patch size, overlap, outlier rules, smoothing); needs a
        fixed reference.
    time_axis : int
        Axis of ``stack`` that is time.
    channel : int, optional
        The registration channel of a multi-channel stack, e.g. ``(t, c, y, x)`` or
        ``(t, c, z, y, x)``: the drift is measured on that channel alone and its shifts (and
        patch shifts) correct every channel; ``corrected`` is then ``(t, c, *frame)``. The
        channel axis is the one named ``c`` in the OME-Zarr axes or zarr
        ``dimension_names`` (default: channel 0); a plain stack has one only when
        ``channel`` is given (the first axis after time). An index out of range is an
        :class:`~chunkreg.errors.InputError`.
    n_reference_frames : int
        Frames averaged for ``reference="mean"``.
    strides : sequence of int, optional
        Link strides for ``reference="previous"``, e.g. ``(1, 10, 100)``; must contain 1.
    mask : ndarray of bool, optional
        Pixels of a frame to use for the registration (masked phase correlation, whole-pixel
        precision) and for the quality scores.
    roi : sequence of slice or (start, stop), optional
        Region of each frame used for the rigid estimate and the quality scores; the whole
        frame is corrected.
    apply : bool
        Write the corrected stack. Quality after correction is measured either way.
    interpolation : {"fft", "linear"}
        How rigid shifts are applied: a Fourier phase ramp (exact for band-limited frames,
        fastest) or linear interpolation. Piecewise fields are always applied linearly.
    fill_value : float
        Value of corrected pixels that have no data (shifted in from outside the frame).
    min_quality : float or "auto"
        Frames (links, for ``"previous"``) whose whole-pixel NCC with their reference is below
        this are low quality: their shifts are interpolated from the neighbouring frames.
        ``"auto"`` is half the median quality (at least 0.05).
    bidiphase : "auto", float or None
        Bidirectional scan-phase correction for resonant-scanner (two-photon) movies, whose
        odd lines are displaced along the last axis against the even ones: the offset in
        pixels (odd lines show the scene at ``x - bidiphase``), or ``"auto"`` to measure it
        to 1/100 px from the first ``n_reference_frames`` frames (see
        :func:`chunkreg.timeseries.estimate_bidiphase`). Every frame is corrected as it is
        read, before registration, so the corrected stack is free of it too. The offset used
        is stored in the output's attributes and ``result.notes``. ``None``: no correction.
    chunks : tuple of int, optional
        Chunks of ``corrected``; default one frame per chunk.
    shards : "auto", None, int or tuple of int
        Shard shape of ``corrected``, a multiple of ``chunks`` (one file per shard: a
        million-frame movie in 1000-frame shards is a thousand files, not a million).
        ``"auto"`` keeps the stack's shards when time is its first axis and they fit the
        chunks; None: one file per chunk.
    batch_size : int, optional
        Frames per task (rounded up to a multiple of the time extent of a shard, or of a
        chunk, of ``corrected``, so each shard is written by one task); default about 64 MB
        of float32 frames, at most 256.
    csv_path : str, optional
        Where to write the CSV of shifts; default ``<output without .zarr>_shifts.csv`` next
        to a local output; ``False`` to skip.
    allow_sparse : bool
        Accept a stack whose store lacks some chunk files (zarr reads those as the fill
        value); by default a missing chunk that stored data runs on into is refused before anything runs, naming it.
    client, scheduler, n_workers
        Where tasks run, see :func:`chunkreg.execution.open_client`
        (``scheduler="synchronous"`` runs everything in this process).
    overwrite : bool
        Replace an existing output made with other parameters (otherwise refused, and an
        identical one resumed).
    progress : bool
        Show progress lines on stderr.
    pyramid : bool or int
        With ``apply``, add display pyramid levels ``"corrected_1"``, ... of the corrected stack
        (block means of the frames' fine spatial axes, never along t; see
        :func:`chunkreg.volume.build_output_pyramid`); an int caps their number, False: none.

    Returns
    -------
    TimeseriesResult
        Shifts, quality and run reports (also stored in ``output``). Batches whose task
        failed are listed in ``result.report``, not raised; the other frames are written, and
        running again completes the series.

    Raises
    ------
    InputError
        For a stack that is not a series of 2-D/3-D frames, a time axis or reference index out
        of range, or inconsistent options; nothing is written.
    IncompatibleOutputError
        If ``output`` exists from a different run and ``overwrite`` is false.

    References
    ----------
    .. [1] E. A. Pnevmatikakis and A. Giovannucci, "NoRMCorre: An online algorithm for
           piecewise rigid motion correction of calcium imaging data", J. Neurosci. Methods
           291, 83-94 (2017). doi:10.1016/j.jneumeth.2017.07.031
    .. [2] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
           registration algorithms", Optics Letters 33, 156-158 (2008).
           doi:10.1364/OL.33.000156

    Examples
    --------
    >>> import zarr, numpy as np
    >>> from chunkreg.testing import textured_image
    >>> frames = np.stack([np.roll(textured_image((64, 64), seed=1), t, axis=1) for t in range(4)])
    >>> stack = zarr.create_array(zarr.storage.MemoryStore(), data=frames)
    >>> result = register_timeseries(stack, zarr.storage.MemoryStore(), scheduler="synchronous",
    ...                              progress=False)
    >>> np.round(result.shifts[:, 1], 2).tolist()
    [0.0, -1.0, -2.0, -3.0]
    """
    plan = plan_timeseries(
        stack, reference=reference, upsample_factor=upsample_factor,
        normalization=normalization, piecewise=piecewise, time_axis=time_axis,
        n_reference_frames=n_reference_frames, strides=strides, mask=mask, roi=roi, apply=apply,
        interpolation=interpolation, fill_value=fill_value, min_quality=min_quality,
        bidiphase=bidiphase, chunks=chunks, shards=shards, batch_size=batch_size,
        allow_sparse=allow_sparse, channel=channel,
    )  # fmt: skip
    array, time_axis, n_time, frame_shape = (
        plan.stack,
        plan.time_axis,
        plan.n_time,
        plan.frame_shape,
    )
    spec, strides, options, roi_t, mask = plan.spec, plan.strides, plan.options, plan.roi, plan.mask
    previous, offset, batch = spec.kind == "previous", plan.bidiphase_offset, plan.batch_size
    upsample_factor, normalization = plan.upsample_factor, plan.normalization
    interpolation, fill_value = plan.interpolation, plan.fill_value
    out_chunks, out_shards, signature = plan.chunks, plan.shards, plan.signature()
    whole, full_time_axis, channel_axis = plan.whole, plan.full_time_axis, plan.channel_axis
    channel, n_channels = plan.channel, plan.n_channels
    # the lease is held until everything is written; the output is created once the cluster
    # is reachable, so a bad scheduler address leaves nothing behind
    with workflow_scope(client, scheduler=scheduler, n_workers=n_workers) as cl:
        csv_target = _csv_target(output, csv_path)
        group = open_output_group(output, signature=signature, overwrite=overwrite, kind="timeseries",
                                  inputs={"stack": array}, sources={"stack": stack},
                                  side_files=[csv_target] if csv_target else [])  # fmt: skip
        job = Job(
            stack=array_ref(array),
            output=_store_location(group.store),
            output_path=group.path,
            time_axis=time_axis,
            n_time=n_time,
            frame_shape=frame_shape,
            mode="previous" if previous else "fixed",
            strides=strides,
            upsample_factor=upsample_factor,
            normalization=normalization,
            roi=roi_t,
            has_mask=mask is not None,
            piecewise=options,
            interpolation=interpolation,
            fill_value=float(fill_value),
            apply=bool(apply),
            bidiphase=offset,
            **(
                {"channels": array_ref(whole), "full_time_axis": full_time_axis,
                 "channel_axis": channel_axis, "channel": channel, "n_channels": n_channels}
                if n_channels
                else {}
            ),
        )  # fmt: skip
        batches = [
            Batch(job, i, start, min(start + batch, n_time))
            for i, start in enumerate(range(0, n_time, batch))
        ]
        _create_arrays(group, job, array.dtype, out_chunks, batch, mask,
                       _time_first_space(whole, full_time_axis, channel_axis), out_shards)  # fmt: skip
        require_shared_store(group, cl)
        if not previous:
            _write_reference(group, job, spec, array)
        notes: dict = {}
        if bidiphase is not None:
            notes["bidiphase offset (px)"] = round(offset, 3)
            group.attrs["bidiphase"] = offset
        if previous:
            stages = [("estimate", estimate_batch), ("apply", apply_batch)]
        else:
            stages = [("register", register_batch), ("fixup", fixup_batch)]
        runner = StageParts(cl, label="frame batches", progress=progress)
        threshold = float("nan")  # known once the first pass is complete
        names = [name for name, _ in stages]
        for number, (name, func) in enumerate(stages):
            if number == 1:  # between the passes: shifts from the first pass's tables
                if previous:
                    threshold = _finish_links(group, job, cl, min_quality, notes, runner)
                else:
                    threshold = _finish_fixed(group, min_quality)
                if threshold is None:  # a bridging measurement failed
                    runner.stop(names[number:])
                    break
            ok = runner.run(name, func, batches, record=CompletionRecord(group, name, len(batches)),
                            label=f"frame batches ({name})")  # fmt: skip
            if not ok:
                runner.stop(names[number + 1 :])
                break
        complete = runner.report.ok
        if complete and job.apply and pyramid:  # display levels of the corrected stack
            levels = StageRunner(cl, label="pyramid regions", progress=progress)
            add_output_pyramid(levels, group, "corrected", read_space(group["corrected"]),
                               levels=pyramid, name="corrected")  # fmt: skip
            runner.add("pyramid", levels)
        reports = runner.parts
        result = TimeseriesResult(
            shifts=np.asarray(group["shifts"][...]),
            error=np.asarray(group["error"][...]),
            phasediff=np.asarray(group["phasediff"][...]),
            quality_before=np.asarray(group["quality_before"][...]),
            quality_after=np.asarray(group["quality_after"][...]),
            low_quality=np.asarray(group["low_quality"][...]),
            min_quality=threshold,
            output=str(output if isinstance(output, (str, os.PathLike)) else group.store),
            reports=reports,
            notes=notes,
        )
        if spec.kind != "previous":  # against one reference: did registration make frames worse?
            result.warnings = qc_regressions(
                result.quality_before, result.quality_after, skip=result.low_quality, label="frame"
            )
        result.report = runner.finish()
        if not result.report.ok:  # the tables and CSV are written once every frame is done
            return result
        result.csv_path = _write_csv(output, csv_path, result)
        group.attrs["timeseries"] = {
            "min_quality": threshold,
            "max_drift": result.max_drift,
            "n_low_quality": int(result.low_quality.sum()),
            "notes": {k: str(v) for k, v in notes.items()},
        }
        return result


def _store_location(store):
    """A picklable description of a store: the root path of a local store, else the store."""
    import zarr.storage

    if isinstance(store, zarr.storage.LocalStore):
        return str(store.root)
    return store


def _create_arrays(group, job: Job, dtype, out_chunks, batch: int, mask, space,
                   shards=None) -> None:  # fmt: skip
    """Create the output arrays that do not exist yet (resume keeps existing ones).

    ``space`` is the input's physical space: the corrected stack keeps it (time axis included).
    """
    t, ndim = job.n_time, len(job.frame_shape)

    def table(name, shape, dtype="float64", fill=np.nan):
        if name not in group:
            group.create_array(
                name, shape=(t, *shape), chunks=(batch, *shape), dtype=dtype, fill_value=fill
            )

    table("shifts", (ndim,))
    table("low_quality", (), bool, False)
    for name in ("error", "phasediff", "quality_before", "quality_after"):
        table(name, ())
    if job.mode == "previous":
        k = len(job.strides)
        table("link_shifts", (k, ndim))
        for name in ("link_error", "link_phasediff", "link_quality"):
            table(name, (k,))
        group.attrs["strides"] = list(job.strides)
    else:
        table("measured_shifts", (ndim,))
    if job.piecewise is not None:
        grid = PatchGrid(job.frame_shape, job.piecewise.patch, job.piecewise.overlap)
        table("patch_shifts", (*grid.counts, ndim), "float32")
        table("patch_outliers", grid.counts, bool, False)
        group.attrs["patch_grid"] = {
            "starts": [s.tolist() for s in grid.starts],
            "centres": [c.tolist() for c in grid.centres],
            "sizes": list(grid.sizes),
        }
    if mask is not None and "mask" not in group:
        group.create_array("mask", data=mask, chunks=mask.shape)
    if job.apply and "corrected" not in group:
        # zstd level 1: writes a 512² uint16 frame in 2.4 ms instead of 3.8 ms (zarr's default
        # level) at the same size on this data; the corrected stack is the largest output.
        axes = ("t", *(("c",) if job.n_channels else ()), *("z", "y", "x")[3 - ndim :])
        create_array(
            group,
            name="corrected",
            shape=(t, *job.out_frame),
            dtype=dtype,
            chunks=out_chunks,
            shards=shards,
            fill_value=0,
            compressors=(ZstdCodec(level=1),),
            dimension_names=axes,
        )
        space = space.last(len(axes)) if space.ndim > len(axes) else space
        write_space(group, ["corrected"], space.renamed(axes), name="corrected")


def _time_first_space(array, time_axis: int, channel_axis: int | None):
    """The stack's space with its axes in the corrected stack's order: time, channel, frame."""
    from ..io import Space

    space = read_space(array)
    first = [time_axis] + ([] if channel_axis is None else [channel_axis])
    order = first + [a for a in range(space.ndim) if a not in first]
    axes = tuple(space.axes[i] for i in order)
    return Space(axes, tuple(space.scale[i] for i in order),
                 tuple(space.translation[i] for i in order), dict(space.units))  # fmt: skip


def _write_reference(group, job: Job, spec: ReferenceSpec, array) -> None:
    """Build and store the reference frame once (recorded, so a resume reuses it)."""
    record = CompletionRecord(group, "reference", 1)
    if record.complete:
        return
    roi = job.roi_slices
    mask = None if not job.has_mask else np.asarray(group["mask"][...])
    mask_e = None if mask is None else mask[roi]

    def register(ref, mov):
        return registrar(job, ref[roi], mask_e).register(mov[roi])[0]

    reference = build_reference(
        spec,
        lambda t: read_frames(array, job.time_axis, t, t + 1, job.bidiphase)[0],
        register,
        lambda frame, s: fourier_shift_frame(frame, s, fill_value=np.nan),
    )
    if "reference" not in group:
        group.create_array(
            "reference", shape=reference.shape, chunks=reference.shape, dtype="float32"
        )
    group["reference"][...] = reference
    record.mark_done(0)


def _finish_fixed(group, min_quality) -> float:
    """Flag low-quality frames and interpolate their shifts; write ``shifts``.

    Done once and recorded: the fix-up pass then changes ``quality_after`` of the flagged
    frames, so a resumed run must not derive the flags again.
    """
    record = CompletionRecord(group, "flags", 1)
    if record.complete:
        return float(group.attrs["min_quality_used"])
    measured = np.asarray(group["measured_shifts"][...])
    quality = np.asarray(group["quality_after"][...])
    threshold = _resolve_min_quality(min_quality, quality)
    low = ~(quality >= threshold) | ~np.isfinite(measured).all(axis=1)
    group["low_quality"][...] = low
    group["shifts"][...] = interpolate_missing(measured, ~low)
    group.attrs["min_quality_used"] = threshold
    record.mark_done(0)
    return threshold


class _BridgesFailed(Exception):
    """A bridging measurement failed (listed in the report); the drift is not solved."""


def _finish_links(group, job: Job, client, min_quality, notes: dict, runner) -> float | None:
    """Solve the drift from the link tables (bridging gaps); write ``shifts`` and friends.

    Bridging measurements run as a stage of ``runner``; if one fails, nothing is written and
    None is returned (the failure is in the report; a rerun measures again).
    """
    shifts = np.asarray(group["link_shifts"][...])
    quality = np.asarray(group["link_quality"][...])
    threshold = _resolve_min_quality(min_quality, quality[:, 0])
    a, b, d, q = [], [], [], []
    for k, s in enumerate(job.strides):
        t = np.arange(s, job.n_time, s) if s > 1 else np.arange(1, job.n_time)
        a.append(t - s)
        b.append(t)
        d.append(shifts[t, k])
        q.append(quality[t, k])
    a, b, d, q = (np.concatenate(x) for x in (a, b, d, q))

    def measure(pairs):
        chunk = 64
        tasks = [(job, tuple(pairs[i : i + chunk])) for i in range(0, len(pairs), chunk)]
        found: dict = {}

        def keep(_, result):
            for p, s, qq in zip(result["pairs"], result["shifts"], result["quality"], strict=True):
                found[tuple(p)] = (s, qq)

        if not runner.run("bridges", measure_pairs, tasks, describe=None, on_result=keep):  # fmt: skip
            raise _BridgesFailed
        return (
            np.array([found[p][0] for p in pairs]),
            np.array([found[p][1] for p in pairs]),
        )

    try:
        solution = solve_drift(job.n_time, a, b, d, q, threshold, measure_bridges=measure)
    except _BridgesFailed:
        return None
    group["shifts"][...] = solution.shifts
    group["low_quality"][...] = ~solution.linked
    group["error"][...] = np.asarray(group["link_error"][:, 0])
    group["phasediff"][...] = np.asarray(group["link_phasediff"][:, 0])
    notes["link residual rms (px)"] = round(solution.residual_rms, 4)
    notes["anchor frame"] = solution.anchor
    if solution.unbridged:
        notes["gaps assumed motionless"] = list(solution.unbridged)
    return threshold


def _csv_target(output, csv_path) -> str | None:
    """Where the shifts table goes: ``csv_path``, else beside a local output, else nowhere."""
    if csv_path is False:
        return None
    if csv_path is None:
        if not isinstance(output, (str, os.PathLike)) or "://" in os.fspath(output):
            return None
        out = Path(output)
        stem = out.name[: -len(".zarr")] if out.name.endswith(".zarr") else out.name
        csv_path = out.with_name(f"{stem}_shifts.csv")
    return os.fspath(csv_path)


def _write_csv(output, csv_path, result: TimeseriesResult) -> str | None:
    target = _csv_target(output, csv_path)
    if target is not None:
        write_csv(target, result)
    return target
