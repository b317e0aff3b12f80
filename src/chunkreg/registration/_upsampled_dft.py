"""Upsampled DFT evaluated only around a correlation peak.

The matrix-multiply DFT of Guizar-Sicairos, Thurman & Fienup (2008) evaluates the inverse DFT of
a cross-power spectrum on a fine grid of sub-pixel positions without zero padding: one small
matrix product per axis. Two things here go beyond the textbook form:

* the spectrum may be the half spectrum of :func:`scipy.fft.rfftn` (real images), which halves
  the dominant matrix product; the missing half is folded in through Hermitian symmetry after the
  last axis has been contracted, where it is cheap;
* the peak is searched coarse to fine (steps of about 1/10 pixel, then finer windows around the
  best sample), which finds the same grid maximum as the exhaustive search whenever the peak is
  unimodal within a tenth of a pixel, at a fraction of the cost.

:func:`irfftn` (the inverse real FFT used by the correlators) is here too.

Frequencies follow :func:`numpy.fft.fftfreq` everywhere (the Nyquist bin of an even axis counts
as ``-1/2``), so the values equal scikit-image's, Nyquist terms included.

References
----------
.. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
       registration algorithms", Optics Letters 33(2), 156-158 (2008).
       :doi:`10.1364/OL.33.000156`
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

__all__ = ["dft_at", "dft_at_half", "irfftn", "refine_peak"]


def irfftn(half: np.ndarray, shape, *, overwrite: bool = False) -> np.ndarray:
    """Inverse of :func:`scipy.fft.rfftn` for a real signal of ``shape``.

    Done as a complex inverse FFT over the leading axes followed by a complex-to-real one along
    the last axis: measured 1.2-1.3x faster than :func:`scipy.fft.irfftn` on 2048² and 256³
    float32 arrays on one core (equal on small arrays). ``overwrite`` lets it destroy ``half``.
    """
    lead = tuple(range(len(shape) - 1))
    if lead:
        half = sfft.ifftn(half, axes=lead, overwrite_x=overwrite)
        overwrite = True
    return sfft.irfft(half, n=shape[-1], axis=-1, overwrite_x=overwrite)


def _kernel(positions: np.ndarray, freqs: np.ndarray, dtype) -> np.ndarray:
    """``exp(2πi x f)`` for every sample position ``x`` (rows) and frequency ``f`` (columns).

    The phase is reduced to [-1/2, 1/2] turns in double precision first; single-precision
    kernels then take float32 cosines and sines (several times faster than a complex exp).
    """
    turns = np.multiply.outer(np.asarray(positions, dtype=np.float64), freqs)
    turns -= np.round(turns)
    turns *= 2 * np.pi
    if np.dtype(dtype) == np.complex64:
        turns = turns.astype(np.float32)
    out = np.empty(turns.shape, dtype=dtype)
    np.cos(turns, out=out.real)
    np.sin(turns, out=out.imag)
    return out


def _contract_leading(data: np.ndarray, positions, dtype) -> np.ndarray:
    """Evaluate the DFT along the first ``len(positions)`` axes of ``data``.

    The contracted axes keep their order and come first in the result; trailing axes stay.
    """
    k = len(positions)
    for axis in reversed(range(k)):
        n = data.shape[k - 1]
        kern = _kernel(positions[axis], np.fft.fftfreq(n), dtype)
        if k - 1 == data.ndim - 1 and data.flags.c_contiguous:
            out = data.reshape(-1, n) @ kern.T
            data = np.moveaxis(out.reshape(*data.shape[:-1], kern.shape[0]), -1, 0)
        else:
            # The axis being contracted always sits at position k - 1: each step puts its new
            # axis in front of the ones not yet contracted.
            data = np.tensordot(kern, data, axes=(1, k - 1))
    return data


def dft_at(spectrum: np.ndarray, positions) -> np.ndarray:
    """Inverse DFT (unnormalised) of a full spectrum at arbitrary positions.

    Parameters
    ----------
    spectrum : ndarray of complex, shape (n0, ..., nd-1)
        Spectrum in :func:`scipy.fft.fftn` layout.
    positions : sequence of 1-D arrays
        Sample positions in pixels along each axis; the result is taken on their outer grid.

    Returns
    -------
    ndarray of complex, shape (len(positions[0]), ..., len(positions[d-1]))
        ``sum_k S[k] exp(2πi sum_a f_a(k_a) x_a)``.
    """
    return _contract_leading(spectrum, positions, spectrum.dtype)


def dft_at_half(half: np.ndarray, shape, positions) -> np.ndarray:
    """:func:`dft_at` of a Hermitian spectrum given as its :func:`scipy.fft.rfftn` half.

    Parameters
    ----------
    half : ndarray of complex, shape (n0, ..., nd-2, nd-1 // 2 + 1)
        Half spectrum of a real signal of shape ``shape``.
    shape : tuple of int
        Shape of the real signal.
    positions : sequence of 1-D arrays
        Sample positions in pixels along each axis.

    Returns
    -------
    ndarray of complex
        Identical (up to rounding) to ``dft_at(full_spectrum, positions)``.

    Notes
    -----
    Split the full sum by the last frequency index ``j``: ``A`` collects ``j`` in
    ``[0, ceil(n/2))`` straight from the half spectrum; the rest (``j < 0``, the Nyquist bin of an
    even axis included) is, through ``S[k', -j] = conj(S[-k', j])``, the complex conjugate of a sum
    ``B`` over ``j`` in ``[1, n//2]`` taken with the other axes' indices negated. Both share one
    kernel along the last axis, so one matrix product over the half spectrum serves both; the
    index negation and conjugation then act on arrays already reduced along the last axis.
    """
    n = shape[-1]
    m = half.shape[-1]
    even = n % 2 == 0
    kern = _kernel(positions[-1], np.arange(m) / n, half.dtype)
    shared = kern.copy()
    shared[:, 0] = 0
    if even:
        shared[:, m - 1] = 0
    flat = half.reshape(-1, m)
    common = flat @ shared.T
    part_a = common + flat[:, :1]
    part_b = common + flat[:, m - 1 : m] * kern[:, m - 1] if even and m > 1 else common
    lead = half.shape[:-1]
    part_a = part_a.reshape(*lead, -1)
    part_b = np.conjugate(part_b.reshape(*lead, -1))
    for axis in range(len(lead)):
        # conj(B) needs B at negated indices: x[-k mod n] along every leading axis.
        part_b = np.roll(np.flip(part_b, axis), 1, axis)
    folded = part_a + part_b
    if not lead:
        return folded
    out = _contract_leading(folded, positions[:-1], half.dtype)
    return out


def refine_peak(evaluate, shift, upsample_factor: float, shape):
    """Locate the correlation maximum on the ``1 / upsample_factor`` grid around ``shift``.

    The searched region is scikit-image's: ``ceil(1.5 * upsample_factor)`` samples per axis,
    ``floor(region / 2)`` of them before ``shift``. It is sampled coarse to fine: first about every
    1/10 pixel, then repeatedly in a window of one coarse step either side of the best sample with
    a step ten times finer, down to single samples.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(positions) -> complex ndarray`` on the outer grid of per-axis positions.
    shift : ndarray, shape (ndim,)
        Whole-pixel estimate of the peak position.
    upsample_factor : float
        Grid refinement, >= 1.
    shape : tuple of int
        Image shape (axes of length 1 are not searched).

    Returns
    -------
    shift : ndarray of float64, shape (ndim,)
        Position of the grid maximum of ``|evaluate|``.
    value : complex
        The evaluated (complex) correlation there.
    """
    up = float(upsample_factor)
    region = math.ceil(up * 1.5)
    before = region // 2
    lo0 = np.array([-before if n > 1 else 0 for n in shape])
    hi0 = np.array([region - 1 - before if n > 1 else 0 for n in shape])
    lo, hi = lo0.copy(), hi0.copy()
    step = max(1, int(up // 10))
    shift = np.asarray(shift, dtype=np.float64)
    while True:
        offsets = [np.arange(a, b + 1, step) for a, b in zip(lo, hi, strict=True)]
        values = evaluate([s + o / up for s, o in zip(shift, offsets, strict=True)])
        index = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
        best = np.array([o[i] for o, i in zip(offsets, index, strict=True)])
        if step == 1:
            return shift + best / up, complex(values[index])
        lo = np.maximum(lo0, best - step)
        hi = np.minimum(hi0, best + step)
        step = max(1, step // 10)
