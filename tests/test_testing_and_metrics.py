import numpy as np
from numpy.testing import assert_allclose

from chunkreg.registration import normalized_cross_correlation
from chunkreg.testing import apply_flow, smooth_displacement, textured_image


def test_textured_image_range_and_dtype():
    img = textured_image((32, 40), seed=1)
    assert img.dtype == np.float32
    assert_allclose([img.min(), img.max()], [0, 1], atol=1e-6)


def test_smooth_displacement_amplitude():
    f = smooth_displacement((20, 30, 10), amplitude=3.0, seed=2)
    assert f.shape == (3, 20, 30, 10)
    assert_allclose(np.abs(f).reshape(3, -1).max(axis=1), 3.0, rtol=1e-5)


def test_apply_flow_constant_shift_matches_ndimage_shift():
    from scipy import ndimage

    img = textured_image((48, 48), seed=3, dtype=np.float64)
    flow = np.zeros((2, 48, 48))
    flow[0] = 2.0
    flow[1] = -1.0
    # sampling at x + (2, -1) is a shift by (-2, +1)
    expected = ndimage.shift(img, (-2, 1), order=3, mode="nearest")
    assert_allclose(apply_flow(img, flow), expected, atol=1e-6)


def test_ncc():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 50))
    assert_allclose(normalized_cross_correlation(a, 3 * a + 1), 1.0)
    assert_allclose(normalized_cross_correlation(a, -a), -1.0)
    assert normalized_cross_correlation(a, np.zeros_like(a)) == 0.0
    mask = np.zeros_like(a, bool)
    mask[:10] = True
    b = a.copy()
    b[10:] = rng.standard_normal((40, 50))
    assert_allclose(normalized_cross_correlation(a, b, mask), 1.0)
