"""Many small cross-correlations at once: the patches of one frame against the reference's.

Piecewise-rigid correction registers tens of patches per frame. One
:class:`chunkreg.registration.PhaseCorrelator` call per patch spends most of its time in Python
overhead and in the per-call peak refinement, so this kernel does all patches of a frame in a
few vectorised steps: one batched real FFT, one batched inverse FFT, a batched arg-max, and a
batched matrix-multiply DFT (Guizar-Sicairos et al. [1]_) on a ``1 / upsample_factor`` grid of
``ceil(1.5 * upsample_factor)`` samples per axis around each peak. Patches are mean-subtracted
and tapered (Tukey window) as in :mod:`._estimate`.

References
----------
.. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
       registration algorithms", Optics Letters 33, 156-158 (2008). doi:10.1364/OL.33.000156
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ._estimate import _window

__all__ = ["PatchCorrelator", "taper_batch"]


def taper_batch(patches: np.ndarray) -> np.ndarray:
    """Subtract each patch's mean and taper it; ``patches`` has shape (P, *patch)."""
    patches = np.asarray(patches, dtype=np.float32)
    axes = tuple(range(1, patches.ndim))
    means = patches.mean(axis=axes, dtype=np.float64, keepdims=True).astype(np.float32)
    return (patches - means) * _window(patches.shape[1:])


class PatchCorrelator:
    """Cross-correlate a stack of patches with fixed reference patches.

    Parameters
    ----------
    reference_patches : ndarray, shape (P, *patch)
        One reference patch per entry.
    upsample_factor : int
        Subpixel precision (1 / ``upsample_factor`` pixel).
    normalization : {None, "phase"}
        Cross-power spectrum normalisation.
    """

    def __init__(
        self, reference_patches: np.ndarray, *, upsample_factor: int = 10, normalization=None
    ) -> None:
        ref = taper_batch(reference_patches)
        self.shape = ref.shape[1:]
        self.axes = tuple(range(1, ref.ndim))
        self.upsample_factor = int(upsample_factor)
        self.normalization = normalization
        self._conj = np.conjugate(sfft.rfftn(ref, axes=self.axes))
        self._ref_norm = np.sqrt(np.sum(ref.astype(np.float64) ** 2, axis=self.axes))
        # per-axis frequencies of the half spectrum (last axis) and full spectrum (others)
        self._freqs = [np.fft.fftfreq(n) for n in self.shape[:-1]]
        n = self.shape[-1]
        m = n // 2 + 1
        self._freqs.append(np.arange(m) / n)
        weights = np.full(m, 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        self._weights = weights

    def register(self, moving_patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(shifts, quality)`` registering each moving patch onto its reference.

        Parameters
        ----------
        moving_patches : ndarray, shape (P, *patch)

        Returns
        -------
        shifts : ndarray, shape (P, ndim)
            ``ndimage.shift(moving_patch, shift)`` ≈ reference patch.
        quality : ndarray, shape (P,)
            Peak of the correlation of the tapered patches divided by their norms: their
            normalised cross-correlation at the best shift, in [-1, 1] (0 for a blank patch).
        """
        mov = taper_batch(moving_patches)
        mov_norm = np.sqrt(np.sum(mov.astype(np.float64) ** 2, axis=self.axes))
        product = sfft.rfftn(mov, axes=self.axes)
        product *= self._conj
        if self.normalization == "phase":
            magnitude = np.abs(product)
            np.maximum(magnitude, 100 * np.finfo(np.float32).eps, out=magnitude)
            product /= magnitude
        corr = sfft.irfftn(product, s=self.shape, axes=self.axes)
        n_patches = corr.shape[0]
        flat = corr.reshape(n_patches, -1)
        peak = np.argmax(flat, axis=1)
        index = np.stack(np.unravel_index(peak, self.shape), axis=1)
        shape = np.array(self.shape)
        # the correlation is indexed by the negated lag: lag = -index (mod shape)
        shifts = (-index) % shape
        shifts = np.where(shifts > shape // 2, shifts - shape, shifts).astype(np.float64)
        if self.upsample_factor > 1:
            shifts = self._refine(product, shifts)
        denom = self._ref_norm * mov_norm
        value = flat[np.arange(n_patches), peak].astype(np.float64)
        if self.normalization == "phase":  # the whitened correlation peaks at <= 1 already
            quality = np.where(denom > 0, value, 0.0)
        else:
            quality = np.divide(value, denom, out=np.zeros(n_patches), where=denom > 0)
        return shifts, np.clip(quality, -1.0, 1.0)

    def _refine(self, product: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Maximise the correlation on the upsampled grid around each whole-pixel peak."""
        up = self.upsample_factor
        region = math.ceil(1.5 * up)
        offsets = (np.arange(region) - region // 2) / up
        n_patches = product.shape[0]
        ndim = len(self.shape)
        # correlation at lag s is sum_k X(k) exp(-2 pi i k s): evaluate at s = shift + offset
        data = product.astype(np.complex64)
        for axis in reversed(range(ndim)):
            lags = shifts[:, axis][:, None] + offsets[None, :]  # (P, region)
            kernel = np.exp(-2j * np.pi * lags[:, :, None] * self._freqs[axis][None, None, :])
            if axis == ndim - 1:
                kernel = kernel * self._weights
            kernel = kernel.astype(np.complex64)  # (P, region, n_axis)
            # contract data's axis (axis + 1) with the kernel; the new axis goes last
            moved = np.moveaxis(data, axis + 1, -1)  # (P, ..., n_axis)
            lead = moved.shape[1:-1]
            out = moved.reshape(n_patches, -1, moved.shape[-1]) @ kernel.transpose(0, 2, 1)
            data = np.moveaxis(out.reshape(n_patches, *lead, region), -1, axis + 1)
        values = data.real.reshape(n_patches, -1)
        best = np.unravel_index(np.argmax(values, axis=1), (region,) * ndim)
        return shifts + np.stack([offsets[b] for b in best], axis=1)
