"""Sharded outputs of the volume workflows: inherited shards, --shards, alignment, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow

from .kernels import box_flow, flaky_box_flow

SYNC = {"scheduler": "synchronous", "progress": False}
SHAPE, CHUNKS, SHARDS, TILE = (192, 160), (40, 48), (80, 96), (80, 96)


def _files(array_dir: Path) -> int:
    """Chunk or shard files of one zarr v3 array (everything under its ``c/``)."""
    return sum(1 for p in (array_dir / "c").rglob("*") if p.is_file())


@pytest.fixture
def sharded_pair(tmp_path):
    ref = textured_image(SHAPE, seed=3, sigma=2.0)
    mov = apply_flow(ref, -smooth_displacement(SHAPE, amplitude=1.5, seed=4))
    paths = []
    for name, data in (("reference", ref), ("moving", mov)):
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), data=data, chunks=CHUNKS, shards=SHARDS)
        paths.append(str(path))
    return paths


def test_flow_keeps_the_input_shards(tmp_path, sharded_pair):
    kwargs = {"method": box_flow, "levels": 1, "overlap": 4, "tile": TILE, **SYNC}
    sharded = tmp_path / "sharded.zarr"
    compute_flow(*sharded_pair, sharded, **kwargs)
    flow = zarr.open_array(str(sharded), path="flow")
    assert flow.shards == (2, *SHARDS)
    assert flow.chunks == (1, *CHUNKS)
    assert _files(sharded / "flow") == 3 * 2  # one file per shard
    plain = tmp_path / "plain.zarr"
    compute_flow(*sharded_pair, plain, shards=None, **kwargs)
    assert zarr.open_array(str(plain), path="flow").shards is None
    assert _files(plain / "flow") == 2 * 5 * 4  # one file per chunk
    assert_array_equal(flow[...], zarr.open_array(str(plain), path="flow")[...])


def test_explicit_shards_and_default_tile_align(tmp_path, sharded_pair):
    out = tmp_path / "out.zarr"
    compute_flow(*sharded_pair, out, method=box_flow, levels=1, overlap=4,
                 shards=(120, 96), **SYNC)  # fmt: skip
    flow = zarr.open_array(str(out), path="flow")
    assert flow.shards == (2, 120, 96)
    # the default tile is chosen as whole shards (here: the whole volume fits one tile)
    assert _files(out / "flow") == 2 * 2


def test_misaligned_shards_and_tiles_are_refused(tmp_path, sharded_pair):
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError) as info:
        compute_flow(
            *sharded_pair, out, method=box_flow, levels=1, overlap=4, tile=(40, 48), **SYNC
        )
    assert str(info.value) == (
        "tile must be a whole number of shards along axis 0 so that each shard is written by "
        "one task (resume and write-once depend on it): got 40 for shard 80; use 80, or other "
        "shards (shards=/--shards)."
    )
    with pytest.raises(InputError, match="shards must be a whole multiple of the chunks"):
        compute_flow(
            *sharded_pair, out, method=box_flow, levels=1, overlap=4, shards=(60, 96), **SYNC
        )
    assert not out.exists()


def test_sharded_resume_after_a_failed_tile(tmp_path, sharded_pair):
    marker = tmp_path / "outage"
    kwargs = {"method": flaky_box_flow, "tile": TILE, "overlap": 4, "levels": 1, **SYNC}
    kwargs.update(bad_shape=(88, 68), marker=str(marker))  # tile (1, 1)
    clean = tmp_path / "clean.zarr"
    compute_flow(*sharded_pair, clean, **kwargs)
    out = tmp_path / "out.zarr"
    marker.touch()
    report = compute_flow(*sharded_pair, out, **kwargs)
    assert report.n_failed == 1
    marker.unlink()
    report = compute_flow(*sharded_pair, out, **kwargs)
    assert report.n_failed == 0 and report.n_skipped == 5
    expected = zarr.open_array(str(clean), path="flow")[...]
    assert np.isfinite(expected).all()
    assert_array_equal(zarr.open_array(str(out), path="flow")[...], expected)


def test_warp_shards(tmp_path, sharded_pair):
    from chunkreg.volume import warp_volume

    flow = np.zeros((2, *SHAPE), np.float32)
    flow[0], flow[1] = 1.0, 2.0
    flow_path = tmp_path / "f.zarr"
    zarr.create_array(str(flow_path), data=flow, chunks=(1, *CHUNKS))
    moving = zarr.open_array(sharded_pair[1])[...]
    outputs = {}
    for name, shards in (("auto", "auto"), ("none", None), ("wide", (160, 96))):
        out = tmp_path / f"{name}.zarr"
        warp_volume(sharded_pair[1], str(flow_path), out, order=1, shards=shards, **SYNC)
        outputs[name] = zarr.open_array(str(out), path="0")
    assert outputs["auto"].shards == SHARDS
    assert outputs["none"].shards is None
    assert outputs["wide"].shards == (160, 96)
    assert _files(tmp_path / "wide.zarr" / "0") == 2 * 2
    y = np.minimum(np.arange(SHAPE[0]) + 1, SHAPE[0] - 1)
    x = np.minimum(np.arange(SHAPE[1]) + 2, SHAPE[1] - 1)
    expected = moving[np.ix_(y, x)]  # sampled at (y + 1, x + 2), the edge repeated
    for array in outputs.values():
        assert_array_equal(array[...], expected)
    with pytest.raises(InputError, match="tile must be a whole number of shards along axis 0"):
        warp_volume(sharded_pair[1], str(flow_path), tmp_path / "bad.zarr", tile=(40, 96), **SYNC)


def test_shifts_to_flow_shards(tmp_path):
    from chunkreg.volume import shifts_to_flow

    shifts = np.zeros((3, 3, 2))
    shifts[..., 1] = 2.0
    kwargs = {"shape": (96, 96), "block": 32, "chunks": 16, **SYNC}
    shifts_to_flow(shifts, tmp_path / "plain.zarr", **kwargs)
    shifts_to_flow(shifts, tmp_path / "sharded.zarr", shards=48, **kwargs)
    plain = zarr.open_array(str(tmp_path / "plain.zarr"), path="flow")
    sharded = zarr.open_array(str(tmp_path / "sharded.zarr"), path="flow")
    assert plain.shards is None and sharded.shards == (2, 48, 48)
    assert _files(tmp_path / "sharded.zarr" / "flow") == 2 * 2
    assert_array_equal(sharded[...], plain[...])
    assert float(sharded[1, 40, 40]) == -2.0
    with pytest.raises(InputError, match="tile must be a whole number of shards"):
        shifts_to_flow(shifts, tmp_path / "bad.zarr", shards=48, tile=32, **kwargs)
