import numpy as np
import pytest
import tifffile
import zarr
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.io import open_array, tiff_to_zarr, tiles_to_zarr


def test_real_stack_to_ome_zarr(tmp_path, shared_data):
    src = shared_data("pystackreg-pc12") / "pc12-unreg.tif"
    expected = tifffile.imread(src)
    arr = tiff_to_zarr(src, tmp_path / "pc12.zarr", chunks=(1, 128, 128), axes=("t", "y", "x"))
    assert arr.chunks == (1, 128, 128)
    assert_array_equal(open_array(tmp_path / "pc12.zarr")[:], expected)
    axes = zarr.open_group(tmp_path / "pc12.zarr", mode="r").attrs["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["t", "y", "x"]


def test_hyperstack_slabs_and_plain_array(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, size=(3, 5, 20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, metadata={"axes": "TZYX"})
    arr = tiff_to_zarr(tmp_path / "s.tif", tmp_path / "s.zarr", chunks=(2, 2, 16, 16), ome=False)
    assert_array_equal(arr[:], data)
    assert arr.dtype == np.uint16


def test_folder_of_planes_and_2d(tmp_path):
    planes = np.random.default_rng(1).random((4, 10, 12)).astype(np.float32)
    folder = tmp_path / "planes"
    folder.mkdir()
    for i, p in enumerate(planes):
        tifffile.imwrite(folder / f"z{i:03d}.tif", p)
    assert_array_equal(tiff_to_zarr(folder, tmp_path / "f.zarr")[:], planes)
    tifffile.imwrite(tmp_path / "one.tif", planes[0])
    assert_array_equal(tiff_to_zarr(tmp_path / "one.tif", tmp_path / "one.zarr")[:], planes[0])


def test_tiles_to_group(tmp_path, shared_data):
    paths = sorted((shared_data("nist-mist-phase-contrast-5x5") / "tiles").glob("*.tif"))[:3]
    group = tiles_to_zarr(paths, tmp_path / "tiles.zarr")
    assert sorted(group.array_keys()) == sorted(p.stem for p in paths)
    assert_array_equal(group[paths[1].stem][:], tifffile.imread(paths[1]))
    with pytest.raises(InputError, match="exists"):
        tiles_to_zarr(paths, tmp_path / "tiles.zarr")


def test_tiff_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        tiff_to_zarr(tmp_path / "missing.tif", tmp_path / "o.zarr")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 5), np.uint8))
    with pytest.raises(InputError, match="one entry per axis"):
        tiff_to_zarr(tmp_path / "a.tif", tmp_path / "o.zarr", chunks=(2, 2, 2))
    assert not (tmp_path / "o.zarr").exists()


def test_unknown_tiff_axes_default_to_zyx(tmp_path):
    data = np.zeros((3, 8, 9), np.uint8)
    tifffile.imwrite(tmp_path / "q.tif", data, photometric="minisblack")
    tiff_to_zarr(tmp_path / "q.tif", tmp_path / "q.zarr")
    axes = zarr.open_group(tmp_path / "q.zarr", mode="r").attrs["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["z", "y", "x"]
