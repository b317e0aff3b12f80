"""How tiles turn stored values into the intensities the kernels see.

The in-memory kernels scale integer images by their dtype's range (scikit-image's
``img_as_float`` convention: ``uint16`` 65535 becomes 1.0, ``int16`` is clipped at -1). Every
tile task applies exactly the same scaling, then an optional affine normalisation chosen at
plan time from robust percentiles of a small sample of each input:

* ``"none"``: dtype scaling only (a float reference against a 12-bit camera's ``uint16``
  volume then compares values near 1 with values near 0.06; a warning says so);
* ``"percentile"``: each input mapped so its 1st percentile is 0 and its 99th is 1;
* ``"auto"`` (default): ``"percentile"`` when the two inputs' ranges differ by more than
  :data:`MIXED_SCALE_FACTOR` (or their levels are further apart than their range), else
  ``"none"``.

The plan also derives, per input, the standard deviation below which a tile has no usable
texture (:data:`TEXTURE_FRACTION` of the input's robust range): such tiles get zero flow and a
flag in the quality control.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io import read_region
from ..registration._coarse_to_fine import _to_float as _kernel_float

__all__ = [
    "IDENTITY",
    "MIXED_SCALE_FACTOR",
    "NORMALIZE_MODES",
    "TEXTURE_FRACTION",
    "Intensity",
    "IntensityWarning",
    "plan_intensity",
    "sample_percentiles",
    "to_float",
]

#: Accepted values of ``normalize``.
NORMALIZE_MODES = ("auto", "none", "percentile")
#: ``normalize="auto"`` normalises when the inputs' robust ranges differ by more than this.
MIXED_SCALE_FACTOR = 4.0
#: Percentiles that define an input's robust range.
PERCENTILES = (1.0, 99.0)
#: A tile whose standard deviation is at most this fraction of its input's robust range has no
#: usable texture.
TEXTURE_FRACTION = 1e-3
#: Chunks read (evenly spread over the chunk grid) to estimate an input's percentiles.
SAMPLE_CHUNKS = 16
#: Values kept from each sampled chunk (a regular subsample).
SAMPLE_PER_CHUNK = 2**15


class IntensityWarning(UserWarning):
    """The reference and moving volumes have different intensity scales and are not
    normalised (``normalize="none"``)."""


def to_float(values: np.ndarray) -> np.ndarray:
    """float32 copy of ``values``, integers scaled by their dtype's range as the kernels do.

    The very function the in-memory kernels apply to their inputs, so a tile sees the values
    the kernel would see on the whole array.
    """
    return _kernel_float(np.asarray(values), np.dtype(np.float32))


@dataclass(frozen=True)
class Intensity:
    """Stored values to kernel intensities: dtype scaling, then ``(x - low) * gain``.

    Attributes
    ----------
    low, gain : float
        The affine normalisation after dtype scaling (0 and 1: none).
    texture : float
        Standard deviation (in kernel intensities) at or below which a tile has no usable
        texture.
    """

    low: float = 0.0
    gain: float = 1.0
    texture: float = 0.0

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Return ``values`` as the kernels' float32 intensities."""
        out = to_float(values)
        if self.normalized:  # a new array: to_float may return float32 input itself
            out = (out - np.float32(self.low)) * np.float32(self.gain)
        return out

    @property
    def normalized(self) -> bool:
        """Whether an affine normalisation is applied after the dtype scaling."""
        return self.low != 0.0 or self.gain != 1.0

    def flat(self, values: np.ndarray) -> bool:
        """Whether ``values`` (kernel intensities) lack usable texture."""
        if values.size == 0:
            return True
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            return True
        return float(values.std(dtype=np.float64)) <= self.texture

    def signature(self) -> dict:
        """What of this determines a run's output."""
        return {"low": self.low, "gain": self.gain, "texture": self.texture}


#: Kernel intensities that are already prepared (pyramid levels a run built).
IDENTITY = Intensity()


def _chunk_starts(shape, chunks, count: int) -> list[tuple[int, ...]]:
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    total = math.prod(grid)
    picks = sorted({round(float(i)) for i in np.linspace(0, total - 1, min(count, total))})
    out = []
    for flat in picks:
        index = np.unravel_index(flat, grid)
        out.append(tuple(int(i) * c for i, c in zip(index, chunks, strict=True)))
    return out


def sample_percentiles(array, percentiles=PERCENTILES, name: str = "input") -> tuple[float, float]:
    """Robust low and high percentiles of an input, in kernel intensities (dtype-scaled).

    Reads :data:`SAMPLE_CHUNKS` chunks spread evenly over the array's chunk grid (inner chunks
    of a sharded array), at most :data:`SAMPLE_PER_CHUNK` values from each; a chunk that
    cannot be decoded raises :class:`InputError` naming it (``name`` is the input's role).
    """
    chunks = tuple(array.chunks)
    parts = []
    for start in _chunk_starts(array.shape, chunks, SAMPLE_CHUNKS):
        region = tuple(
            slice(s, min(s + c, n)) for s, c, n in zip(start, chunks, array.shape, strict=True)
        )
        values = to_float(read_region(array, region, name)).ravel()
        step = max(1, values.size // SAMPLE_PER_CHUNK)
        parts.append(values[::step])
    values = np.concatenate(parts)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def _differ(ref: tuple[float, float], mov: tuple[float, float]) -> bool:
    r_range, m_range = ref[1] - ref[0], mov[1] - mov[0]
    if not (r_range > 0 and m_range > 0):
        return False  # a constant input has no scale to compare; its tiles are flagged flat
    ratio = max(r_range, m_range) / min(r_range, m_range)
    offset = abs((ref[0] + ref[1]) - (mov[0] + mov[1])) / 2
    return ratio > MIXED_SCALE_FACTOR or offset > max(r_range, m_range)


def _normalising(bounds: tuple[float, float]) -> Intensity:
    low, high = bounds
    gain = 1.0 / (high - low) if high > low else 1.0
    return Intensity(low=low, gain=gain, texture=TEXTURE_FRACTION * (high - low) * gain)


def _fmt(bounds) -> str:
    return f"[{bounds[0]:.4g}, {bounds[1]:.4g}]"


def plan_intensity(reference, moving, normalize: str = "auto") -> tuple[Intensity, Intensity, str]:
    """Choose how tiles scale both inputs; return their :class:`Intensity` and a plan line.

    Parameters
    ----------
    reference, moving : zarr.Array
        The inputs (a small sample of each is read).
    normalize : {"auto", "none", "percentile"}
        See the module's description.

    Returns
    -------
    (Intensity, Intensity, str)
        Reference, moving, and what was done in words (for the plan and the report).

    Warns
    -----
    IntensityWarning
        With ``normalize="none"`` when the inputs' intensity scales differ.
    """
    if normalize not in NORMALIZE_MODES:
        raise InputError(f"normalize must be one of {list(NORMALIZE_MODES)}, got {normalize!r}.")
    ref_b = sample_percentiles(reference, name="reference")
    mov_b = sample_percentiles(moving, name="moving")
    differ = _differ(ref_b, mov_b)
    p_lo, p_hi = (f"{p:g}" for p in PERCENTILES)
    ranges = (
        f"reference {_fmt(ref_b)}, moving {_fmt(mov_b)} "
        f"({p_lo}-{p_hi} percentiles after dtype scaling)"
    )
    if normalize == "percentile" or (normalize == "auto" and differ):
        why = "intensity scales differ, " if normalize == "auto" else ""
        note = f"normalised ({why}normalize={normalize!r}): {ranges} each mapped to [0, 1]"
        return _normalising(ref_b), _normalising(mov_b), note
    ref_i = Intensity(texture=TEXTURE_FRACTION * (ref_b[1] - ref_b[0]))
    mov_i = Intensity(texture=TEXTURE_FRACTION * (mov_b[1] - mov_b[0]))
    if differ:
        warnings.warn(
            f"the reference and moving volumes have different intensity scales ({ranges}) and "
            "normalize='none' leaves them so: the flow kernels will match wrong intensities. "
            "Use normalize='auto' (--normalize auto).",
            IntensityWarning,
            stacklevel=3,
        )
        return ref_i, mov_i, f"not normalised (normalize='none') although scales differ: {ranges}"
    return ref_i, mov_i, f"dtype scaling only (normalize={normalize!r}; {ranges})"
