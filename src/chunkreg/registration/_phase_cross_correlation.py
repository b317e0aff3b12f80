"""``phase_cross_correlation``: scikit-image's API on chunkreg's faster engine."""

from __future__ import annotations

from ..errors import InputError
from ._phase_correlator import PhaseCorrelator, _as_array, _check_space, working_dtype

__all__ = ["phase_cross_correlation"]


def phase_cross_correlation(
    reference_image,
    moving_image,
    *,
    upsample_factor: float = 1,
    space: str = "real",
    return_error: bool | str = True,
    reference_mask=None,
    moving_mask=None,
    overlap_ratio: float = 0.3,
    normalization: str | None = "phase",
    disambiguate: bool = False,
):
    """Sub-pixel translation between two images by (phase) cross-correlation.

    The whole-pixel peak of the cross-correlation comes from one inverse FFT; with
    ``upsample_factor > 1`` it is refined by the matrix-multiply upsampled DFT evaluated only
    around the peak [1]_. With masks, Padfield's masked normalised cross-correlation [2]_ is
    used instead. Same semantics as :func:`skimage.registration.phase_cross_correlation`.

    Parameters
    ----------
    reference_image : ndarray, shape (n0, ..., nd-1)
        Reference image, any number of dimensions (or its :func:`scipy.fft.fftn` spectrum
        with ``space="fourier"``).
    moving_image : ndarray, shape (n0, ..., nd-1)
        Image to register; same shape as the reference (with masks, only the same number of
        dimensions).
    upsample_factor : float, optional
        Register to within ``1 / upsample_factor`` pixel (>= 1). Ignored with masks.
    space : {"real", "fourier"}, optional
        ``"fourier"``: the inputs are already full complex ``fftn`` spectra.
    return_error : bool or "always", optional
        If true (or ``"always"``, as in scikit-image 0.19-0.21) return
        ``(shifts, error, phasediff)``, else ``shifts`` alone.
    reference_mask : ndarray of bool, shape (n0, ..., nd-1), optional
        Valid reference pixels; selects the masked algorithm. NaN/inf are allowed outside it.
    moving_mask : ndarray of bool, optional
        Valid moving pixels; defaults to ``reference_mask`` (to all pixels if only
        ``moving_mask`` is given for the other side).
    overlap_ratio : float, optional
        With masks: shifts whose mask overlap is below this fraction of the largest overlap
        are ignored.
    normalization : {"phase", None}, optional
        ``"phase"``: phase correlation (robust to illumination changes); ``None``: plain
        cross-correlation (often better for very noisy images). Ignored with masks.
    disambiguate : bool, optional
        The FFT gives shifts modulo the image shape; if true, each candidate (``s mod n`` or
        ``s mod n - n`` per axis) is scored by the correlation of the overlapping regions and
        the best is returned. Ignored with masks (no wrap-around there).

    Returns
    -------
    shifts : ndarray, shape (ndim,)
        Shift, in pixels and numpy axis order, that registers ``moving_image`` onto
        ``reference_image``: ``scipy.ndimage.shift(moving_image, shifts)`` approximates the
        reference. float32 for float16/float32 (complex64) input, else float64.
    error : float
        Translation-invariant normalised RMS error, ``sqrt(1 - |CCmax|**2 / (E_ref * E_mov))``
        with scikit-image's scaling (it is close to 1 for phase correlation, whose peak is not
        normalised by the image energies). 1.0 when either image is constant; NaN with masks.
        Only returned when ``return_error`` is true.
    phasediff : float
        Global phase of the correlation peak (radians); 0.0 when either image is constant;
        NaN with masks. Only returned when ``return_error`` is true.

    Raises
    ------
    chunkreg.errors.InputError
        (a :class:`ValueError`) for shape or dimension mismatches, NaN or infinite values
        (outside masks), unknown ``space`` or ``normalization``, masks of the wrong shape,
        ``upsample_factor < 1``, ``overlap_ratio`` outside [0, 1], complex images with
        ``space="real"``, or float64 values so large that the FFT would overflow (float32 data
        beyond float32's range is computed in double precision instead).

    Notes
    -----
    Images that are constant (blank tiles, empty masks) do not raise: the result is a zero
    shift with error 1.0 and phasediff 0.0 (NaN/NaN with masks), so a batch over tiles or frames
    never stops on an empty one.

    The sub-pixel search samples the same grid as scikit-image (``ceil(1.5 * upsample_factor)``
    points per axis centred on the whole-pixel peak) coarse to fine instead of exhaustively;
    the result is the same grid point unless the correlation has several maxima within a tenth
    of a pixel. The precision follows the input: float16/float32 compute in single precision.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
           registration algorithms", Optics Letters 33(2), 156-158 (2008).
           :doi:`10.1364/OL.33.000156`
    .. [2] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions
           on Image Processing 21(5), 2706-2718 (2012). :doi:`10.1109/TIP.2011.2181402`
    .. [3] C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method",
           Proc. IEEE Int. Conf. on Cybernetics and Society, 163-165 (1975).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from chunkreg import phase_cross_correlation
    >>> from chunkreg.testing import textured_image
    >>> reference = textured_image((128, 128), seed=0, sigma=1.0)
    >>> spectrum = ndimage.fourier_shift(np.fft.fftn(reference), (-3.25, 5.5))
    >>> moving = np.fft.ifftn(spectrum).real  # reference moved by (-3.25, 5.5) pixels
    >>> shifts, error, phasediff = phase_cross_correlation(reference, moving, upsample_factor=20)
    >>> shifts.tolist()
    [3.25, -5.5]
    """
    if return_error not in (True, False, "always"):
        raise InputError(f'return_error must be True, False or "always", got {return_error!r}.')
    space = _check_space(space)
    ref = _as_array(reference_image, "reference_image")
    mov = _as_array(moving_image, "moving_image")
    dtype = working_dtype(ref, mov, space=space)
    correlator = PhaseCorrelator(
        ref.astype(dtype, copy=False),
        upsample_factor=upsample_factor,
        normalization=normalization,
        reference_mask=reference_mask,
        overlap_ratio=overlap_ratio,
        space=space,
    )
    shifts, error, phasediff = correlator._register(
        mov, moving_mask, disambiguate, bool(return_error)
    )
    if return_error:
        return shifts, error, phasediff
    return shifts
