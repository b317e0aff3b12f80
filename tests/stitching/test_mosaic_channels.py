"""Multi-channel tiles: registered on one channel, every channel fused at the same positions."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from ome_zarr_models.v05.image import Image
from stitching_helpers import relative_error

from chunkreg import stitch
from chunkreg.errors import InputError
from chunkreg.stitching import regular_grid
from chunkreg.testing import textured_image

SYNC = {"scheduler": "synchronous", "progress": False}
TILE = (48, 48)


@pytest.fixture
def mosaic(tmp_path):
    """2 x 2 tiles of two scenes at known jittered positions: (c, y, x) tiles (channel 1 the
    registration channel) and each channel's tiles alone."""
    layout = regular_grid((2, 2), TILE, overlap=0.25)
    jitter = np.array([[0, 0], [1, -2], [-2, 1], [2, 2]])
    truth = layout.positions + jitter + 4
    scenes = [textured_image((100, 100), seed=s) for s in (11, 3)]
    groups = {k: zarr.open_group(str(tmp_path / f"{k}.zarr"), mode="w") for k in ("c", "0", "1")}
    for name, (y, x) in zip(layout.names, truth.astype(int), strict=True):
        cut = [s[y : y + TILE[0], x : x + TILE[1]] for s in scenes]
        groups["c"].create_array(name, data=np.stack(cut), chunks=(1, *TILE),
                                 dimension_names=("c", "y", "x"))  # fmt: skip
        for c in (0, 1):
            groups[str(c)].create_array(name, data=cut[c])
    return tmp_path, layout, truth


def test_channels_fused_at_the_registration_channels_positions(mosaic):
    d, layout, truth = mosaic
    both = stitch(d / "c.zarr", layout, d / "mc.zarr", channel=1, **SYNC)
    one = stitch(d / "1.zarr", layout, d / "m1.zarr", **SYNC)
    assert_array_equal(both.positions, one.positions)
    assert relative_error(both.positions, truth) < 0.01
    fused = zarr.open_array(str(d / "mc.zarr"), path="0")[...]
    assert fused.shape[0] == 2
    assert_array_equal(fused[1], zarr.open_array(str(d / "m1.zarr"), path="0")[...])
    # channel 0, never registered, is fused at the same positions
    other = stitch(d / "0.zarr", layout.with_positions(both.positions), d / "m0.zarr",
                   register=False, **SYNC)  # fmt: skip
    assert other.reports["fusion"].ok
    assert_array_equal(fused[0], zarr.open_array(str(d / "m0.zarr"), path="0")[...])
    group = zarr.open_group(str(d / "mc.zarr"), mode="r")
    axes = Image.from_zarr(group).ome_attributes.multiscales[0].axes
    assert [(a.name, a.type) for a in axes] == [("c", "channel"), ("y", "space"), ("x", "space")]
    assert group["0"].chunks[0] == 1  # one channel per chunk: one writer per chunk


def test_channel_errors(mosaic):
    d, layout, _ = mosaic
    with pytest.raises(InputError, match="out of range"):
        stitch(d / "c.zarr", layout, d / "x.zarr", channel=2, **SYNC)
    with pytest.raises(InputError, match="no channel axis"):
        stitch(d / "1.zarr", layout, d / "x.zarr", channel=0, **SYNC)
    assert not (d / "x.zarr").exists()
