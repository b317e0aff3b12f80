"""chunkreg.warp: resampling at grid + flow, checked against scipy.ndimage directly."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage as ndi

import chunkreg
from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SCIPY_MODES = {
    "edge": "nearest",
    "constant": "grid-constant",
    "symmetric": "reflect",
    "reflect": "mirror",
    "wrap": "grid-wrap",
}


def scipy_warp(image, flow, order, mode, cval=0.0):
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in image.shape], indexing="ij")
    coords = np.stack(grid) + flow
    return ndi.map_coordinates(
        image.astype(np.float64), coords, order=order, mode=SCIPY_MODES[mode], cval=cval
    )


@pytest.mark.parametrize("mode", list(SCIPY_MODES))
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("shape", [(70, 53), (17, 23, 19), (300,)], ids=["2d", "3d", "1d"])
def test_matches_map_coordinates(shape, order, mode):
    image = textured_image(shape, seed=2)
    # up to 6 px, so plenty of samples fall outside the image and exercise the mode
    flow = smooth_displacement(shape, amplitude=6.0, seed=3)
    out = chunkreg.warp(image, flow, order=order, mode=mode, cval=0.25)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    expected = scipy_warp(image, flow, order, mode, cval=0.25)
    if order == 0:
        # nearest-neighbour picks may differ where a coordinate rounds at exactly .5 in
        # float32 versus float64: allow a handful of pixels, all others exact
        assert np.mean(np.abs(out - expected) > 1e-6) < 1e-3
    else:
        assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float16, np.float32),
        (np.uint16, np.float64),
        (np.int8, np.float64),
        (bool, np.float64),
    ],
)
def test_output_dtype_and_range(dtype, expected):
    image = (textured_image((40, 30), seed=1) * 100).astype(dtype)
    flow = np.full((2, 40, 30), 0.5)
    out = chunkreg.warp(image, flow)
    assert out.dtype == expected
    # values are not rescaled: integer images keep their range
    assert_allclose(out, scipy_warp(image, flow, 1, "edge"), rtol=1e-3, atol=1e-3)


def test_known_translation():
    image = np.arange(24.0).reshape(4, 6)
    flow = np.zeros((2, 4, 6))
    flow[0] = 1.0  # sample one row down
    flow[1] = -0.5  # half a pixel left
    out = chunkreg.warp(image, flow)
    expected = np.empty_like(image)
    rows = np.minimum(np.arange(4) + 1, 3)
    left = np.clip(np.arange(6) - 1, 0, 5)
    expected = 0.5 * (image[rows][:, left] + image[rows][:, np.arange(6)])
    assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize("shape", [(96, 96), (40, 40, 40)], ids=["2d", "3d"])
def test_warp_by_estimated_flow_registers(method, shape):
    """scikit-image's "registration using optical flow" example, on a synthetic pair."""
    reference = textured_image(shape, seed=4)
    displacement = smooth_displacement(shape, amplitude=2.0, seed=5, periods=0.25)
    moving = apply_flow(reference, -displacement)
    flow = getattr(chunkreg, f"optical_flow_{method}")(reference, moving)
    before = np.abs(moving - reference).mean()
    after = np.abs(chunkreg.warp(moving, flow) - reference).mean()
    assert after < 0.25 * before  # measured: 0.10-0.12 of the error before


def test_input_not_modified():
    image = textured_image((20, 20), seed=1)
    flow = smooth_displacement((20, 20), amplitude=2.0, seed=1)
    image_copy, flow_copy = image.copy(), flow.copy()
    chunkreg.warp(image, flow)
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(flow, flow_copy)


def test_singleton_axis_uses_general_path():
    image = textured_image((1, 30), seed=1)
    flow = np.zeros((2, 1, 30), dtype=np.float32)
    flow[1] = 0.25
    assert_allclose(chunkreg.warp(image, flow), scipy_warp(image, flow, 1, "edge"), atol=1e-6)


GOOD = textured_image((20, 24), seed=0)


@pytest.mark.parametrize(
    ("image", "flow", "kwargs", "match"),
    [
        (GOOD, np.zeros((2, 20, 23)), {}, "flow must have shape"),
        (GOOD, np.zeros((20, 24)), {}, "flow must have shape"),
        (GOOD, np.zeros((3, 20, 24)), {}, "flow must have shape"),
        (GOOD, np.full((2, 20, 24), np.nan), {}, "NaN"),
        (GOOD, np.zeros((2, 20, 24), dtype=np.complex64), {}, "real"),
        (GOOD.astype(np.complex64), np.zeros((2, 20, 24)), {}, "real"),
        (np.float32(1), np.zeros((0,)), {}, "at least one dimension"),
        (GOOD, np.zeros((2, 20, 24)), {"order": 6}, "order"),
        (GOOD, np.zeros((2, 20, 24)), {"order": 1.0}, "order"),
        (GOOD, np.zeros((2, 20, 24)), {"mode": "nearest"}, "mode"),
    ],
)
def test_bad_input_raises(image, flow, kwargs, match):
    with pytest.raises(InputError, match=match):
        chunkreg.warp(image, flow, **kwargs)


@pytest.mark.parametrize("flow_value", [0.0, 1.0, 0.25, -0.5])
def test_nan_pixels_reach_only_their_own_neighbours(flow_value):
    """A NaN spoils the samples whose interpolation stencil holds it and no others: the
    last column of a row never reads the next row's first pixel. Off the grid (all weights
    non-zero) the spoiled samples are exactly scipy's."""
    image = textured_image((6, 7), seed=3)
    image[2, 0] = image[4, 3] = np.nan
    flow = np.full((2, 6, 7), flow_value)
    spoiled = np.isnan(chunkreg.warp(image, flow))
    sources = np.argwhere(np.isnan(image))
    for pixel in np.argwhere(spoiled):
        position = np.clip(pixel + flow_value, 0, np.array(image.shape) - 1)
        assert (np.abs(sources - position).max(axis=1) <= 1).any(), pixel
    if flow_value % 1:  # where no sample position is clamped to the image
        inside = np.ones(image.shape, bool)
        for axis, n in enumerate(image.shape):
            position = np.arange(n) + flow_value
            shape = [1, 1]
            shape[axis] = n
            inside &= ((position >= 0) & (position <= n - 1)).reshape(shape)
        expected = np.isnan(scipy_warp(image, flow, 1, "edge"))
        assert np.array_equal(spoiled[inside], expected[inside])
    else:
        assert not np.isnan(chunkreg.warp(image, flow)[:, -1][:-1]).any()  # no wrap-around
