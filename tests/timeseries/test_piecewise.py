"""Piecewise-rigid kernels: patch grid, patch shifts, outliers, dense field, warp."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.timeseries import PatchGrid, PiecewiseOptions
from chunkreg.timeseries._patches import PatchCorrelator
from chunkreg.timeseries._piecewise import (
    dense_shift_field,
    patch_shifts,
    reference_patches,
    replace_outliers,
    warp_frame,
)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(8, 700),
    patch=st.integers(8, 200),
    overlap_fraction=st.floats(0, 0.9),
)
def test_patch_grid_covers_the_frame_with_bounded_spacing(n, patch, overlap_fraction):
    overlap = min(int(patch * overlap_fraction), patch - 1)
    grid = PatchGrid((n,), patch, overlap)
    (starts,) = grid.starts
    size = grid.sizes[0]
    assert size == min(patch, n)
    assert starts[0] == 0 and starts[-1] == n - size
    assert np.all(np.diff(starts) > 0) or starts.size == 1
    assert np.all(np.diff(starts) <= patch - overlap)
    assert_allclose(grid.centres[0], starts + (size - 1) / 2)


def test_patch_grid_regions_in_c_order():
    grid = PatchGrid((100, 60), 48, 16)
    assert grid.counts == (3, 2)
    regions = list(grid.regions())
    assert regions[0] == ((0, 0), (0, 0)) and regions[-1] == ((2, 1), (52, 12))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch": 4}, "patch must be >= 8"),
        ({"patch": 32, "overlap": 32}, "overlap"),
        ({"patch": 32.5}, "integer"),
        ({"max_deviation": 0}, "max_deviation"),
        ({"min_relative_quality": 2}, "min_relative_quality"),
        ({"smooth": -1}, "smooth"),
        ({"upsample_factor": 0}, "upsample_factor"),
    ],
)
def test_piecewise_options_validate(kwargs, match):
    with pytest.raises(InputError, match=match):
        PiecewiseOptions(**kwargs)


def test_piecewise_options_coerce():
    assert PiecewiseOptions.coerce(None) is None
    assert PiecewiseOptions.coerce(False) is None
    assert PiecewiseOptions.coerce(True) == PiecewiseOptions()
    assert PiecewiseOptions.coerce({"patch": 64}).patch == 64
    with pytest.raises(InputError, match="piecewise options"):
        PiecewiseOptions.coerce({"size": 64})
    with pytest.raises(InputError, match="piecewise must be"):
        PiecewiseOptions.coerce(64)


def test_patch_shifts_follow_a_smooth_field():
    scene = textured_image((160, 160), seed=8)
    field = smooth_displacement((160, 160), amplitude=1.5, seed=2, periods=0.5)
    field += np.array([2.6, -3.3], np.float32)[:, None, None]
    inner = (slice(16, 144),) * 2
    reference = scene[inner]
    moving = apply_flow(scene, field)[inner]
    moving = moving + np.random.default_rng(0).normal(0, 0.005, moving.shape).astype(np.float32)
    grid = PatchGrid(reference.shape, 48, 16)
    correlator = PatchCorrelator(reference_patches(grid, reference), upsample_factor=20)
    shifts, quality = patch_shifts(grid, correlator, moving, (2.6, -3.3))
    assert shifts.shape == (4, 4, 2) and quality.shape == (4, 4)
    for index, (s0, s1) in grid.regions():
        truth = field[(slice(None), slice(16 + s0, 64 + s0), slice(16 + s1, 64 + s1))]
        assert_allclose(shifts[index], truth.mean(axis=(1, 2)), atol=0.2)
    assert quality.min() > 0.9


def test_replace_outliers_uses_neighbour_median():
    shifts = np.zeros((4, 4, 2))
    shifts[..., 0] = np.arange(4)[:, None] * 0.5  # a gentle ramp
    quality = np.full((4, 4), 0.9)
    planted = shifts.copy()
    planted[1, 2] = (9.0, -9.0)  # wild patch
    planted[3, 0] = (np.nan, 0.0)  # failed patch
    quality[0, 3] = 0.1  # poor match
    fixed, bad = replace_outliers(
        planted, quality, (0.0, 0.0), max_deviation=3.0, min_relative_quality=0.5
    )
    expected_bad = np.zeros((4, 4), bool)
    expected_bad[1, 2] = expected_bad[3, 0] = expected_bad[0, 3] = True
    assert_array_equal(bad, expected_bad)
    assert_allclose(fixed[~expected_bad], shifts[~expected_bad])
    assert_allclose(fixed[1, 2], (0.5, 0.0))  # median of its neighbours on the ramp
    assert np.isfinite(fixed).all()


def test_replace_outliers_falls_back_to_rigid_shift():
    fixed, bad = replace_outliers(
        np.full((1, 1, 2), np.nan),
        np.zeros((1, 1)),
        (1.5, -2.0),
        max_deviation=3.0,
        min_relative_quality=0.5,
    )
    assert bad.all()
    assert_allclose(fixed[0, 0], (1.5, -2.0))


def test_dense_field_reproduces_constant_and_linear_grids():
    grid = PatchGrid((100, 80), 32, 8)
    ramp = np.stack(np.meshgrid(*grid.centres, indexing="ij"), axis=-1) * (0.02, -0.03)
    field = dense_shift_field(grid, ramp)
    assert field.shape == (2, 100, 80) and field.dtype == np.float32
    y, x = np.meshgrid(np.arange(100.0), np.arange(80.0), indexing="ij")
    inside = (
        (y >= grid.centres[0][0])
        & (y <= grid.centres[0][-1])
        & (x >= grid.centres[1][0])
        & (x <= grid.centres[1][-1])
    )
    assert_allclose(field[0][inside], 0.02 * y[inside], atol=1e-4)
    assert_allclose(field[1][inside], -0.03 * x[inside], atol=1e-4)
    # constant beyond the outermost centres
    assert_allclose(field[0][0], 0.02 * grid.centres[0][0], atol=1e-4)
    assert_allclose(field[1][:, -1], -0.03 * grid.centres[1][-1], atol=1e-4)
    flat = dense_shift_field(grid, np.full((*grid.counts, 2), 1.25), smooth=1.0)
    assert_allclose(flat, 1.25, atol=1e-6)


def test_warp_frame_with_uniform_field_is_a_linear_shift():
    image = textured_image((40, 50), seed=9)
    field = np.empty((2, 40, 50), np.float32)
    field[0], field[1] = 2.25, -1.5
    warped = warp_frame(image, field, fill_value=np.nan)
    expected = ndimage.shift(image, (2.25, -1.5), order=1, mode="nearest")
    valid = np.isfinite(warped)
    assert_allclose(warped[valid], expected[valid], atol=1e-5)
    assert not valid[:3].any() and not valid[:, -1].any() and valid[3:, :-2].all()
