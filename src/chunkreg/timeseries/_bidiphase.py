"""Bidirectional scan-phase offset of resonant-scanner frames (numpy in, numpy out).

A resonant (bidirectional) scanner writes every second line in the opposite direction; a small
timing error then displaces the odd lines (1, 3, 5, ...) against the even ones along the scan
axis, the last axis of a frame. ``d`` below is that displacement in pixels: the odd lines show
the scene at ``x - d``. :func:`estimate_bidiphase` measures ``d`` to subpixel precision from
the mean cross-power spectrum of even against odd lines; :func:`correct_bidiphase` resamples
the odd lines by ``-d`` so they line up with the even ones again.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import InputError

__all__ = ["correct_bidiphase", "estimate_bidiphase"]

_MAX_FRACTION = 0.25  # offsets beyond a quarter of the line are not scan-phase errors


def _line_pairs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Even and odd lines (axis -2) of every plane of ``frames``, as two (lines, width) arrays."""
    if frames.ndim < 2 or frames.shape[-2] < 4 or frames.shape[-1] < 8:
        raise InputError(
            f"bidiphase needs frames of at least 4 lines of 8 pixels, got shape {frames.shape}."
        )
    # Odd line 2k+1 against the mean of even lines 2k and 2k+2, which sits at its position
    # across the scan: like is compared with like, and neither is displaced across the scan.
    n = (frames.shape[-2] - 1) // 2
    width = frames.shape[-1]
    even = frames[..., 0 : 2 * n + 1 : 2, :]
    between = 0.5 * (even[..., :-1, :] + even[..., 1:, :])
    odd = frames[..., 1 : 2 * n : 2, :]
    return between.reshape(-1, width), odd.reshape(-1, width)


def estimate_bidiphase(frames: np.ndarray, *, upsample_factor: int = 100) -> float:
    """Measure the scan-phase offset ``d`` of the odd lines against the even ones.

    Parameters
    ----------
    frames : ndarray, shape (..., Y, X)
        One frame or several (a stack, or the planes of a volume); lines run along the last
        axis and alternate along the second last. All lines are pooled, so a few frames give a
        precise estimate even where each is noisy.
    upsample_factor : int
        Precision of the estimate: 1 / ``upsample_factor`` pixel.

    Returns
    -------
    float
        ``d`` in pixels: the odd lines show the scene at ``x - d``. :func:`correct_bidiphase`
        undoes it.

    Notes
    -----
    Each odd line ``2k+1`` is compared with the mean of the even lines ``2k`` and ``2k+2``,
    which samples the scene at its own position across the scan. Lines are detrended and
    tapered with a Hann window (they are not periodic), their cross-power spectra are summed
    over all line pairs, and the peak of the resulting cross-correlation is located on the
    integer grid and refined on a grid of ``1 / upsample_factor`` pixel by evaluating the
    correlation's Fourier series there (the matrix-multiply DFT of Guizar-Sicairos et al.,
    in one dimension). Offsets beyond a quarter of the line width are not considered.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from chunkreg.testing import textured_image
    >>> frame = textured_image((128, 128), seed=0)
    >>> frame[1::2] = ndimage.shift(frame[1::2], (0, 1.3), order=3, mode="nearest")
    >>> round(estimate_bidiphase(frame), 1)
    1.3
    """
    if isinstance(upsample_factor, bool) or int(upsample_factor) != upsample_factor:
        raise InputError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}.")
    upsample_factor = int(upsample_factor)
    if upsample_factor < 1:
        raise InputError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}.")
    frames = np.asarray(frames, dtype=np.float64)
    if not np.isfinite(frames).all():
        raise InputError("bidiphase estimation needs finite frames (found NaN or inf).")
    even, odd = _line_pairs(frames)
    width = even.shape[-1]
    window = np.hanning(width + 2)[1:-1]
    spectra = []
    for lines in (even, odd):
        lines = lines - lines.mean(axis=-1, keepdims=True)
        spectra.append(sfft.rfft(lines * window, axis=-1))
    cross = (spectra[0] * np.conj(spectra[1])).sum(axis=0)  # peaks at x = -d
    if not np.abs(cross[1:]).max() > 0:
        return 0.0  # no texture along the lines: nothing to measure
    cross[0] = 0.0
    correlation = sfft.irfft(cross, n=width)
    limit = max(1, int(_MAX_FRACTION * width))
    lags = np.r_[0 : limit + 1, -limit:0]
    coarse = lags[np.argmax(correlation[lags])]
    # refine: the correlation's Fourier series on a fine grid of +-1.5 px around the peak
    fine = coarse + np.arange(-1.5, 1.5 + 1e-9, 1.0 / upsample_factor)
    freqs = np.arange(cross.size)
    weights = np.full(cross.size, 2.0)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    series = np.real(np.exp(2j * np.pi * np.outer(fine, freqs) / width) @ (weights * cross))
    return float(-fine[np.argmax(series)])


def correct_bidiphase(frames: np.ndarray, offset: float) -> np.ndarray:
    """Resample the odd lines of ``frames`` by ``-offset`` along the scan axis.

    Parameters
    ----------
    frames : ndarray, shape (..., Y, X)
        Floating-point frame(s); lines alternate along axis -2.
    offset : float
        The scan-phase offset ``d`` from :func:`estimate_bidiphase`.

    Returns
    -------
    ndarray
        ``frames`` with its odd lines moved by ``-offset`` (cubic spline, edge samples
        extended); corrected in place where ``frames`` is a writeable float array.
    """
    offset = float(offset)
    if offset == 0.0:
        return frames
    if frames.dtype.kind != "f":
        raise InputError(f"correct_bidiphase needs floating-point frames, got {frames.dtype}.")
    odd = frames[..., 1::2, :]
    lines = np.ascontiguousarray(odd).reshape(-1, frames.shape[-1])
    moved = ndimage.shift(lines, (0.0, -offset), order=3, mode="nearest")
    frames[..., 1::2, :] = moved.reshape(odd.shape)
    return frames
