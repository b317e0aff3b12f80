"""Masked normalised cross-correlation (Padfield 2012) on real FFTs.

Six correlations of zero-padded arrays give, for every integer shift, the Pearson correlation
of the two images over the pixels where both masks are true. The formulation here correlates
reference-side arrays with moving-side arrays directly (no flipped copies), uses real FFTs of
``scipy.fft.next_fast_len`` padded shapes, reuses the mask spectrum when both masks are equal,
and subtracts each image's masked mean first (the result is the same in exact arithmetic; in
single precision it avoids cancellation on images with a large offset).

References
----------
.. [1] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions on
       Image Processing 21(5), 2706-2718 (2012). :doi:`10.1109/TIP.2011.2181402`
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from ..errors import InputError
from ._upsampled_dft import irfftn

__all__ = ["MaskedSide", "masked_shift", "padded_rfftn", "padded_shape"]


@dataclass(frozen=True)
class MaskedSide:
    """One image prepared for masked correlation: zero-mean inside the mask, zero outside."""

    image: np.ndarray
    mask: np.ndarray

    @classmethod
    def prepare(cls, image: np.ndarray, mask: np.ndarray, name: str) -> MaskedSide | None:
        """Return the prepared side, or ``None`` when the mask leaves nothing to correlate.

        Raises :class:`InputError` when a pixel inside the mask is NaN or infinite.
        """
        values = image[mask]
        if values.size == 0:
            return None
        lo, hi = values.min(), values.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(
                f"{name} contains NaN or infinite values inside its mask; exclude them from the "
                "mask (e.g. mask & np.isfinite(image)) or replace them."
            )
        if lo == hi:
            return None
        mean = image.dtype.type(values.mean(dtype=np.float64))
        return cls(np.where(mask, image - mean, image.dtype.type(0)), mask)

    def spectra(self, shape, *, with_mask: bool = True) -> tuple[np.ndarray, ...]:
        """Real FFTs (zero-padded to ``shape``) of the image, its square and the mask."""
        image = self.image
        out = (padded_rfftn(image, shape), padded_rfftn(np.square(image), shape))
        if with_mask:
            out += (padded_rfftn(self.mask.astype(image.dtype), shape),)
        return out


def padded_rfftn(array: np.ndarray, shape) -> np.ndarray:
    """``scipy.fft.rfftn(array, s=shape)``, skipping the transforms of all-zero padding.

    One axis at a time, last axis first, each transformed only over the extent not yet known
    to be zero: 15% faster in 2-D, ~45% in 3-D when ``shape`` doubles the array.
    """
    out = sfft.rfft(array, n=shape[-1], axis=-1)
    for axis in reversed(range(array.ndim - 1)):
        out = sfft.fft(out, n=shape[axis], axis=axis, overwrite_x=True)
    return out


def padded_shape(reference_shape, moving_shape) -> tuple[int, ...]:
    """Smallest fast real-FFT shape holding the full linear correlation of the two shapes."""
    return tuple(
        sfft.next_fast_len(a + b - 1, real=True)
        for a, b in zip(reference_shape, moving_shape, strict=True)
    )


class _Correlator:
    """Circular correlations at negated lags, ``out[p] = sum_x r[x - p] m[x]``, on one buffer.

    Each product of a conjugated reference spectrum with a moving spectrum is written into the
    same complex buffer (no fresh allocation per correlation) and transformed back in place.
    """

    def __init__(self, shape, like: np.ndarray) -> None:
        self.shape = shape
        self.buffer = np.empty_like(like)

    def __call__(self, conj_ref: np.ndarray, moving: np.ndarray) -> np.ndarray:
        np.multiply(conj_ref, moving, out=self.buffer)
        return irfftn(self.buffer, self.shape, overwrite=True)


def masked_shift(
    reference_spectra,
    moving_spectra,
    reference_shape,
    moving_shape,
    overlap_ratio: float,
    dtype,
) -> np.ndarray:
    """Shift maximising the masked normalised cross-correlation.

    Parameters
    ----------
    reference_spectra : tuple of 3 complex ndarrays
        Complex conjugates of :meth:`MaskedSide.spectra` of the reference.
    moving_spectra : tuple of 3 complex ndarrays
        :meth:`MaskedSide.spectra` of the moving image (same padded shape).
    reference_shape, moving_shape : tuple of int
        Unpadded shapes.
    overlap_ratio : float
        Shifts whose mask overlap is below this fraction of the largest overlap score 0.
    dtype : dtype
        Floating dtype of the computation (sets the rounding tolerances).

    Returns
    -------
    ndarray of float64, shape (ndim,)
        Shift registering the moving image onto the reference; the mean of all maximising
        shifts when several tie. Images of different shapes are related through their centres
        as in scikit-image.
    """
    c_img, c_sq, c_mask = reference_spectra
    m_img, m_sq, m_mask = moving_spectra
    shape = padded_shape(reference_shape, moving_shape)
    eps = np.finfo(dtype).eps
    correlate = _Correlator(shape, c_img)

    overlap = correlate(c_mask, m_mask)
    np.round(overlap, out=overlap)
    np.fmax(overlap, eps, out=overlap)
    sum_ref = correlate(c_img, m_mask)
    sum_mov = correlate(c_mask, m_img)

    numerator = correlate(c_img, m_img)
    tmp = sum_ref * sum_mov
    tmp /= overlap
    numerator -= tmp

    denom = correlate(c_sq, m_mask)
    np.square(sum_ref, out=sum_ref)
    sum_ref /= overlap
    denom -= sum_ref
    np.fmax(denom, 0, out=denom)
    denom_mov = correlate(c_mask, m_sq)
    np.square(sum_mov, out=sum_mov)
    sum_mov /= overlap
    denom_mov -= sum_mov
    np.fmax(denom_mov, 0, out=denom_mov)
    denom *= denom_mov
    np.sqrt(denom, out=denom)
    del tmp, sum_ref, sum_mov, denom_mov

    valid = denom > 1e3 * eps * denom.max()
    ncc = numerator
    np.divide(numerator, denom, out=ncc, where=valid)
    ncc[~valid] = 0
    np.clip(ncc, -1, 1, out=ncc)
    ncc[overlap < overlap_ratio * overlap.max()] = 0

    # Index p holds lag d = -p (mod L); lags outside [-(moving - 1), reference - 1] are padding.
    lags = []
    for axis, (size, nr, nm) in enumerate(zip(shape, reference_shape, moving_shape, strict=True)):
        lag = (-np.arange(size)) % size
        lag = np.where(lag <= nr - 1, lag, lag - size)
        outside = np.nonzero(lag < -(nm - 1))[0]
        if outside.size:
            index = [slice(None)] * len(shape)
            index[axis] = outside
            ncc[tuple(index)] = -np.inf
        lags.append(lag)
    peaks = np.nonzero(ncc == ncc.max())
    shift = np.array([lag[p].mean() for lag, p in zip(lags, peaks, strict=True)])
    mismatch = np.array(moving_shape, dtype=np.float64) - np.array(reference_shape)
    return shift + mismatch / 2
