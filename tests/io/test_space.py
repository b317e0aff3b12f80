"""Physical space (scale, translation, units) travels from inputs to every image output."""

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.v05.image import Image

import chunkreg
from chunkreg.io import Space, create_array, read_space, tiff_to_zarr, write_space
from chunkreg.stitching import regular_grid
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SYNC = {"scheduler": "synchronous", "progress": False}
NM = {"z": "nanometer", "y": "nanometer", "x": "nanometer"}
EM = Space(("z", "y", "x"), (50.0, 4.0, 4.0), (100.0, 8.0, -12.0), NM)


def image_space(path, level=0):
    """Validate the OME-Zarr image at ``path`` and return the space of its level ``level``."""
    group = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(group)
    ms = image.ome_attributes.multiscales[0]
    transforms = ms.datasets[level].coordinateTransformations
    scale = tuple(transforms[0].scale)
    translation = tuple(transforms[1].translation) if len(transforms) > 1 else (0.0,) * len(scale)
    units = {a.name: a.unit for a in ms.axes if a.unit is not None}
    return Space(tuple(a.name for a in ms.axes), scale, translation, units)


def write_ome(path, data, space, level_paths=("0",)):
    """An OME-Zarr input holding ``data`` as level 0 in ``space``."""
    group = zarr.open_group(str(path), mode="w")
    for p in level_paths:
        create_array(group, name=p, shape=data.shape, dtype=data.dtype, chunks=data.shape,
                     dimension_names=space.axes)[...] = data  # fmt: skip
    write_space(group, list(level_paths), space, factors=[(1,) * space.ndim] * len(level_paths))
    return path


@pytest.fixture
def em_pair(tmp_path):
    vol = textured_image((16, 32, 32), seed=1)
    truth = smooth_displacement(vol.shape, amplitude=1.0, seed=2)
    ref = write_ome(tmp_path / "ref.zarr", vol, EM)
    mov = write_ome(tmp_path / "mov.zarr", apply_flow(vol, -truth).astype(np.float32), EM)
    return ref, mov


def test_read_space_of_an_ome_level_uses_that_level(tmp_path):
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    for p, n in (("0", 16), ("1", 8)):
        create_array(group, name=p, shape=(n, n), dtype="uint8", chunks=(n, n),
                     dimension_names=("y", "x"))  # fmt: skip
    space = Space(("y", "x"), (4.0, 2.0), (10.0, 20.0), {"y": "micrometer", "x": "micrometer"})
    write_space(group, ["0", "1"], space, factors=[(1, 1), (2, 2)])
    level1 = read_space(chunkreg.io.open_array(tmp_path / "img.zarr", level=1))
    # mean of 2 voxels: twice the size, the centre half a fine voxel further on
    assert level1 == Space(("y", "x"), (8.0, 4.0), (12.0, 21.0), space.units)
    assert read_space(chunkreg.io.open_array(tmp_path / "img.zarr")) == space


def test_a_level_named_by_its_path_keeps_its_space(tmp_path, em_pair):
    """``image.ome.zarr/1`` is the same input as ``level=1``: its scale and units are kept."""
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    for p, n in (("0", 16), ("1", 8)):
        create_array(group, name=p, shape=(n, n), dtype="uint8", chunks=(n, n),
                     dimension_names=("y", "x"))  # fmt: skip
    space = Space(("y", "x"), (4.0, 2.0), (10.0, 20.0), {"y": "micrometer", "x": "micrometer"})
    write_space(group, ["0", "1"], space, factors=[(1, 1), (2, 2)])
    by_path = read_space(chunkreg.io.open_array(str(tmp_path / "img.zarr" / "1")))
    assert by_path == Space(("y", "x"), (8.0, 4.0), (12.0, 21.0), space.units)
    # a workflow given levels by path writes outputs in the input's physical space
    ref, mov = em_pair
    chunkreg.compute_flow(f"{ref}/0", f"{mov}/0", tmp_path / "flow.zarr", **SYNC)
    chunkreg.warp_volume(f"{mov}/0", tmp_path / "flow.zarr", tmp_path / "w.zarr", **SYNC)
    assert image_space(tmp_path / "w.zarr") == EM


def test_plain_array_is_unit_voxels(tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 5, 6), dtype="uint8")
    assert read_space(array) == Space(("z", "y", "x"), (1.0,) * 3, (0.0,) * 3, {})


def test_flow_and_warp_carry_the_reference_space(tmp_path, em_pair):
    ref, mov = em_pair
    chunkreg.compute_flow(ref, mov, tmp_path / "flow.zarr", **SYNC)
    flow_space = image_space(tmp_path / "flow.zarr")
    assert flow_space == EM.with_leading(("c",))
    attrs = zarr.open_group(str(tmp_path / "flow.zarr"), mode="r")["flow"].attrs
    assert attrs["units"] == {"values": "voxel"}
    assert attrs["voxel_size"] == {"z": [50.0, "nanometer"], "y": [4.0, "nanometer"],
                                   "x": [4.0, "nanometer"]}  # fmt: skip
    chunkreg.warp_volume(mov, tmp_path / "flow.zarr", tmp_path / "warped.zarr", **SYNC)
    assert image_space(tmp_path / "warped.zarr") == EM


def test_warp_takes_the_reference_space_over_the_moving(tmp_path, em_pair):
    ref, mov = em_pair
    data = zarr.open_array(str(mov / "0"), mode="r")[...]
    other = Space(EM.axes, (1.0, 1.0, 1.0), (5.0, 5.0, 5.0), NM)
    moved = write_ome(tmp_path / "mov2.zarr", data, other)
    flow = create_array(tmp_path / "zero.zarr", shape=(3, *data.shape), dtype="float32",
                        chunks=(1, *data.shape))  # fmt: skip
    flow[...] = 0
    chunkreg.warp_volume(moved, flow, tmp_path / "w.zarr", reference=ref, **SYNC)
    assert image_space(tmp_path / "w.zarr") == EM
    chunkreg.warp_volume(moved, flow, tmp_path / "w2.zarr", **SYNC)
    assert image_space(tmp_path / "w2.zarr") == other


def test_dense_flow_from_blocks_carries_the_reference_space(tmp_path, em_pair):
    ref, mov = em_pair
    chunkreg.blockwise_shifts(ref, mov, tmp_path / "blocks.zarr", block=8, **SYNC)
    chunkreg.shifts_to_flow(tmp_path / "blocks.zarr", tmp_path / "dense.zarr", **SYNC)
    assert image_space(tmp_path / "dense.zarr") == EM.with_leading(("c",))


def test_corrected_series_keeps_time_and_pixel_size(tmp_path):
    frames = np.stack([np.roll(textured_image((32, 32), seed=1), t, axis=1) for t in range(3)])
    space = Space(("t", "y", "x"), (0.5, 0.3, 0.3), (2.0, 1.0, -1.0),
                  {"t": "second", "y": "micrometer", "x": "micrometer"})  # fmt: skip
    write_ome(tmp_path / "movie.zarr", frames.astype(np.float32), space)
    chunkreg.register_timeseries(tmp_path / "movie.zarr", tmp_path / "drift.zarr", **SYNC)
    assert image_space(tmp_path / "drift.zarr") == space


def test_mosaic_translation_is_physical(tmp_path):
    layout = regular_grid((1, 2), (32, 32), overlap=0.25)
    scene = textured_image((32, 64), seed=3)
    tile_space = Space(("y", "x"), (0.5, 0.25), (0.0, 0.0), {"y": "micrometer", "x": "micrometer"})
    for name, (y, x) in zip(layout.names, layout.positions.astype(int), strict=True):
        write_ome(tmp_path / "tiles" / f"{name}.zarr", scene[y : y + 32, x : x + 32], tile_space)
    tiles = [tmp_path / "tiles" / f"{n}.zarr" for n in layout.names]
    chunkreg.stitch(tiles, layout, tmp_path / "mosaic.zarr", **SYNC)
    got = image_space(tmp_path / "mosaic.zarr")
    origin = zarr.open_group(str(tmp_path / "mosaic.zarr"), mode="r").attrs["stitch"]["origin"]
    assert got.scale == (0.5, 0.25) and got.units == tile_space.units
    assert got.translation == pytest.approx((0.5 * origin[0], 0.25 * origin[1]))


def test_imagej_tiff_spacing(tmp_path):
    data = np.arange(5 * 8 * 8, dtype=np.uint16).reshape(5, 8, 8)
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, resolution=(4.0, 4.0),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})  # fmt: skip
    tiff_to_zarr(tmp_path / "s.tif", tmp_path / "s.zarr")
    um = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    assert image_space(tmp_path / "s.zarr") == Space(("z", "y", "x"), (2.0, 0.25, 0.25),
                                                     (0.0,) * 3, um)  # fmt: skip


def test_ome_tiff_physical_size(tmp_path):
    data = np.zeros((4, 8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "s.ome.tif", data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": 50.0, "PhysicalSizeY": 4.0, "PhysicalSizeX": 4.0,
        "PhysicalSizeZUnit": "nm", "PhysicalSizeYUnit": "nm", "PhysicalSizeXUnit": "nm"})  # fmt: skip
    tiff_to_zarr(tmp_path / "s.ome.tif", tmp_path / "s.zarr")
    assert image_space(tmp_path / "s.zarr") == Space(EM.axes, EM.scale, (0.0,) * 3, NM)
