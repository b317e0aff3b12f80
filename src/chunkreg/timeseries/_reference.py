"""Choosing and building the reference of a time series (pure numpy)."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = ["ReferenceSpec", "build_reference", "parse_reference", "parse_strides"]


@dataclass(frozen=True)
class ReferenceSpec:
    """What the frames are registered against.

    ``kind`` is ``"frame"`` (frame ``index``), ``"mean"`` (the first ``n_frames`` frames,
    aligned to the first and averaged), ``"array"`` (a caller-supplied frame) or
    ``"previous"`` (each frame against the one before).
    """

    kind: str
    index: int = 0
    n_frames: int = 1
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    def describe(self) -> dict:
        """JSON-able description (part of the output's signature)."""
        out = {"kind": self.kind}
        if self.kind == "frame":
            out["index"] = self.index
        elif self.kind == "mean":
            out["n_frames"] = self.n_frames
        elif self.kind == "array":
            digest = hashlib.sha1(np.ascontiguousarray(self.array).tobytes()).hexdigest()
            out["sha1"] = digest
        return out


def parse_reference(
    reference, n_time: int, frame_shape: tuple[int, ...], n_reference_frames: int
) -> ReferenceSpec:
    """Validate the ``reference`` argument of :func:`register_timeseries`."""
    if isinstance(reference, str):
        if reference == "first":
            return ReferenceSpec("frame", 0)
        if reference == "previous":
            return ReferenceSpec("previous")
        if reference == "mean":
            n = n_reference_frames
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise InputError(f"n_reference_frames must be an integer >= 1, got {n!r}.")
            return ReferenceSpec("mean", 0, min(int(n), n_time))
        raise InputError(
            f"reference must be 'first', 'mean', 'previous', a frame index or an array, got "
            f"{reference!r}."
        )
    if isinstance(reference, numbers.Integral) and not isinstance(reference, bool):
        if not -n_time <= reference < n_time:
            raise InputError(
                f"reference frame index {reference} is out of range for a series of {n_time} "
                f"frames (valid: {-n_time}..{n_time - 1})."
            )
        return ReferenceSpec("frame", int(reference) % n_time)
    try:
        array = np.asarray(reference)
    except Exception:  # pragma: no cover - exotic objects
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise InputError(
            f"reference must be 'first', 'mean', 'previous', a frame index or a numeric "
            f"array, got {type(reference).__name__}."
        )
    if array.shape != tuple(frame_shape):
        raise InputError(
            f"reference array has shape {array.shape} but frames have shape "
            f"{tuple(frame_shape)}; pass one frame (the time axis removed)."
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("reference array contains NaN or infinite values.")
    return ReferenceSpec("array", array=array.astype(np.float32))


def parse_strides(strides, n_time: int) -> tuple[int, ...]:
    """Validate the link strides of ``reference="previous"`` (sorted, unique, with 1)."""
    if strides is None:
        return (1,)
    if isinstance(strides, numbers.Integral) and not isinstance(strides, bool):
        strides = (strides,)
    if not isinstance(strides, Sequence) or isinstance(strides, str):
        raise InputError(
            f"strides must be a sequence of integers such as (1, 10, 100), got {strides!r}."
        )
    out = []
    for s in strides:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            raise InputError(f"strides must be integers >= 1, got {strides!r}.")
        out.append(int(s))
    out = sorted(set(out))
    if out[0] != 1:
        raise InputError(
            f"strides must include 1 (every frame is linked to the one before), got {strides!r}."
        )
    return tuple(s for s in out if s < max(n_time, 2)) or (1,)


def build_reference(
    spec: ReferenceSpec,
    read_frame: Callable[[int], np.ndarray],
    register: Callable[[np.ndarray, np.ndarray], np.ndarray],
    shift: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Return the reference frame (float32) for a fixed-reference ``spec``.

    Parameters
    ----------
    spec : ReferenceSpec
        Not ``"previous"``.
    read_frame : callable
        ``read_frame(t)`` returns frame ``t`` as float32.
    register : callable
        ``register(reference, moving)`` returns the shift registering ``moving`` onto
        ``reference``.
    shift : callable
        ``shift(frame, s)`` applies a shift, with NaN where the shifted frame has no data.

    Notes
    -----
    ``"mean"`` registers each of the first ``n_frames`` frames to the first frame, shifts it
    there and averages (each pixel over the frames that cover it), so the reference keeps
    frame 0's position (drift is reported against the first frame) with less noise than one
    frame; memory is a few frames.
    """
    if spec.kind == "array":
        return np.array(spec.array, dtype=np.float32)
    if spec.kind == "frame":
        return np.array(read_frame(spec.index), dtype=np.float32)
    if spec.kind != "mean":
        raise ValueError(f"no fixed reference for kind {spec.kind!r}")
    first = np.array(read_frame(0), dtype=np.float32)
    total = first.astype(np.float64)
    count = np.ones(first.shape, np.int32)
    for t in range(1, spec.n_frames):
        frame = np.asarray(read_frame(t), dtype=np.float32)
        moved = shift(frame, register(first, frame))
        valid = np.isfinite(moved)
        total[valid] += moved[valid]
        count += valid
    return (total / count).astype(np.float32)
