"""Display pyramids of image outputs: anisotropy-aware levels, block means, metadata, resume."""

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.v05.image import Image

import chunkreg
from chunkreg.engine import _pyramid as engine_pyramid
from chunkreg.execution import SYNCHRONOUS
from chunkreg.io import Space, create_array, tiff_to_zarr, write_space
from chunkreg.testing import textured_image
from chunkreg.volume import build_output_pyramid, pyramid_factors

SYNC = {"scheduler": "synchronous", "progress": False}


def block_mean(a, step):
    """Reference block mean (shapes divisible by ``step``)."""
    shape = []
    for n, s in zip(a.shape, step, strict=True):
        shape += [n // s, s]
    return a.astype(np.float64).reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


def levels_of(path):
    """Validate the image at ``path``; return its datasets' (path, scale, translation)."""
    group = zarr.open_group(str(path), mode="r")
    ms = Image.from_zarr(group).ome_attributes.multiscales[0]
    return [
        (d.path, tuple(d.coordinateTransformations[0].scale),
         tuple(d.coordinateTransformations[1].translation))
        for d in ms.datasets
    ]  # fmt: skip


def test_factors_halve_fine_axes_until_near_isotropic():
    em = Space(("z", "y", "x"), (50.0, 4.0, 4.0), (0.0,) * 3, {})
    assert pyramid_factors((256, 2048, 2048), em) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 16, 16), (4, 32, 32)
    ]  # fmt: skip
    assert pyramid_factors((256, 2048, 2048), em, levels=2) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert pyramid_factors((256, 2048, 2048), em, levels=False) == [(1, 1, 1)]
    series = Space.voxels(("t", "c", "y", "x"))
    assert pyramid_factors((500, 2, 256, 256), series) == [(1, 1, 1, 1), (1, 1, 2, 2), (1, 1, 4, 4)]
    with pytest.raises(chunkreg.errors.InputError, match="pyramid must be True, False or"):
        pyramid_factors((8, 8), series.last(2), levels=-1)


def test_warped_volume_levels_are_block_means_with_their_space(tmp_path):
    image = (textured_image((256, 256), seed=4) * 1000).astype(np.uint16)
    space = Space(("y", "x"), (4.0, 4.0), (8.0, -12.0), {"y": "nanometer", "x": "nanometer"})
    group = zarr.open_group(str(tmp_path / "mov.zarr"), mode="w")
    create_array(group, name="0", shape=image.shape, dtype=image.dtype, chunks=(64, 64),
                 dimension_names=space.axes)[...] = image  # fmt: skip
    write_space(group, ["0"], space)
    flow = create_array(tmp_path / "flow.zarr", shape=(2, 256, 256), dtype="float32",
                        chunks=(1, 64, 64))  # fmt: skip
    flow[...] = 0
    report = chunkreg.warp_volume(tmp_path / "mov.zarr", flow, tmp_path / "w.zarr", **SYNC)
    assert report.notes["pyramid levels"] == 3
    assert levels_of(tmp_path / "w.zarr") == [
        ("0", (4.0, 4.0), (8.0, -12.0)),
        ("1", (8.0, 8.0), (10.0, -10.0)),
        ("2", (16.0, 16.0), (14.0, -6.0)),
    ]
    out = zarr.open_group(str(tmp_path / "w.zarr"), mode="r")
    np.testing.assert_array_equal(out["0"][...], image)
    expected1 = np.rint(block_mean(image, (2, 2))).astype(np.uint16)
    np.testing.assert_array_equal(out["1"][...], expected1)
    np.testing.assert_array_equal(out["2"][...], np.rint(block_mean(expected1, (2, 2))))
    assert out["1"].chunks == (64, 64) and out["2"].dtype == np.uint16

    chunkreg.warp_volume(tmp_path / "mov.zarr", flow, tmp_path / "flat.zarr", pyramid=False,
                         **SYNC)  # fmt: skip
    assert [p for p, _, _ in levels_of(tmp_path / "flat.zarr")] == ["0"]


def test_interrupted_pyramid_resumes_without_recomputing(tmp_path, monkeypatch):
    data = textured_image((8, 512, 256), seed=5).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    create_array(group, name="0", shape=data.shape, dtype=data.dtype, chunks=(8, 64, 64),
                 dimension_names=("z", "y", "x"))[...] = data  # fmt: skip
    space = Space.voxels(("z", "y", "x"))
    write_space(group, ["0"], space)
    real = engine_pyramid.mean_downsample_tile

    def dies_on_second_region(task):
        if task.number == 1:
            raise OSError("worker lost")
        return real(task)

    monkeypatch.setattr(engine_pyramid, "mean_downsample_tile", dies_on_second_region)
    first = build_output_pyramid(group, "0", space, client=SYNCHRONOUS, progress=False)
    assert not first.ok and first.n_done == 1
    # the metadata still lists only the complete level 0
    assert [p for p, _, _ in levels_of(tmp_path / "img.zarr")] == ["0"]

    calls = []
    monkeypatch.setattr(
        engine_pyramid, "mean_downsample_tile", lambda t: calls.append(t) or real(t)
    )
    second = build_output_pyramid(group, "0", space, client=SYNCHRONOUS, progress=False)
    assert second.ok and second.n_skipped == 1
    assert (calls[0].target.path, calls[0].number) == ("1", 1)  # only the missing region
    assert [p for p, _, _ in levels_of(tmp_path / "img.zarr")] == ["0", "1", "2"]
    level1 = block_mean(data, (1, 2, 2))
    np.testing.assert_allclose(group["1"][...], level1, rtol=1e-6)
    np.testing.assert_allclose(group["2"][...], block_mean(level1, (1, 2, 2)), rtol=1e-5)
    assert group["2"].shape == (8, 128, 64)  # x reached 64 voxels; the 8 z planes stay


def test_converted_tiff_gets_a_pyramid(tmp_path):
    data = (np.arange(256 * 128) % 251).astype(np.uint8).reshape(256, 128)
    tifffile.imwrite(tmp_path / "p.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um"})  # fmt: skip
    tiff_to_zarr(tmp_path / "p.tif", tmp_path / "p.zarr")
    assert levels_of(tmp_path / "p.zarr") == [
        ("0", (0.5, 0.5), (0.0, 0.0)),
        ("1", (1.0, 1.0), (0.25, 0.25)),
    ]
    got = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["1"][...]
    np.testing.assert_array_equal(got, np.rint(block_mean(data, (2, 2))))


def test_cli_no_pyramid_switch(tmp_path):
    from chunkreg.cli import main

    image = textured_image((256, 128), seed=6).astype(np.float32)
    zarr.create_array(str(tmp_path / "mov.zarr"), data=image, chunks=(64, 64))
    flow = create_array(tmp_path / "flow.zarr", shape=(2, 256, 128), dtype="float32",
                        chunks=(1, 64, 64))  # fmt: skip
    flow[...] = 0
    sync = ["--scheduler", "synchronous", "--no-progress"]
    argv = ["warp", str(tmp_path / "mov.zarr"), str(tmp_path / "flow.zarr")]
    assert main([*argv, str(tmp_path / "a.zarr"), *sync]) == 0
    assert [p for p, _, _ in levels_of(tmp_path / "a.zarr")] == ["0", "1"]
    assert main([*argv, str(tmp_path / "b.zarr"), "--no-pyramid", *sync]) == 0
    assert [p for p, _, _ in levels_of(tmp_path / "b.zarr")] == ["0"]
    assert "1" not in zarr.open_group(str(tmp_path / "b.zarr"), mode="r")


def test_corrected_series_pyramid_keeps_every_frame(tmp_path):
    frames = np.stack([np.roll(textured_image((128, 128), seed=1), t, axis=1) for t in range(3)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames.astype(np.float32),
                      chunks=(1, 128, 128))  # fmt: skip
    chunkreg.register_timeseries(tmp_path / "movie.zarr", tmp_path / "drift.zarr", **SYNC)
    assert levels_of(tmp_path / "drift.zarr") == [
        ("corrected", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        ("corrected_1", (1.0, 2.0, 2.0), (0.0, 0.5, 0.5)),
    ]
    group = zarr.open_group(str(tmp_path / "drift.zarr"), mode="r")
    np.testing.assert_allclose(group["corrected_1"][...],
                               block_mean(group["corrected"][...], (1, 2, 2)), rtol=1e-5)  # fmt: skip


def test_mosaic_pyramid(tmp_path):
    from chunkreg.stitching import regular_grid

    layout = regular_grid((1, 2), (128, 128), overlap=0.25)
    scene = textured_image((128, 256), seed=3).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "tiles.zarr"), mode="w")
    for name, (y, x) in zip(layout.names, layout.positions.astype(int), strict=True):
        group.create_array(name, data=scene[y : y + 128, x : x + 128])
    result = chunkreg.stitch(tmp_path / "tiles.zarr", layout, tmp_path / "m.zarr", **SYNC)
    assert result.reports["pyramid"].notes["pyramid levels"] == 2
    levels = levels_of(tmp_path / "m.zarr")
    assert [p for p, _, _ in levels] == ["0", "1"]
    assert levels[1][1] == (2.0, 2.0)
    out = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    mosaic = out["0"][...]
    even = mosaic[: mosaic.shape[0] // 2 * 2, : mosaic.shape[1] // 2 * 2]
    np.testing.assert_allclose(out["1"][: even.shape[0] // 2, : even.shape[1] // 2],
                               block_mean(even, (2, 2)), rtol=1e-5)  # fmt: skip


def test_block_mean_edges_and_dtypes():
    from chunkreg.registration._downsample import block_mean as kernel

    row = np.array([[1, 4, 7]], dtype=np.uint8)
    # 2.5 rounds to even; the partial last block repeats its edge voxel
    np.testing.assert_array_equal(kernel(row, (1, 2), np.uint8), [[2, 7]])
    floats = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(kernel(floats, (1, 2), np.float32), [[0.5, 2.5], [4.5, 6.5],
                                                                    [8.5, 10.5]])  # fmt: skip
    assert kernel(np.full((2, 2), 255, np.uint8), (2, 2), np.uint8).dtype == np.uint8
