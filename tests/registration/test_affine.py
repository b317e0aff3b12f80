"""Affine kernels: least-squares and RANSAC fits recover known matrices; matrix helpers."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from chunkreg.errors import InputError
from chunkreg.registration import (
    apply_affine,
    compose_affine,
    fit_affine,
    invert_affine,
    ransac_affine,
    rotation_matrix,
)
from chunkreg.registration._affine import as_matrix, level_matrix, min_samples


def _matrix(linear, shift):
    n = len(shift)
    m = np.eye(n + 1)
    m[:n, :n] = linear
    m[:n, n] = shift
    return m


CASES = {
    "affine": {
        2: _matrix([[1.03, 0.04], [-0.02, 0.97]], [3.5, -2.0]),
        3: _matrix(
            rotation_matrix(np.radians([7, -4, 3])) @ np.diag([1.04, 0.96, 1.0])
            + 0.02 * np.eye(3, k=1),
            [1.0, -2.5, 4.0],
        ),
    },
    "similarity": {
        2: _matrix(1.05 * rotation_matrix(np.radians(12)), [2.0, 1.0]),
        3: _matrix(0.95 * rotation_matrix(np.radians([3, 8, -5])), [0.5, 1.5, -3.0]),
    },
    "rigid": {
        2: _matrix(rotation_matrix(np.radians(-9)), [-4.0, 2.0]),
        3: _matrix(rotation_matrix(np.radians([15, 2, -6])), [2.0, 0.0, 1.0]),
    },
    "translation": {2: _matrix(np.eye(2), [3.0, -1.5]), 3: _matrix(np.eye(3), [1, 2, -3.25])},
}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("model", list(CASES))
def test_fit_recovers_known_matrix_exactly(model, ndim):
    truth = CASES[model][ndim]
    src = np.random.default_rng(0).uniform(0, 100, (30, ndim))
    assert_allclose(fit_affine(src, apply_affine(truth, src), model=model), truth, atol=1e-9)


@pytest.mark.parametrize("ndim", [2, 3])
def test_constrained_models_are_the_best_fit_of_their_kind(ndim):
    """On an affine truth a rigid fit is a rotation, a similarity fit a scaled rotation."""
    truth = CASES["affine"][ndim]
    src = np.random.default_rng(1).uniform(0, 100, (50, ndim))
    dst = apply_affine(truth, src)
    rigid = fit_affine(src, dst, model="rigid")[:ndim, :ndim]
    assert_allclose(rigid @ rigid.T, np.eye(ndim), atol=1e-12)
    assert np.linalg.det(rigid) > 0
    sim = fit_affine(src, dst, model="similarity")[:ndim, :ndim]
    scale = np.cbrt(np.linalg.det(sim)) if ndim == 3 else np.sqrt(np.linalg.det(sim))
    assert_allclose(sim @ sim.T, scale**2 * np.eye(ndim), atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("model", ["affine", "rigid"])
def test_ransac_ignores_30_percent_outliers_and_is_deterministic(model, ndim):
    truth = CASES[model][ndim]
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 200, (60, ndim))
    dst = apply_affine(truth, src) + rng.normal(0, 0.05, (60, ndim))
    bad = rng.choice(60, 18, replace=False)
    dst[bad] += rng.uniform(5, 40, (18, ndim)) * rng.choice([-1, 1], (18, ndim))
    matrix, inliers = ransac_affine(src, dst, model=model, threshold=1.0, seed=5)
    expected = np.ones(60, dtype=bool)
    expected[bad] = False
    np.testing.assert_array_equal(inliers, expected)
    corners = np.array(np.meshgrid(*[(0, 200)] * ndim, indexing="ij")).reshape(ndim, -1).T
    assert np.abs(apply_affine(matrix, corners) - apply_affine(truth, corners)).max() < 0.15
    again, again_in = ransac_affine(src, dst, model=model, threshold=1.0, seed=5)
    np.testing.assert_array_equal(again, matrix)
    np.testing.assert_array_equal(again_in, inliers)


def test_matrix_convention_is_scipy_affine_transform():
    """affine_transform(moving, matrix) resamples the moving image onto the reference."""
    truth = CASES["affine"][2]
    ref = np.zeros((64, 64))
    ref[20:30, 35:40] = 1.0
    moving = ndimage.affine_transform(ref, invert_affine(truth), order=1)
    back = ndimage.affine_transform(moving, truth, order=1)
    assert np.abs(back - ref)[10:50, 10:50].mean() < 0.02
    # the point p of the reference is at matrix @ p in the moving image
    centre = apply_affine(truth, [24.5, 37.0])
    assert moving[round(centre[0]), round(centre[1])] > 0.5


def test_compose_invert_and_levels():
    a, b = CASES["affine"][3], CASES["rigid"][3]
    p = np.array([[1.0, 2.0, 3.0], [10.0, -4.0, 7.5]])
    assert_allclose(apply_affine(compose_affine(a, b), p), apply_affine(a, apply_affine(b, p)))
    assert_allclose(compose_affine(a, invert_affine(a)), np.eye(4), atol=1e-12)
    coarse = level_matrix(a, 4)
    # coarse voxel i is centred at 4 i + 1.5 of the input
    x = np.array([3.0, 5.0, 7.0])
    fine_image = apply_affine(a, 4 * x + 1.5)
    assert_allclose(apply_affine(coarse, x), (fine_image - 1.5) / 4)
    assert_allclose(level_matrix(coarse, 1 / 4), a, atol=1e-12)


def test_bad_matrices_and_too_few_points_are_refused():
    with pytest.raises(InputError, match="shape"):
        as_matrix(np.eye(3)[:1])
    with pytest.raises(InputError, match="3-D"):
        as_matrix(np.eye(3), ndim=3)
    with pytest.raises(InputError, match="singular"):
        as_matrix(np.diag([1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="last row"):
        as_matrix([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    assert_allclose(as_matrix(np.eye(3)[:2]), np.eye(3))
    assert min_samples("affine", 3) == 4
    with pytest.raises(InputError, match="at least 4 point pairs"):
        fit_affine(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match="do not span"):
        fit_affine(np.array([[0, 0], [1, 1], [2, 2], [3, 3.0]]), np.zeros((4, 2)))
    with pytest.raises(InputError, match="model must be one of"):
        fit_affine(np.zeros((3, 2)), np.zeros((3, 2)), model="projective")
