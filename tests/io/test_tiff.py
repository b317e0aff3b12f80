import numpy as np
import pytest
import tifffile
import zarr
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.io import natural_sort, open_array, tiff_to_zarr, tiles_to_zarr
from chunkreg.io._tiff import _default_chunks


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


def _axis_names(path):
    return [
        a["name"] for a in zarr.open_group(path, mode="r").attrs["ome"]["multiscales"][0]["axes"]
    ]


def test_plain_stack_is_a_series_chunked_one_frame_deep(tmp_path):
    """docs/getting-started.md: a plain stack's generic leading axis is labelled t, and series
    are chunked (1, Y, X)."""
    data = np.arange(3 * 8 * 9, dtype=np.uint8).reshape(3, 8, 9)
    tifffile.imwrite(tmp_path / "q.tif", data, photometric="minisblack")
    array = tiff_to_zarr(tmp_path / "q.tif", tmp_path / "q.zarr")
    assert _axis_names(tmp_path / "q.zarr") == ["t", "y", "x"]
    assert array.chunks == (1, 8, 9)
    np.testing.assert_array_equal(array[...], data)
    # a bare array too; planes over 8 MiB are cut into squares of 2048 (uint16)
    assert tiff_to_zarr(tmp_path / "q.tif", tmp_path / "bare.zarr", ome=False).chunks == (1, 8, 9)
    assert _default_chunks((5, 3000, 1000), 2, axes=("t", "y", "x")) == (1, 2048, 1000)


def test_z_stack_and_folder_default_chunks_are_cubes(tmp_path):
    data = np.zeros((40, 64, 64), np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", data, photometric="minisblack")
    array = tiff_to_zarr(tmp_path / "z.tif", tmp_path / "z.zarr", axes=("z", "y", "x"))
    assert array.chunks == (40, 64, 64)  # near-cubic (161 voxels per side for 8 MiB), clipped
    (tmp_path / "planes").mkdir()
    for i in range(3):
        tifffile.imwrite(tmp_path / "planes" / f"{i}.tif", data[0])
    array = tiff_to_zarr(tmp_path / "planes", tmp_path / "f.zarr")
    assert _axis_names(tmp_path / "f.zarr") == ["z", "y", "x"] and array.chunks == (3, 64, 64)


def test_folder_planes_in_natural_order(tmp_path):
    """0.tif ... 29.tif stack as 0, 1, 2, ..., 29 (not 0, 1, 10, 11, ...)."""
    folder = tmp_path / "planes"
    folder.mkdir()
    for i in range(30):
        tifffile.imwrite(folder / f"{i}.tif", np.full((3, 4), i, dtype=np.uint16))
    (folder / ".hidden.tif").write_bytes(b"not an image")
    stack = tiff_to_zarr(folder, tmp_path / "s.zarr")[:]
    assert_array_equal(stack[:, 0, 0], np.arange(30))


def test_folder_of_png_planes(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    planes = np.random.default_rng(2).integers(0, 255, size=(12, 9, 11), dtype=np.uint8)
    folder = tmp_path / "png"
    folder.mkdir()
    for i, p in enumerate(planes):
        iio.imwrite(folder / f"slice_{i}.png", p)
    assert_array_equal(tiff_to_zarr(folder, tmp_path / "p.zarr")[:], planes)


def test_natural_sort_and_ambiguous_names():
    assert natural_sort(["z10.tif", "Z2.tif", "z1.tif"]) == ["z1.tif", "Z2.tif", "z10.tif"]
    assert natural_sort(["/a/b/img_2.png", "/a/b/img_10.png"]) == [
        "/a/b/img_2.png",
        "/a/b/img_10.png",
    ]
    with pytest.warns(UserWarning, match="'z01.tif' and 'z1.tif' number the same plane"):
        natural_sort(["z1.tif", "z01.tif", "z2.tif"])
    with pytest.warns(UserWarning, match="more than one number varies"):
        natural_sort(["t1_z2.tif", "t2_z1.tif", "t1_z1.tif"])


def test_folder_errors_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"in folder '{empty}'"):
        tiff_to_zarr(empty, tmp_path / "o.zarr")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "0.tif", np.zeros((4, 5), np.uint8))
    (mixed / "1.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"mixes plane formats \['.png', '.tif'\]"):
        tiff_to_zarr(mixed, tmp_path / "o.zarr")
    odd = tmp_path / "odd"
    odd.mkdir()
    tifffile.imwrite(odd / "0.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(odd / "1.tif", np.zeros((4, 6), np.uint8))
    with pytest.raises(InputError, match=r"plane .*1.tif' is \(4, 6\) uint8, the first plane"):
        tiff_to_zarr(odd, tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


def test_sharded_conversion(tmp_path):
    data = np.random.default_rng(1).integers(0, 60000, (12, 20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data)
    array = tiff_to_zarr(tmp_path / "s.tif", tmp_path / "s.zarr", chunks=(1, 20, 24),
                         shards=(4, 20, 24), axes=("t", "y", "x"))  # fmt: skip
    assert array.shards == (4, 20, 24)
    assert sum(1 for p in (tmp_path / "s.zarr" / "0" / "c").rglob("*") if p.is_file()) == 3
    assert_array_equal(open_array(tmp_path / "s.zarr")[...], data)
    with pytest.raises(InputError, match="shards must be a whole multiple of the chunks"):
        tiff_to_zarr(tmp_path / "s.tif", tmp_path / "bad.zarr", chunks=(2, 20, 24), shards=3)
    assert not (tmp_path / "bad.zarr").exists()
