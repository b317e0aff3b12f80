"""Bidirectional scan-phase correction: known line offsets recovered and removed."""

import re

import numpy as np
import pytest
import zarr
from conftest import drifting_frames, random_walk
from numpy.testing import assert_allclose
from scipy import ndimage

from chunkreg.cli import main
from chunkreg.errors import InputError
from chunkreg.testing import textured_image
from chunkreg.timeseries import correct_bidiphase, estimate_bidiphase, register_timeseries

SYNC = {"scheduler": "synchronous", "progress": False}


def displace_odd_lines(frames, offset):
    """Odd lines (axis -2) show the scene at x - offset, as a resonant scanner's would."""
    out = np.array(frames, dtype=np.float32, copy=True)
    odd = out[..., 1::2, :]
    lines = odd.reshape(-1, out.shape[-1])
    out[..., 1::2, :] = ndimage.shift(lines, (0, offset), order=3, mode="nearest").reshape(
        odd.shape
    )
    return out


@pytest.mark.parametrize("offset", [0.5, 0.8, 1.37, 2.0, 3.0, -1.7])
@pytest.mark.parametrize("shape", [(128, 128), (96, 160), (6, 48, 64)])
def test_known_offset_recovered_within_a_tenth(offset, shape):
    scene = textured_image(shape, seed=3)
    frame = displace_odd_lines(scene, offset)
    frame += np.random.default_rng(0).normal(0, 0.02, shape).astype(np.float32)
    estimate = estimate_bidiphase(frame)
    assert abs(estimate - offset) < 0.1
    corrected = correct_bidiphase(frame.copy(), estimate)
    inner = (..., slice(8, -8))
    # after correction only the added noise is left (sd 0.02, mean |n| 0.016)
    assert np.abs(corrected - scene)[inner].mean() < 0.018
    assert np.abs(frame - scene)[inner].mean() > 0.02


def test_no_offset_and_flat_frames():
    scene = textured_image((64, 64), seed=1)
    assert abs(estimate_bidiphase(scene)) < 0.05
    assert estimate_bidiphase(np.full((32, 32), 0.3)) == 0.0
    frame = scene.copy()
    assert correct_bidiphase(frame, 0.0) is frame


def test_bad_input():
    with pytest.raises(InputError, match="at least 4 lines of 8 pixels"):
        estimate_bidiphase(np.zeros((3, 64)))
    with pytest.raises(InputError, match="finite"):
        estimate_bidiphase(np.full((16, 16), np.nan))
    with pytest.raises(InputError, match="upsample_factor"):
        estimate_bidiphase(np.zeros((16, 16)), upsample_factor=0)
    with pytest.raises(InputError, match="floating-point"):
        correct_bidiphase(np.zeros((16, 16), np.uint8), 1.0)


def _movie(offset, n=8):
    positions = random_walk(n, 2, seed=5, max_drift=4.0)
    frames = drifting_frames((96, 96), positions, seed=5, margin=12)
    return displace_odd_lines(frames, offset), positions[0] - positions


@pytest.mark.parametrize("offset", [0.6, 2.4])
def test_register_timeseries_measures_records_and_corrects(tmp_path, to_zarr, offset):
    movie, truth = _movie(offset)
    clean, _ = _movie(0.0)
    out = tmp_path / "out.zarr"
    result = register_timeseries(to_zarr(movie), out, bidiphase="auto", upsample_factor=20, **SYNC)
    used = zarr.open_group(str(out), mode="r").attrs["bidiphase"]
    assert abs(used - offset) < 0.1
    assert result.notes["bidiphase offset (px)"] == round(used, 3)
    assert_allclose(result.shifts, truth, atol=0.15)
    plain = register_timeseries(
        to_zarr(clean, name="clean.zarr"), tmp_path / "plain.zarr", upsample_factor=20, **SYNC
    )
    corrected = zarr.open_group(str(out), mode="r")["corrected"][...]
    reference = zarr.open_group(str(tmp_path / "plain.zarr"), mode="r")["corrected"][...]
    inner = (slice(None), slice(12, -12), slice(12, -12))
    # the corrected movie matches the one corrected from frames that never had the offset
    assert np.abs(corrected - reference)[inner].mean() < 0.01
    assert_allclose(result.shifts, plain.shifts, atol=0.1)


def test_given_offset_none_and_bad_values(tmp_path, to_zarr):
    movie, _ = _movie(2.0)
    stack = to_zarr(movie)
    result = register_timeseries(stack, tmp_path / "given.zarr", bidiphase=2.0, **SYNC)
    assert zarr.open_group(str(tmp_path / "given.zarr"), mode="r").attrs["bidiphase"] == 2.0
    assert result.notes["bidiphase offset (px)"] == 2.0
    plain = register_timeseries(stack, tmp_path / "plain.zarr", **SYNC)
    assert not any("bidiphase" in key for key in plain.notes)
    assert "bidiphase" not in zarr.open_group(str(tmp_path / "plain.zarr"), mode="r").attrs
    for bad, message in (("yes", "bidiphase must be 'auto', a number"), (np.inf, "finite")):
        with pytest.raises(InputError, match=message):
            register_timeseries(stack, tmp_path / "bad.zarr", bidiphase=bad, **SYNC)
        assert not (tmp_path / "bad.zarr").exists()


def test_drift_command_bidiphase(tmp_path, capsys):
    movie, _ = _movie(1.5)
    zarr.create_array(str(tmp_path / "movie.zarr"), data=movie, chunks=(1, 96, 96))
    out = tmp_path / "drift.zarr"
    argv = ["drift", str(tmp_path / "movie.zarr"), str(out), "--scheduler", "synchronous"]
    assert main([*argv, "--bidiphase", "auto", "--no-progress"]) == 0
    printed = re.search(r"bidiphase offset \(px\): (\S+)", capsys.readouterr().out)
    assert abs(float(printed.group(1)) - 1.5) < 0.1
    assert abs(zarr.open_group(str(out), mode="r").attrs["bidiphase"] - 1.5) < 0.1
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--bidiphase", "often"])
    assert exit_info.value.code == 2
    assert "expected auto or an offset in pixels; got 'often'" in capsys.readouterr().err
