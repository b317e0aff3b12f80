"""Every image output chunkreg writes is valid OME-Zarr 0.5 (checked with ome-zarr-models)."""

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.v05.image import Image

import chunkreg
from chunkreg.io import create_array, default_axes, tiff_to_zarr, write_ome_multiscale_metadata
from chunkreg.stitching import regular_grid
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SYNC = {"scheduler": "synchronous", "progress": False}


def validate(path, *, axes):
    """Validate the image group and return its axis names (from metadata and dimension_names)."""
    group = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(group)
    names = [a.name for a in image.ome_attributes.multiscales[0].axes]
    assert names == list(axes)
    for dataset in image.ome_attributes.multiscales[0].datasets:
        assert list(group[dataset.path].metadata.dimension_names) == list(axes)
    return names


@pytest.fixture
def volume_pair(tmp_path):
    """A small deformed pair whose arrays have no dimension names (plain zarr)."""
    vol = textured_image((24, 40, 40), seed=1)
    truth = smooth_displacement(vol.shape, amplitude=1.5, seed=2)
    for name, data in (("ref", vol), ("mov", apply_flow(vol, -truth))):
        create_array(
            tmp_path / f"{name}.zarr", shape=data.shape, dtype="float32", chunks=(24, 40, 40)
        )[...] = data
    return tmp_path / "ref.zarr", tmp_path / "mov.zarr"


def test_flow_and_warped_volume(tmp_path, volume_pair):
    ref, mov = volume_pair
    chunkreg.compute_flow(ref, mov, tmp_path / "flow.zarr", **SYNC)
    validate(tmp_path / "flow.zarr", axes=("c", "z", "y", "x"))
    chunkreg.warp_volume(mov, tmp_path / "flow.zarr", tmp_path / "warped.zarr", **SYNC)
    validate(tmp_path / "warped.zarr", axes=("z", "y", "x"))


def test_blockwise_dense_flow(tmp_path, volume_pair):
    ref, mov = volume_pair
    chunkreg.blockwise_shifts(ref, mov, tmp_path / "blocks.zarr", block=12, **SYNC)
    chunkreg.shifts_to_flow(tmp_path / "blocks.zarr", tmp_path / "dense.zarr", **SYNC)
    validate(tmp_path / "dense.zarr", axes=("c", "z", "y", "x"))


def test_corrected_time_series(tmp_path):
    frames = np.stack([np.roll(textured_image((48, 48), seed=1), t, axis=1) for t in range(3)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames, chunks=(1, 48, 48))
    chunkreg.register_timeseries(tmp_path / "movie.zarr", tmp_path / "drift.zarr", **SYNC)
    validate(tmp_path / "drift.zarr", axes=("t", "y", "x"))


def test_stitched_mosaic(tmp_path):
    layout = regular_grid((2, 2), (48, 48), overlap=0.25)
    scene = textured_image((96, 96), seed=3)
    group = zarr.open_group(str(tmp_path / "tiles.zarr"), mode="w")
    for name, (y, x) in zip(layout.names, layout.positions.astype(int), strict=True):
        group.create_array(name, data=scene[y : y + 48, x : x + 48])
    chunkreg.stitch(tmp_path / "tiles.zarr", layout, tmp_path / "mosaic.zarr", **SYNC)
    validate(tmp_path / "mosaic.zarr", axes=("y", "x"))


@pytest.mark.parametrize(
    ("axes", "expected"), [(None, ("t", "y", "x")), (("z", "y", "x"), ("z", "y", "x"))]
)
def test_converted_tiff(tmp_path, axes, expected):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, 16, 16), np.uint16))
    tiff_to_zarr(tmp_path / "s.tif", tmp_path / "s.zarr", axes=axes)
    validate(tmp_path / "s.zarr", axes=expected)


def test_metadata_writer_records_missing_dimension_names(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("0", shape=(4, 4), dtype="f4")[...] = 3.0
    group.create_array("1", shape=(2, 2), dtype="f4")
    write_ome_multiscale_metadata(group, paths=["0", "1"])
    validate(tmp_path / "g.zarr", axes=("y", "x"))
    assert (zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["0"][...] == 3.0).all()
    group.create_array("2", shape=(4, 4), dtype="f4", dimension_names=("a", "b"))
    with pytest.raises(ValueError, match=r"level array '2' has dimension_names \('a', 'b'\)"):
        write_ome_multiscale_metadata(group, paths=["2"])
    assert default_axes(3) == ("z", "y", "x")
    assert default_axes(2, ("row", "col")) == ("row", "col")
    assert default_axes(2, (None, "col")) == ("y", "x")
