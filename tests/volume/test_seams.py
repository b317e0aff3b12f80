"""Seam-free stitching and the quality control ``compute_flow`` writes beside the flow."""

import dataclasses
import math

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import chunkreg
from chunkreg.cli import main
from chunkreg.registration import normalized_cross_correlation
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import plan_flow, read_qc, run_flow_plan, seam_metric
from tiling.strategies import tile_grids  # tests/ is on sys.path (prepend import mode)

SYNC = {"scheduler": "synchronous", "progress": False}
SHAPE, TILE, HALO = (256, 256), 64, 8


@pytest.fixture(scope="module")
def deformed(tmp_path_factory):
    """A pair moved by a smooth 8-voxel displacement, and its coarse-to-fine flow."""
    directory = tmp_path_factory.mktemp("seams")
    ref = textured_image(SHAPE, seed=0)
    mov = apply_flow(ref, -smooth_displacement(SHAPE, amplitude=8, seed=1))
    paths = []
    for name, data in (("reference", ref), ("moving", mov)):
        zarr.create_array(str(directory / f"{name}.zarr"), data=data, chunks=(32, 32))
        paths.append(str(directory / f"{name}.zarr"))
    plan = plan_flow(*paths, tile=TILE, overlap=HALO, radius=3)
    out = directory / "flow.zarr"
    report = run_flow_plan(plan, str(out), **SYNC)
    report.raise_if_failed()
    flow = zarr.open_array(str(out), path="flow", mode="r")[:]
    return {"dir": directory, "paths": paths, "ref": ref, "mov": mov, "plan": plan, "out": out,
            "flow": flow, "report": report}  # fmt: skip


def _cropped(plan):
    """The same plan with no blend band: each tile's core is cropped from its read region."""
    levels = tuple(dataclasses.replace(lp, band=(0,) * plan.ndim) for lp in plan.levels)
    return dataclasses.replace(plan, levels=levels)


def test_blended_tiles_leave_no_seams_and_cropped_tiles_do(deformed):
    """At the same halo (the same computation), cropping leaves steps; blending does not."""
    flow, plan = deformed["flow"], deformed["plan"]
    assert plan.levels[0].band == (HALO // 2,) * 2 and len(plan.levels) == 2
    blended = seam_metric(flow, (TILE, TILE))
    assert blended < 1.1
    # the QC's seam metric, combined from per-tile sums, is the metric of the whole field
    qc = read_qc(str(deformed["out"]))
    assert_allclose(qc["attrs"]["seam_metric"], blended, rtol=1e-6)
    assert deformed["report"].notes["seam metric"] == f"{blended:.3f} (1 = no seams)"

    out = deformed["dir"] / "cropped.zarr"
    run_flow_plan(_cropped(plan), str(out), **SYNC).raise_if_failed()
    cropped = zarr.open_array(str(out), path="flow", mode="r")[:]
    assert seam_metric(cropped, (TILE, TILE)) > 1.3  # the metric sees steps: the test can fail
    assert read_qc(str(out))["attrs"]["seam_metric"] > 1.3
    # away from the tile borders both stitchings hold the same flow
    inside = np.ones(SHAPE, dtype=bool)
    for border in range(TILE, SHAPE[0], TILE):
        inside[border - HALO : border + HALO, :] = False
        inside[:, border - HALO : border + HALO] = False
    assert np.median(np.abs(flow - cropped).sum(axis=0)[inside]) < 1e-3


def test_qc_ncc_per_tile_is_the_ncc_of_the_tile(deformed):
    """NCC before: reference vs moving over the core; after: vs the moving warped by the tile's
    own flow (measured in the tile task). Cropped tiles output their own flow, so there the QC
    is exactly the NCC of the output; blended, the output differs from the tile's flow only in
    the blend bands, by the tiles' disagreement."""
    ref, mov = deformed["ref"], deformed["mov"]
    out = deformed["dir"] / "cropped-qc.zarr"
    run_flow_plan(_cropped(deformed["plan"]), str(out), **SYNC).raise_if_failed()
    cropped = zarr.open_array(str(out), path="flow", mode="r")[:]
    for flow, qc, exact in (
        (cropped, read_qc(str(out)), True),
        (deformed["flow"], read_qc(str(deformed["out"])), False),
    ):
        assert qc["attrs"]["label"] == "tiles" and qc["attrs"]["tile_shape"] == [TILE, TILE]
        assert qc["ncc_before"].shape == qc["ncc_after"].shape == (4, 4)
        warped = chunkreg.warp(mov, flow, order=1, mode="edge")
        for index in np.ndindex(4, 4):
            core = tuple(slice(i * TILE, (i + 1) * TILE) for i in index)
            before = normalized_cross_correlation(ref[core], mov[core])
            after = normalized_cross_correlation(ref[core], warped[core])
            assert_allclose(qc["ncc_before"][index], before, rtol=1e-5, atol=1e-6)
            assert_allclose(qc["ncc_after"][index], after, rtol=1e-5 if exact else 0,
                            atol=1e-6 if exact else 5e-3)  # fmt: skip
        assert (qc["ncc_after"] > qc["ncc_before"] + 0.3).all()
        assert np.median(qc["ncc_after"]) > 0.95
    # overlapping tiles agree closely in the blend bands
    assert np.nanmedian(read_qc(str(deformed["out"]))["disagreement"]) < 0.1


def test_qc_command_lists_the_worst_tiles_first(deformed, capsys):
    assert main(["qc", str(deformed["out"]), "--worst", "3"]) == 0
    text = capsys.readouterr().out
    qc = read_qc(str(deformed["out"]))
    after = qc["ncc_after"]
    worst = np.unravel_index(np.argsort(after, axis=None)[:3], after.shape)
    rows = [line for line in text.splitlines() if line.startswith("  (")]
    assert [row.split(":")[0].strip() for row in rows] == [
        str((int(i), int(j))) for i, j in zip(*worst, strict=True)
    ]
    assert "tiles: 16 in a grid of (4, 4) of (64, 64) voxels, 16 measured" in text
    assert "improved in 16 of 16 tiles" in text
    assert "disagreement of overlapping tiles" in text
    assert "seam metric: " in text and "(no seams;" in text


def test_disagreement_exposes_tiles_that_found_different_motion(deformed):
    """Single-level tiles miss motion larger than their halo near their borders; blended, the
    field has no steps, but the tiles' disagreement in the bands gives them away."""
    out = deformed["dir"] / "single.zarr"
    report = chunkreg.compute_flow(*deformed["paths"], out, tile=TILE, overlap=HALO, radius=3,
                                   levels=1, **SYNC)  # fmt: skip
    report.raise_if_failed()
    qc = read_qc(str(out))
    baseline = read_qc(str(deformed["out"]))
    assert np.nanmedian(qc["disagreement"]) > 10 * np.nanmedian(baseline["disagreement"])
    assert np.nanmedian(qc["disagreement"]) > 0.5
    assert "tile disagreement" in report.notes


@pytest.mark.parametrize(
    ("shape", "tile", "depth", "band"),
    [((50, 37), (16, 16), (8, 6), (4, 3)), ((20, 18, 13), (8, 8, 8), (10, 4, 6), (10, 2, 3))],
    ids=["2d-ragged", "3d-band-wider-than-tile"],
)
def test_blending_equal_tile_results_changes_nothing(tmp_path, shape, tile, depth, band):
    """The two-pass stitching is a partition of unity: equal values come back unchanged, and a
    tile's indicator comes back as its blend weights (also when the band is wider than a tile)."""
    from chunkreg.engine._blend import blend_region, create_scratch
    from chunkreg.tiling import TileGrid, blend_weights

    grid = TileGrid(shape, tile, depth, chunks=tile)
    scratch = create_scratch(zarr.open_group(str(tmp_path / "s.zarr"), mode="w"), "t", grid, band)
    field = np.random.default_rng(0).standard_normal((len(shape), *shape)).astype(np.float32)
    for t in grid:
        region = scratch.band_grid.tile(t.number).read
        scratch.write(t.index, field[(slice(None), *region)])
    everything = tuple(slice(0, n) for n in shape)
    assert_allclose(blend_region(scratch, everything), field, rtol=0, atol=1e-5)
    part = tuple(slice(n // 3, n - 1) for n in shape)
    assert_allclose(blend_region(scratch, part), field[(slice(None), *part)], rtol=0, atol=1e-5)
    # one tile's indicator comes back as its blend weights (1 inside, ramps across the bands)
    for t in grid:
        region = scratch.band_grid.tile(t.number).read
        shape_t = tuple(s.stop - s.start for s in region)
        scratch.write(t.index, np.full((len(shape), *shape_t), float(t.number == 0), np.float32))
    ramp, spread = blend_region(scratch, everything, spread=True)
    expected = np.zeros(shape, np.float32)
    expected[scratch.band_grid.tile(0).read] = blend_weights(scratch.band_grid, 0)
    assert_allclose(ramp, np.broadcast_to(expected, ramp.shape), rtol=0, atol=1e-6)
    assert np.nanmax(spread) == pytest.approx(np.sqrt(len(shape)))  # 0 vs 1 per component
    # measured on every second voxel, the spread is the full one subsampled, from any origin
    for region in (everything, tuple(slice(1, n) for n in shape)):
        full = blend_region(scratch, region, spread=True)[1]
        coarse = blend_region(scratch, region, spread=True, spread_step=2)[1]
        assert_array_equal(coarse, full[(slice(None, None, 2),) * len(shape)])


@settings(max_examples=60, deadline=None)
@given(tile_grids(max_ndim=3, max_size=30, aligned=False), st.data())
def test_scratch_pieces_cut_each_blend_region_into_whole_chunks(grid, data):
    """Each tile's pieces cover its blend region exactly, each fits its chunk, and no two tiles
    (or pieces) share a chunk: every piece is written whole, once, by one tile."""
    from chunkreg.engine import Scratch
    from chunkreg.io import ArrayRef

    band = tuple(data.draw(st.integers(0, d)) for d in grid.depth)
    scratch = Scratch(ArrayRef("unused"), grid, band)
    seen = set()
    written = 0
    for tile in scratch.band_grid:
        cover = np.zeros(tile.read_shape, dtype=np.int32)
        for name, chunk, where in scratch._pieces(tile.index):
            local = tuple(slice(w.start - r.start, w.stop - r.start)
                          for w, r in zip(where, tile.read, strict=True))  # fmt: skip
            cover[local] += 1
            for axis, (c, w) in enumerate(zip(chunk, where, strict=True)):
                edge = scratch.classes(axis)[name[1 + axis]][0]
                assert c.stop - c.start == edge and 0 < w.stop - w.start <= edge
                assert c.start % edge == 0
                assert c.stop <= edge * scratch.classes(axis)[name[1 + axis]][1]
            key = (name, tuple(c.start for c in chunk))
            assert key not in seen
            seen.add(key)
            written += 4 * grid.ndim * math.prod(c.stop - c.start for c in chunk)
        assert (cover == 1).all()
    assert scratch.nbytes == written  # what the plan's disk estimate counts


@pytest.mark.parametrize("large", [False, True], ids=["every-voxel", "subsampled"])
@pytest.mark.parametrize("in_memory", [True, False], ids=["moving-in-memory", "moving-read"])
def test_tile_quality_is_the_ncc_before_and_after_warping(tmp_path, large, in_memory):
    """The tile task's QC: NCC over the core before and after warping the moving volume by the
    tile's flow, from the part of the moving volume in memory or read where it is not; large
    cores are measured on every second voxel per axis, which changes the NCC very little."""
    from chunkreg.volume._flow_tasks import _quality
    from chunkreg.volume._intensity import IDENTITY

    shape = (72, 72, 72) if large else (40, 40, 40)
    core = tuple(slice(4, n - 4) for n in shape)
    ref = textured_image(shape, seed=3)
    truth = smooth_displacement(shape, amplitude=3, seed=4)
    mov = apply_flow(ref, -truth)
    moving = zarr.create_array(str(tmp_path / "m.zarr"), data=mov, chunks=(16, 16, 16))
    flow = truth[(slice(None), *core)]
    if in_memory:
        region, start = mov, (0, 0, 0)
    else:  # only a corner in memory: both samples must be read from zarr
        region, start = mov[:8, :8, :8], (0, 0, 0)
    before, after = _quality(ref[core], (moving, region, start, IDENTITY), flow, core)
    warped = chunkreg.warp(mov, truth, order=1, mode="edge")
    full = (normalized_cross_correlation(ref[core], mov[core]),
            normalized_cross_correlation(ref[core], warped[core]))  # fmt: skip
    if large:  # 64**3 voxels: every second one per axis
        sub = (slice(None, None, 2),) * 3
        exact = (normalized_cross_correlation(ref[core][sub], mov[core][sub]),
                 normalized_cross_correlation(ref[core][sub], warped[core][sub]))  # fmt: skip
        assert_allclose((before, after), exact, rtol=1e-5)
        assert_allclose((before, after), full, atol=0.01)
    else:
        assert_allclose((before, after), full, rtol=1e-5)
    assert after > 0.95 and after > before + 0.1
