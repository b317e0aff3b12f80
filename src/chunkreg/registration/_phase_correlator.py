"""Phase cross-correlation against one cached reference (the engine of the public function)."""

from __future__ import annotations

import itertools
import numbers
import warnings

import numpy as np
import scipy.fft as sfft

from ..errors import InputError
from ._masked_phase_cross_correlation import MaskedSide, masked_shift, padded_shape
from ._upsampled_dft import dft_at, dft_at_half, irfftn, refine_peak

__all__ = ["PhaseCorrelator"]

_UNSET = object()


# ----------------------------------------------------------------------------- validation


def _check_space(space) -> str:
    if not isinstance(space, str) or space.lower() not in ("real", "fourier"):
        raise InputError(f'space must be "real" or "fourier", got {space!r}.')
    return space.lower()


def _check_normalization(normalization):
    if normalization is not None and not (
        isinstance(normalization, str) and normalization == "phase"
    ):
        raise InputError(
            f'normalization must be "phase" (phase correlation) or None (plain '
            f"cross-correlation), got {normalization!r}."
        )
    return normalization


def _check_upsample(upsample_factor) -> float:
    if (
        isinstance(upsample_factor, bool)
        or not isinstance(upsample_factor, numbers.Real)
        or not np.isfinite(upsample_factor)
        or upsample_factor < 1
    ):
        raise InputError(
            f"upsample_factor must be a number >= 1 (1 = whole pixels, 100 = 1/100 pixel), "
            f"got {upsample_factor!r}."
        )
    return float(upsample_factor)


def _check_overlap_ratio(overlap_ratio) -> float:
    if (
        isinstance(overlap_ratio, bool)
        or not isinstance(overlap_ratio, numbers.Real)
        or not 0 <= overlap_ratio <= 1
    ):
        raise InputError(f"overlap_ratio must be a number in [0, 1], got {overlap_ratio!r}.")
    return float(overlap_ratio)


def _as_array(image, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype.kind not in "biufc":
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
    if arr.ndim == 0 or arr.size == 0:
        raise InputError(
            f"{name} must be a non-empty array with at least one axis, got shape {arr.shape}."
        )
    return arr


def working_dtype(*arrays: np.ndarray, space: str) -> np.dtype:
    """Floating dtype of the computation: single for float16/32 (complex64), else double."""
    single = all(a.dtype in (np.float16, np.float32, np.complex64) for a in arrays)
    if space == "fourier":
        return np.dtype(np.complex64 if single else np.complex128)
    if any(a.dtype.kind == "c" for a in arrays):
        raise InputError(
            'complex input needs space="fourier" (it is taken as an fftn spectrum); pass real '
            'images for space="real".'
        )
    return np.dtype(np.float32 if single else np.float64)


def _finite_range(arr: np.ndarray, name: str) -> tuple:
    """(min, max) of a real array, raising on NaN or infinity (two passes, no temporaries)."""
    lo, hi = arr.min(), arr.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(
            f"{name} contains NaN or infinite values; replace them (e.g. with np.nan_to_num) "
            f"or exclude them with a mask (reference_mask/moving_mask = np.isfinite(image))."
        )
    return lo, hi


def _energy(arr: np.ndarray, name: str) -> float:
    """Sum of squares of a contiguous real array; raises on NaN or infinity (one pass)."""
    flat = arr.ravel()
    with np.errstate(over="ignore"):
        energy = float(np.dot(flat, flat))
    if not np.isfinite(energy):  # NaN/inf in the data, or an overflow of huge values
        _finite_range(arr, name)
    return energy


def _is_constant(arr: np.ndarray, energy: float, dc: complex) -> bool:
    """Whether ``arr`` is constant, given its energy and DC Fourier coefficient (sum).

    ``energy - |dc|² / n`` is ``n`` times the variance: well above zero, the image is certainly
    not constant and no pass over the data is needed; near zero (rounding), compare min and max.
    """
    if energy == 0:
        return True
    if energy - abs(complex(dc)) ** 2 / arr.size > 1e-3 * energy:
        return False
    return bool(arr.min() == arr.max())


def _as_mask(mask, shape, name: str, image_name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise InputError(
            f"{name} must have the shape of {image_name} {tuple(shape)}, got {arr.shape}."
        )
    return arr.astype(bool, copy=False)


# ------------------------------------------------------------------------- disambiguation


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denom) if denom > 0 else np.nan


def disambiguate_shift(reference: np.ndarray, moving: np.ndarray, shift) -> np.ndarray:
    """Pick, per axis, ``s mod n`` or ``s mod n - n``: the candidate whose overlap correlates best.

    Each of the ``2**ndim`` candidates is scored by the Pearson correlation of the reference and
    the moving image over their overlap at the nearest whole-pixel shift (overlaps of fewer than
    3 pixels are skipped), the criterion of scikit-image 0.22+.
    """
    shape = reference.shape
    positive = [float(s) % n for s, n in zip(shift, shape, strict=True)]
    splits = [int(np.round(p)) for p in positive]
    per_axis = []
    for i, n in zip(splits, shape, strict=True):
        # (reference slice, moving slice, use negative candidate)
        per_axis.append(
            [(slice(0, i), slice(n - i, n), True), (slice(i, n), slice(0, n - i), False)]
        )
    best, choice = -1.0, None
    for combo in itertools.product(*per_axis):
        ref_region = reference[tuple(c[0] for c in combo)]
        if ref_region.size <= 2:
            continue
        corr = _pearson(ref_region, moving[tuple(c[1] for c in combo)])
        if corr > best:
            best, choice = corr, combo
    if choice is None:
        warnings.warn(
            "disambiguate=True could not compare the candidate shifts (the overlaps are too "
            "small or constant); returning the shift modulo the image shape.",
            RuntimeWarning,
            stacklevel=4,
        )
        return np.asarray(shift, dtype=np.float64)
    return np.array([p - n if c[2] else p for p, n, c in zip(positive, shape, choice, strict=True)])


# --------------------------------------------------------------------------------- engine


def _normalize_phase(product: np.ndarray) -> None:
    """Divide a cross-power spectrum by its magnitude in place (floored like scikit-image)."""
    eps = np.finfo(product.real.dtype).eps
    mag = np.abs(product)
    np.maximum(mag, 100 * eps, out=mag)
    np.reciprocal(mag, out=mag)
    np.multiply(product, mag, out=product)


def _peak_index(corr: np.ndarray) -> tuple:
    """Index of the largest ``|corr|`` (the first one on ties, as :func:`numpy.argmax`)."""
    if corr.dtype.kind == "c":
        flat = int(np.argmax(np.abs(corr)))
    else:
        hi, lo = int(np.argmax(corr)), int(np.argmin(corr))
        a, b = abs(corr.flat[hi]), abs(corr.flat[lo])
        flat = hi if a > b or (a == b and hi < lo) else lo
    return np.unravel_index(flat, corr.shape)


class PhaseCorrelator:
    """Register many images against one reference with phase cross-correlation.

    The reference's spectrum (and energy, and for masks its padded mask spectra) is computed
    once, so each :meth:`register` call costs one forward and one inverse FFT (unmasked) or
    two or three forward and six inverse padded FFTs (masked; two when the moving mask equals
    the reference mask). :func:`chunkreg.phase_cross_correlation` is this class used once, so
    both give identical results.

    Parameters
    ----------
    reference_image : ndarray, shape (n0, ..., nd-1)
        Reference image (``space="real"``) or its :func:`scipy.fft.fftn` spectrum
        (``space="fourier"``). float16/float32 (complex64) references compute in single
        precision, everything else in double; moving images are cast to that precision.
    upsample_factor : float, optional
        Register to within ``1 / upsample_factor`` pixel (>= 1). Ignored with masks.
    normalization : {"phase", None}, optional
        ``"phase"``: phase correlation (whitened cross-power spectrum); ``None``: plain
        cross-correlation. Ignored with masks.
    reference_mask : ndarray of bool, shape (n0, ..., nd-1), optional
        Valid reference pixels. Giving it (or a ``moving_mask`` to :meth:`register`) selects
        Padfield's masked normalised cross-correlation.
    overlap_ratio : float, optional
        With masks: ignore shifts whose overlap is below this fraction of the largest overlap.
    space : {"real", "fourier"}, optional
        Whether images are given in real space or as full complex spectra.

    Attributes
    ----------
    shape : tuple of int
        Shape of the reference.
    dtype : numpy.dtype
        Working precision: float32/float64 (complex64/complex128 with ``space="fourier"``).
    shift_dtype : numpy.dtype
        dtype of the returned shifts.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from chunkreg.registration import PhaseCorrelator
    >>> from chunkreg.testing import textured_image
    >>> reference = textured_image((64, 64), seed=1, sigma=1.0)
    >>> correlator = PhaseCorrelator(reference, upsample_factor=10)
    >>> spectrum = np.fft.fftn(reference)
    >>> frames = [np.fft.ifftn(ndimage.fourier_shift(spectrum, (dy, 1.5))).real for dy in (-2, 3)]
    >>> [correlator.register(f)[0].tolist() for f in frames]
    [[2.0, -1.5], [-3.0, -1.5]]
    """

    def __init__(
        self,
        reference_image,
        *,
        upsample_factor=1,
        normalization="phase",
        reference_mask=None,
        overlap_ratio=0.3,
        space="real",
    ) -> None:
        self.space = _check_space(space)
        self.upsample_factor = _check_upsample(upsample_factor)
        self.normalization = _check_normalization(normalization)
        self.overlap_ratio = _check_overlap_ratio(overlap_ratio)
        ref = _as_array(reference_image, "reference_image")
        self.dtype = working_dtype(ref, space=self.space)
        self.shift_dtype = np.finfo(self.dtype).dtype  # float32 for float32 and complex64
        self.shape = ref.shape
        self._image = np.ascontiguousarray(ref, dtype=self.dtype)
        self._mask = None
        if reference_mask is not None:
            if self.space == "fourier":
                raise InputError('masks need real-space images; use space="real" with masks.')
            self._mask = _as_mask(reference_mask, self.shape, "reference_mask", "reference_image")
        self._spectrum = None  # conj(reference spectrum), half spectrum for real space
        self._energy = None
        self._blank = False
        if self.space == "real" and self._mask is None:
            self._energy = _energy(self._image, "reference_image")
        elif self.space == "fourier" and not np.isfinite(self._image).all():
            raise InputError("reference_image (a spectrum) contains NaN or infinite values.")
        self._masked = {}  # padded shape -> conj of the reference's masked spectra
        self._masked_side = _UNSET
        self._double = None  # float64 twin for single-precision data too large for float32

    # ----------------------------------------------------------------------- public API

    def register(self, moving_image, *, moving_mask=None, disambiguate=False):
        """Shift registering ``moving_image`` onto the reference.

        Parameters
        ----------
        moving_image : ndarray, shape (n0, ..., nd-1)
            Image (or spectrum, with ``space="fourier"``) to register. With masks its shape
            may differ from the reference's (the shifts then relate the image centres).
        moving_mask : ndarray of bool, optional
            Valid moving pixels; defaults to the reference mask when that is given.
        disambiguate : bool, optional
            Resolve the FFT's modulo-shape ambiguity by comparing the candidate shifts in real
            space (unmasked only; the masked correlation has no wrap-around).

        Returns
        -------
        shifts : ndarray, shape (ndim,)
            ``scipy.ndimage.shift(moving_image, shifts)`` approximates the reference; float32
            for single-precision input, else float64.
        error : float
            scikit-image's translation-invariant normalised RMS error; 1.0 when either image
            is constant; NaN with masks.
        phasediff : float
            Global phase difference of the correlation peak (0 for non-negative real images
            up to the Nyquist convention); 0.0 when either image is constant; NaN with masks.
        """
        return self._register(moving_image, moving_mask, disambiguate, True)

    # ----------------------------------------------------------------------- internals

    def _register(self, moving_image, moving_mask, disambiguate, return_error):
        mov = _as_array(moving_image, "moving_image")
        if self.space == "real" and mov.dtype.kind == "c":
            raise InputError(
                'moving_image is complex: pass real images, or spectra with space="fourier".'
            )
        if mov.ndim != len(self.shape):
            raise InputError(
                f"reference_image and moving_image must have the same number of dimensions, got "
                f"{len(self.shape)} and {mov.ndim} (shapes {self.shape} and {mov.shape}); "
                "register one channel at a time."
            )
        if self._mask is not None or moving_mask is not None:
            shifts = self._register_masked(mov, moving_mask)
            return shifts, np.nan, np.nan
        if mov.shape != self.shape:
            raise InputError(
                f"reference_image and moving_image must have the same shape, got {self.shape} "
                f"and {mov.shape}; crop or pad them (or use masks, which allow different "
                "shapes)."
            )
        mov = np.ascontiguousarray(mov, dtype=self.dtype)
        if self.space == "real":
            return self._register_real(mov, disambiguate, return_error)
        return self._register_fourier(mov, disambiguate, return_error)

    def _blank_result(self):
        return np.zeros(len(self.shape), dtype=self.shift_dtype), 1.0, 0.0

    def _register_real(self, mov, disambiguate, return_error):
        energy = _energy(mov, "moving_image")
        if self._may_overflow(energy):
            return self._register_in_double(mov, disambiguate, return_error)
        if self._spectrum is None:
            self._spectrum = sfft.rfftn(self._image)
            self._blank = _is_constant(self._image, self._energy, self._spectrum.flat[0])
            np.conjugate(self._spectrum, out=self._spectrum)
        product = sfft.rfftn(mov)
        if self._blank or _is_constant(mov, energy, product.flat[0]):
            return self._blank_result()
        product *= self._spectrum  # conj(P): the correlation comes out at negated lags
        if self.normalization == "phase":
            _normalize_phase(product)
        # The product is kept for the sub-pixel refinement; at upsample 1 the FFT may eat it.
        corr = irfftn(product, self.shape, overwrite=self.upsample_factor == 1)
        shift, value = self._locate(corr, lambda pos: dft_at_half(product, self.shape, pos))
        error = phasediff = np.nan
        if return_error:
            error, phasediff = self._error(value, self._energy * energy)
        if disambiguate:
            shift = disambiguate_shift(self._image, mov, shift)
        return shift.astype(self.shift_dtype), error, phasediff

    def _may_overflow(self, energy: float) -> bool:
        """Whether the cross-power spectrum could overflow the working precision.

        Its terms are bounded by ``n * sqrt(E_ref * E_mov)``; in single precision this is only
        reached by absurd values (~1e12 and up), which are then handled in double precision.
        """
        bound = self._image.size * np.sqrt(self._energy * energy)
        return not bound < 1e-3 * float(np.finfo(self.dtype).max)

    def _register_in_double(self, mov, disambiguate, return_error):
        if self.dtype != np.float32:
            raise InputError(
                "the images' values are too large for an FFT in double precision (their energy "
                "overflows); rescale them, e.g. divide both by their maximum."
            )
        if self._double is None:
            self._double = PhaseCorrelator(
                self._image.astype(np.float64),
                upsample_factor=self.upsample_factor,
                normalization=self.normalization,
            )
        shift, error, phasediff = self._double._register_real(
            mov.astype(np.float64), disambiguate, return_error
        )
        return shift.astype(self.shift_dtype), error, phasediff

    def _register_fourier(self, mov, disambiguate, return_error):
        if not np.isfinite(mov).all():
            raise InputError("moving_image (a spectrum) contains NaN or infinite values.")
        if self._spectrum is None:
            self._spectrum = np.conjugate(self._image)
            self._energy = float(np.vdot(self._image, self._image).real)
        energy = float(np.vdot(mov, mov).real)
        if _spectrum_is_blank(self._image, self._energy) or _spectrum_is_blank(mov, energy):
            return self._blank_result()
        product = mov * self._spectrum
        if self.normalization == "phase":
            _normalize_phase(product)
        corr = sfft.ifftn(product)
        shift, value = self._locate(corr, lambda pos: dft_at(product, pos))
        n = corr.size
        error = phasediff = np.nan
        if return_error:
            error, phasediff = self._error(value, self._energy * energy / n**2)
        if disambiguate:
            reference = sfft.ifftn(self._image).real
            moving = sfft.ifftn(mov).real
            shift = disambiguate_shift(reference, moving, shift)
        return shift.astype(self.shift_dtype), error, phasediff

    def _locate(self, corr, evaluate_negated):
        """Whole-pixel peak of the (negated-lag) correlation, refined if upsampling.

        Returns the shift (float64) and the complex correlation value there, scaled like
        scikit-image (normalised inverse FFT at upsample 1, unnormalised DFT above).
        """
        index = _peak_index(corr)
        shape = np.array(self.shape)
        shift = (-np.array(index)) % shape
        shift = np.where(shift > shape // 2, shift - shape, shift).astype(np.float64)
        if self.upsample_factor == 1:
            value = complex(np.conjugate(corr[index]))
        else:
            shift, value = refine_peak(
                lambda pos: np.conjugate(evaluate_negated([-p for p in pos])),
                shift,
                self.upsample_factor,
                self.shape,
            )
        shift[shape == 1] = 0
        return shift, value

    def _error(self, value: complex, amp: float) -> tuple[float, float]:
        if self.upsample_factor != 1:
            amp *= float(np.prod(self.shape, dtype=np.float64)) ** 2
        error = float(np.sqrt(abs(1.0 - abs(value) ** 2 / amp))) if amp > 0 else np.nan
        return error, float(np.arctan2(value.imag, value.real))

    def _register_masked(self, mov, moving_mask):
        if self.space == "fourier":
            raise InputError('masks need real-space images; use space="real" with masks.')
        mov = np.asarray(mov, dtype=self.dtype)
        ref_mask = self._mask
        if ref_mask is None:
            ref_mask = np.ones(self.shape, dtype=bool)
        same_masks = moving_mask is None
        if moving_mask is None:
            if mov.shape != self.shape:
                raise InputError(
                    f"moving_image has shape {mov.shape}, the reference {self.shape}: images of "
                    "different shapes need an explicit moving_mask."
                )
            mov_mask = ref_mask
        else:
            mov_mask = _as_mask(moving_mask, mov.shape, "moving_mask", "moving_image")
            same_masks = mov_mask.shape == ref_mask.shape and np.array_equal(mov_mask, ref_mask)
        zero = np.zeros(len(self.shape), dtype=self.shift_dtype)
        if self._masked_side is _UNSET:
            self._masked_side = MaskedSide.prepare(self._image, ref_mask, "reference_image")
        ref_side = self._masked_side
        mov_side = MaskedSide.prepare(mov, mov_mask, "moving_image")
        if ref_side is None or mov_side is None:
            return zero
        shape = padded_shape(self.shape, mov.shape)
        if shape not in self._masked:
            spectra = ref_side.spectra(shape)
            for spectrum in spectra:
                np.conjugate(spectrum, out=spectrum)
            self._masked = {shape: spectra}
        ref_spectra = self._masked[shape]
        mov_spectra = mov_side.spectra(shape, with_mask=not same_masks)
        if same_masks:
            mov_spectra += (np.conjugate(ref_spectra[2]),)
        shift = masked_shift(
            ref_spectra, mov_spectra, self.shape, mov.shape, self.overlap_ratio, self.dtype
        )
        return shift.astype(self.shift_dtype)


def _spectrum_is_blank(spectrum: np.ndarray, energy: float) -> bool:
    """True when a spectrum holds (up to rounding) nothing but its DC term."""
    eps = np.finfo(spectrum.real.dtype).eps
    dc = abs(complex(spectrum.flat[0])) ** 2
    return energy - dc <= (16 * eps) ** 2 * energy
