"""Shift of a frame against a fixed reference: tapered correlation refined on common content.

A frame of a drifting series is a crop of a larger scene, so its edges do not wrap around and
the parts of the scene that entered or left the field of view do not match. Correlating whole
frames then biases subpixel shifts by a tenth of a pixel or more (and phase normalisation can
lock onto the frame border). :class:`FrameRegistrar` therefore

1. correlates the mean-subtracted, edge-tapered (Tukey window) frames for the whole-pixel
   shift ``w``, with the reference's spectrum computed once; frames of 128 pixels or more
   along every axis are binned 2x first (the next step absorbs an error of a pixel or two);
2. correlates, with subpixel upsampling, the reference's central region (a margin ``m`` of at
   least ``|w|`` pixels dropped on every side, ``m`` rounded up to a power of two) with the
   moving frame's region ``w`` pixels away, both tapered: the two crops hold the same part of
   the scene. The total is ``w`` plus this residual. Reference crops depend only on ``m``, so
   their spectra are cached and most frames of a series reuse one;
3. for crops shorter than 128 pixels along an axis, repeats step 2 with the moving crop first
   shifted (Fourier phase ramp, after mirroring a few pixels around it so its edges do not
   ring) by the fractional part of the estimate, so the last correlation measures a residual
   near zero, where the taper (which does not move with the content) biases it least. On
   32³ and 64² frames drifting up to 5 and 20 pixels, step 2 alone leaves errors of up to 0.2
   and 0.1 pixel and step 3 about 0.06 and 0.04 pixel; from 128² up both leave about 0.03.

Crops are trimmed to lengths with fast FFTs (a 509-pixel crop, a prime, would make every FFT
several times slower). The correlations are :class:`chunkreg.registration.PhaseCorrelator`'s.
With a mask, the masked correlation of Padfield is used on the raw frames instead (whole-pixel
precision, no taper).

References
----------
.. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
       registration algorithms", Optics Letters 33, 156-158 (2008). doi:10.1364/OL.33.000156
.. [2] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions on
       Image Processing 21, 2706-2718 (2012). doi:10.1109/TIP.2011.2181402
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy.signal import windows

from ..registration import PhaseCorrelator
from ._frames import fourier_shift_frame

__all__ = ["FrameRegistrar", "taper"]

_TUKEY_ALPHA = 0.25  # fraction of each axis that is tapered (half at each end)
_MIN_OVERLAP = 8  # pixels along every axis for the refinement step
_POLISH_BELOW = 128  # step 3 of the module docstring runs for crops shorter than this
_BIN_FROM = 128  # step 1 bins frames at least this long along every axis
_SHIFT_PAD = 4  # mirrored pixels around a crop before its Fourier shift


@lru_cache(maxsize=32)
def _window(shape: tuple[int, ...]) -> np.ndarray:
    w = np.ones((), np.float32)
    for n in shape:
        w = np.multiply.outer(w, windows.tukey(n, _TUKEY_ALPHA).astype(np.float32))
    return w


def taper(frame: np.ndarray) -> np.ndarray:
    """Subtract the mean and multiply by a separable Tukey window (float32 copy)."""
    frame = np.asarray(frame, dtype=np.float32)
    return (frame - frame.mean(dtype=np.float64).astype(np.float32)) * _window(frame.shape)


def _correlator(reference, upsample_factor, normalization, mask=None):
    return PhaseCorrelator(
        reference,
        upsample_factor=upsample_factor,
        normalization=normalization,
        reference_mask=mask,
    )


@lru_cache(maxsize=1024)
def fast_length_below(n: int) -> int:
    """Largest length <= ``n`` whose real FFT is fast (no prime factor above 5)."""
    m = n
    while m > 1 and sfft.next_fast_len(m, real=True) != m:
        m -= 1
    return max(m, 1)


def _margin(w: int) -> int:
    """Smallest power of two >= |w| (0 for 0): the margin of the reference crop."""
    w = abs(int(w))
    return 0 if w == 0 else 1 << (w - 1).bit_length()


def _crops(shape, whole) -> tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]] | None:
    """Reference and moving crops holding the same content at a whole-pixel shift.

    Returns ``(key, reference_slices, moving_slices)``, the key identifying the reference crop,
    or None when the shift leaves less than ``_MIN_OVERLAP`` pixels along an axis.
    """
    key, ref, mov = [], [], []
    for n, w in zip(shape, whole, strict=True):
        m = _margin(w)
        length = n - 2 * m
        if length < _MIN_OVERLAP:
            if n - abs(w) < _MIN_OVERLAP:
                return None
            m, length = abs(w), n - 2 * abs(w)  # fall back to the tightest symmetric crop
            if length < _MIN_OVERLAP:
                return None
        fast = fast_length_below(length)
        start = m + (length - fast) // 2
        key.append((start, fast))
        ref.append(slice(start, start + fast))
        # moving(x) ≈ reference(x + w): the moving crop sits w pixels before the reference's
        mov.append(slice(start - w, start - w + fast))
    return tuple(key), tuple(ref), tuple(mov)


def _bin2(frame: np.ndarray) -> np.ndarray:
    """Sum 2 x 2 (x 2) blocks, dropping a trailing odd row/column (strided adds, no copies)."""
    out = None
    for offsets in itertools.product((0, 1), repeat=frame.ndim):
        view = frame[
            tuple(slice(o, n - n % 2, 2) for o, n in zip(offsets, frame.shape, strict=True))
        ]
        out = view.astype(np.float32) if out is None else np.add(out, view, out=out)
    return out


def _shift_crop(crop: np.ndarray, shift) -> np.ndarray:
    """Fourier-shift a crop by a fraction of a pixel without ringing from its edges.

    The crop is mirrored by a few pixels on every side first (to a fast FFT length), so the
    periodic extension the FFT assumes is continuous at the crop's edges.
    """
    if min(crop.shape) <= _SHIFT_PAD:
        return fourier_shift_frame(crop, shift)
    pads = []
    for n in crop.shape:
        total = sfft.next_fast_len(n + 2 * _SHIFT_PAD, real=True) - n
        pads.append((total // 2, total - total // 2))
    moved = fourier_shift_frame(np.pad(crop, pads, mode="reflect"), shift)
    return moved[tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, crop.shape, strict=True))]


class FrameRegistrar:
    """Register moving frames to one reference frame.

    Parameters
    ----------
    reference : ndarray
        Reference frame (2-D or 3-D).
    upsample_factor : int
        Subpixel precision (1 / ``upsample_factor`` pixel).
    normalization : {None, "phase"}
        Cross-power spectrum normalisation of the correlations.
    mask : ndarray of bool, optional
        Pixels to compare (same mask for reference and moving frames).
    refine : bool
        Run steps 2 and 3 above; without, one tapered correlation with upsampling.
    cache_size : int
        Reference crops kept for the refinement.
    """

    def __init__(
        self,
        reference: np.ndarray,
        *,
        upsample_factor: int = 10,
        normalization: str | None = None,
        mask: np.ndarray | None = None,
        refine: bool = True,
        cache_size: int = 8,
    ) -> None:
        self.reference = np.asarray(reference, dtype=np.float32)
        self.upsample_factor = int(upsample_factor)
        self.normalization = normalization
        self.mask = mask
        self.refine = refine
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._binned = refine and min(self.reference.shape) >= _BIN_FROM
        if mask is not None:
            self._coarse = _correlator(self.reference, 1, normalization, mask)
        elif self._binned:
            self._coarse = _correlator(taper(_bin2(self.reference)), 1, normalization)
        else:
            self._coarse = _correlator(
                taper(self.reference), 1 if refine else upsample_factor, normalization
            )

    def register(self, moving: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Return ``(shift, error, phasediff)`` registering ``moving`` onto the reference."""
        moving = np.asarray(moving, dtype=np.float32)
        if self.mask is not None:
            shift, error, phasediff = self._coarse.register(moving, moving_mask=self.mask)
            return np.asarray(shift, dtype=np.float64), float(error), float(phasediff)
        coarse_input = _bin2(moving) if self._binned else moving
        shift, error, phasediff = self._coarse.register(taper(coarse_input))
        shift = np.asarray(shift, dtype=np.float64) * (2 if self._binned else 1)
        if not self.refine or not np.isfinite(shift).all():
            return shift, float(error), float(phasediff)
        for step in range(2):
            whole = np.rint(shift)
            crops = _crops(self.reference.shape, [int(v) for v in whole])
            if crops is None:
                break
            key, ref_sl, mov_sl = crops
            shortest = min(s.stop - s.start for s in ref_sl)
            if step == 1 and shortest >= _POLISH_BELOW:
                break
            crop = np.ascontiguousarray(moving[mov_sl])
            fraction = shift - whole
            if np.any(fraction != 0):
                crop = _shift_crop(crop, fraction)
            residual, error, phasediff = self._refiner(key, ref_sl).register(taper(crop))
            residual = np.asarray(residual, dtype=np.float64)
            if not np.isfinite(residual).all():
                break
            shift = shift + residual
        return shift, float(error), float(phasediff)

    def _refiner(self, key, ref_sl):
        fine = self._cache.get(key)
        if fine is None:
            fine = _correlator(
                taper(self.reference[ref_sl]), self.upsample_factor, self.normalization
            )
            self._cache[key] = fine
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return fine
