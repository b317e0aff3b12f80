"""Blockwise rigid registration and the dense field made from it, against known truth."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from scipy import fft, ndimage

from chunkreg import BlockShifts, blockwise_shifts, shifts_to_flow
from chunkreg.cli import main
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.registration._block_kernels import (
    common_regions,
    estimate_shift,
    fill_unreliable,
    find_outliers,
    hann_window,
    shifted_ncc,
)
from chunkreg.testing import textured_image
from chunkreg.volume._blockwise import load_block_shifts, plan_blockwise_shifts
from chunkreg.volume._qc import read_qc, seam_metric
from chunkreg.volume._shifts_to_flow import default_tile, interpolate_shifts


def piecewise_rigid(shape, block, shifts, *, seed=0, sigma=2.0, noise=0.02):
    """Reference texture and a moving volume whose block ``b`` is the reference moved so that
    ``ndimage.shift(moving_block, shifts[b])`` gives the reference (exact: periodic texture,
    Fourier shift). Both get independent noise."""
    rng = np.random.default_rng(seed)
    ref = textured_image(shape, seed=seed, sigma=sigma).astype(np.float64)
    spectrum = fft.fftn(ref)
    mov = np.empty_like(ref)
    for index in np.ndindex(shifts.shape[:-1]):
        region = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block, strict=True))
        mov[region] = fft.ifftn(ndimage.fourier_shift(spectrum, -shifts[index])).real[region]
    ref += rng.normal(0, noise, shape)
    mov += rng.normal(0, noise, shape)
    return ref.astype(np.float32), mov.astype(np.float32)


def save(path, data, chunks):
    """Store ``data``; an input already holding it is left alone (a rewrite is a new input)."""
    if path.exists():
        old = zarr.open_array(path, mode="r")
        if old.shape == data.shape and old.chunks == tuple(chunks) and np.array_equal(old[:], data):
            return old
    return zarr.create_array(path, data=data, chunks=chunks, overwrite=True)


def run(tmp_path, ref, mov, chunks, **kwargs):
    save(tmp_path / "ref.zarr", ref, chunks)
    save(tmp_path / "mov.zarr", mov, chunks)
    kwargs.setdefault("scheduler", "synchronous")
    kwargs.setdefault("progress", False)
    return blockwise_shifts(
        tmp_path / "ref.zarr", tmp_path / "mov.zarr", tmp_path / "out.zarr", **kwargs
    )


# -- kernels -----------------------------------------------------------------------------------


def test_estimate_shift_sign_matches_ndimage_shift():
    ref = textured_image((96, 80), seed=4) + np.random.default_rng(0).normal(0, 0.02, (96, 80))
    true = np.array([3.4, -5.7])
    mov = ndimage.shift(ref, -true, order=3, mode="nearest")  # shift(mov, true) ~ ref
    shift, error = estimate_shift(ref, mov, upsample_factor=20)
    assert_allclose(shift, true, atol=0.25)
    assert 0 <= error < 0.5


def test_estimate_shift_of_constant_block_is_nan_not_error():
    shift, error = estimate_shift(np.ones((16, 16)), np.ones((16, 16)))
    assert np.isnan(shift).all() and np.isnan(error)


def test_hann_window_shape_and_symmetry():
    w = hann_window((5, 1, 8))
    assert w.shape == (5, 1, 8) and w.dtype == np.float32
    assert_allclose(w, w[::-1, :, ::-1])
    assert (w > 0).all() and w.max() <= 1


def test_common_regions_show_the_same_content():
    ref = textured_image((30, 20), seed=1)
    mov = ndimage.shift(
        ref, (-5, 3), order=0, mode="constant", cval=np.nan
    )  # shift(mov, (5, -3)) = ref
    ref_region, mov_region = common_regions(ref.shape, (5, -3))
    assert ref_region == (slice(5, 30), slice(0, 17))
    assert mov_region == (slice(0, 25), slice(3, 20))
    assert_array_equal(mov[mov_region][:-5, 3:], ref[ref_region][:-5, 3:])  # NaN where cut off
    assert common_regions((30, 20), (30, 0)) is None


def test_shifted_ncc_is_one_at_the_true_shift():
    ref = textured_image((64, 64), seed=2)
    mov = ndimage.shift(ref, (-3, 2), order=1, mode="nearest")  # mov(x) = ref(x + (3, -2))
    assert shifted_ncc(ref, mov, (3, -2)) == pytest.approx(1.0, abs=1e-6)
    assert shifted_ncc(ref, mov, (3.5, -2)) < 0.99
    half = ndimage.shift(ref, (-3.5, 2.25), order=1, mode="nearest")
    assert shifted_ncc(ref, half, (3.5, -2.25)) > 0.99  # fractional: linear interpolation
    assert shifted_ncc(ref, mov, (0, 0)) < 0.5
    assert shifted_ncc(ref, mov, (70, 0)) == 0.0  # nothing overlaps


def test_fill_unreliable_uses_neighbour_median_ring_by_ring():
    shifts = np.zeros((3, 4, 2))
    shifts[..., 0] = np.arange(12).reshape(3, 4)
    shifts[..., 1] = 5.0
    reliable = np.ones((3, 4), dtype=bool)
    reliable[0, 0] = reliable[0, 1] = False
    filled = fill_unreliable(np.where(reliable[..., None], shifts, np.nan), reliable)
    # (0, 1) touches reliable 2, 4, 5, 6 -> median 4.5; (0, 0) touches 4, 5 -> 4.5 (pass 1)
    assert_allclose(filled[0, 1], [4.5, 5.0])
    assert_allclose(filled[0, 0], [4.5, 5.0])
    assert_array_equal(filled[reliable], shifts[reliable])
    # a cell far from any reliable one is filled on a later ring
    line = np.array([[1.0], [np.nan], [np.nan], [np.nan]])
    assert_allclose(fill_unreliable(line, np.array([True, False, False, False]))[:, 0], 1.0)
    assert_array_equal(fill_unreliable(shifts, np.zeros((3, 4), dtype=bool)), 0.0)


def test_find_outliers_rejects_the_worst_first_and_spares_its_neighbours():
    # a row of blocks: the median of two neighbours is their mean, so a single pass would
    # also reject 0.5 and 1.0, whose medians the 9 drags to 4.5 and 5.25
    row = np.array([0.0, 0.5, 9.0, 1.0, 1.5])[None, :, None]
    assert_array_equal(find_outliers(row, np.ones((1, 5), bool), 3.0), [[0, 0, 1, 0, 0]])
    # a corner (3 neighbours) and an edge cell (5) are judged; the others stay
    grid = np.broadcast_to([1.0, -2.0], (4, 5, 2)).copy()
    grid[0, 0] = [8.0, -2.0]
    grid[3, 2] = [1.0, 5.0]
    expected = np.zeros((4, 5), bool)
    expected[0, 0] = expected[3, 2] = True
    assert_array_equal(find_outliers(grid, np.ones((4, 5), bool), 3.0), expected)
    assert not find_outliers(grid, np.ones((4, 5), bool), 7.5).any()  # deviations are 7
    # unreliable cells (NaN) neither count as neighbours nor get judged; nor does a cell
    # with a single reliable neighbour
    reliable = np.zeros((4, 5), bool)
    reliable[0, :2] = True
    nan_grid = np.where(reliable[..., None], grid, np.nan)
    assert not find_outliers(nan_grid, reliable, 3.0).any()
    reliable[1, 0] = True  # now (0, 0) has two: the median of (1, -2) twice
    nan_grid = np.where(reliable[..., None], grid, np.nan)
    assert_array_equal(find_outliers(nan_grid, reliable, 3.0), expected & reliable)
    # nothing reliable: nothing to judge, no warning
    assert not find_outliers(np.full((3, 3, 2), np.nan), np.zeros((3, 3), bool), 3.0).any()
    # 3-D grid of 3-D shifts: the centre alone, among 26 neighbours
    cube = np.zeros((3, 3, 3, 3))
    cube[1, 1, 1] = [0.0, 0.0, 4.0]
    assert_array_equal(find_outliers(cube, np.ones((3, 3, 3), bool), 3.0), cube[..., 2] > 0)
    # a linear field with steps of 2 voxels: edges and corners are one-sided, still kept
    i, j = np.indices((4, 5))
    ramp = np.stack([2.0 * i, 2.0 * j], axis=-1)
    assert not find_outliers(ramp, np.ones((4, 5), bool), 3.0).any()


# -- blockwise_shifts --------------------------------------------------------------------------


def test_piecewise_rigid_2d_recovered_and_blank_block_filled(tmp_path):
    rng = np.random.default_rng(1)
    true = rng.uniform(-10, 10, (4, 4, 2))
    ref, mov = piecewise_rigid((256, 256), (64, 64), true, seed=1)
    ref[64:128, 64:128] = 0.0  # an empty block: constant in both volumes
    mov[64:128, 64:128] = 0.0
    # independent random shifts: every block disagrees with its neighbours, keep them all;
    # zarr does not store the blank block's chunks (all fill value): sparse on purpose
    result = run(tmp_path, ref, mov, (64, 64), block=64, max_deviation=None, allow_sparse=True)
    assert isinstance(result, BlockShifts) and result.report.ok
    blank = np.zeros((4, 4), dtype=bool)
    blank[1, 1] = True
    assert_array_equal(result.reliable, ~blank)
    assert np.isnan(result.measured_shifts[1, 1]).all()
    assert_allclose(result.measured_shifts[~blank], true[~blank], atol=0.2)
    neighbours = true[0:3, 0:3].reshape(9, 2)[np.arange(9) != 4]
    assert_allclose(result.shifts[1, 1], np.median(neighbours, axis=0), atol=0.2)
    assert (result.quality[~blank] > 0.5).all()  # lower beside the blank block
    assert (result.ncc_before[~blank] < result.quality[~blank]).all()
    assert_allclose(result.centres[1, 2], [95.5, 159.5])
    # everything is in the output group, and read back identically
    loaded = load_block_shifts(tmp_path / "out.zarr")
    for name in ("shifts", "measured_shifts", "quality", "reliable", "outlier", "centres"):
        assert_array_equal(getattr(loaded, name), getattr(result, name))
    qc = read_qc(tmp_path / "out.zarr")
    assert_array_equal(qc["reliable"], result.reliable)
    assert_allclose(qc["ncc_after"], result.quality, rtol=1e-6)


def test_smooth_shift_field_2d_with_overlap(tmp_path):
    i, j = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    true = np.array([-6.0, 4.0]) + i[..., None] * [1.2, 0.7] + j[..., None] * [0.9, -1.1]
    ref, mov = piecewise_rigid((256, 256), (64, 64), true, seed=2)
    result = run(tmp_path, ref, mov, (64, 64), block=64, overlap=16)
    assert result.reliable.all()
    assert_allclose(result.measured_shifts, true, atol=0.2)
    # neighbours differ by up to 2.1 voxels, 1.3 from their median (a corner): no outliers
    assert not result.outlier.any()
    assert zarr.open_group(tmp_path / "out.zarr", mode="r").attrs["blocks"]["n_outliers"] == 0


def test_a_confident_wrong_block_is_rejected_as_an_outlier(tmp_path):
    """One block of the moving volume shows the reference moved by a shift 9 voxels off the
    smooth field (as a repetitive texture or a bright artefact can make a block register):
    it correlates well at the wrong shift, is rejected, and filled from its neighbours."""
    i, j = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    true = np.array([-6.0, 4.0]) + i[..., None] * [1.2, 0.7] + j[..., None] * [0.9, -1.1]
    tampered = true.copy()
    tampered[1, 2] += [7.0, -6.0]
    ref, mov = piecewise_rigid((256, 256), (64, 64), tampered, seed=2)
    result = run(tmp_path, ref, mov, (64, 64), block=64, overlap=16)
    bad = np.zeros((4, 4), bool)
    bad[1, 2] = True
    assert_allclose(result.measured_shifts[1, 2], tampered[1, 2], atol=0.2)  # wrong, and
    assert result.quality[1, 2] > 0.8  # confident (min_quality is 0.3): quality cannot tell
    assert_array_equal(result.outlier, bad)
    assert_array_equal(result.reliable, ~bad)
    assert_allclose(result.shifts[1, 2], true[1, 2], atol=0.5)
    assert_allclose(result.shifts[~bad], true[~bad], atol=0.2)
    meta = zarr.open_group(tmp_path / "out.zarr", mode="r").attrs["blocks"]
    assert (meta["n_outliers"], meta["n_reliable"], meta["max_deviation"]) == (1, 15, 5.0)
    assert_array_equal(load_block_shifts(tmp_path / "out.zarr").outlier, bad)
    assert "(1 rejected" in result.report.notes["reliable blocks"]
    # without the rule the block is trusted, with its wrong shift (applied afresh: no rerun)
    kept = run(tmp_path, ref, mov, (64, 64), block=64, overlap=16, max_deviation=None)
    assert kept.report.n_done == 0
    assert kept.reliable.all() and not kept.outlier.any()
    assert np.linalg.norm(kept.shifts[1, 2] - true[1, 2]) > 9
    assert zarr.open_group(tmp_path / "out.zarr", mode="r").attrs["blocks"]["n_outliers"] == 0
    # the command line: a number or "none"
    argv = ["blocks", *(str(tmp_path / n) for n in ("ref.zarr", "mov.zarr", "out.zarr"))]
    argv += ["--block", "64", "--overlap", "16", "--scheduler", "synchronous", "--no-progress"]
    assert main([*argv, "--max-deviation", "5"]) == 0
    assert_array_equal(load_block_shifts(tmp_path / "out.zarr").outlier, bad)
    assert main([*argv, "--max-deviation", "none"]) == 0
    assert not load_block_shifts(tmp_path / "out.zarr").outlier.any()
    with pytest.raises(SystemExit):
        main([*argv, "--max-deviation", "far"])


def test_piecewise_rigid_3d(tmp_path):
    true = np.random.default_rng(3).uniform(-8, 8, (2, 2, 2, 3))
    ref, mov = piecewise_rigid((64, 64, 64), (32, 32, 32), true, seed=3, sigma=1.5)
    # independent random shifts: every block disagrees with its neighbours, keep them all
    result = run(tmp_path, ref, mov, (32, 32, 32), block=32, max_deviation=None)
    assert result.reliable.all()
    assert_allclose(result.shifts, true, atol=0.2)


def test_blank_and_noise_only_volumes_never_crash(tmp_path):
    blank = np.zeros((64, 64), dtype=np.uint16)
    result = run(tmp_path, blank, blank, (32, 32), block=32)
    assert result.report.ok and not result.reliable.any()
    assert_array_equal(result.shifts, 0.0)
    rng = np.random.default_rng(0)
    noise_a, noise_b = rng.normal(size=(2, 64, 64)).astype(np.float32)
    result = run(tmp_path, noise_a, noise_b, (32, 32), block=32, overwrite=True)
    assert result.report.ok and not result.reliable.any()  # nothing correlates
    assert (np.abs(result.quality) < 0.3).all()


def test_min_std_marks_faint_blocks_unreliable(tmp_path):
    true = np.zeros((2, 2, 2))
    ref, mov = piecewise_rigid((64, 64), (32, 32), true, seed=5)
    ref[:32, :32] *= 1e-3
    mov[:32, :32] *= 1e-3
    result = run(tmp_path, ref, mov, (32, 32), block=32, min_std=1e-3)
    assert_array_equal(result.reliable, [[False, True], [True, True]])


def test_resume_recomputes_only_missing_blocks(tmp_path):
    true = np.random.default_rng(6).uniform(-4, 4, (2, 3, 2))
    ref, mov = piecewise_rigid((64, 96), (32, 32), true, seed=6)
    first = run(tmp_path, ref, mov, (32, 32), block=32)
    again = run(tmp_path, ref, mov, (32, 32), block=32)
    assert (again.report.n_done, again.report.n_skipped) == (0, 6)
    assert_array_equal(again.shifts, first.shifts)
    # forget three blocks, as if the run had been killed: only they are recomputed
    group = zarr.open_group(tmp_path / "out.zarr", mode="a")
    group["_completion/blocks"][3:] = 0
    resumed = run(tmp_path, ref, mov, (32, 32), block=32)
    assert (resumed.report.n_done, resumed.report.n_skipped) == (3, 3)
    assert_array_equal(resumed.measured_shifts, first.measured_shifts)
    # reliability thresholds are applied afresh without recomputing
    strict = run(tmp_path, ref, mov, (32, 32), block=32, min_quality=1.0)
    assert strict.report.n_done == 0 and not strict.reliable.any()
    # so is the outlier rule: these random shifts differ by up to 7.6 voxels
    tight = run(tmp_path, ref, mov, (32, 32), block=32, max_deviation=1.0)
    assert tight.report.n_done == 0 and tight.outlier.any()
    assert_array_equal(tight.reliable, ~tight.outlier)


def test_bad_input_is_refused_and_writes_nothing(tmp_path):
    ref = save(tmp_path / "ref.zarr", np.zeros((64, 64), np.float32), (32, 32))
    save(tmp_path / "small.zarr", np.zeros((64, 32), np.float32), (32, 32))
    save(tmp_path / "complex.zarr", np.zeros((64, 64), np.complex64), (32, 32))
    out = tmp_path / "out.zarr"
    cases = [
        ({"moving": tmp_path / "small.zarr"}, "same shape"),
        ({"moving": tmp_path / "complex.zarr"}, "numeric"),
        ({"moving": np.zeros((64, 64))}, "numpy array"),
        ({"moving": tmp_path / "missing.zarr"}, "does not exist"),
        ({"block": 4}, "block must be >= 8 along axis 0"),
        ({"block": (32, 32, 32)}, "one value per axis"),
        ({"overlap": -1}, "overlap must be >= 0"),
        ({"upsample_factor": 0}, "upsample_factor"),
        ({"normalization": "foo"}, "normalization"),
        ({"min_quality": 2.0}, "min_quality"),
        ({"max_deviation": 0}, "max_deviation must be > 0"),
        ({"max_deviation": float("nan")}, "max_deviation must be > 0"),
        ({"max_deviation": "none"}, "max_deviation must be a number"),
        ({"batch_size": 0}, "batch_size"),
    ]
    for kwargs, message in cases:
        args = {"moving": ref, "block": 32, **kwargs}
        with pytest.raises(InputError, match=message):
            blockwise_shifts(ref, args.pop("moving"), out, scheduler="synchronous", **args)
        assert not out.exists()


def test_incompatible_existing_output_is_left_untouched(tmp_path):
    ref, mov = piecewise_rigid((64, 64), (32, 32), np.zeros((2, 2, 2)), seed=7)
    run(tmp_path, ref, mov, (32, 32), block=32)
    before = load_block_shifts(tmp_path / "out.zarr")
    with pytest.raises(IncompatibleOutputError, match="block"):
        run(tmp_path, ref, mov, (32, 32), block=16)
    assert_array_equal(load_block_shifts(tmp_path / "out.zarr").shifts, before.shifts)
    assert run(tmp_path, ref, mov, (32, 32), block=16, overwrite=True).shifts.shape == (4, 4, 2)


def test_plan_describes_blocks_and_read_amplification(tmp_path):
    save(tmp_path / "a.zarr", np.zeros((100, 70), np.float32), (32, 32))
    plan = plan_blockwise_shifts(tmp_path / "a.zarr", tmp_path / "a.zarr", block=32, overlap=8)
    text = str(plan)
    assert plan.grid.grid_shape == (4, 3) and "12 in a grid of (4, 3)" in text
    assert f"{plan.grid.read_amplification((32, 32)):.2f}x" in text


# -- shifts_to_flow ----------------------------------------------------------------------------


def flow_of(path):
    return zarr.open_group(path, mode="r")["flow"]


def test_constant_shift_grid_gives_constant_flow_of_opposite_sign(tmp_path):
    shifts = np.broadcast_to(np.array([1.5, -2.0, 0.25]), (2, 3, 2, 3)).copy()
    report = shifts_to_flow(
        shifts,
        tmp_path / "flow.zarr",
        shape=(40, 70, 33),
        block=(20, 24, 20),
        chunks=(16, 16, 16),
        scheduler="synchronous",
        progress=False,
    )
    flow = flow_of(tmp_path / "flow.zarr")
    assert flow.shape == (3, 40, 70, 33) and flow.dtype == np.float32
    assert flow.chunks == (1, 16, 16, 16)
    assert_allclose(flow[...], np.broadcast_to([[[[-1.5]]], [[[2.0]]], [[[-0.25]]]], flow.shape))
    assert report.ok and "seam metric" in report.notes


@pytest.mark.parametrize("order", [1, 3])
def test_linear_grid_is_interpolated_exactly(tmp_path, order):
    shape, block = (100, 91), (31, 31)  # ragged last blocks; centres on whole voxels
    centres = [np.array([15, 46, 77, 96]), np.array([15, 46, 76])]
    cy, cx = np.meshgrid(*centres, indexing="ij")
    shifts = np.stack([0.05 * cy - 0.02 * cx + 1, 0.03 * cx + 0.01 * cy], axis=-1)
    shifts_to_flow(
        shifts,
        tmp_path / "flow.zarr",
        shape=shape,
        block=block,
        chunks=(16, 16),
        tile=(32, 48),
        order=order,
        scheduler="synchronous",
        progress=False,
    )
    flow = flow_of(tmp_path / "flow.zarr")[...]
    assert_allclose(flow[:, cy, cx], -np.moveaxis(shifts, -1, 0), atol=1e-5)
    if order == 1:  # linear inside the hull of the centres
        yy, xx = np.mgrid[15:97, 15:77].astype(np.float64)
        assert_allclose(flow[0, 15:97, 15:77], -(0.05 * yy - 0.02 * xx + 1), atol=1e-4)
        assert_allclose(flow[0, :15, 15], flow[0, 15, 15])  # constant beyond the centres


def test_separable_interpolation_equals_map_coordinates():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(3, 4, 5, 3))
    centres = [np.array([3.5, 10.5, 16.0]), np.array([2.0, 6.0, 10.0, 13.0]), np.arange(5) * 4.0]
    region = (slice(0, 20), slice(3, 15), slice(0, 19))
    got = interpolate_shifts(grid, centres, region, order=3)
    index = [
        np.interp(np.arange(s.start, s.stop), c, np.arange(len(c)))
        for s, c in zip(region, centres, strict=True)
    ]
    coords = np.stack(np.meshgrid(*index, indexing="ij"))
    for c in range(3):
        expected = -ndimage.map_coordinates(grid[..., c], coords, order=3, mode="nearest")
        assert_allclose(got[c], expected, atol=1e-5)


def test_flow_from_blocks_registers_a_shifted_volume(tmp_path):
    # moving is the reference moved by d: flow must be +d so that moving(x + flow) = ref(x)
    d = np.array([2.6, -1.3])
    ref = textured_image((96, 96), seed=8) + np.random.default_rng(8).normal(0, 0.02, (96, 96))
    mov = ndimage.shift(ref, d, order=3, mode="nearest")
    result = run(tmp_path, ref.astype(np.float32), mov.astype(np.float32), (32, 32), block=48)
    assert_allclose(result.shifts.reshape(-1, 2), np.broadcast_to(-d, (4, 2)), atol=0.15)
    shifts_to_flow(
        tmp_path / "out.zarr", tmp_path / "flow.zarr", scheduler="synchronous", progress=False
    )
    flow = flow_of(tmp_path / "flow.zarr")
    assert flow.chunks == (1, 32, 32)  # the reference's chunking by default
    flow = flow[...]
    assert_allclose(flow[:, 48, 48], d, atol=0.15)
    grid = np.mgrid[:96, :96].astype(np.float64)
    warped = ndimage.map_coordinates(mov, grid + flow, order=3, mode="nearest")
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(warped - ref)[inner].mean() < 0.2 * np.abs(mov - ref)[inner].mean()
    qc = read_qc(tmp_path / "flow.zarr")
    assert qc["attrs"]["seam_metric"] == pytest.approx(seam_metric(flow, (48, 48)), rel=1e-6)
    assert qc["attrs"]["seam_metric"] == pytest.approx(1.0, abs=0.1)


def test_shifts_to_flow_bad_input(tmp_path):
    out = tmp_path / "flow.zarr"
    cases = [
        ({"blocks": np.zeros((2, 2, 2))}, "needs the volume shape"),
        ({"blocks": np.zeros((2, 2, 2)), "shape": (64, 64), "block": 16}, "does not match"),
        ({"blocks": np.full((2, 2, 2), np.nan), "shape": (64, 64), "block": 32}, "NaN"),
        ({"blocks": np.zeros((2, 2, 2)), "shape": (64, 64), "block": 32, "order": 2}, "order"),
        (
            {
                "blocks": np.zeros((2, 2, 2)),
                "shape": (64, 64),
                "block": 32,
                "tile": (20, 32),
                "chunks": 16,
            },
            "multiple of the chunk",
        ),
        ({"blocks": tmp_path}, "not a blockwise_shifts output"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            shifts_to_flow(kwargs.pop("blocks"), out, scheduler="synchronous", **kwargs)
        assert not out.exists()


def test_unfinished_blocks_output_is_refused(tmp_path):
    ref, mov = piecewise_rigid((64, 64), (32, 32), np.zeros((2, 2, 2)), seed=9)
    run(tmp_path, ref, mov, (32, 32), block=32)
    group = zarr.open_group(tmp_path / "out.zarr", mode="a")
    group.attrs["blocks"] = {**group.attrs["blocks"], "complete": False}
    with pytest.raises(InputError, match="unfinished"):
        shifts_to_flow(tmp_path / "out.zarr", tmp_path / "flow.zarr", scheduler="synchronous")
    assert not (tmp_path / "flow.zarr").exists()


def test_default_tile_is_whole_chunks():
    assert default_tile((1000, 1000, 1000), (64, 64, 64), target=2**21) == (128, 128, 128)
    assert default_tile((10, 1000), (10, 64), target=2**21) == (10, 1024)
    assert default_tile((30, 20), (16, 16)) == (32, 32)
