"""register_timeseries end to end on zarr: known drift, piecewise, bad frames, errors, resume."""

import csv

import numpy as np
import pytest
import zarr
from conftest import drifting_frames, random_walk
from numpy.testing import assert_allclose, assert_array_equal

import chunkreg
from chunkreg.errors import IncompatibleOutputError, InputError, TaskFailedError
from chunkreg.io import open_array
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.timeseries import PatchGrid, register_timeseries
from chunkreg.timeseries import _register as register_module

SYNC = {"scheduler": "synchronous", "progress": False}

# (frame shape, frames, largest drift, scene margin): 2-D frames drift up to 20 px, 3-D
# frames (32^3) up to 5 px, so that a frame keeps most of its content.
CASES = {2: ((96, 96), 24, 20.0, 24), 3: ((32, 32, 32), 20, 5.0, 8)}


def make_series(ndim, seed=0, noise=0.02):
    shape, n, drift, margin = CASES[ndim]
    positions = random_walk(n, ndim, seed=seed, max_drift=drift)
    frames = drifting_frames(shape, positions, seed=seed, margin=margin, noise=noise)
    return frames, positions[0] - positions


def as_uint16(frames):
    return np.clip(np.rint(frames * 20000 + 1000), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("reference", ["first", "mean", "previous"])
def test_known_drift_is_recovered(tmp_path, to_zarr, ndim, reference):
    frames, truth = make_series(ndim, seed=ndim)
    if ndim == 2:
        frames = as_uint16(frames)
    stack = to_zarr(frames)
    out = tmp_path / "drift.zarr"
    strides = (1, 4, 16) if reference == "previous" else None
    result = register_timeseries(
        stack, out, reference=reference, upsample_factor=20, strides=strides, batch_size=8, **SYNC
    )
    assert_allclose(result.shifts, truth, atol=0.1)
    assert not result.low_quality.any()
    assert np.nanmedian(result.quality_after) > 0.97
    # NCC with the reference; for "previous", with the previous frame (already similar)
    gain = 0.02 if reference == "previous" else 0.2
    assert np.nanmedian(result.quality_after) > np.nanmedian(result.quality_before) + gain
    group = zarr.open_group(str(out), mode="r")
    corrected = group["corrected"]
    assert corrected.dtype == frames.dtype and corrected.shape == frames.shape
    assert corrected.chunks == (1, *frames.shape[1:])
    assert_allclose(group["shifts"][...], result.shifts)
    # the corrected frames line up with frame 0 inside the region every frame covers
    inner = tuple(slice(int(np.ceil(np.abs(truth[:, a]).max())) + 2, None) for a in range(ndim))
    inner = tuple(slice(s.start, frames.shape[1 + a] - s.start) for a, s in enumerate(inner))
    first = frames[0].astype(np.float64)[inner]
    t = int(np.argmax(np.linalg.norm(truth, axis=1)))
    raw = np.abs(frames[t].astype(np.float64)[inner] - first).mean()
    fixed = np.abs(corrected[t].astype(np.float64)[inner] - first).mean()
    # two frames' noise (sigma 0.02 each) alone differ by sqrt(2/pi) * sqrt(2) * 0.02 on average
    floor = 2 / np.sqrt(np.pi) * 0.02 * (20000 if ndim == 2 else 1)
    assert fixed < 1.3 * floor < 0.25 * raw


def test_tables_csv_and_ome_metadata(tmp_path, to_zarr):
    frames, _truth = make_series(2, seed=5)
    stack = to_zarr(frames[:8])
    out = tmp_path / "run.zarr"
    result = register_timeseries(stack, out, upsample_factor=20, **SYNC)
    assert result.csv_path == str(tmp_path / "run_shifts.csv")
    with open(result.csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    assert list(rows[0])[:3] == ["frame", "shift_y", "shift_x"]
    assert_allclose(
        [[float(r["shift_y"]), float(r["shift_x"])] for r in rows], result.shifts, atol=1e-5
    )
    assert [int(r["low_quality"]) for r in rows] == [0] * 8
    group = zarr.open_group(str(out), mode="r")
    for name in ("measured_shifts", "error", "phasediff", "quality_before", "quality_after"):
        assert group[name].shape[0] == 8
    ome = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["t", "y", "x"]
    assert_array_equal(open_array(str(out))[...], group["corrected"][...])
    assert "max drift" in result.summary() and result.max_drift == pytest.approx(
        np.linalg.norm(result.shifts, axis=1).max()
    )


def test_piecewise_recovers_a_smooth_spatially_varying_shift(tmp_path, to_zarr):
    size, margin, n = 128, 16, 8
    scene = textured_image((size + 2 * margin,) * 2, seed=5)
    rng = np.random.default_rng(0)
    frames, fields = [], []
    crop = (slice(margin, margin + size),) * 2
    for t in range(n):
        field = np.zeros((2, *scene.shape), np.float32)
        if t:
            field = smooth_displacement(scene.shape, amplitude=1.5, seed=t, periods=0.5)
            field += rng.uniform(-4, 4, 2).astype(np.float32)[:, None, None]
        frames.append(apply_flow(scene, field)[crop] + rng.normal(0, 0.005, (size, size)))
        fields.append(field[(slice(None), *crop)])
    frames = np.asarray(frames, np.float32)
    out = tmp_path / "pw.zarr"
    result = register_timeseries(
        to_zarr(frames),
        out,
        upsample_factor=20,
        piecewise={"patch": 48, "overlap": 16},
        batch_size=4,
        **SYNC,
    )
    group = zarr.open_group(str(out), mode="r")
    grid = PatchGrid((size, size), 48, 16)
    patch = group["patch_shifts"][...]
    assert patch.shape == (n, 4, 4, 2)
    assert not group["patch_outliers"][...].any()
    for t in range(n):
        for index, start in grid.regions():
            region = (slice(None), *(slice(s, s + 48) for s in start))
            # the shift a patch measures is the mean displacement over the patch
            assert_allclose(patch[t][index], fields[t][region].mean(axis=(1, 2)), atol=0.2)
    corrected = group["corrected"][...]
    inner = (slice(12, -12),) * 2
    for t in range(1, n):
        before = np.abs(frames[t][inner] - frames[0][inner]).mean()
        after = np.abs(corrected[t][inner] - frames[0][inner]).mean()
        assert after < 0.2 * before
    assert np.nanmin(result.quality_after[1:]) > 0.99


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_blank_and_noise_frames_are_flagged_and_do_not_corrupt_neighbours(
    tmp_path, to_zarr, reference
):
    frames, truth = make_series(2, seed=9)
    frames = frames[:16]
    truth = truth[:16]
    frames[6] = 0.4  # blank
    frames[11] = np.random.default_rng(1).random(frames.shape[1:])  # pure noise
    result = register_timeseries(
        to_zarr(frames),
        tmp_path / "o.zarr",
        reference=reference,
        upsample_factor=20,
        batch_size=4,
        **SYNC,
    )
    assert_array_equal(np.flatnonzero(result.low_quality), [6, 11])
    good = ~result.low_quality
    # a chain of 15 links (stride 1, bridged over the bad frames) accumulates ~0.02 px per link
    tol = 0.1 if reference == "first" else 0.15
    assert_allclose(result.shifts[good], truth[good], atol=tol)
    # the flagged frames get shifts interpolated from their neighbours
    assert_allclose(result.shifts[6], (result.shifts[5] + result.shifts[7]) / 2, atol=1e-9)
    assert abs(result.quality_after[6]) < 0.05 and abs(result.quality_after[11]) < 0.1
    assert "low quality" in result.summary()


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (lambda: np.zeros((32, 32), np.float32), {}, "series of 2-D or 3-D frames"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"time_axis": 3}, "time_axis 3"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"reference": 4}, "out of range"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"reference": -5}, "out of range"),
        (
            lambda: np.zeros((4, 32, 32), np.float32),
            {"reference": "previous", "piecewise": True},
            "fixed reference",
        ),
        (lambda: np.zeros((4, 32, 32), np.float32), {"strides": (1, 2)}, "previous"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"mask": np.ones((8, 8), bool)}, "mask"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"roi": ((0, 40), (0, 32))}, "roi"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"upsample_factor": 0}, "upsample"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"interpolation": "cubic"}, "interp"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"min_quality": "high"}, "min_quality"),
        (lambda: np.zeros((4, 32, 32), np.float32), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_raises_and_writes_nothing(tmp_path, to_zarr, make, kwargs, match):
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match=match):
        register_timeseries(to_zarr(make(), chunks=make().shape), out, **kwargs, **SYNC)
    assert not out.exists()
    assert not (tmp_path / "out_shifts.csv").exists()


def test_numpy_stack_is_refused(tmp_path):
    with pytest.raises(InputError, match="numpy array"):
        register_timeseries(np.zeros((3, 16, 16)), tmp_path / "o.zarr", **SYNC)
    assert not (tmp_path / "o.zarr").exists()


def test_time_axis_last_gives_the_same_result(tmp_path, to_zarr):
    frames, _truth = make_series(2, seed=3)
    frames = frames[:8]
    moved = np.ascontiguousarray(np.moveaxis(frames, 0, -1))
    a = register_timeseries(to_zarr(frames), tmp_path / "a.zarr", upsample_factor=20, **SYNC)
    b = register_timeseries(
        to_zarr(moved, "last.zarr", chunks=(96, 96, 1)),
        tmp_path / "b.zarr",
        upsample_factor=20,
        time_axis=-1,
        **SYNC,
    )
    assert_allclose(b.shifts, a.shifts, atol=1e-6)
    assert_array_equal(
        zarr.open_group(str(tmp_path / "b.zarr"))["corrected"][...],
        zarr.open_group(str(tmp_path / "a.zarr"))["corrected"][...],
    )


@pytest.mark.parametrize("how", ["roi", "mask"])
def test_roi_or_mask_ignores_a_static_bright_object(tmp_path, to_zarr, how):
    frames, truth = make_series(2, seed=4)
    frames = frames[:6]
    frames[:, :, 70:] = 3.0  # a static object covering the right side of every frame
    keep = {"roi": {"roi": (slice(None), slice(0, 64))}, "mask": {"mask": np.zeros((96, 96), bool)}}
    keep["mask"]["mask"][:, :64] = True
    result = register_timeseries(
        to_zarr(frames), tmp_path / "o.zarr", upsample_factor=20, **keep[how], **SYNC
    )
    # the masked correlation works in whole pixels; the tapered ROI correlation to 1/20 px
    tol = 0.1 if how == "roi" else 0.6
    assert_allclose(result.shifts, truth[:6], atol=tol)
    plain = register_timeseries(to_zarr(frames, "p.zarr"), tmp_path / "p.zarr.out", **SYNC)
    assert np.abs(plain.shifts - truth[:6]).max() > 1.0  # without it, the object wins


def test_apply_false_writes_no_stack_but_measures_quality(tmp_path, to_zarr):
    frames, truth = make_series(2, seed=6)
    result = register_timeseries(
        to_zarr(frames[:6]), tmp_path / "o.zarr", apply=False, upsample_factor=20, **SYNC
    )
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert "corrected" not in group
    assert_allclose(result.shifts, truth[:6], atol=0.1)
    assert np.all(result.quality_after > 0.95)


def test_different_parameters_refuse_to_resume(tmp_path, to_zarr):
    frames, _ = make_series(2, seed=2)
    stack = to_zarr(frames[:4])
    register_timeseries(stack, tmp_path / "o.zarr", **SYNC)
    with pytest.raises(IncompatibleOutputError, match="upsample_factor"):
        register_timeseries(stack, tmp_path / "o.zarr", upsample_factor=20, **SYNC)
    result = register_timeseries(
        stack, tmp_path / "o.zarr", upsample_factor=20, overwrite=True, **SYNC
    )
    assert result.reports["register"].n_done == 1


def test_interrupted_run_resumes_only_missing_batches(tmp_path, to_zarr, monkeypatch):
    frames, _ = make_series(2, seed=7)
    stack = to_zarr(as_uint16(frames[:16]))
    clean = register_timeseries(stack, tmp_path / "clean.zarr", batch_size=4, **SYNC)
    real_register = register_module.register_batch

    def flaky(batch):
        if batch.index == 2:
            raise OSError("disk went away")
        return real_register(batch)

    monkeypatch.setattr(register_module, "register_batch", flaky)
    out = tmp_path / "o.zarr"
    failed = register_timeseries(stack, out, batch_size=4, **SYNC)  # reported, not raised
    assert (failed.report.n_failed, failed.reports["register"].n_done) == (1, 3)
    assert "register: batch 2 (frames 8..11)" in failed.report.failures[0].description
    assert "disk went away" in failed.report.failures[0].error and "fixup" not in failed.reports
    assert "fixup" in failed.report.notes["stage 2"]  # not run because of the failure
    with pytest.raises(TaskFailedError, match="1 of"):
        failed.report.raise_if_failed()
    # mark a finished batch so we can tell whether it is redone
    group = zarr.open_group(str(out), mode="r+")
    group["corrected"][0:4] = 7
    monkeypatch.setattr(register_module, "register_batch", real_register)
    resumed = register_timeseries(stack, out, batch_size=4, **SYNC)
    assert resumed.reports["register"].n_skipped == 3 and resumed.reports["register"].n_done == 1
    corrected = zarr.open_group(str(out), mode="r")["corrected"][...]
    expected = zarr.open_group(str(tmp_path / "clean.zarr"), mode="r")["corrected"][...]
    assert_array_equal(corrected[0:4], 7)  # not redone
    assert_array_equal(corrected[4:], expected[4:])  # the failed batch now matches
    assert_array_equal(resumed.shifts, clean.shifts)
    assert_array_equal(resumed.quality_after, clean.quality_after)


def test_real_pc12_consecutive_shifts(tmp_path, to_zarr, shared_data):
    tifffile = pytest.importorskip("tifffile")
    from skimage.registration import phase_cross_correlation

    frames = tifffile.imread(shared_data("pystackreg-pc12") / "pc12-unreg.tif")
    assert frames.shape == (5, 201, 199)
    result = register_timeseries(
        to_zarr(frames), tmp_path / "pc12.zarr", reference="previous", upsample_factor=20, **SYNC
    )
    links = np.diff(result.shifts, axis=0)
    oracle = [
        phase_cross_correlation(frames[t], frames[t + 1], upsample_factor=20, normalization=None)[0]
        for t in range(4)
    ]
    # same estimator family (plain cross-correlation): within 0.1 px of scikit-image
    assert_allclose(links, oracle, atol=0.1)
    # SOURCE.md quotes phase-normalised values; the two normalisations differ by up to 0.4 px
    # on these non-rigidly changing cells
    quoted = [(8.1, 0.3), (5.1, -0.1), (1.7, 0.6), (-3.2, -1.2)]
    assert_allclose(links, quoted, atol=0.5)
    assert not result.low_quality.any()
    assert np.all(result.quality_after[1:] > result.quality_before[1:])
    assert result.notes["link residual rms (px)"] == 0.0  # a plain chain fits exactly


@pytest.mark.cluster
def test_local_cluster_matches_synchronous(tmp_path, to_zarr):
    frames, _truth = make_series(2, seed=8)
    stack = to_zarr(frames[:12])
    here = register_timeseries(stack, tmp_path / "a.zarr", batch_size=3, upsample_factor=20, **SYNC)
    there = register_timeseries(
        stack, tmp_path / "b.zarr", batch_size=3, upsample_factor=20, n_workers=2, progress=False
    )
    assert there.reports["register"].n_done == 4
    assert_array_equal(there.shifts, here.shifts)
    assert_array_equal(
        zarr.open_group(str(tmp_path / "a.zarr"))["corrected"][...],
        zarr.open_group(str(tmp_path / "b.zarr"))["corrected"][...],
    )


def test_top_level_export():
    assert chunkreg.register_timeseries is register_timeseries
