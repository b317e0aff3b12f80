"""phase_cross_correlation / PhaseCorrelator (unmasked): truth, scikit-image parity, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage
from skimage.registration import phase_cross_correlation as skimage_pcc

from chunkreg import phase_cross_correlation
from chunkreg.errors import InputError
from chunkreg.registration import PhaseCorrelator
from chunkreg.registration._upsampled_dft import dft_at, dft_at_half, refine_peak
from chunkreg.testing import textured_image


def shifted_pair(shape, shift, *, seed=0, sigma=0.5, noise=0.01, dtype=np.float64):
    """Noisy texture and a copy moved by ``-shift`` (so ``shift`` registers it back).

    The move is an exact periodic band-limited shift (``ndimage.fourier_shift``); odd sizes have
    no Nyquist bin, so the shifted copy is exact. Each image gets independent noise.
    """
    rng = np.random.default_rng(seed)
    ref = textured_image(shape, seed=seed, sigma=sigma, dtype=np.float64)
    mov = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(ref), -np.asarray(shift))).real
    ref = ref + noise * rng.standard_normal(shape)
    mov = mov + noise * rng.standard_normal(shape)
    return ref.astype(dtype), mov.astype(dtype)


TRUTH_CASES = [
    ((255,), (7.3,)),
    ((63, 65), (-4.62, 10.27)),
    ((21, 23, 25), (3.41, -2.66, 5.08)),
    ((9, 11, 9, 11), (1.3, -2.7, 0.45, 3.9)),
]


@pytest.mark.parametrize(("shape", "shift"), TRUTH_CASES)
@pytest.mark.parametrize("normalization", ["phase", None])
def test_recovers_known_subpixel_shift(shape, shift, normalization):
    ref, mov = shifted_pair(shape, shift)
    for upsample in (1, 20, 100):
        found, error, phasediff = phase_cross_correlation(
            ref, mov, upsample_factor=upsample, normalization=normalization
        )
        tolerance = 0.5 if upsample == 1 else 1 / upsample + 0.01
        assert_allclose(found, shift, atol=tolerance)
        assert found.dtype == np.float64
        assert 0 <= error <= 1
        assert abs(phasediff) < 0.2


@pytest.mark.parametrize(("shape", "shift"), TRUTH_CASES)
def test_whole_pixel_shift_is_exact(shape, shift):
    ref, _ = shifted_pair(shape, shift)
    whole = np.round(shift).astype(int)
    mov = np.roll(ref, -whole, axis=tuple(range(len(shape))))
    found, error, phasediff = phase_cross_correlation(ref, mov, normalization=None)
    assert_array_equal(found, whole)
    assert error < 1e-6
    assert phasediff == 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(-15, 15), st.integers(-19, 20))
def test_random_integer_shifts_recovered_exactly(dy, dx):
    ref = textured_image((31, 40), seed=5, sigma=1.0, dtype=np.float64)
    mov = np.roll(ref, (-dy, -dx), axis=(0, 1))
    assert_array_equal(phase_cross_correlation(ref, mov, return_error=False), [dy, dx])


SKIMAGE_CASES = [
    ((64,), 100),
    ((48, 50), 100),
    ((33, 1), 10),
    ((1, 40), 10),
    ((16, 18, 20), 100),
    ((8, 9, 10, 6), 7),
]


@pytest.mark.parametrize(("shape", "upsample"), SKIMAGE_CASES)
@pytest.mark.parametrize("normalization", ["phase", None])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_skimage(shape, upsample, normalization, dtype):
    rng = np.random.default_rng(len(shape))
    shift = rng.uniform(-4, 4, len(shape)) * (np.array(shape) > 1)
    ref, mov = shifted_pair(shape, shift, seed=3, sigma=1.0, dtype=dtype)
    tol = {np.float64: 1e-6, np.float32: 3e-4}[dtype]
    for up in (1, upsample):
        ours = phase_cross_correlation(ref, mov, upsample_factor=up, normalization=normalization)
        theirs = skimage_pcc(ref, mov, upsample_factor=up, normalization=normalization)
        assert ours[0].dtype == dtype
        assert_allclose(ours[0], theirs[0], atol=1e-5)
        assert_allclose(ours[1], theirs[1], atol=tol)
        assert_allclose(ours[2], theirs[2], atol=tol)


@settings(max_examples=25, deadline=None, derandomize=True)  # reproducible in CI
@given(
    st.tuples(st.floats(-6, 6), st.floats(-6, 6)),
    st.sampled_from([3, 20, 50, 100, 250]),
    st.integers(0, 3),
)
def test_coarse_to_fine_search_matches_skimage_exhaustive_search(shift, upsample, seed):
    ref, mov = shifted_pair((40, 45), shift, seed=seed, sigma=1.0)
    ours = phase_cross_correlation(ref, mov, upsample_factor=upsample)
    theirs = skimage_pcc(ref, mov, upsample_factor=upsample)
    assert_allclose(ours[0], theirs[0], atol=1e-9)
    assert_allclose(ours[1:], theirs[1:], atol=1e-9)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("shape", [(64, 65), (20, 21, 22)])
def test_fourier_space_input(shape, dtype):
    shift = (2.7, -3.3, 1.1)[: len(shape)]
    ref, mov = shifted_pair(shape, shift, seed=2)
    spec_ref = np.fft.fftn(ref).astype(dtype)
    spec_mov = np.fft.fftn(mov).astype(dtype)
    for up in (1, 30):
        ours = phase_cross_correlation(spec_ref, spec_mov, space="fourier", upsample_factor=up)
        theirs = skimage_pcc(spec_ref, spec_mov, space="fourier", upsample_factor=up)
        assert ours[0].dtype == (np.float32 if dtype == np.complex64 else np.float64)
        assert_allclose(ours[0], theirs[0], atol=1e-5)
        assert_allclose(ours[1:], theirs[1:], atol=1e-5)
    assert_allclose(ours[0], shift, atol=1 / 30 + 0.01)
    real = phase_cross_correlation(ref, mov, upsample_factor=30)
    assert_allclose(ours[0], real[0], atol=1e-5)


def test_space_is_case_insensitive():
    ref, mov = shifted_pair((33, 35), (2.0, -3.0))
    ours = phase_cross_correlation(np.fft.fftn(ref), np.fft.fftn(mov), space="Fourier")
    assert_array_equal(ours[0], [2.0, -3.0])
    assert_array_equal(phase_cross_correlation(ref, mov, space="REAL")[0], [2.0, -3.0])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.uint16, np.float64),
        (np.int32, np.float64),
    ],
)
def test_precision_follows_input(dtype, expected):
    ref, mov = shifted_pair((33, 35), (2.0, -3.0), noise=0.0)
    scale = 1000 if np.dtype(dtype).kind in "iu" else 1
    ref, mov = (np.round(a * scale).astype(dtype) for a in (ref, mov))
    shifts, error, phasediff = phase_cross_correlation(ref, mov, upsample_factor=10)
    assert shifts.dtype == expected
    assert_allclose(shifts, [2.0, -3.0], atol=0.1)
    assert isinstance(error, float)
    assert isinstance(phasediff, float)


def test_mixed_precision_computes_in_double():
    ref, mov = shifted_pair((33, 35), (2.0, -3.0))
    shifts = phase_cross_correlation(ref.astype(np.float32), mov, return_error=False)
    assert shifts.dtype == np.float64


def test_return_error_switch():
    ref, mov = shifted_pair((33, 35), (1.5, -2.25))
    full = phase_cross_correlation(ref, mov, upsample_factor=4)
    assert isinstance(full, tuple)
    assert len(full) == 3
    alone = phase_cross_correlation(ref, mov, upsample_factor=4, return_error=False)
    assert isinstance(alone, np.ndarray)
    assert_array_equal(alone, full[0])
    always = phase_cross_correlation(ref, mov, upsample_factor=4, return_error="always")
    assert_array_equal(always[0], full[0])
    assert always[1:] == full[1:]


def test_identical_images_give_zero_shift_and_error():
    ref, _ = shifted_pair((40, 41), (0, 0))
    shifts, error, phasediff = phase_cross_correlation(ref, ref, normalization=None)
    assert_array_equal(shifts, [0, 0])
    assert error < 1e-6
    assert phasediff == 0.0


def _crop_pair(offset, size=64):
    big = textured_image((size + 100, size + 100), seed=3, sigma=1.0, dtype=np.float64)
    start = np.array([50, 50])
    ref = big[start[0] : start[0] + size, start[1] : start[1] + size]
    s = start + np.asarray(offset)  # mov[y] = ref[y + offset]
    mov = big[s[0] : s[0] + size, s[1] : s[1] + size]
    return ref, mov


@pytest.mark.parametrize("shift", [(-5, 40), (41, 3), (36, -30)])
@pytest.mark.parametrize("upsample", [1, 10])
def test_disambiguate_resolves_wraparound(shift, upsample):
    ref, mov = _crop_pair(shift)
    plain = phase_cross_correlation(ref, mov, upsample_factor=upsample)[0]
    assert np.abs(plain - shift).max() > 10  # the naive peak is the wrapped one
    fixed = phase_cross_correlation(ref, mov, upsample_factor=upsample, disambiguate=True)[0]
    assert_allclose(fixed, shift, atol=0.2)
    theirs = skimage_pcc(ref, mov, upsample_factor=upsample, disambiguate=True)[0]
    assert_allclose(fixed, theirs, atol=1e-6)


def test_disambiguate_in_fourier_space():
    ref, mov = _crop_pair((-5, 40))
    fixed = phase_cross_correlation(
        np.fft.fftn(ref), np.fft.fftn(mov), space="fourier", disambiguate=True
    )[0]
    assert_array_equal(fixed, [-5, 40])


@pytest.mark.parametrize("shift", [(3, -2), (0, 5)])
def test_disambiguate_keeps_small_shift(shift):
    ref, mov = _crop_pair(shift)
    plain = phase_cross_correlation(ref, mov, upsample_factor=4)[0]
    assert_array_equal(plain, shift)
    fixed = phase_cross_correlation(ref, mov, upsample_factor=4, disambiguate=True)[0]
    assert_array_equal(fixed, plain)


def test_disambiguate_degenerate_warns_and_keeps_shift():
    # A half-period shift of a 4-sample signal: both candidate overlaps have 2 samples only.
    ref = np.array([0.0, 1.0, 0.0, 2.0])
    mov = np.roll(ref, 2)
    plain = phase_cross_correlation(ref, mov)[0]
    assert_array_equal(plain, [2])
    with pytest.warns(RuntimeWarning, match="disambiguate"):
        fixed = phase_cross_correlation(ref, mov, disambiguate=True)[0]
    assert_array_equal(fixed, plain)


@pytest.mark.parametrize("space", ["real", "fourier"])
@pytest.mark.parametrize("value", [0.0, 3.5])
def test_blank_input_gives_zero_shift_and_error_one(space, value):
    ref, _ = shifted_pair((20, 21), (0, 0))
    blank = np.full(ref.shape, value)
    if space == "fourier":
        ref, blank = np.fft.fftn(ref), np.fft.fftn(blank)
    for pair in ((ref, blank), (blank, ref), (blank, blank)):
        shifts, error, phasediff = phase_cross_correlation(*pair, space=space, upsample_factor=10)
        assert shifts.dtype == np.float64
        assert_array_equal(shifts, [0, 0])
        assert (error, phasediff) == (1.0, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_offset_low_contrast_is_not_blank(dtype):
    # Variance ~1e-9 of the energy: the cheap blank test defers to an exact min/max check.
    ref, mov = shifted_pair((45, 47), (2.0, -3.0), noise=0.001)
    shifts = phase_cross_correlation(
        (1000 + ref * 0.05).astype(dtype), (1000 + mov * 0.05).astype(dtype), return_error=False
    )
    assert_array_equal(shifts, [2.0, -3.0])


def test_huge_values_do_not_overflow_into_errors():
    ref, mov = shifted_pair((33, 35), (2.0, -3.0))
    shifts, error, _ = phase_cross_correlation(
        (ref * 1e19).astype(np.float32), (mov * 1e19).astype(np.float32)
    )
    assert_array_equal(shifts, [2.0, -3.0])
    assert shifts.dtype == np.float32  # computed in double behind the scenes, returned single
    assert 0 <= error <= 1
    with pytest.raises(InputError, match="too large"):
        phase_cross_correlation(ref * 1e160, mov * 1e160)


# ----------------------------------------------------------------------- PhaseCorrelator


@pytest.mark.parametrize("upsample", [1, 50])
@pytest.mark.parametrize("normalization", ["phase", None])
def test_correlator_matches_function(upsample, normalization):
    ref, _ = shifted_pair((45, 47), (0, 0), seed=1)
    correlator = PhaseCorrelator(ref, upsample_factor=upsample, normalization=normalization)
    for i, shift in enumerate([(1.25, -2.5), (-3.7, 0.4), (0.0, 6.1)]):
        _, mov = shifted_pair((45, 47), shift, seed=1 + i)
        ours = correlator.register(mov, disambiguate=True)
        expected = phase_cross_correlation(
            ref,
            mov,
            upsample_factor=upsample,
            normalization=normalization,
            disambiguate=True,
        )
        assert_array_equal(ours[0], expected[0])
        assert ours[1:] == expected[1:]


def test_correlator_fourier_space_matches_function():
    ref, mov = shifted_pair((30, 31), (2.5, -1.25))
    spec_ref, spec_mov = np.fft.fftn(ref), np.fft.fftn(mov)
    ours = PhaseCorrelator(spec_ref, upsample_factor=8, space="fourier").register(spec_mov)
    expected = phase_cross_correlation(spec_ref, spec_mov, upsample_factor=8, space="fourier")
    assert_array_equal(ours[0], expected[0])
    assert ours[1:] == expected[1:]


def test_correlator_uses_reference_precision():
    ref, mov = shifted_pair((30, 31), (2.5, -1.25))
    correlator = PhaseCorrelator(ref.astype(np.float32), upsample_factor=4)
    shifts = correlator.register(mov)[0]
    assert shifts.dtype == np.float32
    assert_allclose(shifts, [2.5, -1.25], atol=0.25)


# -------------------------------------------------------------------------------- errors


def _bad_calls():
    a = np.zeros((8, 9))
    a[1, 2] = 1
    nan = a.copy()
    nan[0, 0] = np.nan
    inf = a.copy()
    inf[0, 0] = np.inf
    return [
        ((a, np.zeros((9, 8))), {}, "same shape"),
        ((a, np.zeros((8, 9, 2))), {}, "number of dimensions"),
        ((nan, a), {}, "reference_image contains NaN"),
        ((a, inf), {}, "moving_image contains NaN or infinite"),
        ((a, a), {"space": "spatial"}, "space"),
        ((a, a), {"space": 3}, "space"),
        ((a, a), {"normalization": "amplitude"}, "normalization"),
        ((a, a), {"upsample_factor": 0.5}, "upsample_factor"),
        ((a, a), {"upsample_factor": "10"}, "upsample_factor"),
        ((a, a), {"upsample_factor": np.inf}, "upsample_factor"),
        ((a, a), {"reference_mask": np.ones((9, 8), bool)}, "reference_mask"),
        ((a, a), {"moving_mask": np.ones((8,), bool)}, "moving_mask"),
        ((a, a), {"reference_mask": np.ones_like(a, bool), "overlap_ratio": 1.5}, "overlap_ratio"),
        ((a + 1j, a), {}, "complex"),
        ((a, a + 1j), {}, "complex"),
        ((a, a), {"return_error": "sometimes"}, "return_error"),
        ((np.zeros((0, 3)), np.zeros((0, 3))), {}, "non-empty"),
        ((np.float64(1.0), np.float64(1.0)), {}, "non-empty"),
        ((np.array(["a", "b"]), np.array(["a", "b"])), {}, "numeric"),
        ((a, a), {"space": "fourier", "reference_mask": np.ones_like(a, bool)}, "real-space"),
        ((a + 0j, nan + 0j), {"space": "fourier"}, "NaN"),
        ((a, a[:, :5]), {"reference_mask": np.ones_like(a, bool)}, "explicit moving_mask"),
    ]


@pytest.mark.parametrize(("args", "kwargs", "match"), _bad_calls())
def test_bad_input_raises_input_error(args, kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        phase_cross_correlation(*args, **kwargs)
    assert isinstance(info.value, ValueError)


def test_correlator_rejects_bad_moving_image():
    correlator = PhaseCorrelator(np.eye(6))
    with pytest.raises(InputError, match="same shape"):
        correlator.register(np.eye(5))
    with pytest.raises(InputError, match="complex"):
        correlator.register(np.eye(6) + 1j)
    with pytest.raises(InputError, match="NaN"):
        correlator.register(np.full((6, 6), np.nan))


# ------------------------------------------------------------------------ upsampled DFT


@pytest.mark.parametrize(
    "shape", [(7,), (8,), (6, 7), (5, 8), (4, 5, 6), (1, 6), (6, 1), (3, 4, 2, 5)]
)
def test_half_spectrum_dft_equals_full_spectrum_dft(shape):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(shape)
    positions = [rng.uniform(-n, n, 3) for n in shape]
    full = dft_at(np.fft.fftn(signal), positions)
    half = dft_at_half(np.fft.rfftn(signal), shape, positions)
    assert half.shape == (3,) * len(shape)
    assert_allclose(half, full, rtol=1e-10, atol=1e-10 * np.abs(full).max())


def test_dft_at_matches_explicit_sum():
    rng = np.random.default_rng(1)
    spectrum = rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5))
    xs, ys = np.array([0.3, -1.7]), np.array([2.2, 0.0, -0.5])
    f0, f1 = np.fft.fftfreq(4), np.fft.fftfreq(5)
    expected = np.array(
        [
            [
                np.sum(spectrum * np.exp(2j * np.pi * (f0[:, None] * x + f1[None, :] * y)))
                for y in ys
            ]
            for x in xs
        ]
    )
    assert_allclose(dft_at(spectrum, [xs, ys]), expected, rtol=1e-12)


@pytest.mark.parametrize("upsample", [10, 37, 100, 1000])
def test_refine_peak_coarse_to_fine_equals_exhaustive(upsample):
    rng = np.random.default_rng(upsample)
    shape = (24, 25)
    spectrum = np.fft.fftn(shifted_pair(shape, (0, 0), seed=upsample)[0])
    true = rng.uniform(-0.5, 0.5, 2) + np.array([3, -4])
    # |S|^2 exp(-2πi f·true): its inverse DFT is an autocorrelation peaking at ``true``.
    freqs = np.fft.fftfreq(24)[:, None] * true[0] + np.fft.fftfreq(25)[None, :] * true[1]
    product = np.abs(spectrum) ** 2 * np.exp(-2j * np.pi * freqs)

    def evaluate(pos):
        return dft_at(product, pos)

    start = np.array([3.0, -4.0])
    found, value = refine_peak(evaluate, start, upsample, shape)
    region = int(np.ceil(1.5 * upsample))
    offsets = np.arange(region) - region // 2
    grid = evaluate([start[0] + offsets / upsample, start[1] + offsets / upsample])
    index = np.unravel_index(np.argmax(np.abs(grid)), grid.shape)
    assert_allclose(found, start + offsets[list(index)] / upsample, atol=1e-12)
    assert_allclose(value, grid[index])
    assert_allclose(found, true, atol=1 / upsample + 0.02)
