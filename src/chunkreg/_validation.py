"""Input checks and argument normalisation shared by kernels and workflows.

Pure functions on numpy values; they raise :class:`chunkreg.errors.InputError` with a
message that names the argument and says how to fix it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "as_float_array",
    "check_finite",
    "check_same_shape",
    "per_axis",
]


def check_same_shape(
    reference: np.ndarray, moving: np.ndarray, *, names=("reference_image", "moving_image")
) -> None:
    """Raise if two arrays differ in ndim or shape."""
    a, b = names
    if reference.ndim != moving.ndim:
        raise InputError(
            f"{a} and {b} must have the same number of dimensions, got {reference.ndim} and "
            f"{moving.ndim} (shapes {reference.shape} and {moving.shape}); colour or channel "
            "axes are not guessed: register one channel at a time."
        )
    if reference.shape != moving.shape:
        raise InputError(
            f"{a} and {b} must have the same shape, got {reference.shape} and {moving.shape}; "
            "crop or pad them to a common shape first."
        )


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise if ``array`` holds NaN or infinity."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise InputError(
            f"{name} contains NaN or infinite values; replace them (e.g. with np.nan_to_num) "
            "or exclude them with a mask."
        )


def as_float_array(array, name: str, dtype=None) -> np.ndarray:
    """Return ``array`` as a real floating ndarray without copying when possible.

    Integer and boolean input becomes float64 unless ``dtype`` says otherwise; float16 is
    promoted to float32 (no FFT or BLAS runs in half precision).
    """
    arr = np.asarray(array)
    if arr.dtype.kind == "c":
        raise InputError(f"{name} must be real-valued, got dtype {arr.dtype}.")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}.")
    if dtype is None:
        if arr.dtype == np.float16:
            dtype = np.float32
        elif arr.dtype.kind == "f":
            dtype = arr.dtype
        else:
            dtype = np.float64
    return np.asarray(arr, dtype=dtype)


def per_axis(value, ndim: int, name: str, *, kind=numbers.Integral, minimum=None) -> tuple:
    """Normalise a scalar, sequence or ``{axis: value}`` mapping to one value per axis.

    Parameters
    ----------
    value : scalar, sequence of length ``ndim`` or mapping
        A mapping may leave axes out; those get 0.
    ndim : int
        Number of axes.
    name : str
        Argument name used in error messages.
    kind : type, optional
        The numbers ABC each value must be an instance of.
    minimum : number, optional
        Smallest allowed value.

    Returns
    -------
    tuple
        ``ndim`` values.
    """
    if isinstance(value, Mapping):
        bad = [k for k in value if not (isinstance(k, numbers.Integral) and -ndim <= k < ndim)]
        if bad:
            raise InputError(f"{name} has axes {bad} outside 0..{ndim - 1}.")
        out = [0] * ndim
        for k, v in value.items():
            out[k % ndim] = v
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = list(value)
        if len(out) != ndim:
            raise InputError(
                f"{name} needs one value per axis ({ndim}), got {len(out)}: {value!r}."
            )
    else:
        out = [value] * ndim
    for axis, v in enumerate(out):
        if isinstance(v, bool) or not isinstance(v, kind):
            raise InputError(f"{name} along axis {axis} must be {kind.__name__}, got {v!r}.")
        if minimum is not None and v < minimum:
            raise InputError(f"{name} must be >= {minimum} along axis {axis}, got {v}.")
    return tuple(int(v) if kind is numbers.Integral else v for v in out)
