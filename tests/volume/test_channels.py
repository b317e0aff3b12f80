"""Multi-channel volumes: register on one channel, apply the transform to every channel."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from ome_zarr_models.v05.image import Image

import chunkreg
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.io import create_array, write_ome_multiscale_metadata
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

SYNC = {"scheduler": "synchronous", "progress": False}
SHAPE = (16, 40, 40)
CHUNKS = (16, 20, 20)


def _save(path, data, chunks, names=None):
    array = create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=chunks,
                         dimension_names=names)  # fmt: skip
    array[...] = data
    return str(path)


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    """Two-channel (c, z, y, x) pair: channel 1 deformed by a known flow, channel 0 noise-free
    texture moved by the same flow; plus each channel saved alone."""
    d = tmp_path_factory.mktemp("channels")
    truth = smooth_displacement(SHAPE, amplitude=1.5, seed=2)
    ref = np.stack([textured_image(SHAPE, seed=s) for s in (7, 1)]).astype(np.float32)
    mov = np.stack([apply_flow(r, -truth) for r in ref]).astype(np.float32)
    paths = {
        "ref": _save(d / "ref.zarr", ref, (1, *CHUNKS), ("c", "z", "y", "x")),
        "mov": _save(d / "mov.zarr", mov, (1, *CHUNKS), ("c", "z", "y", "x")),
        "plain_mov": _save(d / "plain_mov.zarr", mov, (1, *CHUNKS)),
    }
    for c in (0, 1):
        paths[f"ref{c}"] = _save(d / f"ref{c}.zarr", ref[c], CHUNKS)
        paths[f"mov{c}"] = _save(d / f"mov{c}.zarr", mov[c], CHUNKS)
    paths["named1"] = _save(d / "named1.zarr", mov[1], CHUNKS, ("z", "y", "x"))
    return d, paths, ref, mov, truth


def _flow(path):
    return zarr.open_array(str(path), path="flow")[...]


def test_compute_flow_on_one_channel_equals_that_channel_alone(channels, tmp_path):
    _, p, *_ = channels
    kw = {"tile": (16, 20, 40), "radius": 2, "levels": 1, "num_warp": 3, **SYNC}
    chunkreg.compute_flow(p["ref"], p["mov"], tmp_path / "c.zarr", channel=1, **kw)
    chunkreg.compute_flow(p["ref1"], p["mov1"], tmp_path / "one.zarr", **kw)
    assert_array_equal(_flow(tmp_path / "c.zarr"), _flow(tmp_path / "one.zarr"))
    # the flow lies in the spatial axes only, and resume tells channels apart
    assert zarr.open_array(str(tmp_path / "c.zarr"), path="flow").shape == (3, *SHAPE)
    with pytest.raises(IncompatibleOutputError):
        chunkreg.compute_flow(p["ref"], p["mov"], tmp_path / "c.zarr", channel=0, **kw)


def test_only_the_registration_channel_is_read(channels, tmp_path):
    """Channel 0's chunk files are garbage: a run on channel 1 never decodes them."""
    _, p, *_ = channels
    for name in ("ref", "mov"):
        shutil.copytree(p[name], tmp_path / f"{name}.zarr")
        for chunk in (tmp_path / f"{name}.zarr" / "c" / "0").rglob("*"):
            if chunk.is_file():
                chunk.write_bytes(b"not a zstd frame")
    kw = {"tile": (16, 20, 20), "radius": 2, "levels": 2, "num_warp": 3, **SYNC}
    report = chunkreg.compute_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr",
                                   tmp_path / "f.zarr", channel=1, **kw)  # fmt: skip
    assert report.ok
    blocks = chunkreg.blockwise_shifts(tmp_path / "ref.zarr", tmp_path / "mov.zarr",
                                       tmp_path / "b.zarr", block=(16, 20, 20), channel=1, **SYNC)  # fmt: skip
    assert blocks.report.ok
    with pytest.raises(InputError, match="cannot be read"):  # channel 0 is read: refused
        chunkreg.compute_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr",
                              tmp_path / "g.zarr", channel=0, **kw)  # fmt: skip


def test_blockwise_shifts_on_one_channel(channels, tmp_path):
    _, p, *_ = channels
    kw = {"block": (8, 20, 20), "overlap": 4, **SYNC}
    both = chunkreg.blockwise_shifts(p["ref"], p["mov"], tmp_path / "c.zarr", channel=1, **kw)
    one = chunkreg.blockwise_shifts(p["ref1"], p["mov1"], tmp_path / "one.zarr", **kw)
    assert_array_equal(both.measured_shifts, one.measured_shifts)
    assert both.measured_shifts.shape[-1] == 3
    # an axis named c defaults to channel 0
    first = chunkreg.blockwise_shifts(p["ref"], p["mov"], tmp_path / "d.zarr", **kw)
    zero = chunkreg.blockwise_shifts(p["ref0"], p["mov0"], tmp_path / "zero.zarr", **kw)
    assert_array_equal(first.measured_shifts, zero.measured_shifts)
    assert not np.array_equal(first.measured_shifts, both.measured_shifts)


@pytest.mark.parametrize("moving", ["mov", "plain_mov"])
def test_warp_applies_one_flow_to_every_channel(channels, tmp_path, moving):
    """A 2-channel moving volume warped by a known flow equals warping each channel alone."""
    _, p, _, mov, truth = channels
    flow = _save(tmp_path / "truth.zarr", truth.astype(np.float32), (1, *CHUNKS))
    report = chunkreg.warp_volume(p[moving], flow, tmp_path / "w.zarr", tile=(16, 20, 20), **SYNC)
    assert report.ok
    warped = zarr.open_array(str(tmp_path / "w.zarr"), path="0")[...]
    assert warped.shape == mov.shape
    for c in (0, 1):
        chunkreg.warp_volume(p[f"mov{c}"], flow, tmp_path / f"w{c}.zarr", tile=(16, 20, 20), **SYNC)
        assert_array_equal(warped[c], zarr.open_array(str(tmp_path / f"w{c}.zarr"), path="0")[...])
    group = zarr.open_group(str(tmp_path / "w.zarr"), mode="r")
    axes = Image.from_zarr(group).ome_attributes.multiscales[0].axes
    assert [(a.name, a.type) for a in axes] == [
        ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")
    ]  # fmt: skip
    assert tuple(group["0"].metadata.dimension_names) == ("c", "z", "y", "x")


def test_warp_keeps_physical_space_and_the_time_axis(tmp_path):
    """A (t, c, z, y, x) OME-Zarr input keeps its axes, types and scale; every (t, c) warped."""
    shape = (8, 24, 24)
    truth = smooth_displacement(shape, amplitude=1.0, seed=4).astype(np.float32)
    data = np.stack([[textured_image(shape, seed=10 * t + c) for c in range(2)] for t in range(2)])
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("0", data=data.astype(np.float32), chunks=(1, 1, 8, 12, 12))
    write_ome_multiscale_metadata(group, paths=["0"], axes=("t", "c", "z", "y", "x"),
                                  scales=[[2.0, 1.0, 0.5, 0.1, 0.1]],
                                  units={"t": "second", "z": "micrometer", "y": "micrometer",
                                         "x": "micrometer"})  # fmt: skip
    flow = _save(tmp_path / "flow.zarr", truth, (1, 8, 12, 12))
    chunkreg.warp_volume(tmp_path / "in.zarr", flow, tmp_path / "w.zarr", pyramid=False, **SYNC)
    out = zarr.open_group(str(tmp_path / "w.zarr"), mode="r")
    image = Image.from_zarr(out).ome_attributes.multiscales[0]
    assert [(a.name, a.type, a.unit) for a in image.axes] == [
        ("t", "time", "second"), ("c", "channel", None), ("z", "space", "micrometer"),
        ("y", "space", "micrometer"), ("x", "space", "micrometer"),
    ]  # fmt: skip
    assert list(image.datasets[0].coordinateTransformations[0].scale) == [2.0, 1.0, 0.5, 0.1, 0.1]
    warped = out["0"][...]
    for t in range(2):
        for c in range(2):
            expected = chunkreg.warp(data[t, c].astype(np.float32), truth, order=1, mode="edge")
            np.testing.assert_allclose(warped[t, c], expected, atol=1e-5)


def test_channel_errors_write_nothing(channels, tmp_path):
    _, p, *_ = channels
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match="out of range"):
        chunkreg.compute_flow(p["ref"], p["mov"], out, channel=2, **SYNC)
    with pytest.raises(InputError, match="no input has a channel axis"):
        chunkreg.compute_flow(p["named1"], p["named1"], out, channel=1, **SYNC)
    with pytest.raises(InputError, match="give channel="):  # plain 4-D beside a 3-D reference
        chunkreg.compute_flow(p["ref1"], p["plain_mov"], out, **SYNC)
    with pytest.raises(InputError, match="must be an integer"):
        chunkreg.blockwise_shifts(p["ref"], p["mov"], out, block=8, channel=-1, **SYNC)
    with pytest.raises(InputError, match="out of range"):
        chunkreg.warp_volume(p["mov"], None, out, affine=np.eye(4), reference=p["ref"],
                             channel=5, **SYNC)  # fmt: skip
    assert not out.exists()


def test_affine_and_pipeline_on_one_channel(tmp_path):
    """estimate_affine (and the register pipeline) on channel 1 equals channel 1 alone."""
    from scipy import ndimage

    truth = np.array([[1.02, 0.03, -2.0], [-0.02, 0.99, 3.0], [0, 0, 1]])
    ref = np.stack([textured_image((96, 96), seed=s) for s in (6, 2)]).astype(np.float32)
    mov = np.stack([ndimage.affine_transform(r, np.linalg.inv(truth), order=3, mode="nearest")
                    for r in ref]).astype(np.float32)  # fmt: skip
    names = ("c", "y", "x")
    paths = {k: _save(tmp_path / f"{k}.zarr", v, (1, 48, 48), names)
             for k, v in (("ref", ref), ("mov", mov))}  # fmt: skip
    alone = {
        k: _save(tmp_path / f"{k}1.zarr", v[1], (48, 48)) for k, v in (("ref", ref), ("mov", mov))
    }
    both = chunkreg.estimate_affine(
        paths["ref"], paths["mov"], tmp_path / "a.zarr", channel=1, **SYNC
    )
    one = chunkreg.estimate_affine(alone["ref"], alone["mov"], tmp_path / "b.zarr", **SYNC)
    assert_array_equal(both.matrix, one.matrix)
    assert np.abs(both.matrix - truth).max() < 0.05
    from chunkreg.execution import SYNCHRONOUS
    from chunkreg.volume._affine_pipeline import register_volumes

    outputs = {n: str(tmp_path / f"p-{n}.zarr") for n in ("affine", "registered")}
    result = register_volumes(paths["ref"], paths["mov"], outputs, steps=("affine", "warp"),
                              channel=1, client=SYNCHRONOUS, progress=False)  # fmt: skip
    assert result.ok
    assert zarr.open_array(outputs["registered"], path="0").shape == ref.shape
