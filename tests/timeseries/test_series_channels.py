"""Multi-channel movies: drift measured on one channel, every channel corrected by it."""

import numpy as np
import pytest
import zarr
from conftest import drifting_frames, random_walk
from numpy.testing import assert_array_equal
from ome_zarr_models.v05.image import Image

from chunkreg import register_timeseries
from chunkreg.errors import InputError
from chunkreg.timeseries._frames import fourier_shift_frame

SYNC = {"scheduler": "synchronous", "progress": False, "csv_path": False}


def _save(path, data, names=None, chunks=None):
    chunks = chunks or (1,) * (data.ndim - 2) + data.shape[-2:]
    zarr.create_array(str(path), data=data, chunks=chunks, dimension_names=names)
    return str(path)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """A (t, c, y, x) movie of known drift: channel 1 textured, channel 0 another scene."""
    d = tmp_path_factory.mktemp("movie")
    positions = random_walk(10, 2, seed=3, max_drift=4.0)
    nuclei = drifting_frames((48, 48), positions, seed=5)
    other = drifting_frames((48, 48), positions, seed=9)
    both = np.stack([other, nuclei], axis=1)
    return {
        "dir": d,
        "positions": positions,
        "channels": [other, nuclei],
        "named": _save(d / "named.zarr", both, ("t", "c", "y", "x")),
        "plain": _save(d / "plain.zarr", both),
        "alone": _save(d / "alone.zarr", nuclei),
    }


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_registration_channel_drift_corrects_every_channel(movie, tmp_path, reference):
    one = register_timeseries(movie["alone"], tmp_path / "one.zarr", reference=reference, **SYNC)
    both = register_timeseries(movie["named"], tmp_path / "both.zarr", channel=1,
                               reference=reference, **SYNC)  # fmt: skip
    # the shifts are the single-channel run's on the registration channel, and they are right
    assert_array_equal(both.shifts, one.shifts)
    truth = movie["positions"][0] - movie["positions"]
    # (frame to frame, the links' errors add up)
    assert np.abs(both.shifts - truth).max() < (0.15 if reference == "first" else 0.3)
    corrected = zarr.open_array(str(tmp_path / "both.zarr"), path="corrected")[...]
    assert corrected.shape == (10, 2, 48, 48)
    alone = zarr.open_array(str(tmp_path / "one.zarr"), path="corrected")[...]
    assert_array_equal(corrected[:, 1], alone)
    # the other channel is moved by the same shifts
    other = movie["channels"][0]
    expected = np.stack(
        [fourier_shift_frame(f, s) for f, s in zip(other, both.shifts, strict=True)]
    )
    np.testing.assert_allclose(corrected[:, 0], expected, atol=1e-5)
    # ... which registers it too: its last frame matches its first where both have data
    inner = (slice(8, -8), slice(8, -8))
    after = np.abs(corrected[-1, 0][inner] - corrected[0, 0][inner]).mean()
    before = np.abs(other[-1][inner] - other[0][inner]).mean()
    assert after < 0.3 * before
    group = zarr.open_group(str(tmp_path / "both.zarr"), mode="r")
    axes = Image.from_zarr(group).ome_attributes.multiscales[0].axes
    assert [(a.name, a.type) for a in axes] == [
        ("t", "time"), ("c", "channel"), ("y", "space"), ("x", "space")
    ]  # fmt: skip


def test_plain_movie_needs_channel_and_default_is_channel_0(movie, tmp_path):
    # a plain 4-D stack without channel= is a series of 3-D frames (here refused: 2 z planes)
    with pytest.raises(InputError):
        register_timeseries(movie["plain"], tmp_path / "x.zarr", **SYNC)
    plain = register_timeseries(movie["plain"], tmp_path / "p.zarr", channel=1, **SYNC)
    named = register_timeseries(movie["named"], tmp_path / "n.zarr", channel=1, **SYNC)
    assert_array_equal(plain.shifts, named.shifts)
    first = register_timeseries(movie["named"], tmp_path / "f.zarr", apply=False, **SYNC)
    channel0 = _save(tmp_path / "c0.zarr", movie["channels"][0])
    zero = register_timeseries(channel0, tmp_path / "z.zarr", apply=False, **SYNC)
    assert_array_equal(first.shifts, zero.shifts)


def test_channel_errors_write_nothing(movie, tmp_path):
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match="out of range"):
        register_timeseries(movie["named"], out, channel=2, **SYNC)
    with pytest.raises(InputError, match="no channel axis"):
        register_timeseries(_save(tmp_path / "s.zarr", movie["channels"][1], ("t", "y", "x")),
                            out, channel=0, **SYNC)  # fmt: skip
    assert not out.exists()
