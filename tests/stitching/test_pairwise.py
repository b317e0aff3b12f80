"""The pairwise kernel: offsets of two tiles cut from one image at known positions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from stitching_helpers import cut_tile

from chunkreg.stitching import pair_regions, register_pair
from chunkreg.testing import textured_image


def _pair(shape, step, true_offset, *, seed=0, subpixel=False, noise=0.01):
    """Two tiles of ``shape``; b is ``true_offset`` from a; nominally ``step`` apart."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    source = textured_image(tuple(2 * n + 40 for n in shape), seed=seed, sigma=2.0)
    pa = np.full(ndim, 20.0) + (rng.uniform(0, 1, ndim) if subpixel else 0)
    pb = pa + np.asarray(true_offset, dtype=float)
    a = cut_tile(source, pa, shape, subpixel=subpixel) + noise * rng.standard_normal(shape)
    b = cut_tile(source, pb, shape, subpixel=subpixel) + noise * rng.standard_normal(shape)
    return a, b, np.asarray(step, dtype=float)


def _register(a, b, step, error, **kwargs):
    reg = pair_regions(np.zeros(a.ndim), a.shape, step, b.shape, error)
    return register_pair(a[reg.slices_a], b[reg.slices_b], reg, error, **kwargs)


@pytest.mark.parametrize(
    ("shape", "step", "truth"),
    [
        ((96, 96), (0, 84), (2, 81)),
        ((96, 96), (84, 0), (87, -3)),
        ((80, 120), (0, 110), (-4, 106)),  # thin overlap: 14 px
        ((32, 40, 40), (0, 0, 34), (1, -2, 33)),
        ((32, 40, 40), (26, 0, 0), (24, 2, 1)),
    ],
)
def test_integer_offsets_exact(shape, step, truth):
    a, b, step = _pair(shape, step, truth)
    offset, quality = _register(a, b, step, 0.1 * np.asarray(shape))
    assert_array_equal(offset, truth)
    assert quality > 0.95


@pytest.mark.parametrize("downsample", [2, 3])
def test_downsampled_search_still_exact(downsample):
    a, b, step = _pair((128, 128), (0, 112), (3, 109), seed=1)
    offset, quality = _register(a, b, step, 12, downsample=downsample)
    assert_array_equal(offset, [3, 109])
    assert quality > 0.95


@pytest.mark.parametrize("seed", range(4))
def test_subpixel_offsets(seed):
    rng = np.random.default_rng(seed)
    truth = np.array([0, 84]) + rng.uniform(-2, 2, 2)
    a, b, step = _pair((96, 96), (0, 84), truth, seed=seed, subpixel=True)
    offset, _ = _register(a, b, step, 9.6, upsample_factor=20)
    assert_allclose(offset, truth, atol=0.1)
    integer, _ = _register(a, b, step, 9.6)
    assert_array_equal(integer, np.round(integer))
    assert np.abs(integer - truth).max() <= 0.5 + 1e-9


def test_noise_free_smooth_content():
    # phase-normalised correlation alone fails on noise-free band-limited content
    a, b, step = _pair((64, 96), (0, 80), (1, 77), seed=2, noise=0.0)
    offset, quality = _register(a, b, step, 8)
    assert_array_equal(offset, [1, 77])
    assert quality > 0.99


def test_blank_tile_gives_no_estimate():
    a, b, step = _pair((64, 64), (0, 56), (0, 55))
    offset, quality = _register(a, np.full_like(b, 0.3), step, 6)
    assert np.isnan(offset).all() and quality == 0.0
    offset, quality = _register(np.zeros((0, 64)), b, step, 6)
    assert np.isnan(offset).all() and quality == 0.0


def test_unrelated_content_scores_low():
    a, _, step = _pair((96, 96), (0, 84), (0, 84), seed=3)
    b, _, _ = _pair((96, 96), (0, 84), (0, 84), seed=4)
    offset, quality = _register(a, b, step, 9.6)
    assert quality < 0.5
    assert np.abs(offset - step).max() <= 9.6 + 0.5  # never leaves the allowed range


def test_offset_stays_within_stage_error():
    # the true offset is 6 px from nominal but only 3 px are allowed: best allowed answer
    a, b, step = _pair((96, 96), (0, 84), (0, 78), seed=5)
    offset, quality = _register(a, b, step, 3)
    assert np.abs(offset - step).max() <= 3.5
    assert quality < 0.9


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=2, max_size=3).flatmap(
        lambda step: st.tuples(
            st.just(step),
            st.lists(st.integers(10, 60), min_size=len(step), max_size=len(step)),
            st.lists(st.floats(0, 8), min_size=len(step), max_size=len(step)),
            st.lists(st.floats(-1, 1), min_size=len(step), max_size=len(step)),
        )
    )
)
def test_regions_contain_true_overlap(args):
    step, shape, error, fraction = (np.asarray(v, dtype=float) for v in args)
    shape = shape.astype(int)
    reg = pair_regions(np.zeros(len(step)), shape, step, shape, error)
    true = step + fraction * error  # any offset within the stage error
    # the pixels tile a and b share at the true offset, in each tile's coordinates
    lo, hi = np.maximum(0, true), np.minimum(shape, true + shape)
    if (hi <= lo).any():
        return
    for s, a, b in zip(reg.slices_a, np.floor(lo), np.ceil(hi), strict=True):
        assert s.start <= a and b <= s.stop
    for s, a, b in zip(reg.slices_b, np.floor(lo - true), np.ceil(hi - true), strict=True):
        assert s.start <= a and b <= s.stop
