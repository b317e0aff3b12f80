"""Sharded corrected stacks: shard files on disk, batches of whole shards, exact resume."""

import numpy as np
import pytest
import zarr
from conftest import drifting_frames, random_walk
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.timeseries import _register as register_module
from chunkreg.timeseries import register_timeseries

SYNC = {"scheduler": "synchronous", "progress": False}


@pytest.fixture
def stack(tmp_path):
    frames = drifting_frames((32, 32), random_walk(20, 2, seed=5, max_drift=4.0), seed=5)
    data = np.clip(frames * 1000 + 2000, 0, 65535).astype(np.uint16)
    return zarr.create_array(str(tmp_path / "stack.zarr"), data=data, chunks=(1, 32, 32))


def _files(array_dir) -> int:
    return sum(1 for p in (array_dir / "c").rglob("*") if p.is_file())


def test_sharded_corrected_stack_matches_unsharded(tmp_path, stack):
    plain = register_timeseries(stack, tmp_path / "plain.zarr", **SYNC)
    assert zarr.open_array(str(tmp_path / "plain.zarr"), path="corrected").shards is None
    assert _files(tmp_path / "plain.zarr" / "corrected") == 20
    out = tmp_path / "sharded.zarr"
    result = register_timeseries(stack, out, shards=(8, 32, 32), batch_size=3, **SYNC)
    corrected = zarr.open_array(str(out), path="corrected")
    assert corrected.shards == (8, 32, 32)
    assert _files(out / "corrected") == 3  # frames 0-7, 8-15, 16-19
    # the batch was rounded up to whole shards: 3 batches of 8 frames (one writer per shard)
    assert result.reports["register"].n_tasks == 3
    assert_array_equal(
        corrected[...], zarr.open_array(str(tmp_path / "plain.zarr"), path="corrected")[...]
    )
    assert_array_equal(result.shifts, plain.shifts)


def test_stack_shards_are_kept_by_default(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (12, 16, 16), dtype=np.uint16)
    sharded = zarr.create_array(
        str(tmp_path / "s.zarr"), data=data, chunks=(1, 16, 16), shards=(4, 16, 16)
    )
    register_timeseries(sharded, tmp_path / "o.zarr", **SYNC)
    assert zarr.open_array(str(tmp_path / "o.zarr"), path="corrected").shards == (4, 16, 16)


def test_misaligned_series_shards_refused(tmp_path, stack):
    with pytest.raises(InputError, match="shards must be a whole multiple of the chunks"):
        register_timeseries(
            stack, tmp_path / "o.zarr", chunks=(2, 32, 32), shards=(3, 32, 32), **SYNC
        )
    assert not (tmp_path / "o.zarr").exists()


def test_sharded_series_resumes_exactly(tmp_path, stack, monkeypatch):
    kwargs = {"shards": (4, 32, 32), "batch_size": 4, **SYNC}
    clean = register_timeseries(stack, tmp_path / "clean.zarr", **kwargs)
    real_register = register_module.register_batch

    def flaky(batch):
        if batch.index == 2:
            raise OSError("disk went away")
        return real_register(batch)

    monkeypatch.setattr(register_module, "register_batch", flaky)
    out = tmp_path / "o.zarr"
    failed = register_timeseries(stack, out, **kwargs)
    assert failed.report.n_failed == 1 and failed.reports["register"].n_done == 4
    monkeypatch.setattr(register_module, "register_batch", real_register)
    resumed = register_timeseries(stack, out, **kwargs)
    assert resumed.reports["register"].n_skipped == 4 and resumed.reports["register"].n_done == 1
    expected = zarr.open_array(str(tmp_path / "clean.zarr"), path="corrected")[...]
    assert_array_equal(zarr.open_array(str(out), path="corrected")[...], expected)
    assert_array_equal(resumed.shifts, clean.shifts)


def test_drift_cli_shards(tmp_path, stack):
    from chunkreg.cli import main

    out = tmp_path / "cli.zarr"
    argv = ["drift", str(tmp_path / "stack.zarr"), str(out), "--scheduler", "synchronous"]
    assert main([*argv, "--no-progress", "--shards", "5,32,32", "--batch", "2"]) == 0
    corrected = zarr.open_array(str(out), path="corrected")
    assert corrected.shards == (5, 32, 32)
    assert _files(out / "corrected") == 4
    plain = tmp_path / "plain.zarr"
    assert main(["drift", str(tmp_path / "stack.zarr"), str(plain), "--scheduler", "synchronous",
                 "--no-progress", "--shards", "none"]) == 0  # fmt: skip
    assert zarr.open_array(str(plain), path="corrected").shards is None
    assert_array_equal(corrected[...], zarr.open_array(str(plain), path="corrected")[...])
