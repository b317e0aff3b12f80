"""warp_volume: tiled warping of zarr volumes equals the in-memory warp, and registers."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

import chunkreg.registration
from chunkreg import blockwise_shifts, shifts_to_flow, warp, warp_volume
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.io import open_array
from chunkreg.testing import smooth_displacement, textured_image
from chunkreg.volume._qc import read_qc
from chunkreg.volume._warp_volume import open_flow, plan_warp_volume, sample_bounds

SYNC = {"scheduler": "synchronous", "progress": False}


def save(path, data, chunks, **kwargs):
    return zarr.create_array(path, data=data, chunks=chunks, overwrite=True, **kwargs)


def whole_warp(image, flow, order, mode="nearest", cval=0.0):
    """The in-memory oracle: sample the whole volume at grid + flow."""
    grid = np.indices(image.shape, dtype=np.float64)
    return ndimage.map_coordinates(
        image.astype(np.float64), grid + flow, order=order, mode=mode, cval=cval
    )


def deformed_pair(shape, *, amplitude, seed, periods=1.0):
    """Moving texture M, flow f and reference(x) = M(x + f(x)) (exact, cubic spline)."""
    moving = textured_image(shape, seed=seed, sigma=2.0)
    flow = smooth_displacement(shape, amplitude=amplitude, seed=seed, periods=periods)
    reference = whole_warp(moving, flow, 3).astype(np.float32)
    return reference, moving, flow


def test_true_flow_restores_the_reference_3d(tmp_path):
    reference, moving, flow = deformed_pair((48, 40, 36), amplitude=5, seed=1)
    save(tmp_path / "mov.zarr", moving, (16, 16, 16))
    save(tmp_path / "flow.zarr", flow, (1, 16, 16, 16))
    report = warp_volume(
        tmp_path / "mov.zarr",
        tmp_path / "flow.zarr",
        tmp_path / "cubic.zarr",
        order=3,
        tile=(32, 32, 16),
        **SYNC,
    )
    assert report.ok and report.n_done == 12  # ragged tiles
    cubic = open_array(tmp_path / "cubic.zarr")[...]
    assert_allclose(cubic, reference, atol=1e-4)  # same spline: exact up to float32
    warp_volume(tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "linear.zarr", **SYNC)
    linear = open_array(tmp_path / "linear.zarr")[...]
    error = np.abs(linear - reference)
    assert error.mean() < 0.01 and error.max() < 0.1  # linear interpolation error only
    assert np.abs(moving - reference).mean() > 10 * error.mean()


@pytest.mark.parametrize(
    ("order", "mode"), [(0, "edge"), (1, "edge"), (1, "constant"), (3, "constant")]
)
def test_tiled_warp_equals_whole_volume_warp(tmp_path, order, mode):
    # displacements up to 20 px: larger than a tile, and pointing outside the volume
    shape = (40, 52, 33)
    moving = textured_image(shape, seed=2)
    flow = smooth_displacement(shape, amplitude=20, seed=3, periods=0.7)
    save(tmp_path / "mov.zarr", moving, (16, 16, 16))
    save(tmp_path / "flow.zarr", flow, (1, 16, 16, 16))
    warp_volume(
        tmp_path / "mov.zarr",
        tmp_path / "flow.zarr",
        tmp_path / "out.zarr",
        order=order,
        mode=mode,
        cval=0.5,
        tile=(32, 32, 16),
        **SYNC,
    )
    got = open_array(tmp_path / "out.zarr")[...]
    expected = warp(moving, flow, order=order, mode=mode, cval=0.5)
    assert_allclose(got, expected, atol=1e-5)


def test_integer_dtype_is_rounded_clipped_and_kept(tmp_path):
    rng = np.random.default_rng(4)
    moving = (textured_image((64, 64), seed=4, sigma=1.0) * 65535).astype(np.uint16)
    moving[20:30, 20:30] = rng.choice([0, 65535], (10, 10))  # cubic overshoot gets clipped
    flow = smooth_displacement((64, 64), amplitude=3.5, seed=4)
    save(tmp_path / "mov.zarr", moving, (32, 16))
    save(tmp_path / "flow.zarr", flow, (1, 32, 16))
    warp_volume(
        tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "out.zarr", order=3, **SYNC
    )
    out = open_array(tmp_path / "out.zarr")
    assert out.dtype == np.uint16 and out.chunks == (32, 16)
    expected = np.clip(np.rint(whole_warp(moving, flow, 3)), 0, 65535)
    diff = np.abs(out[...].astype(np.int64) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float32 vs float64 rounding ties
    assert (out[...] == 0).any() and (out[...] == 65535).any()


def test_output_is_an_ome_zarr_image_with_the_input_sharding(tmp_path):
    moving = textured_image((64, 48), seed=5)
    save(tmp_path / "mov.zarr", moving, (16, 16), shards=(32, 48))
    save(tmp_path / "flow.zarr", np.zeros((2, 64, 48), np.float32), (1, 64, 48))
    with pytest.raises(InputError, match="at least one chunk"):
        warp_volume(tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "o.zarr", tile=16)
    warp_volume(tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "o.zarr", **SYNC)
    group = zarr.open_group(tmp_path / "o.zarr", mode="r")
    ms = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["y", "x"] and ms["datasets"][0]["path"] == "0"
    out = open_array(tmp_path / "o.zarr")
    assert out.shards == (32, 48) and out.chunks == (16, 16)
    assert_array_equal(out[...], moving)  # zero flow: identity


def test_qc_against_the_reference(tmp_path):
    reference, moving, flow = deformed_pair((64, 64), amplitude=4, seed=6)
    save(tmp_path / "ref.zarr", reference, (32, 32))
    save(tmp_path / "mov.zarr", moving, (32, 32))
    save(tmp_path / "flow.zarr", flow, (1, 32, 32))
    report = warp_volume(
        tmp_path / "mov.zarr",
        tmp_path / "flow.zarr",
        tmp_path / "out.zarr",
        reference=tmp_path / "ref.zarr",
        tile=32,
        **SYNC,
    )
    qc = read_qc(tmp_path / "out.zarr")
    assert qc["ncc_after"].shape == (2, 2) and qc["attrs"]["label"] == "tiles"
    for index in np.ndindex(2, 2):
        core = tuple(slice(32 * i, 32 * i + 32) for i in index)
        out = open_array(tmp_path / "out.zarr")[core]
        ncc = chunkreg.registration.normalized_cross_correlation
        assert qc["ncc_after"][index] == pytest.approx(ncc(reference[core], out), abs=1e-6)
        assert qc["ncc_before"][index] == pytest.approx(
            ncc(reference[core], moving[core]), abs=1e-6
        )
    assert (qc["ncc_after"] > 0.99).all() and (qc["ncc_before"] < 0.9).all()
    assert "NCC to reference" in report.notes


def test_resume_and_identical_rerun(tmp_path):
    _, moving, flow = deformed_pair((64, 64), amplitude=4, seed=7)
    save(tmp_path / "mov.zarr", moving, (16, 16))
    save(tmp_path / "flow.zarr", flow, (1, 16, 16))
    args = (tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "out.zarr")
    first = warp_volume(*args, tile=16, **SYNC)
    expected = open_array(tmp_path / "out.zarr")[...]
    again = warp_volume(*args, tile=16, **SYNC)
    assert (first.n_done, again.n_done, again.n_skipped) == (16, 0, 16)
    group = zarr.open_group(tmp_path / "out.zarr", mode="a")
    group["_completion/tiles"][5:9] = 0  # as if killed before these tiles were recorded
    group["0"][16:32, 16:64] = 0  # ...and their data never written
    resumed = warp_volume(*args, tile=16, **SYNC)
    assert (resumed.n_done, resumed.n_skipped) == (4, 12)
    assert_array_equal(open_array(tmp_path / "out.zarr")[...], expected)
    with pytest.raises(IncompatibleOutputError, match="order"):
        warp_volume(*args, tile=16, order=3, **SYNC)
    assert_array_equal(open_array(tmp_path / "out.zarr")[...], expected)


def test_bad_input_is_refused_and_writes_nothing(tmp_path):
    save(tmp_path / "mov.zarr", np.zeros((32, 32), np.float32), (16, 16))
    save(tmp_path / "flow.zarr", np.zeros((2, 32, 32), np.float32), (1, 16, 16))
    save(tmp_path / "flow3.zarr", np.zeros((2, 32, 16), np.float32), (1, 16, 16))
    save(tmp_path / "iflow.zarr", np.zeros((2, 32, 32), np.int32), (1, 16, 16))
    save(tmp_path / "ref.zarr", np.zeros((32, 16), np.float32), (16, 16))
    out = tmp_path / "out.zarr"
    cases = [
        ({"flow": tmp_path / "flow3.zarr"}, "flow must have shape"),
        ({"flow": tmp_path / "iflow.zarr"}, "floating point"),
        ({"flow": tmp_path / "nope.zarr"}, "does not exist"),
        ({"order": 6}, "order"),
        ({"mode": "wrap"}, "mode"),
        ({"tile": 8}, "tile must be at least one chunk"),
        ({"reference": tmp_path / "ref.zarr"}, "same shape"),
    ]
    for kwargs, message in cases:
        args = {"flow": tmp_path / "flow.zarr", **kwargs}
        with pytest.raises(InputError, match=message):
            warp_volume(tmp_path / "mov.zarr", args.pop("flow"), out, **args, **SYNC)
        assert not out.exists()


def test_nan_in_the_flow_fails_that_tile_only(tmp_path):
    save(tmp_path / "mov.zarr", textured_image((32, 32)), (16, 16))
    flow = np.zeros((2, 32, 32), np.float32)
    flow[0, 20, 5] = np.nan
    save(tmp_path / "flow.zarr", flow, (1, 16, 16))
    report = warp_volume(  # the zero flow's chunks are not stored: sparse on purpose
        tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "out.zarr", tile=16,
        allow_sparse=True, **SYNC,
    )  # fmt: skip
    assert (report.n_done, report.n_failed) == (3, 1)
    assert "NaN" in report.failures[0].error and report.failures[0].index == 2


def test_read_region_covers_every_sample():
    flow = np.zeros((2, 8, 8))
    flow[0] = 30.0  # everything samples far below the tile
    flow[1, :, :4] = -3.0
    bounds = sample_bounds(flow, (slice(8, 16), slice(8, 16)), (100, 20), order=1)
    assert bounds[0].start <= 38 and bounds[0].stop >= 46 and bounds[0].stop - 38 <= 8 + 8
    assert bounds[1] == slice(3, 18)  # samples 5..15, plus the linear support
    # samples entirely beyond the volume still read one voxel (the edge)
    flow[0] = 500.0
    assert sample_bounds(flow, (slice(8, 16), slice(8, 16)), (100, 20), order=1)[0] == slice(
        99, 100
    )


def test_open_flow_accepts_arrays_and_flow_groups(tmp_path):
    save(tmp_path / "f.zarr", np.zeros((2, 8, 8), np.float32), (1, 8, 8))
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("flow", shape=(2, 8, 8), dtype="float32", chunks=(1, 8, 8))
    assert open_flow(tmp_path / "f.zarr").shape == (2, 8, 8)
    assert open_flow(tmp_path / "g.zarr").path == "flow"
    assert open_flow(group).path == "flow"
    save(tmp_path / "m.zarr", np.zeros((8, 8), np.float32), (8, 8))
    assert "order 1" in str(plan_warp_volume(tmp_path / "m.zarr", tmp_path / "g.zarr"))


def test_estimated_flow_registers_a_smoothly_deformed_volume(tmp_path):
    reference, moving, _ = deformed_pair((256, 256), amplitude=6, seed=8, periods=0.5)
    save(tmp_path / "ref.zarr", reference, (64, 64))
    save(tmp_path / "mov.zarr", moving, (64, 64))
    result = blockwise_shifts(
        tmp_path / "ref.zarr",
        tmp_path / "mov.zarr",
        tmp_path / "blocks.zarr",
        block=32,
        overlap=16,
        **SYNC,
    )
    assert result.reliable.mean() > 0.9
    assert not result.outlier.any()  # neighbours differ by up to 3.5 voxels: smooth
    shifts_to_flow(tmp_path / "blocks.zarr", tmp_path / "flow.zarr", **SYNC)
    warp_volume(tmp_path / "mov.zarr", tmp_path / "flow.zarr", tmp_path / "out.zarr", **SYNC)
    registered = open_array(tmp_path / "out.zarr")[...]
    inner = (slice(16, -16), slice(16, -16))
    before = np.abs(moving - reference)[inner].mean()
    after = np.abs(registered - reference)[inner].mean()
    assert after <= 0.2 * before, (before, after)


@pytest.mark.cluster
def test_pipeline_on_a_local_cluster_matches_synchronous(tmp_path, cluster_client):
    reference, moving, _ = deformed_pair((96, 96), amplitude=3, seed=9, periods=0.5)
    save(tmp_path / "ref.zarr", reference, (32, 32))
    save(tmp_path / "mov.zarr", moving, (32, 32))
    paths = {name: tmp_path / f"{name}.zarr" for name in ("ref", "mov")}
    run = {"client": cluster_client, "progress": False}  # 2 workers, conftest.py
    blocks = blockwise_shifts(
        paths["ref"], paths["mov"], tmp_path / "b.zarr", block=32, overlap=8, **run
    )
    shifts_to_flow(tmp_path / "b.zarr", tmp_path / "f.zarr", tile=32, **run)
    report = warp_volume(
        paths["mov"],
        tmp_path / "f.zarr",
        tmp_path / "w.zarr",
        tile=32,
        reference=paths["ref"],
        **run,
    )
    assert blocks.report.ok and report.ok and report.n_done == 9
    sync = blockwise_shifts(
        paths["ref"], paths["mov"], tmp_path / "b1.zarr", block=32, overlap=8, **SYNC
    )
    shifts_to_flow(tmp_path / "b1.zarr", tmp_path / "f1.zarr", tile=32, **SYNC)
    warp_volume(
        paths["mov"],
        tmp_path / "f1.zarr",
        tmp_path / "w1.zarr",
        tile=32,
        reference=paths["ref"],
        **SYNC,
    )
    assert_array_equal(blocks.shifts, sync.shifts)
    assert_array_equal(open_array(tmp_path / "w.zarr")[...], open_array(tmp_path / "w1.zarr")[...])
    assert_array_equal(
        read_qc(tmp_path / "w.zarr")["ncc_after"], read_qc(tmp_path / "w1.zarr")["ncc_after"]
    )
