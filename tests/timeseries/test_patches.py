"""The batched patch correlator against per-patch phase_cross_correlation and known shifts."""

import numpy as np
import pytest
from conftest import drifting_frames
from numpy.testing import assert_allclose

from chunkreg import phase_cross_correlation
from chunkreg.timeseries._patches import PatchCorrelator, taper_batch
from chunkreg.timeseries._piecewise import _shift_batch


@pytest.mark.parametrize("normalization", [None, "phase"])
@pytest.mark.parametrize("shape", [(40, 48), (16, 20, 24)])
def test_matches_phase_cross_correlation_per_patch(shape, normalization):
    rng = np.random.default_rng(0)
    positions = rng.uniform(-3, 3, (5, len(shape)))
    frames = drifting_frames(shape, np.vstack([np.zeros(len(shape)), positions]), noise=0.01)
    reference = np.broadcast_to(frames[0], (5, *shape))
    shifts, quality = PatchCorrelator(
        reference, upsample_factor=10, normalization=normalization
    ).register(frames[1:])
    ref_t, mov_t = taper_batch(reference), taper_batch(frames[1:])
    for p in range(5):
        oracle, _, _ = phase_cross_correlation(
            ref_t[p], mov_t[p], upsample_factor=10, normalization=normalization
        )
        # one grid step at most; whitened correlations of small noisy patches have flat peaks,
        # where maximising Re(CC) exhaustively (here) and |CC| coarse to fine (chunkreg's
        # phase_cross_correlation) may pick samples two steps apart
        tol = 0.1 if normalization is None else 0.2
        assert_allclose(shifts[p], oracle, atol=tol + 1e-6)
    if normalization is None and len(shape) == 2:
        # one tapered correlation is biased towards 0 (the taper does not move with the
        # content; patch_shifts' second pass removes it): within 0.3 px on 40 x 48 patches
        assert_allclose(shifts, -positions, atol=0.3)
        assert np.all(quality > 0.8) and np.all(quality <= 1)


def test_blank_patch_has_zero_quality():
    reference = drifting_frames((32, 32), np.zeros((2, 2)))
    shifts, quality = PatchCorrelator(reference).register(
        np.stack([reference[0], np.zeros((32, 32), np.float32)])
    )
    assert quality[1] == 0.0 and np.isfinite(shifts).all()
    assert quality[0] == pytest.approx(1.0, abs=1e-4)


def test_shift_batch_applies_each_patch_its_own_shift():
    from chunkreg.timeseries._frames import fourier_shift_frame

    patches = drifting_frames((32, 40), np.zeros((3, 2)), noise=0.0, seed=3)
    patches[1] = np.roll(patches[1], 5, axis=1)
    shifts = np.array([[0.5, -0.25], [1.0, 2.0], [0.0, 0.0]])
    moved = _shift_batch(patches, shifts, pad=0)
    for p in range(3):
        expected = fourier_shift_frame(patches[p], shifts[p], fill_value=np.nan)
        valid = np.isfinite(expected)
        assert_allclose(moved[p][valid], expected[valid], atol=1e-5)
