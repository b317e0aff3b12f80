"""Per-frame kernels of the time-series workflow (numpy in, numpy out).

Shifts follow :func:`chunkreg.phase_cross_correlation`: a shift ``s`` registers a moving frame
onto its reference, ``scipy.ndimage.shift(moving, s) ≈ reference``, so the moving frame sampled
at ``x - s`` matches the reference at ``x``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import InputError

__all__ = [
    "cast_frame",
    "check_frames_finite",
    "fourier_shift_frame",
    "linear_shift_frame",
    "ncc",
    "overlap_ncc",
    "valid_slices",
]


def valid_slices(shape: tuple[int, ...], shift) -> tuple[slice, ...]:
    """Return the region of a frame shifted by ``shift`` that holds moved data.

    ``ndimage.shift(frame, shift)`` has no data where ``x - shift`` falls outside the frame:
    the first ``ceil(shift)`` samples along an axis for a positive shift, the last
    ``ceil(-shift)`` for a negative one.
    """
    out = []
    for n, s in zip(shape, shift, strict=True):
        k = min(n, math.ceil(abs(float(s)) - 1e-6))
        out.append(slice(k, n) if s > 0 else slice(0, n - k))
    return tuple(out)


def _ramp(n: int, shift: float, *, half: bool) -> np.ndarray:
    freq = sfft.rfftfreq(n) if half else sfft.fftfreq(n)
    return np.exp(-2j * np.pi * shift * freq).astype(np.complex64)


def fourier_shift_frame(frame: np.ndarray, shift, *, fill_value: float = 0.0) -> np.ndarray:
    """Shift a float32 frame by a subpixel ``shift`` with a Fourier phase ramp.

    One real FFT, one separable phase ramp per axis, one inverse FFT; the samples that
    wrapped around the frame's edges are then set to ``fill_value``.

    Parameters
    ----------
    frame : ndarray, shape (M, N[, P])
        Floating-point frame.
    shift : sequence of float
        Shift per axis (``ndimage.shift`` convention).
    fill_value : float
        Value of the samples that have no data after the shift.

    Returns
    -------
    ndarray
        Shifted frame, same shape and dtype as ``frame``.
    """
    shift = [float(s) for s in shift]
    axes = tuple(range(frame.ndim))
    spectrum = sfft.rfftn(frame, axes=axes)
    for axis, s in enumerate(shift):
        if s == 0.0:
            continue
        ramp = _ramp(frame.shape[axis], s, half=axis == frame.ndim - 1)
        view = [1] * frame.ndim
        view[axis] = ramp.size
        spectrum *= ramp.reshape(view)
    out = sfft.irfftn(spectrum, s=frame.shape, axes=axes).astype(frame.dtype, copy=False)
    _fill_outside(out, shift, fill_value)
    return out


def linear_shift_frame(frame: np.ndarray, shift, *, fill_value: float = 0.0) -> np.ndarray:
    """Shift a frame by linear interpolation (``ndimage.shift``, order 1, constant fill)."""
    return ndimage.shift(
        frame, [float(s) for s in shift], order=1, mode="constant", cval=fill_value
    )


def _fill_outside(out: np.ndarray, shift, fill_value: float) -> None:
    valid = valid_slices(out.shape, shift)
    for axis, sl in enumerate(valid):
        index = [slice(None)] * out.ndim
        if sl.start > 0:
            index[axis] = slice(0, sl.start)
            out[tuple(index)] = fill_value
        if sl.stop < out.shape[axis]:
            index[axis] = slice(sl.stop, None)
            out[tuple(index)] = fill_value


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two equally shaped float32 arrays (fast, single precision).

    Returns 0.0 when either input is constant or has fewer than two samples, so a blank frame
    scores as "no evidence".
    """
    if mask is not None:
        a, b = a[mask], b[mask]
    a = np.asarray(a, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    if a.size < 2:
        return 0.0
    a = a - a.mean(dtype=np.float64).astype(np.float32)
    b = b - b.mean(dtype=np.float64).astype(np.float32)
    saa = float(np.dot(a, a))
    sbb = float(np.dot(b, b))
    denom = math.sqrt(saa * sbb)
    if not math.isfinite(denom) or saa <= 1e-12 * a.size or sbb <= 1e-12 * b.size:
        return 0.0
    return float(np.clip(float(np.dot(a, b)) / denom, -1.0, 1.0))


def overlap_ncc(
    reference: np.ndarray,
    moving: np.ndarray,
    shift,
    mask: np.ndarray | None = None,
    *,
    min_fraction: float = 0.1,
) -> float:
    """NCC of ``reference`` and ``moving`` after moving by the whole-pixel part of ``shift``.

    Compares ``reference[x]`` with ``moving[x - round(shift)]`` on the overlap of the two
    frames, without resampling; ``mask`` (the valid pixels of either frame, in its own
    coordinates) restricts the comparison to pixels valid in both.
    An overlap smaller than ``min_fraction`` of the frame scores 0.0.
    """
    ref_index, mov_index = [], []
    for n, s in zip(reference.shape, shift, strict=True):
        r = round(float(s)) if math.isfinite(float(s)) else n
        r = max(-n, min(n, r))
        ref_index.append(slice(max(r, 0), n + min(r, 0)))
        mov_index.append(slice(max(-r, 0), n - max(r, 0)))
    ref_index, mov_index = tuple(ref_index), tuple(mov_index)
    a, b = reference[ref_index], moving[mov_index]
    if a.size < max(2, min_fraction * reference.size):
        return 0.0
    return ncc(a, b, None if mask is None else mask[ref_index] & mask[mov_index])


def cast_frame(frame: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert a float frame to ``dtype``: integers are rounded and clipped to their range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(frame), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return frame > 0.5
    return frame.astype(dtype, copy=False)


def check_frames_finite(frames: np.ndarray, start: int = 0) -> None:
    """Raise :class:`InputError` naming the frames (time first) that hold NaN or infinity.

    Parameters
    ----------
    frames : ndarray, shape (T, ...)
        Frames ``start`` to ``start + T - 1`` of a stack.
    start : int
        Index of the first frame in the stack.
    """
    if frames.dtype.kind != "f" or np.isfinite(frames).all():
        return
    bad = np.flatnonzero(~np.isfinite(frames.reshape(len(frames), -1)).all(axis=1)) + start
    named = ", ".join(str(int(t)) for t in bad[:10]) + (" ..." if bad.size > 10 else "")
    which = "frame {} of the stack holds" if bad.size == 1 else "frames {} of the stack hold"
    raise InputError(
        f"{which.format(named)} NaN or infinite values; replace them (e.g. np.nan_to_num, or "
        "copy a neighbouring frame) or cut them from the stack."
    )
