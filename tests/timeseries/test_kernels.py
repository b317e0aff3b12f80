"""Per-frame kernels of the time-series workflow: shifts, quality, estimation, references."""

import numpy as np
import pytest
from conftest import drifting_frames, random_walk
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from chunkreg.errors import InputError
from chunkreg.registration import normalized_cross_correlation
from chunkreg.testing import textured_image
from chunkreg.timeseries._estimate import FrameRegistrar
from chunkreg.timeseries._frames import (
    cast_frame,
    fourier_shift_frame,
    linear_shift_frame,
    ncc,
    overlap_ncc,
    valid_slices,
)
from chunkreg.timeseries._reference import (
    ReferenceSpec,
    build_reference,
    parse_reference,
    parse_strides,
)


@pytest.mark.parametrize("shift", [(3.25, -5.5), (-2.0, 0.75), (0.0, 0.0)])
def test_fourier_shift_matches_ndimage_inside_and_fills_outside(shift):
    image = textured_image((64, 48), seed=2)
    moved = fourier_shift_frame(image, shift, fill_value=-1.0)
    truth = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(image), shift)).real
    valid = valid_slices(image.shape, shift)
    assert moved.dtype == np.float32
    assert_allclose(moved[valid], truth[valid], atol=1e-5)
    outside = np.ones(image.shape, bool)
    outside[valid] = False
    assert_array_equal(moved[outside], -1.0)
    # whole-pixel shifts are exact translations of the frame
    if all(float(s).is_integer() for s in shift):
        assert_allclose(moved[valid], ndimage.shift(image, shift, order=0)[valid], atol=1e-5)


def test_valid_slices_counts_partial_pixels():
    assert valid_slices((10, 10), (2.0, -2.0)) == (slice(2, 10), slice(0, 8))
    assert valid_slices((10, 10), (2.3, -2.3)) == (slice(3, 10), slice(0, 7))
    assert valid_slices((10,), (25.0,)) == (slice(10, 10),)


def test_linear_shift_is_ndimage_order_one():
    image = textured_image((32, 32), seed=3)
    assert_allclose(
        linear_shift_frame(image, (1.5, -0.25), fill_value=0.0),
        ndimage.shift(image, (1.5, -0.25), order=1, mode="constant"),
        atol=1e-6,
    )


def test_ncc_agrees_with_double_precision_metric_and_scores_blank_zero():
    rng = np.random.default_rng(0)
    a = rng.random((40, 40)).astype(np.float32)
    b = (a + 0.5 * rng.random((40, 40))).astype(np.float32)
    mask = rng.random((40, 40)) > 0.3
    assert_allclose(ncc(a, b), normalized_cross_correlation(a, b), atol=1e-5)
    assert_allclose(ncc(a, b, mask), normalized_cross_correlation(a, b, mask), atol=1e-5)
    assert ncc(a, np.zeros_like(a)) == 0.0
    assert ncc(a[:1, :1], b[:1, :1]) == 0.0


def test_overlap_ncc_is_one_for_a_whole_pixel_translation():
    scene = textured_image((80, 80), seed=4)
    reference, moving = scene[10:70, 10:70], scene[13:73, 5:65]  # moving(x) = ref(x + (3, -5))
    # ndimage.shift(moving, s) ≈ reference for s = (3, -5)
    assert overlap_ncc(reference, moving, (3.2, -4.9)) == pytest.approx(1.0, abs=1e-5)
    assert overlap_ncc(reference, moving, (0, 0)) < 0.5
    assert overlap_ncc(reference, moving, (59, 59)) == 0.0  # overlap too small


def test_cast_frame_rounds_and_clips_integers():
    frame = np.array([-3.2, 0.49, 0.51, 70000.0], np.float32)
    assert_array_equal(cast_frame(frame, np.uint16), np.array([0, 0, 1, 65535], np.uint16))
    assert cast_frame(frame, np.float32).dtype == np.float32


@pytest.mark.parametrize(("ndim", "size", "drift"), [(2, 64, 20.0), (3, 32, 5.0)])
def test_frame_registrar_recovers_subpixel_shifts_of_cropped_frames(ndim, size, drift):
    positions = random_walk(12, ndim, seed=ndim, max_drift=drift)
    frames = drifting_frames((size,) * ndim, positions, seed=ndim, margin=24 if ndim == 2 else 8)
    registrar = FrameRegistrar(frames[0], upsample_factor=20)
    for t in range(1, len(frames)):
        shift, error, _ = registrar.register(frames[t])
        assert_allclose(shift, positions[0] - positions[t], atol=0.1)
        assert 0 <= error <= 1


def test_frame_registrar_identity_and_blank_frame():
    image = textured_image((48, 48), seed=5)
    registrar = FrameRegistrar(image, upsample_factor=10)
    assert_allclose(registrar.register(image)[0], 0.0, atol=1e-6)
    shift, error, _ = registrar.register(np.zeros_like(image))
    assert np.isfinite(shift).all() and error == 1.0


def test_frame_registrar_with_mask_ignores_a_static_object():
    scene = textured_image((96, 96), seed=6)
    reference, moving = scene[10:74, 10:74].copy(), scene[14:78, 7:71].copy()
    reference[:, 48:] = moving[:, 48:] = 5.0  # a bright static object in both frames
    mask = np.zeros((64, 64), bool)
    mask[:, :44] = True
    shift, _, _ = FrameRegistrar(reference, mask=mask).register(moving)
    assert_allclose(shift, (4, -3), atol=0.5)


def test_parse_reference_forms_and_errors():
    shape = (16, 16)
    assert parse_reference("first", 10, shape, 5) == ReferenceSpec("frame", 0)
    assert parse_reference(-1, 10, shape, 5) == ReferenceSpec("frame", 9)
    assert parse_reference("mean", 10, shape, 50).n_frames == 10
    assert parse_reference("previous", 10, shape, 5).kind == "previous"
    spec = parse_reference(np.ones(shape), 10, shape, 5)
    assert spec.kind == "array" and len(spec.describe()["sha1"]) == 40
    for bad, match in [
        (10, "out of range"),
        (-11, "out of range"),
        ("median", "reference must be"),
        (np.ones((3, 3)), "shape"),
        (np.full(shape, np.nan), "NaN"),
        (object(), "reference must be"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_reference(bad, 10, shape, 5)
    with pytest.raises(InputError, match="n_reference_frames"):
        parse_reference("mean", 10, shape, 0)


def test_parse_strides():
    assert parse_strides(None, 100) == (1,)
    assert parse_strides((10, 1, 100, 10), 1000) == (1, 10, 100)
    assert parse_strides((1, 10, 100), 50) == (1, 10)  # strides longer than the series dropped
    for bad in [(10,), (0, 1), "1,10", (1, 2.5)]:
        with pytest.raises(InputError, match="strides"):
            parse_strides(bad, 100)


def test_mean_reference_is_aligned_to_the_first_frame():
    positions = random_walk(6, 2, seed=7, max_drift=6.0)
    frames = drifting_frames((64, 64), positions, seed=7, noise=0.05)
    registrar = FrameRegistrar(frames[0], upsample_factor=20)
    mean = build_reference(
        ReferenceSpec("mean", 0, 6),
        lambda t: frames[t],
        lambda ref, mov: FrameRegistrar(ref, upsample_factor=20).register(mov)[0],
        lambda f, s: fourier_shift_frame(f, s, fill_value=np.nan),
    )
    clean = drifting_frames((64, 64), positions[:1], seed=7, noise=0.0)[0]
    inner = (slice(8, -8),) * 2
    # in frame 0's position, and less noisy than frame 0 itself
    assert_allclose(registrar.register(mean)[0], 0.0, atol=0.05)
    assert np.std(mean[inner] - clean[inner]) < 0.6 * np.std(frames[0][inner] - clean[inner])
