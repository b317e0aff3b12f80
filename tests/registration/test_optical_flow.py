"""optical_flow_ilk / optical_flow_tvl1 against known synthetic flows and scikit-image."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from skimage import registration as skreg

import chunkreg
from chunkreg.errors import InputError
from chunkreg.registration import _optical_flow_ilk, _optical_flow_tvl1
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

FLOWS = {"ilk": chunkreg.optical_flow_ilk, "tvl1": chunkreg.optical_flow_tvl1}
SKIMAGE = {"ilk": skreg.optical_flow_ilk, "tvl1": skreg.optical_flow_tvl1}
SWITCHES = {
    "ilk": [{}, {"gaussian": True}, {"prefilter": True}],
    "tvl1": [{}, {"prefilter": True}],
}
CASES = [(method, opts) for method, options in SWITCHES.items() for opts in options]

# 2-D: 128² texture, smooth field of up to 4 px; 3-D: 40³, up to 2 px (uncorrected mean
# endpoint errors are 3.2 px and 2.2 px). Measured errors: iLK 0.13 / 0.19 px, TV-L1
# 0.07 / 0.15 px; the limits leave ~1.5x headroom for the switches and float64.
SHAPES = {2: (128, 128), 3: (40, 40, 40)}
FIELDS = {2: {"amplitude": 4.0, "periods": 0.5}, 3: {"amplitude": 2.0, "periods": 0.25}}
MAX_EPE = {("ilk", 2): 0.2, ("tvl1", 2): 0.1, ("ilk", 3): 0.3, ("tvl1", 3): 0.22}


def exact_flow(displacement: np.ndarray) -> np.ndarray:
    """The flow ``u`` with ``moving(x + u(x)) = reference(x)`` for ``moving =
    apply_flow(reference, -displacement)``: the fixed point of ``u = d(x + u)``."""
    u = displacement.copy()
    for _ in range(10):
        u = np.stack([apply_flow(component, u) for component in displacement])
    return u


def make_case(ndim: int, seed: int = 3):
    shape = SHAPES[ndim]
    reference = textured_image(shape, seed=seed)
    displacement = smooth_displacement(shape, seed=seed + 1, **FIELDS[ndim])
    moving = apply_flow(reference, -displacement)
    return reference, moving, exact_flow(displacement)


@functools.cache
def cached_case(ndim: int):
    return make_case(ndim)


# Every method x switch x dtype, in 2-D and 3-D.
ACCURACY_CASES = [
    (ndim, method, opts, dtype)
    for ndim in (2, 3)
    for method, opts in CASES
    for dtype in (np.float32, np.float64)
]


def endpoint_error(flow: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(((flow - truth) ** 2).sum(axis=0)).mean())


IDENTITY_DTYPES = [np.float16, np.float32, np.float64, np.uint8, np.uint16, np.int16, np.bool_]


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize("shape", [(64, 80), (24, 20, 18)], ids=["2d", "3d"])
@pytest.mark.parametrize("flow_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image_dtype", IDENTITY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_identity_gives_exactly_zero_flow(method, shape, flow_dtype, image_dtype):
    """An image registered onto itself: every warp samples whole pixels, so it is exact."""
    texture = textured_image(shape, seed=5)
    if image_dtype == np.bool_:
        image = texture > np.median(texture)
    elif np.dtype(image_dtype).kind in "ui":
        image = np.round(texture * 200).astype(image_dtype)
    else:
        image = texture.astype(image_dtype)
    options = {"radius": 5} if method == "ilk" else {}
    for tol in (0, 1e-4):
        flow = FLOWS[method](image, image.copy(), tol=tol, dtype=flow_dtype, **options)
        assert flow.shape == (len(shape), *shape)
        assert flow.dtype == flow_dtype
        assert_array_equal(flow, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 37), (9, 12, 11)], ids=["2d", "3d"])
def test_zero_flow_warp_is_the_identity_bit_for_bit(dtype, shape):
    """Whole-pixel samples, the last pixel of each axis included, return the pixel itself."""
    image = textured_image(shape, seed=2).astype(dtype) * dtype(7.3)
    assert_array_equal(chunkreg.warp(image, np.zeros((len(shape), *shape), dtype)), image)
    flow = np.zeros((len(shape), *shape), dtype)
    flow[-1] = 1  # one pixel along the last axis; the last column clamps onto itself
    expected = np.concatenate([image[..., 1:], image[..., -1:]], axis=-1)
    assert_array_equal(chunkreg.warp(image, flow), expected)


@pytest.mark.parametrize(
    ("ndim", "method", "opts", "dtype"),
    ACCURACY_CASES,
    ids=[f"{n}d-{m}{o}-{np.dtype(d).name}" for n, m, o, d in ACCURACY_CASES],
)
def test_recovers_synthetic_flow(ndim, method, opts, dtype):
    reference, moving, truth = cached_case(ndim)
    before = (reference.copy(), moving.copy())
    flow = FLOWS[method](reference, moving, dtype=dtype, **opts)
    assert flow.shape == (ndim, *reference.shape)
    assert flow.dtype == dtype
    assert endpoint_error(flow, truth) < MAX_EPE[method, ndim]
    # inputs are left untouched
    assert_array_equal(reference, before[0])
    assert_array_equal(moving, before[1])


@pytest.mark.parametrize("ndim", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize(("method", "opts"), CASES, ids=[f"{m}{o}" for m, o in CASES])
def test_agrees_with_scikit_image(ndim, method, opts):
    reference, moving, truth = cached_case(ndim)
    ours = FLOWS[method](reference, moving, **opts)
    theirs = SKIMAGE[method](reference, moving, **opts)
    assert np.abs(ours - theirs).mean() < 0.05
    assert endpoint_error(ours, truth) <= 1.05 * endpoint_error(theirs, truth)


@pytest.mark.parametrize("ndim", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize(("method", "opts"), CASES, ids=[f"{m}{o}" for m, o in CASES])
def test_scikit_image_settings_reproduce_scikit_image(ndim, method, opts):
    """scikit-image's number of warps gives scikit-image's flow, to float32 rounding.

    iLK: ``tol=0`` (scikit-image has no early stop). TV-L1 without prefilter: ``tol=0``
    (scikit-image's test compares the flow after the first data step with the flow at the
    end of the warp, which practically never falls below ``tol``); with prefilter its test
    measures the change over the warp, as ours, so the same ``tol`` stops at the same warp.
    Measured: max difference 7e-5 px (TV-L1) and 5e-6 px (iLK).
    """
    reference, moving, _ = make_case(ndim, seed=11)
    tol = 1e-4 if opts.get("prefilter") and method == "tvl1" else 0
    assert_allclose(
        FLOWS[method](reference, moving, tol=tol, **opts),
        SKIMAGE[method](reference, moving, **opts),
        atol=5e-4,
    )


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
def test_integer_images_are_scaled_like_scikit_image(method):
    reference, moving, truth = make_case(2, seed=7)
    ref8 = np.round(reference * 255).astype(np.uint8)
    mov8 = np.round(moving * 255).astype(np.uint8)
    ours = FLOWS[method](ref8, mov8)
    assert_allclose(ours, FLOWS[method](ref8 / 255.0, mov8 / 255.0), atol=1e-3)
    assert np.abs(ours - SKIMAGE[method](ref8, mov8)).mean() < 0.05
    assert endpoint_error(ours, truth) < MAX_EPE[method, 2]


def count_warps(monkeypatch, method: str) -> dict:
    """Count the solver's warps per level shape (by wrapping the module's warp_into)."""
    module = {"ilk": _optical_flow_ilk, "tvl1": _optical_flow_tvl1}[method]
    counts: dict = {}
    original = module.warp_into

    def counting(image, flow, out, **kwargs):
        counts[image.shape] = counts.get(image.shape, 0) + 1
        return original(image, flow, out, **kwargs)

    monkeypatch.setattr(module, "warp_into", counting)
    return counts


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
def test_tolerance_stops_early_without_losing_accuracy(monkeypatch, method):
    """Default ``tol``: fewer warps at full resolution, the same endpoint error.

    Measured on this 128² pair: iLK runs 3 instead of 10 warps at full resolution, TV-L1
    4 instead of 5; the endpoint errors differ by 9e-5 px (iLK) and 8e-4 px (TV-L1; the
    early stop is the better one there), against a bound of 0.002 px.
    """
    reference, moving, truth = make_case(2, seed=9)
    counts = count_warps(monkeypatch, method)
    exhaustive = FLOWS[method](reference, moving, tol=0)
    all_warps = dict(counts)
    counts.clear()
    default = FLOWS[method](reference, moving)
    num_warp = {"ilk": 10, "tvl1": 5}[method]
    assert all(n == num_warp for n in all_warps.values())
    assert counts[reference.shape] < num_warp
    assert sum(counts.values()) < sum(all_warps.values())
    assert abs(endpoint_error(default, truth) - endpoint_error(exhaustive, truth)) < 0.002
    assert np.abs(default - exhaustive).mean() < 0.01
    # a tolerance no warp can meet runs every warp; one every warp meets stops after one
    assert_array_equal(FLOWS[method](reference, moving, tol=1e-30), exhaustive)
    assert_array_equal(
        FLOWS[method](reference, moving, tol=1e6), FLOWS[method](reference, moving, num_warp=1)
    )


def test_one_dimensional_signal():
    signal = textured_image((256,), seed=2, sigma=3)
    shift = 1.5
    moving = apply_flow(signal, np.full((1, 256), -shift, dtype=np.float32))
    for method in ("ilk", "tvl1"):
        flow = FLOWS[method](signal, moving)
        assert flow.shape == (1, 256)
        assert_allclose(flow[0, 20:-20].mean(), shift, atol=0.05)


def test_four_dimensional_input_uses_generic_solver():
    shape = (20, 18, 16, 17)
    reference = textured_image(shape, seed=4, sigma=1.5)
    flow = chunkreg.optical_flow_ilk(reference, reference, radius=2, num_warp=2)
    assert flow.shape == (4, *shape)
    assert_allclose(flow, 0, atol=1e-5)
    moving = apply_flow(reference, np.full((4, *shape), -0.5, dtype=np.float32))
    flow = chunkreg.optical_flow_ilk(reference, moving, radius=2, num_warp=3)
    assert_allclose(flow[:, 4:-4, 4:-4, 4:-4, 4:-4].mean(axis=(1, 2, 3, 4)), 0.5, atol=0.1)


# --- bad input ---------------------------------------------------------------------------

GOOD = textured_image((48, 48), seed=1)


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize(
    ("reference", "moving", "match"),
    [
        (GOOD, GOOD[:40], "same shape"),
        (GOOD, GOOD[None], "same number of dimensions"),
        (np.stack([GOOD] * 3, axis=-1), GOOD, "colour channels"),
        (np.stack([GOOD] * 3, axis=-1), np.stack([GOOD] * 3, axis=-1), "colour"),
        (np.stack([GOOD] * 4, axis=-1), np.stack([GOOD] * 4, axis=-1), "colour"),
        (np.where(GOOD > 0.9, np.nan, GOOD), GOOD, "NaN"),
        (GOOD, np.where(GOOD > 0.9, np.inf, GOOD), "NaN or infinite"),
        (GOOD.astype(np.complex64), GOOD, "real"),
        (np.float32(1.0), np.float32(1.0), "at least one dimension"),
        (GOOD[:1], GOOD[:1], "too small"),
    ],
)
def test_bad_images_raise(method, reference, moving, match):
    with pytest.raises(InputError, match=match):
        FLOWS[method](reference, moving)


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, "not-a-dtype"])
def test_non_float_dtype_raises(method, dtype):
    with pytest.raises(InputError, match="dtype must be float32 or float64"):
        FLOWS[method](GOOD, GOOD, dtype=dtype)


def test_ilk_image_smaller_than_window_raises():
    with pytest.raises(InputError, match="iLK window of radius 7"):
        chunkreg.optical_flow_ilk(GOOD[:14], GOOD[:14])
    assert chunkreg.optical_flow_ilk(GOOD[:15], GOOD[:15]).shape == (2, 15, 48)
    assert chunkreg.optical_flow_ilk(GOOD[:9], GOOD[:9], radius=4).shape == (2, 9, 48)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("ilk", {"radius": 0}),
        ("ilk", {"radius": 2.5}),
        ("ilk", {"radius": True}),
        ("ilk", {"num_warp": 0}),
        ("ilk", {"tol": -1e-4}),
        ("ilk", {"tol": float("nan")}),
        ("ilk", {"tol": None}),
        ("tvl1", {"attachment": 0}),
        ("tvl1", {"tightness": -0.3}),
        ("tvl1", {"num_warp": 0}),
        ("tvl1", {"num_iter": 1.5}),
        ("tvl1", {"tol": -1e-4}),
        ("tvl1", {"attachment": "15"}),
    ],
)
def test_bad_parameters_raise(method, kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        FLOWS[method](GOOD, GOOD, **kwargs)


def test_errors_are_value_errors():
    """Callers written for scikit-image catch ValueError."""
    with pytest.raises(ValueError, match="same shape"):
        chunkreg.optical_flow_tvl1(GOOD, GOOD[:40])
