"""phase_cross_correlation with masks (Padfield's masked NCC): truth and scikit-image parity."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from skimage.registration import phase_cross_correlation as skimage_pcc

from chunkreg import phase_cross_correlation
from chunkreg.registration import PhaseCorrelator
from chunkreg.testing import textured_image


def crop_pair(shape, shift, *, seed=0, noise=0.01, dtype=np.float64, margin=12):
    """Two overlapping crops of one texture: ``shift`` registers the second onto the first.

    The crops are not periodic, so the masked (linear) correlation sees a true translation.
    """
    rng = np.random.default_rng(seed)
    big = textured_image(tuple(n + 2 * margin for n in shape), seed=seed, sigma=1.0)
    start = np.full(len(shape), margin)
    ref = big[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))]
    moved = start + np.asarray(shift)
    mov = big[tuple(slice(a, a + n) for a, n in zip(moved, shape, strict=True))]
    ref = ref + noise * rng.standard_normal(shape)
    mov = mov + noise * rng.standard_normal(shape)
    return ref.astype(dtype), mov.astype(dtype)


def half_mask(shape, axis=-1):
    mask = np.ones(shape, dtype=bool)
    index = [slice(None)] * len(shape)
    index[axis] = slice(0, shape[axis] // 2)
    mask[tuple(index)] = False
    return mask


@pytest.mark.parametrize(
    ("shape", "shift"),
    [((80,), (-7,)), ((64, 65), (4, -9)), ((20, 21, 22), (-3, 4, 2))],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_half_masked_shift_found_and_matches_skimage(shape, shift, dtype):
    ref, mov = crop_pair(shape, shift, dtype=dtype)
    mask = half_mask(shape)
    shifts, error, phasediff = phase_cross_correlation(ref, mov, reference_mask=mask)
    assert shifts.dtype == dtype
    assert_array_equal(shifts, shift)
    assert np.isnan(error)
    assert np.isnan(phasediff)
    assert_array_equal(shifts, skimage_pcc(ref, mov, reference_mask=mask)[0])


def test_masked_content_is_ignored():
    ref, mov = crop_pair((48, 50), (3, -5))
    mask = half_mask(ref.shape, axis=0)
    expected = phase_cross_correlation(ref, mov, reference_mask=mask)[0]
    ref[~mask] = np.nan
    mov[~mask] = 1e6
    assert_array_equal(phase_cross_correlation(ref, mov, reference_mask=mask)[0], expected)


@pytest.mark.parametrize("overlap_ratio", [0.0, 0.3, 0.8])
def test_distinct_masks_match_skimage(overlap_ratio):
    ref, mov = crop_pair((50, 52), (-6, 8), seed=4)
    ref_mask = half_mask(ref.shape, axis=0)
    rng = np.random.default_rng(0)
    mov_mask = rng.random(mov.shape) > 0.3
    ours = phase_cross_correlation(
        ref, mov, reference_mask=ref_mask, moving_mask=mov_mask, overlap_ratio=overlap_ratio
    )[0]
    theirs = skimage_pcc(
        ref, mov, reference_mask=ref_mask, moving_mask=mov_mask, overlap_ratio=overlap_ratio
    )[0]
    assert_array_equal(ours, theirs)
    if overlap_ratio == 0.3:  # 0 admits spurious tiny overlaps, 0.8 excludes the true shift
        assert_array_equal(ours, [-6, 8])


def test_moving_mask_alone_means_reference_fully_valid():
    ref, mov = crop_pair((40, 41), (2, 5))
    mov_mask = half_mask(mov.shape)
    ours = phase_cross_correlation(ref, mov, moving_mask=mov_mask)[0]
    theirs = skimage_pcc(ref, mov, reference_mask=np.ones(ref.shape, bool), moving_mask=mov_mask)
    assert_array_equal(ours, theirs[0])
    assert_array_equal(ours, [2, 5])


def test_all_true_masks_give_the_unmasked_answer():
    ref, mov = crop_pair((64, 66), (5, -3))
    full = np.ones(ref.shape, dtype=bool)
    masked = phase_cross_correlation(ref, mov, reference_mask=full, moving_mask=full)[0]
    unmasked = phase_cross_correlation(ref, mov)[0]
    assert_array_equal(masked, unmasked)
    assert_array_equal(masked, [5, -3])


def test_different_shapes_match_skimage():
    ref, mov = crop_pair((50, 52), (4, -6))
    small = mov[3:-4, 2:]
    ones_ref = np.ones(ref.shape, dtype=bool)
    ones_mov = np.ones(small.shape, dtype=bool)
    ours = phase_cross_correlation(ref, small, reference_mask=ones_ref, moving_mask=ones_mov)[0]
    theirs = skimage_pcc(ref, small, reference_mask=ones_ref, moving_mask=ones_mov)[0]
    assert_array_equal(ours, theirs)
    # Centres differ by the crop: (3 - 4) / 2 and (2 - 0) / 2 pixels on top of the shift.
    assert_allclose(ours, [4 + 3 - 3.5, -6 + 2 - 1.0])


def test_masked_integer_input_and_blank_cases():
    ref, mov = crop_pair((30, 31), (1, -2))
    mask = half_mask(ref.shape)
    ints = phase_cross_correlation(
        np.round(ref * 1000).astype(np.uint16),
        np.round(mov * 1000).astype(np.uint16),
        reference_mask=mask,
    )[0]
    assert ints.dtype == np.float64
    assert_array_equal(ints, [1, -2])
    empty = np.zeros(ref.shape, dtype=bool)
    for kwargs in ({"reference_mask": empty}, {"reference_mask": mask, "moving_mask": empty}):
        shifts, error, phasediff = phase_cross_correlation(ref, mov, **kwargs)
        assert_array_equal(shifts, [0, 0])
        assert np.isnan(error)
        assert np.isnan(phasediff)
    flat = np.where(mask, 5.0, ref)  # constant wherever the mask is true
    assert_array_equal(phase_cross_correlation(flat, mov, reference_mask=mask)[0], [0, 0])


def test_nan_inside_mask_raises():
    ref, mov = crop_pair((20, 21), (1, 1))
    mov[5, 15] = np.nan
    with pytest.raises(ValueError, match="moving_image contains NaN or infinite values inside"):
        phase_cross_correlation(ref, mov, reference_mask=half_mask(ref.shape))


def test_correlator_masked_matches_function():
    shape = (40, 42)
    ref, _ = crop_pair(shape, (0, 0), seed=7)
    mask = half_mask(shape, axis=0)
    correlator = PhaseCorrelator(ref, reference_mask=mask, overlap_ratio=0.4)
    rng = np.random.default_rng(1)
    for shift in [(2, -3), (-4, 5), (0, 1)]:
        _, mov = crop_pair(shape, shift, seed=7)
        mov_mask = rng.random(shape) > 0.2
        for moving_mask in (None, mov_mask):
            ours = correlator.register(mov, moving_mask=moving_mask)
            expected = phase_cross_correlation(
                ref, mov, reference_mask=mask, moving_mask=moving_mask, overlap_ratio=0.4
            )
            assert_array_equal(ours[0], expected[0])
            assert_array_equal(ours[0], shift)
    unmasked = PhaseCorrelator(ref)
    _, mov = crop_pair(shape, (3, 2), seed=7)
    assert_array_equal(unmasked.register(mov, moving_mask=half_mask(shape))[0], [3, 2])
