"""The flow workflow: tiled == untiled, resume, refusal of incompatible outputs, failures.

Most tests run one level (``levels=1``: each tile with the kernel's own pyramid) with a stand-in
kernel whose reach is known; the coarse-to-fine mode is tested in test_coarse_to_fine_tiled.py.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

import chunkreg
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.io import CompletionRecord
from chunkreg.volume import compute_flow

from .kernels import box_flow, failing_box_flow, flaky_box_flow, wrong_shape_flow

SYNC = {"scheduler": "synchronous", "progress": False}
ONE = {"levels": 1}


def read_flow(path) -> np.ndarray:
    return zarr.open_array(str(path), path="flow", mode="r")[:]


def snapshot(directory: Path) -> dict:
    """Every file under ``directory`` with its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def assert_close_to_untiled(tiled, untiled, *, median=0.01, p99=0.1):
    diff = np.abs(tiled - untiled)
    assert np.isfinite(tiled).all()
    assert np.median(diff) < median, np.median(diff)
    assert np.percentile(diff, 99) < p99, np.percentile(diff, 99)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_tiled_equals_untiled_for_a_local_kernel(tmp_path, dims, request):
    """Tiles blend across half their halo: with the other half >= the kernel's reach, the
    stitched result is the whole-image result (blending equal values changes nothing)."""
    pair = request.getfixturevalue(f"pair{dims}")
    report = compute_flow(
        pair.reference,
        pair.moving,
        tmp_path / "out.zarr",
        method=box_flow,
        tile=pair.tile,
        overlap=6,
        radius=3,
        **ONE,
        **SYNC,
    )
    assert report.ok and report.n_done == report.n_tasks > 8  # tiles, then their blend
    expected = box_flow(pair.ref, pair.mov, radius=3)
    assert_allclose(read_flow(tmp_path / "out.zarr"), expected, rtol=1e-5, atol=1e-6)
    # A halo smaller than twice the reach shows up at tile borders: the test can fail.
    compute_flow(
        pair.reference, pair.moving, tmp_path / "short.zarr", method=box_flow,
        tile=pair.tile, overlap=4, radius=3, **ONE, **SYNC,
    )  # fmt: skip
    assert np.abs(read_flow(tmp_path / "short.zarr") - expected).max() > 1e-3


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("dims", "method", "params"),
    [("2d", "ilk", {}), ("3d", "ilk", {"radius": 4}), ("2d", "tvl1", {})],
    ids=["ilk-2d", "ilk-3d", "tvl1-2d"],
)
def test_tiled_flow_matches_untiled_kernel_on_cluster(
    tmp_path, dims, method, params, cluster_client, request
):
    """overlap="auto" makes the tiled flow the whole-volume flow for motion inside the halo."""
    pair = request.getfixturevalue(f"pair{dims}")
    report = compute_flow(
        pair.reference,
        pair.moving,
        tmp_path / "out.zarr",
        method=method,
        tile=pair.tile,
        client=cluster_client,
        progress=False,
        **ONE,
        **params,
    )
    report.raise_if_failed()
    depth = chunkreg.volume.flow_depth(method, **params)
    assert report.notes["halo (depth)"].startswith(str((depth,) * pair.ref.ndim))
    assert report.n_done == report.n_tasks
    assert report.bytes_written > 4 * pair.ref.ndim * pair.ref.size  # scratch, then the flow
    tiled = read_flow(tmp_path / "out.zarr")
    assert tiled.shape == (pair.ref.ndim, *pair.ref.shape) and tiled.dtype == np.float32
    kernel = {"ilk": chunkreg.optical_flow_ilk, "tvl1": chunkreg.optical_flow_tvl1}[method]
    assert_close_to_untiled(tiled, kernel(pair.ref, pair.mov, **params))
    # and it is a flow: close to the synthetic truth away from the borders
    inner = (slice(None),) + (slice(8, -8),) * pair.ref.ndim
    assert np.median(np.abs(tiled - pair.truth)[inner]) < 0.15


def test_output_layout_and_metadata(tmp_path, pair2d):
    out = tmp_path / "out.zarr"
    report = compute_flow(
        pair2d.reference, pair2d.moving, out, method=box_flow, tile=(80, 96), overlap=4, **SYNC
    )
    flow = zarr.open_array(str(out), path="flow", mode="r")
    assert flow.shape == (2, 192, 160) and flow.dtype == np.float32
    assert flow.chunks == (1, 40, 48)
    assert flow.metadata.dimension_names == ("c", "y", "x")
    attrs = flow.attrs.asdict()
    assert attrs["axes"] == ["c", "y", "x"] and attrs["units"] == {"values": "voxel"}
    assert attrs["tile"] == [80, 96] and attrs["depth"] == [4, 4]
    assert attrs["method"].endswith("box_flow")
    group = zarr.open_group(str(out), mode="r")
    ome = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["c", "y", "x"]
    assert ome["datasets"][0]["path"] == "flow"
    assert CompletionRecord(zarr.open_group(str(out), mode="a"), "tiles", 6).complete
    assert report.notes["halo (depth)"].startswith("(4, 4)")
    assert report.notes["tiles"] == "6 of (80, 96)"
    assert "halo (depth)" in report.summary()


def test_resume_recomputes_only_missing_tiles(tmp_path, pair2d):
    """A run interrupted after some tiles resumes with the others; the result is the same."""
    marker = tmp_path / "outage"
    kwargs = {"method": flaky_box_flow, "tile": (80, 96), "overlap": 4, **ONE, **SYNC}
    kwargs.update(bad_shape=(88, 68), marker=str(marker))  # tile (1, 1)
    clean = tmp_path / "clean.zarr"
    compute_flow(pair2d.reference, pair2d.moving, clean, **kwargs)
    out = tmp_path / "out.zarr"
    marker.touch()
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    assert (report.n_done, report.n_skipped, report.n_failed, report.n_tasks) == (5, 0, 1, 12)
    assert "blend: not run because of the failures above" in report.summary()
    assert np.isnan(read_flow(out)).all()  # nothing blended yet
    marker.unlink()
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    assert (report.n_done, report.n_skipped, report.n_failed) == (7, 5, 0)  # 1 tile + 6 blends
    assert snapshot(out) == snapshot(clean)  # byte-identical, records included
    # Everything recorded: nothing to do.
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    assert (report.n_done, report.n_skipped) == (0, 12)
    # overwrite starts afresh.
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs, overwrite=True)
    assert (report.n_done, report.n_skipped) == (12, 0)
    assert snapshot(out) == snapshot(clean)


def test_lost_records_and_damaged_chunks_are_recomputed(tmp_path, pair2d):
    """Forgetting finished tiles (and damaging their data) recomputes them byte-identically."""
    out = tmp_path / "out.zarr"
    kwargs = {"method": box_flow, "tile": (80, 96), "overlap": 4, **SYNC}
    compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    complete = read_flow(out)
    before = snapshot(out)
    group = zarr.open_group(str(out), mode="a")
    group["_completion/tiles"][4:] = 0
    group["flow"][:, 160:, 96:] = -1.0
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    # The level-0 scratch blocks were deleted when the run completed: the six tiles of level 0
    # are computed again, then the two forgotten blends; the coarse levels are skipped.
    assert (report.n_done, report.n_failed) == (8, 0)
    assert_array_equal(read_flow(out), complete)
    assert snapshot(out) == before


def test_scratch_left_by_a_run_killed_after_its_blends_is_removed(tmp_path, pair2d, monkeypatch):
    """A run killed after a level's blend record completed, before it deleted that level's
    scratch blocks: the next run skips everything, removes the scratch, and the output is
    byte-identical to an uninterrupted run's."""
    kwargs = {"method": box_flow, "tile": (80, 96), "overlap": 4, **SYNC}
    clean = tmp_path / "clean.zarr"
    compute_flow(pair2d.reference, pair2d.moving, clean, **kwargs)
    out = tmp_path / "out.zarr"
    delete = zarr.Group.__delitem__

    def killed_before_deleting_scratch(group, key):
        if not str(key).startswith("_scratch/"):
            delete(group, key)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Group, "__delitem__", killed_before_deleting_scratch)
        compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    left = zarr.open_group(str(out), mode="r")
    levels = list(left["_scratch"].group_keys())
    assert "0" in levels and CompletionRecord(zarr.open_group(str(out)), "tiles", 6).complete
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    assert report.ok and report.n_done == 0 and report.n_skipped == report.n_tasks
    assert list(zarr.open_group(str(out), mode="r")["_scratch"].group_keys()) == []
    assert snapshot(out) == snapshot(clean)


def test_unfinished_output_with_an_older_scratch_layout_is_recomputed(tmp_path, pair2d):
    """An output left unblended by a version that kept its tile results in one scratch array
    (named ``tiles``, with its own completion record) is finished correctly: the tiles are
    computed again into the current layout, and the old scratch goes with the new."""
    out = tmp_path / "out.zarr"
    kwargs = {"method": box_flow, "tile": (80, 96), "overlap": 4, **SYNC}
    compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    complete = read_flow(out)
    group = zarr.open_group(str(out), mode="a")
    group["_completion/tiles"][:] = 0  # no tile blended yet
    group["flow"][...] = np.nan
    old = group.require_group("_scratch/0")
    old.create_array("tiles", shape=(2, 16, 16), dtype="float32", chunks=(2, 8, 8))[...] = 7.0
    old.create_array("_completion/tiles", shape=(6,), dtype="uint8", chunks=(6,))[...] = 1
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    assert (report.n_done, report.n_failed) == (12, 0)  # 6 tiles and 6 blends
    assert_array_equal(read_flow(out), complete)
    assert "_scratch/0" not in zarr.open_group(str(out), mode="r")


@pytest.mark.parametrize(
    "change",
    [
        {"overlap": 5},
        {"tile": (40, 96)},
        {"chunks": (40, 96)},
        {"radius": 2},
        {"method": "other"},
        {"levels": 1},
        {"coarse_memory": 1000},
    ],
)
def test_incompatible_output_is_refused_untouched(tmp_path, pair2d, change):
    out = tmp_path / "out.zarr"
    kwargs = {"method": box_flow, "tile": (80, 96), "overlap": 4, "radius": 3}
    compute_flow(pair2d.reference, pair2d.moving, out, **kwargs, **SYNC)
    before = snapshot(out)
    kwargs.update(change)
    if "levels" in change:
        kwargs["overlap"] = 4
    if kwargs["method"] == "other":
        kwargs["method"] = failing_box_flow
    with pytest.raises(IncompatibleOutputError, match="different run"):
        compute_flow(pair2d.reference, pair2d.moving, out, **kwargs, **SYNC)
    assert snapshot(out) == before
    # ... unless asked to start afresh
    report = compute_flow(pair2d.reference, pair2d.moving, out, **kwargs, overwrite=True, **SYNC)
    assert report.n_done == report.n_tasks


def test_different_inputs_same_shape_are_refused(tmp_path, pair2d):
    out = tmp_path / "out.zarr"
    kwargs = {"method": box_flow, "tile": (80, 96), "overlap": 4, **SYNC}
    compute_flow(pair2d.reference, pair2d.moving, out, **kwargs)
    with pytest.raises(
        IncompatibleOutputError,
        match=r"the input moving .*\(it is now read from .*reference.zarr, was .*moving.zarr\)",
    ):
        compute_flow(pair2d.reference, pair2d.reference, out, **kwargs)


def test_output_that_is_not_ours_is_refused(tmp_path, pair2d):
    foreign = tmp_path / "foreign.zarr"
    zarr.create_array(str(foreign), shape=(2, 192, 160), dtype="float32")
    before = snapshot(foreign)
    with pytest.raises(IncompatibleOutputError):
        compute_flow(pair2d.reference, pair2d.moving, foreign, method=box_flow, overlap=4, **SYNC)
    assert snapshot(foreign) == before
    text = tmp_path / "notes.txt"
    text.write_text("keep me")
    with pytest.raises(IncompatibleOutputError, match="not a zarr store"):
        compute_flow(pair2d.reference, pair2d.moving, text, method=box_flow, overlap=4, **SYNC)
    assert text.read_text() == "keep me"


def test_bad_input_writes_nothing(tmp_path, pair2d):
    out = tmp_path / "out.zarr"
    bad = zarr.create_array(str(tmp_path / "bad.zarr"), shape=(190, 160), dtype="float32")
    for kwargs in (
        {"moving": str(tmp_path / "bad.zarr")},
        {"tile": (80, 24)},
        {"radius": -1, "method": "ilk"},
        {"moving": str(tmp_path / "missing.zarr")},
        {"client": object(), "scheduler": "tcp://127.0.0.1:1"},
        {"n_workers": 0, "scheduler": None},
    ):
        args = {"reference": pair2d.reference, "moving": pair2d.moving, "method": box_flow}
        args.update(overlap=4, **SYNC)
        args.update(kwargs)
        with pytest.raises(InputError):
            compute_flow(output=out, **args)
        assert not out.exists()
    del bad


def test_inputs_are_opened_read_only(tmp_path, pair2d):
    before = snapshot(Path(pair2d.reference))
    ref = zarr.open_array(pair2d.reference, mode="r")  # a zarr.Array input works too
    compute_flow(ref, pair2d.moving, tmp_path / "o.zarr", method=box_flow, overlap=4, **SYNC)
    assert snapshot(Path(pair2d.reference)) == before


def test_failed_tile_is_reported_and_stops_the_later_stages(tmp_path, pair2d):
    out = tmp_path / "out.zarr"
    # tile (1, 1) reads rows 76:164 and columns 92:160
    kwargs = {"tile": (80, 96), "overlap": 4, "radius": 3, **ONE, **SYNC}
    report = compute_flow(
        pair2d.reference, pair2d.moving, out, method=failing_box_flow, bad_shape=(88, 68), **kwargs
    )
    assert (report.n_done, report.n_failed, report.n_tasks) == (5, 1, 12)
    (failure,) = report.failures
    assert failure.index == 3 and "tiles: tile (1, 1) core [80:160, 96:160]" in failure.description
    assert "RuntimeError: cursed tile of shape (88, 68)" in failure.error
    assert np.isnan(read_flow(out)).all()  # no tile is blended before all are computed
    assert not report.ok
    with pytest.raises(chunkreg.errors.TaskFailedError, match="1 of 12 tasks failed"):
        report.raise_if_failed()
    # Coarse to fine, the same tile fails at level 0, after the pyramid and the coarse level.
    report = compute_flow(
        pair2d.reference, pair2d.moving, tmp_path / "c2f.zarr", method=failing_box_flow,
        bad_shape=(88, 68), levels=2, **{k: v for k, v in kwargs.items() if k != "levels"},
    )  # fmt: skip
    assert report.n_failed == 1 and "level 0 tiles: tile (1, 1)" in report.failures[0].description


def test_kernel_with_wrong_output_shape_fails_clearly(tmp_path, pair2d):
    report = compute_flow(
        pair2d.reference, pair2d.moving, tmp_path / "o.zarr", method=wrong_shape_flow,
        overlap=0, tile=(80, 96), **ONE, **SYNC,
    )  # fmt: skip
    assert report.n_failed == 6
    assert "the kernel returned shape (80, 96), expected (2, 80, 96)" in report.failures[0].error


def test_nan_input_fails_the_tile_with_a_clear_message(tmp_path, pair2d):
    data = pair2d.mov.copy()
    data[5, 5] = np.nan
    zarr.create_array(str(tmp_path / "nan.zarr"), data=data, chunks=(40, 48))
    report = compute_flow(
        pair2d.reference, str(tmp_path / "nan.zarr"), tmp_path / "o.zarr", method=box_flow,
        overlap=4, tile=(80, 96), **ONE, **SYNC,
    )  # fmt: skip
    assert report.n_failed == 1 and report.failures[0].index == 0
    assert "contains NaN or infinite values" in report.failures[0].error
    # coarse to fine, the pyramid task reading it fails first
    report = compute_flow(
        pair2d.reference, str(tmp_path / "nan.zarr"), tmp_path / "c.zarr", method=box_flow,
        overlap=4, tile=(80, 96), levels=2, **SYNC,
    )  # fmt: skip
    assert report.n_failed == 1 and "moving pyramid region [0:96, 0:80]" in str(report.failures[0])
    assert "contains NaN or infinite values" in report.failures[0].error


def test_integer_inputs(tmp_path, pair2d):
    ref16 = (pair2d.ref * 4000).astype(np.uint16)
    mov16 = (pair2d.mov * 4000).astype(np.uint16)
    for name, data in (("r", ref16), ("m", mov16)):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), data=data, chunks=(40, 48))
    compute_flow(
        str(tmp_path / "r.zarr"), str(tmp_path / "m.zarr"), tmp_path / "o.zarr",
        method=box_flow, overlap=6, tile=(80, 96), **ONE, **SYNC,
    )  # fmt: skip
    # tiles hand every kernel the dtype-scaled intensities the built-in kernels work on
    expected = box_flow(ref16.astype(np.float32) / 65535, mov16.astype(np.float32) / 65535)
    assert_allclose(read_flow(tmp_path / "o.zarr"), expected, rtol=1e-5, atol=1e-3)


def test_relative_paths_resolve_for_workers(tmp_path, pair2d, monkeypatch):
    monkeypatch.chdir(Path(pair2d.reference).parent)
    report = compute_flow(
        "reference.zarr", "moving.zarr", tmp_path / "o.zarr", method=box_flow, overlap=3,
        tile=(80, 96), **SYNC,
    )  # fmt: skip
    assert report.ok
    sig = zarr.open_group(str(tmp_path / "o.zarr"), mode="r").attrs["chunkreg"]["signature"]
    assert sig["reference"] == os.path.join(os.getcwd(), "reference.zarr")
