"""Generated volume pairs related by a known affine (and optionally a smooth deformation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from chunkreg.registration._affine import apply_affine, rotation_matrix
from chunkreg.testing import smooth_displacement, textured_image


def about_centre(shape, *, angles, scale=1.0, shear=0.0, shift=0.0) -> np.ndarray:
    """Reference -> moving matrix: rotation (degrees), scale, shear (of axis 0 along axis 1)
    about the volume's centre, then a shift (voxels)."""
    ndim = len(shape)
    linear = rotation_matrix(np.radians(angles), ndim=ndim) @ np.diag(
        np.broadcast_to(np.asarray(scale, dtype=float), (ndim,))
    )
    linear = linear @ (np.eye(ndim) + shear * np.eye(ndim, k=1))
    c = (np.asarray(shape, dtype=float) - 1) / 2
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = linear
    m[:ndim, ndim] = c - linear @ c + np.broadcast_to(np.asarray(shift, dtype=float), (ndim,))
    return m


def make_pair(shape, matrix, *, deformation=None, seed=0, noise=0.01):
    """Reference, and a moving volume with ``moving(matrix @ (x + deformation(x))) = ref(x)``.

    The inverse map is found by fixed-point iteration; returns float32 volumes.
    """
    ndim = len(shape)
    reference = textured_image(shape, seed=seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    inv = np.linalg.inv(matrix)
    pulled = np.moveaxis(apply_affine(inv, np.moveaxis(grid, 0, -1)), -1, 0)  # A^-1 y
    x = pulled.copy()
    if deformation is not None:
        for _ in range(6):
            d = np.stack([ndimage.map_coordinates(deformation[a], x, order=1, mode="nearest")
                          for a in range(ndim)])  # fmt: skip
            x = pulled - d
    moving = ndimage.map_coordinates(reference, x, order=3, mode="nearest")
    rng = np.random.default_rng(seed + 100)
    moving = moving + rng.normal(0, noise, moving.shape)
    return reference, moving.astype(np.float32)


def true_map(shape, matrix, deformation=None) -> np.ndarray:
    """``matrix @ (x + deformation(x))`` for every reference voxel, shape (ndim, *shape)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    if deformation is not None:
        grid = grid + deformation
    return np.moveaxis(apply_affine(matrix, np.moveaxis(grid, 0, -1)), -1, 0)


def deformation(shape, amplitude=3.0, seed=1) -> np.ndarray:
    """A smooth displacement field (chunkreg.testing.smooth_displacement), float64."""
    return smooth_displacement(shape, amplitude=amplitude, seed=seed).astype(np.float64)


def corner_error(estimate, truth, shape) -> float:
    """Largest distance between the two matrices' images of the volume's corners (voxels);
    for affine maps the largest over the whole volume."""
    ndim = len(shape)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(ndim, -1).T
    return float(
        np.linalg.norm(apply_affine(estimate, corners) - apply_affine(truth, corners), axis=1).max()
    )
