"""``chunkreg drift`` end to end."""

import subprocess
import sys

import numpy as np
import zarr
from conftest import drifting_frames, random_walk
from numpy.testing import assert_allclose

from chunkreg.cli import main


def _stack(tmp_path, n=6):
    positions = random_walk(n, 2, seed=11, max_drift=6.0)
    frames = drifting_frames((64, 64), positions, seed=11)
    frames[3] = 0.5  # a blank frame
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames, chunks=(1, 64, 64))
    return positions[0] - positions


def test_drift_command_writes_outputs_and_summary(tmp_path, capsys):
    truth = _stack(tmp_path)
    out = tmp_path / "drift.zarr"
    code = main(
        [
            "drift",
            str(tmp_path / "movie.zarr"),
            str(out),
            "--reference",
            "mean",
            "--upsample",
            "20",
            "--scheduler",
            "synchronous",
            "--no-progress",
            "--plot",
            str(tmp_path / "drift.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "max drift" in captured.out and "1 frame(s) with low quality" in captured.out
    assert "some frames have low quality" in captured.err
    shifts = zarr.open_group(str(out), mode="r")["shifts"][...]
    good = [0, 1, 2, 4, 5]
    assert_allclose(shifts[good], truth[good], atol=0.1)
    assert (tmp_path / "drift_shifts.csv").exists()
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drift_command_piecewise_no_apply_and_index_reference(tmp_path, capsys):
    _stack(tmp_path)
    out = tmp_path / "pw.zarr"
    code = main(
        [
            "drift",
            str(tmp_path / "movie.zarr"),
            str(out),
            "--reference",
            "2",
            "--piecewise",
            "--patch",
            "32",
            "--overlap",
            "8",
            "--no-apply",
            "--scheduler",
            "synchronous",
            "--no-progress",
        ]
    )
    assert code == 0
    group = zarr.open_group(str(out), mode="r")
    assert "corrected" not in group and group["patch_shifts"].shape == (6, 3, 3, 2)
    assert np.allclose(group["shifts"][2], 0.0)


def test_drift_command_bad_input_exit_code_2(tmp_path, capsys):
    zarr.create_array(str(tmp_path / "image.zarr"), data=np.zeros((32, 32), np.float32))
    code = main(["drift", str(tmp_path / "image.zarr"), str(tmp_path / "o.zarr"), "--no-progress"])
    assert code == 2
    assert "series of 2-D or 3-D frames" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    _stack(tmp_path)
    code = main(
        ["drift", str(tmp_path / "movie.zarr"), str(tmp_path / "o.zarr"), "--reference", "9"]
    )
    assert code == 2 and "out of range" in capsys.readouterr().err


def test_drift_help_lists_options():
    result = subprocess.run(
        [sys.executable, "-m", "chunkreg", "drift", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for option in ("--reference", "--piecewise", "--patch", "--no-apply", "--scheduler", "--plot"):
        assert option in result.stdout


def test_drift_command_exits_1_on_a_failed_batch_and_a_rerun_completes(tmp_path, capsys,
                                                                       monkeypatch):  # fmt: skip
    from chunkreg.timeseries import _register as register_module

    truth = _stack(tmp_path)
    out = tmp_path / "drift.zarr"
    real = register_module.register_batch

    def flaky(batch):
        if batch.index == 1:
            raise OSError("disk went away (injected)")
        return real(batch)

    monkeypatch.setattr(register_module, "register_batch", flaky)
    args = ["drift", str(tmp_path / "movie.zarr"), str(out), "--batch", "2", "--scheduler",
            "synchronous", "--no-progress"]  # fmt: skip
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "disk went away (injected)" in captured.out and "run again" in captured.err
    assert not (tmp_path / "drift_shifts.csv").exists()  # written once every frame is done
    monkeypatch.setattr(register_module, "register_batch", real)
    assert main(args) == 0
    shifts = zarr.open_group(str(out), mode="r")["shifts"][...]
    assert_allclose(shifts[[0, 1, 2, 4, 5]], truth[[0, 1, 2, 4, 5]], atol=0.1)
    assert (tmp_path / "drift_shifts.csv").exists()
