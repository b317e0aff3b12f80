"""`chunkreg blocks`, `chunkreg warp` and `chunkreg qc` on small generated volumes."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from chunkreg import blockwise_shifts
from chunkreg.cli import main
from chunkreg.io import open_array
from chunkreg.testing import textured_image

SHIFT = np.array([2.4, -3.1])
SYNC = ["--scheduler", "synchronous", "--no-progress"]


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    ref = textured_image((128, 96), seed=3) + rng.normal(0, 0.02, (128, 96))
    mov = ndimage.shift(ref, -SHIFT, order=3, mode="nearest")  # shift(mov, SHIFT) ~ ref
    zarr.create_array(tmp_path / "ref.zarr", data=ref.astype(np.float32), chunks=(32, 32))
    zarr.create_array(tmp_path / "mov.zarr", data=mov.astype(np.float32), chunks=(32, 32))
    return tmp_path / "ref.zarr", tmp_path / "mov.zarr"


def test_blocks_then_warp_then_qc(volumes, tmp_path, capsys):
    ref, mov = volumes
    out, flow, warped = tmp_path / "blocks.zarr", tmp_path / "flow.zarr", tmp_path / "w.zarr"
    argv = ["blocks", str(ref), str(mov), str(out), "--block", "64,48", "--overlap", "8"]
    assert main([*argv, "--flow", str(flow), *SYNC]) == 0
    printed = capsys.readouterr().out
    assert "blocks: 4 done, 0 skipped" in printed and "reliable blocks: 4 of 4" in printed
    assert "seam metric" in printed
    shifts = zarr.open_group(out, mode="r")["shifts"][...]
    assert_allclose(shifts.reshape(-1, 2), np.broadcast_to(SHIFT, (4, 2)), atol=0.15)
    expected = blockwise_shifts(
        ref,
        mov,
        tmp_path / "api.zarr",
        block=(64, 48),
        overlap=8,
        scheduler="synchronous",
        progress=False,
    )
    assert_array_equal(shifts, expected.shifts)  # the CLI is the API
    assert main([*argv, "--flow", str(flow), *SYNC]) == 0  # resume: nothing to do
    assert "blocks: 0 done, 4 skipped" in capsys.readouterr().out

    argv = ["warp", str(mov), str(flow), str(warped), "--reference", str(ref), "--tile", "64"]
    assert main([*argv, *SYNC]) == 0
    assert "tiles: 4 done" in capsys.readouterr().out
    registered = open_array(warped)[...]
    inner = (slice(8, -8), slice(8, -8))
    reference, moving = open_array(ref)[...], open_array(mov)[...]
    assert (
        np.abs(registered - reference)[inner].mean()
        < 0.2 * np.abs(moving - reference)[inner].mean()
    )

    assert main(["qc", str(out), "--worst", "2"]) == 0
    text = capsys.readouterr().out
    assert "blocks: 4 in a grid of (2, 2)" in text and "worst blocks" in text
    assert main(["qc", str(warped), "--plot", str(tmp_path / "qc.png")]) == 0
    assert "figure written" in capsys.readouterr().out
    assert (tmp_path / "qc.png").read_bytes()[:4] == b"\x89PNG"


def test_dry_runs_print_the_plan_and_write_nothing(volumes, tmp_path, capsys):
    ref, mov = volumes
    out = tmp_path / "out.zarr"
    assert main(["blocks", str(ref), str(mov), str(out), "--block", "32", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "blocks: 12 in a grid of (4, 3)" in text and "read amplification 1.00x" in text
    zarr.create_array(tmp_path / "flow.zarr", shape=(2, 128, 96), dtype="f4", chunks=(1, 32, 32))
    assert main(["warp", str(mov), str(tmp_path / "flow.zarr"), str(out), "--dry-run"]) == 0
    assert "tiles: 1 in a grid of (1, 1)" in capsys.readouterr().out
    assert not out.exists()


def test_bad_input_exits_2_with_a_message(volumes, tmp_path, capsys):
    ref, _ = volumes
    zarr.create_array(tmp_path / "small.zarr", shape=(64, 64), dtype="f4", chunks=(32, 32))
    out = tmp_path / "out.zarr"
    assert main(["blocks", str(ref), str(tmp_path / "small.zarr"), str(out), *SYNC]) == 2
    assert "same shape" in capsys.readouterr().err
    assert main(["blocks", str(ref), str(ref), str(out), "--block", "4", *SYNC]) == 2
    assert "block must be >= 8" in capsys.readouterr().err
    assert main(["warp", str(ref), str(ref), str(out), *SYNC]) == 2
    assert "flow must have shape" in capsys.readouterr().err
    assert main(["qc", str(ref)]) == 2
    assert "not a chunkreg output group" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["blocks", str(ref), str(ref), str(out), "--block", "a,b"])
