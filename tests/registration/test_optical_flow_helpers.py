"""The optical-flow building blocks against the scipy/numpy functions they replace."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi

from chunkreg.registration import _filters, _pyramid, _window
from chunkreg.registration._optical_flow_ilk import _solve_rows
from chunkreg.registration._warp import warp_into

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("target", [7, 100, 65536])
@pytest.mark.parametrize("shape", [(13,), (9, 11), (7, 6, 5)], ids=["1d", "2d", "3d"])
def test_gradient_rows_equals_numpy_gradient(shape, target):
    image = RNG.standard_normal(shape).astype(np.float32)
    expected = (
        np.stack(np.atleast_1d(np.gradient(image))) if len(shape) > 1 else np.gradient(image)[None]
    )
    out = np.empty((len(shape), *shape), dtype=np.float32)
    for start, stop in _filters.row_slabs(shape, target):
        _filters.gradient_rows(image, start, stop, out[:, start:stop])
    assert_array_equal(out, expected)


def test_row_slabs_partition_axis_0():
    slabs = _filters.row_slabs((10, 7, 3), 50)
    assert slabs[0] == (0, 2)
    assert [a for a, _ in slabs[1:]] == [b for _, b in slabs[:-1]]
    assert slabs[-1][1] == 10


@pytest.mark.parametrize("radius", [1, 3, 7, 12])
@pytest.mark.parametrize(
    ("shape", "axes"),
    [((40,), (0,)), ((30, 3, 26), (0, 2)), ((17, 9, 2, 21, 15), (0, 2, 3, 4)), ((9, 33), (0, 1))],
    ids=["1d", "2d-stack", "3d-stack", "2d-short"],
)
def test_window_mean_equals_uniform_filter(shape, axes, radius):
    data = RNG.random(shape, dtype=np.float32)
    expected = ndi.uniform_filter(
        data, size=[2 * radius + 1 if a in axes else 1 for a in range(len(shape))], mode="mirror"
    )
    out = data.copy()
    _window.window_mean(out, radius, axes, np.empty_like(out))
    assert_allclose(out, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("downscale", [2, 1.5, 3])
@pytest.mark.parametrize("shape", [(64, 48), (33, 20, 17), (2, 5), (9,)], ids=str)
def test_pyramid_reduce_equals_gaussian_then_zoom(shape, downscale):
    image = RNG.random(shape, dtype=np.float32)
    smoothed = ndi.gaussian_filter(image, 2 * downscale / 6, mode="reflect")
    size = tuple(int(np.ceil(n / downscale)) for n in shape)
    expected = ndi.zoom(
        smoothed,
        [s / n for s, n in zip(size, shape, strict=True)],
        order=1,
        mode="mirror",
        grid_mode=True,
    )
    out = _pyramid.pyramid_reduce(image, downscale)
    assert out.shape == size
    assert out.dtype == np.float32
    assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(("n", "size"), [(10, 20), (7, 15), (10, 5), (9, 5), (1, 4), (6, 6)])
def test_resample_axis_equals_zoom(n, size):
    image = RNG.random((n, 4), dtype=np.float32)
    expected = ndi.zoom(image, (size / n, 1), order=1, mode="nearest", grid_mode=True)
    assert_allclose(_pyramid.resample_axis(image, size, 0), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(50, 40), (12, 14, 9), (64,)], ids=["2d", "3d", "1d"])
def test_linear_sampler_equals_map_coordinates(shape):
    image = RNG.random(shape, dtype=np.float32)
    flow = (RNG.random((len(shape), *shape), dtype=np.float32) - 0.5) * 12
    out = np.empty_like(image)
    warp_into(image, flow, out)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    expected = ndi.map_coordinates(
        image, np.stack(grid) + flow, order=1, mode="nearest", prefilter=False
    )
    assert_allclose(out, expected, atol=1e-6)


def test_median_filter_flow_equals_scipy():
    flow = RNG.random((2, 20, 30), dtype=np.float32)
    expected = ndi.median_filter(flow, size=(1, 3, 3))
    _filters.median_filter_flow(flow, np.empty((20, 30), dtype=np.float32))
    assert_array_equal(flow, expected)


@pytest.mark.parametrize(
    "shape",
    [(40,), (1,), (33, 47), (1, 6), (13, 9, 11), (2, 2, 2), (3, 1, 4), (5, 4, 3, 4)],
    ids=str,
)
@pytest.mark.parametrize("ties", [False, True])
def test_median3_equals_scipy(shape, ties):
    image = RNG.integers(0, 3, shape) if ties else RNG.random(shape)
    image = image.astype(np.float32)
    out = np.empty_like(image)
    _filters.median3(image, out)
    assert_array_equal(out, ndi.median_filter(image, size=3))


def test_median3_across_slabs():
    image = RNG.random((300, 70), dtype=np.float32)  # several slabs of 16 Ki elements
    out = np.empty_like(image)
    _filters.median3(image, out)
    assert_array_equal(out, ndi.median_filter(image, size=3))


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_closed_form_solve_equals_linalg(ndim, dtype):
    n = 500
    g = RNG.standard_normal((n, 6, ndim)).astype(dtype)
    mats = np.einsum("nki,nkj->nij", g, g)  # symmetric positive (semi-)definite
    mats[:50] = 0  # singular: no texture, flow 0
    rhs = RNG.standard_normal((n, ndim)).astype(dtype)
    pairs = [(i, j) for i in range(ndim) for j in range(i, ndim)]
    out = [np.empty(n, dtype=dtype) for _ in range(ndim)]
    _solve_rows(
        [mats[:, i, j].copy() for i, j in pairs], [rhs[:, i].copy() for i in range(ndim)], out
    )
    expected = np.linalg.solve(mats[50:].astype(np.float64), rhs[50:, :, None].astype(np.float64))[
        ..., 0
    ]
    result = np.stack(out, axis=-1)
    assert_array_equal(result[:50], 0)
    tol = 1e-3 if dtype == np.float32 else 1e-9
    assert_allclose(result[50:], expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("sigma", [0.7, 3.75, 10.25])
@pytest.mark.parametrize(
    ("shape", "axes"),
    [((40,), (0,)), ((31, 2, 26), (0, 2)), ((9, 14, 3, 12), (0, 1, 3)), ((3, 2, 50), (0, 1, 2))],
    ids=["1d", "2d-stack", "3d-stack", "short-axes"],
)
def test_gaussian_window_equals_gaussian_filter(shape, axes, sigma):
    data = RNG.random(shape, dtype=np.float32)
    sigmas = [sigma if a in axes else 0 for a in range(len(shape))]
    expected = ndi.gaussian_filter(data, sigmas, mode="mirror")
    out = data.copy()
    _window.gaussian_window(out, sigma, axes, np.empty_like(out))
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_correlate_symmetric_equals_correlate1d(axis):
    data = RNG.random((70, 19, 23), dtype=np.float32)
    weights = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    out = np.empty_like(data)
    _window.correlate_symmetric(data, weights, axis, out)
    expected = ndi.correlate1d(data, weights, axis=axis, mode="mirror")
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
