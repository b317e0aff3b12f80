"""Sharded mosaics: shard files on disk, fusion tasks of whole shards, exact resume."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from chunkreg import stitch
from chunkreg.errors import InputError
from chunkreg.stitching import _stitch as stitch_module

SYNC = {"scheduler": "synchronous", "progress": False, "register": False}


def _files(array_dir) -> int:
    return sum(1 for p in (array_dir / "c").rglob("*") if p.is_file())


def test_sharded_mosaic_matches_unsharded_and_resumes(make_mosaic, tmp_path, monkeypatch):
    mosaic = make_mosaic((3, 3), (96, 96), 0.125, 1.2, seed=1)
    args = (mosaic.group_path, mosaic.layout)
    plain = stitch(*args, tmp_path / "plain.zarr", chunks=32, **SYNC)
    fused = zarr.open_group(plain.output, mode="r")["0"]
    assert fused.shards is None
    shape = fused.shape
    out = tmp_path / "sharded.zarr"
    real = stitch_module.fuse_task
    calls = []

    failing = []

    def flaky(task):  # the second block fails on every try (retries included)
        calls.append(task.start)
        if not failing and task.start != calls[0]:
            failing.append(task.start)
        if task.start in failing:
            raise OSError("disk went away")
        return real(task)

    monkeypatch.setattr(stitch_module, "fuse_task", flaky)
    failed = stitch(*args, out, chunks=32, shards=(64, 96), **SYNC)  # reported, not raised
    assert failed.report.n_failed == 1 and failed.reports["fusion"].n_failed == 1
    assert failed.report.failures[0].description.startswith("fusion: ")
    assert "pyramid" not in failed.reports  # display levels wait for a complete mosaic
    monkeypatch.setattr(stitch_module, "fuse_task", real)
    result = stitch(*args, out, chunks=32, shards=(64, 96), **SYNC)
    assert result.reports["fusion"].n_done == 1  # only the failed task was redone
    sharded = zarr.open_group(result.output, mode="r")["0"]
    assert sharded.shards == (64, 96)
    grid = [-(-n // s) for n, s in zip(shape, (64, 96), strict=True)]
    assert _files(out / "0") == grid[0] * grid[1]
    # each fusion task wrote whole shards: every task's block starts on a shard corner
    assert all(s[0] % 64 == 0 and s[1] % 96 == 0 for s in calls)
    assert_array_equal(sharded[...], fused[...])


def test_mosaic_shards_must_fit_the_chunks(make_mosaic, tmp_path):
    mosaic = make_mosaic((2, 2), (64, 64), 0.125, 0.0, seed=2)
    with pytest.raises(InputError, match="shards must be a whole multiple of the chunks"):
        stitch(mosaic.group_path, mosaic.layout, tmp_path / "o.zarr", chunks=32, shards=48, **SYNC)
    assert not (tmp_path / "o.zarr").exists()
    assert np.isfinite(mosaic.truth).all()
