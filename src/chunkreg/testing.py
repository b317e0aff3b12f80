"""Synthetic data with known truth, for tests, benchmarks and the demo.

Everything here is deterministic given ``seed`` and uses numpy/scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "apply_flow",
    "sampled_scene_pair",
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


def sampled_scene_pair(
    extent,
    spacing,
    *,
    grain,
    amplitude,
    seed: int = 0,
    modes: int = 80,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference/moving pair sampled from one continuous scene on a grid of voxel ``spacing``.

    The scene is a sum of ``modes`` random plane waves whose wavelengths along each axis are
    set by ``grain`` (physical units; e.g. finer in y, x than in z, as EM sections); the known
    displacement is a smooth field of physical ``amplitude`` per axis, varying over the whole
    ``extent``. Sampling the same scene with other voxel sizes (anisotropic, isotropic) gives
    pairs of the same physical content, which is how anisotropy-aware registration is tested.

    Parameters
    ----------
    extent : sequence of float
        Physical size per axis; the grid has ``round(extent / spacing)`` voxels per axis,
        voxel ``i`` at ``i * spacing``.
    spacing : sequence of float
        Voxel size per axis.
    grain : sequence of float
        Physical length scale of the texture per axis.
    amplitude : sequence of float
        Largest displacement per axis, physical units.
    seed : int
        Seed of the random scene (the displacement is fixed by ``extent``).
    modes : int
        Number of plane waves.

    Returns
    -------
    reference, moving : ndarray of float32
        ``reference(x) = moving(x + u(x))`` exactly (the flow convention of the kernels).
    truth : ndarray of float32, shape (ndim, *shape)
        ``u`` in voxels of each axis (physical displacement / ``spacing``).
    """
    extent = np.asarray(extent, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    ndim = len(extent)
    shape = tuple(round(float(e / s)) for e, s in zip(extent, spacing, strict=True))
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((modes, ndim)) / np.asarray(grain, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi, modes)
    weight = rng.standard_normal(modes) / np.sqrt(modes)
    # the displacement: per axis a product of slow waves over the extent
    u = np.empty(points.shape, dtype=np.float64)
    for axis in range(ndim):
        wave = np.ones(shape)
        for other in range(ndim):
            periods = 0.5 + 0.25 * ((axis + other) % 3)
            wave = wave * np.cos(2 * np.pi * periods * points[..., other] / extent[other]
                                 + 0.7 * (axis + 1) * (other + 1))  # fmt: skip
        u[..., axis] = amplitude[axis] * wave

    def scene(q):
        out = np.zeros(q.shape[:-1])
        for i in range(modes):
            out += weight[i] * np.cos(q @ k[i] + phase[i])
        return out.astype(np.float32)

    moving = scene(points)
    reference = scene(points + u)
    truth = np.moveaxis(u / spacing, -1, 0).astype(np.float32)
    return reference, moving, truth
