"""Shared fixtures for the time-series tests."""

import numpy as np
import pytest


def random_walk(n_frames, ndim, *, seed=0, max_drift=20.0):
    """Subpixel random-walk positions (n_frames, ndim) starting at 0, |p| <= max_drift."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 1.0, (n_frames, ndim))
    steps[0] = 0.0
    pos = np.cumsum(steps, axis=0)
    pos *= max_drift / max(np.abs(pos).max(), 1e-9)
    return pos


def drifting_frames(shape, positions, *, seed=0, noise=0.02, margin=24, sigma=2.0):
    """Frames of a textured scene moved to ``positions`` (frame t(x) = scene(x - p_t)).

    The scene is larger than a frame by ``margin`` on every side; each frame is the scene
    shifted with ``scipy.ndimage.fourier_shift`` and cropped, plus Gaussian noise. The shift
    registering frame t onto frame 0 is ``positions[0] - positions[t]``.
    """
    from scipy import ndimage

    from chunkreg.testing import textured_image

    big = textured_image(tuple(n + 2 * margin for n in shape), seed=seed, sigma=sigma)
    spectrum = np.fft.fftn(big)
    crop = tuple(slice(margin, margin + n) for n in shape)
    rng = np.random.default_rng(seed + 1)
    frames = np.empty((len(positions), *shape), np.float32)
    for t, p in enumerate(positions):
        moved = np.fft.ifftn(ndimage.fourier_shift(spectrum, p)).real[crop]
        frames[t] = moved + rng.normal(0.0, noise, shape)
    return frames


@pytest.fixture
def to_zarr(tmp_path):
    """Store an array as a zarr array under tmp_path and return the opened array."""
    import zarr

    def make(data, name="stack.zarr", chunks=None):
        chunks = chunks or (1, *data.shape[1:])
        return zarr.create_array(str(tmp_path / name), data=data, chunks=chunks)

    return make
