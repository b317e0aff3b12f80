"""Synthetic data with known truth, for tests, benchmarks and the demo.

Everything here is deterministic given ``seed`` and uses numpy/scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "apply_flow",
    "smooth_displacement",
    "textured_image",
]


def textured_image(shape, *, seed: int = 0, sigma: float = 2.0, dtype=np.float32) -> np.ndarray:
    """Return a band-limited random texture scaled to [0, 1].

    Parameters
    ----------
    shape : tuple of int
        Output shape (any number of dimensions).
    seed : int
        Seed of the random generator.
    sigma : float
        Gaussian smoothing of the white noise, in pixels; sets the texture's grain.
    dtype : dtype
        Output dtype.

    Returns
    -------
    ndarray
        Texture with values in [0, 1].
    """
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    img -= img.min()
    img /= max(float(img.max()), np.finfo(float).tiny)
    return img.astype(dtype, copy=False)


def smooth_displacement(
    shape, *, amplitude: float = 4.0, seed: int = 0, periods: float = 1.0
) -> np.ndarray:
    """Return a smooth displacement field of shape ``(ndim, *shape)``.

    Each component is a sum of low-frequency sinusoids with random phases, scaled so that its
    largest absolute value is ``amplitude`` pixels.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape.
    amplitude : float
        Largest displacement per component, in pixels.
    seed : int
        Seed of the random generator.
    periods : float
        Roughly how many periods of the slowest sinusoid span the image.
    """
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) / n for n in shape], indexing="ij")
    field = np.empty((ndim, *shape), dtype=np.float64)
    for c in range(ndim):
        comp = np.zeros(shape)
        for _ in range(3):
            freq = rng.uniform(0.5, 1.0, ndim) * periods
            phase = rng.uniform(0, 2 * np.pi)
            comp += np.sin(2 * np.pi * sum(f * g for f, g in zip(freq, grids, strict=True)) + phase)
        comp *= amplitude / max(np.abs(comp).max(), 1e-12)
        field[c] = comp
    return field.astype(np.float32)


def apply_flow(
    image: np.ndarray, flow: np.ndarray, *, order: int = 3, mode: str = "nearest"
) -> np.ndarray:
    """Sample ``image`` at ``grid + flow`` (the convention of the flow kernels).

    If ``flow`` is what :func:`chunkreg.optical_flow_ilk` returns for ``(reference, moving)``,
    then ``apply_flow(moving, flow)`` approximates ``reference``. To *make* a moving image from a
    reference with a known flow ``f``, use a moving image ``m`` whose samples satisfy
    ``m(x + f(x)) = reference(x)``; for smooth small ``f`` the approximation
    ``m = apply_flow(reference, -f)`` is what the tests use.
    """
    coords = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in image.shape], indexing="ij")
    coords = np.stack(coords) + flow
    return ndimage.map_coordinates(image, coords, order=order, mode=mode).astype(
        image.dtype, copy=False
    )
