"""estimate_affine on zarr volumes; initial_affine in the flow and blocks; warp with an affine."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose
from scipy import ndimage

import chunkreg
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.volume import load_affine

from .affine_cases import about_centre, corner_error, deformation, make_pair, true_map

SYNC = {"scheduler": "synchronous", "progress": False}


def save(path, data, chunks):
    zarr.create_array(str(path), data=data, chunks=chunks, overwrite=True)
    return str(path)


CASES_2D = [  # angle (degrees), scale, shear, shift
    (2, 1.0, 0.0, (4.0, -3.0)),
    (8, 0.95, 0.03, (-6.0, 2.5)),
    (15, 1.05, -0.02, (3.0, 7.0)),
]


@pytest.mark.parametrize(("angle", "scale", "shear", "shift"), CASES_2D)
def test_recovers_2d_affine_within_0_3_voxel_everywhere(tmp_path, angle, scale, shear, shift):
    shape = (320, 288)
    truth = about_centre(shape, angles=angle, scale=scale, shear=shear, shift=shift)
    ref, mov = make_pair(shape, truth, seed=angle)
    result = chunkreg.estimate_affine(save(tmp_path / "r.zarr", ref, (64, 64)),
                                      save(tmp_path / "m.zarr", mov, (64, 64)),
                                      tmp_path / "affine.zarr", **SYNC)  # fmt: skip
    assert corner_error(result.matrix, truth, shape) < 0.3
    assert result.n_inliers >= 0.9 * np.isfinite(result.residuals).sum()
    assert result.rms < 0.3
    assert result.report.ok and "inliers" in result.report.notes


@pytest.mark.parametrize(
    ("angles", "scale", "shear", "shift"),
    [((5, -3, 2), 1.04, 0.02, (2.0, -3.0, 1.5)), ((2, 9, -12), 0.96, 0.0, (-1.0, 4.0, 2.0))],
)
def test_recovers_3d_affine_within_0_3_voxel_everywhere(tmp_path, angles, scale, shear, shift):
    shape = (72, 80, 88)
    truth = about_centre(shape, angles=angles, scale=scale, shear=shear, shift=shift)
    ref, mov = make_pair(shape, truth, seed=3)
    result = chunkreg.estimate_affine(save(tmp_path / "r.zarr", ref, (24, 32, 32)),
                                      save(tmp_path / "m.zarr", mov, (24, 32, 32)),
                                      tmp_path / "affine.zarr", level=1, fine_block=32,
                                      max_blocks=27, **SYNC)  # fmt: skip
    assert corner_error(result.matrix, truth, shape) < 0.3
    assert result.level == 1


@pytest.mark.parametrize("model", ["rigid", "similarity", "translation"])
def test_constrained_models(tmp_path, model):
    shape = (256, 256)
    truth = {
        "rigid": about_centre(shape, angles=6, shift=(2.0, -5.0)),
        "similarity": about_centre(shape, angles=-4, scale=1.03, shift=(1.0, 1.0)),
        "translation": about_centre(shape, angles=0, shift=(7.5, -3.25)),
    }[model]
    ref, mov = make_pair(shape, truth, seed=7)
    result = chunkreg.estimate_affine(save(tmp_path / "r.zarr", ref, (64, 64)),
                                      save(tmp_path / "m.zarr", mov, (64, 64)),
                                      tmp_path / "a.zarr", model=model, **SYNC)  # fmt: skip
    assert corner_error(result.matrix, truth, shape) < 0.3
    if model == "rigid":
        lin = result.matrix[:2, :2]
        assert_allclose(lin @ lin.T, np.eye(2), atol=1e-12)
    if model == "translation":
        assert_allclose(result.matrix[:2, :2], np.eye(2))


def test_half_blank_volume_gives_the_affine_and_reports_blank_blocks(tmp_path):
    shape = (320, 320)
    truth = about_centre(shape, angles=10, scale=1.02, shift=(3.0, -2.0))
    ref, mov = make_pair(shape, truth, seed=11, noise=0.0)
    ref[:, 160:] = 0.0  # half the reference is empty
    mov = ndimage.affine_transform(ref, np.linalg.inv(truth), order=3, mode="nearest")
    result = chunkreg.estimate_affine(save(tmp_path / "r.zarr", ref, (64, 64)),
                                      save(tmp_path / "m.zarr", mov, (64, 64)),
                                      tmp_path / "a.zarr", **SYNC)  # fmt: skip
    assert corner_error(result.matrix, truth, shape) < 0.3
    blank = result.reference_points[:, 1] > 160 + 48  # blocks entirely in the empty half
    assert blank.any() and not result.inliers[blank].any()
    assert np.isnan(result.residuals[blank]).all()


@pytest.mark.parametrize("ndim", [2, 3])
def test_30_percent_noise_blocks_are_outliers_and_the_affine_holds(tmp_path, ndim):
    if ndim == 2:
        shape, block, kwargs = (384, 384), 96, {}
        truth = about_centre(shape, angles=7, scale=0.97, shear=0.02, shift=(2.0, 4.0))
    else:
        shape, block = (96, 96, 96), 32
        kwargs = {"level": 1, "fine_block": 32, "max_blocks": 27}
        truth = about_centre(shape, angles=(4, -3, 2), scale=1.02, shift=(1.0, -2.0, 1.0))
    ref, mov = make_pair(shape, truth, seed=5)
    rng = np.random.default_rng(0)
    cells = list(np.ndindex(*(n // block for n in shape)))
    corrupt = [cells[i] for i in rng.choice(len(cells), round(0.3 * len(cells)), replace=False)]
    for cell in corrupt:  # the reference blocks are pure noise there
        region = tuple(slice(c * block, (c + 1) * block) for c in cell)
        ref[region] = rng.uniform(0, 1, (block,) * ndim)
    result = chunkreg.estimate_affine(save(tmp_path / "r.zarr", ref, (32,) * ndim),
                                      save(tmp_path / "m.zarr", mov, (32,) * ndim),
                                      tmp_path / "a.zarr", **kwargs, **SYNC)  # fmt: skip
    assert corner_error(result.matrix, truth, shape) < 0.3
    in_corrupt = np.array([tuple(int(p // block) for p in point) in set(corrupt)
                           for point in result.reference_points])  # fmt: skip
    assert in_corrupt.sum() >= 0.2 * len(in_corrupt)
    assert not result.inliers[in_corrupt].any()  # every corrupted block rejected
    measured = np.isfinite(result.residuals)  # blocks partly beyond the moving one are not
    assert result.inliers[~in_corrupt & measured].mean() > 0.9


def test_result_is_stored_reloaded_and_resumed(tmp_path):
    shape = (256, 256)
    truth = about_centre(shape, angles=5, shift=(2.0, 1.0))
    ref, mov = make_pair(shape, truth)
    args = (save(tmp_path / "r.zarr", ref, (64, 64)), save(tmp_path / "m.zarr", mov, (64, 64)),
            tmp_path / "a.zarr")  # fmt: skip
    first = chunkreg.estimate_affine(*args, **SYNC)
    group = zarr.open_group(tmp_path / "a.zarr", mode="r")
    (transform,) = group.attrs["ome"]["coordinateTransformations"]
    assert transform["type"] == "affine"
    assert_allclose(transform["affine"], first.matrix[:2])
    assert "coarse" not in group  # the coarse images are deleted
    loaded = load_affine(tmp_path / "a.zarr")
    assert_allclose(loaded.matrix, first.matrix)
    np.testing.assert_array_equal(loaded.inliers, first.inliers)
    assert "rotation 5.00 degrees" in loaded.describe()
    again = chunkreg.estimate_affine(*args, **SYNC)
    assert again.report.n_done == 0 and "earlier run" in again.report.notes["affine"]
    assert_allclose(again.matrix, first.matrix)
    with pytest.raises(IncompatibleOutputError, match="model"):
        chunkreg.estimate_affine(*args, model="rigid", **SYNC)


def test_bad_input_is_refused_and_writes_nothing(tmp_path):
    r = save(tmp_path / "r.zarr", np.ones((64, 64), np.float32), (32, 32))
    m3 = save(tmp_path / "m3.zarr", np.ones((8, 64, 64), np.float32), (8, 32, 32))
    out = tmp_path / "out.zarr"
    for kwargs, message in [
        ({"model": "projective"}, "model must be one of"),
        ({"level": -1}, "level must be an integer >= 0"),
        ({"level": 4}, "under 8 voxels"),
        ({"threshold": 0}, "threshold"),
        ({"refine": -1}, "refine"),
    ]:
        with pytest.raises(InputError, match=message):
            chunkreg.estimate_affine(r, r, out, **kwargs, **SYNC)
        assert not out.exists()
    with pytest.raises(InputError, match="same number of axes"):
        chunkreg.estimate_affine(r, m3, out, **SYNC)
    with pytest.raises(InputError, match="no block of the coarse level matched"):  # blank
        chunkreg.estimate_affine(r, r, out, **SYNC)
    assert not out.exists()  # found after the output was opened: removed again


def _epe(estimate, truth, where):
    return float(np.linalg.norm(estimate - truth, axis=0)[where].mean())


def _seen(mapped, shape, margin):
    """Reference voxels whose true position in the moving volume is inside it, ``margin`` or
    more from its edges: elsewhere the moving volume has no data to register (within a
    kernel window of its edges, only on one side)."""
    inside = np.ones(shape, dtype=bool)
    for axis, n in enumerate(shape):
        inside &= (mapped[axis] >= margin) & (mapped[axis] <= n - 1 - margin)
    return inside


@pytest.mark.parametrize("ndim", [2, 3])
def test_pipeline_affine_then_flow_matches_flow_alone_without_rotation(tmp_path, ndim):
    """affine + residual flow on a rotated pair: EPE within 20 % of flow alone on the pair
    without the rotation (same deformation)."""
    if ndim == 2:
        shape, chunks, tile = (256, 256), (64, 64), 128
        truth = about_centre(shape, angles=12, scale=1.03, shear=0.02, shift=(3.0, -2.0))
        affine_kw = {}
    else:
        shape, chunks, tile = (64, 64, 64), (32, 32, 32), 32
        truth = about_centre(shape, angles=(6, -4, 3), scale=0.97, shift=(1.0, 2.0, -1.0))
        affine_kw = {"level": 0, "block": 16, "fine_block": 32, "max_blocks": 8}
    d = deformation(shape, amplitude=2.0)
    ref, mov = make_pair(shape, truth, deformation=d)
    _, plain = make_pair(shape, np.eye(ndim + 1), deformation=d)
    r = save(tmp_path / "r.zarr", ref, chunks)
    flow_kw = {"tile": tile, "radius": 4, **SYNC}
    chunkreg.compute_flow(r, save(tmp_path / "p.zarr", plain, chunks), tmp_path / "f0.zarr",
                          **flow_kw)  # fmt: skip
    m = save(tmp_path / "m.zarr", mov, chunks)
    affine = chunkreg.estimate_affine(r, m, tmp_path / "a.zarr", **affine_kw, **SYNC)
    chunkreg.compute_flow(r, m, tmp_path / "f1.zarr", initial_affine=tmp_path / "a.zarr",
                          **flow_kw)  # fmt: skip
    flow0 = zarr.open_array(tmp_path / "f0.zarr", path="flow")[...]
    flow1 = zarr.open_array(tmp_path / "f1.zarr", path="flow")
    assert_allclose(flow1.attrs["initial_affine"], affine.matrix)
    phi = true_map(shape, truth, d)
    margin = 16 if ndim == 2 else 8
    seen = _seen(phi, shape, margin) & _seen(true_map(shape, np.eye(ndim + 1), d), shape, margin)
    assert seen.mean() > 0.3
    alone = _epe(flow0, d, seen)
    combined = _epe(true_map(shape, affine.matrix, flow1[...]), phi, seen)
    assert combined <= 1.2 * alone, (combined, alone)
    inner = seen
    # warp picks the recorded affine up: the registered volume matches the reference
    report = chunkreg.warp_volume(m, tmp_path / "f1.zarr", tmp_path / "w.zarr", reference=r,
                                  order=3, **SYNC)  # fmt: skip
    warped = zarr.open_array(tmp_path / "w.zarr", path="0")[...]
    assert np.abs(warped - ref)[inner].mean() < 0.25 * np.abs(mov - ref)[inner].mean()
    assert "after" in report.notes["NCC to reference"]


def test_warp_by_an_affine_alone_equals_scipy_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    mov = rng.uniform(0, 1000, (70, 90)).astype(np.uint16)
    truth = about_centre((60, 80), angles=9, scale=1.02, shift=(2.0, 3.0))
    m = save(tmp_path / "m.zarr", mov, (16, 32))
    ref = save(tmp_path / "r.zarr", np.zeros((60, 80), np.float32), (16, 16))
    for order in (1, 3):
        report = chunkreg.warp_volume(m, None, tmp_path / f"w{order}.zarr", affine=truth,
                                      reference=ref, tile=(32, 32), order=order, **SYNC)  # fmt: skip
        assert report.ok
        got = zarr.open_array(tmp_path / f"w{order}.zarr", path="0")[...]
        expected = ndimage.affine_transform(mov.astype(np.float64), truth, output_shape=(60, 80),
                                            order=order, mode="nearest")  # fmt: skip
        expected = np.clip(np.rint(expected), 0, 65535).astype(np.uint16)
        assert got.dtype == np.uint16 and got.shape == (60, 80)
        assert np.abs(got.astype(int) - expected).max() <= 1
    with pytest.raises(InputError, match=r"a flow, an affine, or both|displacement field"):
        chunkreg.warp_volume(m, None, tmp_path / "x.zarr", **SYNC)


def test_warp_refuses_an_affine_other_than_the_flows(tmp_path):
    shape = (64, 64)
    r = save(tmp_path / "r.zarr", np.random.default_rng(1).uniform(size=shape), (32, 32))
    a = about_centre(shape, angles=3)
    chunkreg.compute_flow(r, r, tmp_path / "f.zarr", initial_affine=a, levels=1, **SYNC)
    with pytest.raises(InputError, match="different one"):
        chunkreg.warp_volume(r, tmp_path / "f.zarr", tmp_path / "w.zarr", affine=np.eye(3),
                             **SYNC)  # fmt: skip
    assert chunkreg.warp_volume(r, tmp_path / "f.zarr", tmp_path / "w.zarr", affine=a, **SYNC).ok


def test_blockwise_shifts_after_an_initial_affine_measure_the_residual(tmp_path):
    shape = (256, 256)
    truth = about_centre(shape, angles=10, shift=(3.0, -4.0))
    ref, mov = make_pair(shape, truth)
    r, m = save(tmp_path / "r.zarr", ref, (64, 64)), save(tmp_path / "m.zarr", mov, (64, 64))
    # the blocks of the plain pair see the rotation: shifts differ by up to ~30 voxels
    plain = chunkreg.blockwise_shifts(r, m, tmp_path / "b0.zarr", block=64, overlap=16, **SYNC)
    assert np.nanmax(np.abs(plain.measured_shifts)) > 10
    blocks = chunkreg.blockwise_shifts(r, m, tmp_path / "b.zarr", block=64, overlap=16,
                                       initial_affine=truth, **SYNC)  # fmt: skip
    assert np.abs(blocks.shifts).max() < 0.3
    assert_allclose(chunkreg.volume.load_block_shifts(tmp_path / "b.zarr").initial_affine, truth)
    chunkreg.shifts_to_flow(tmp_path / "b.zarr", tmp_path / "f.zarr", **SYNC)
    flow = zarr.open_array(tmp_path / "f.zarr", path="flow")
    assert_allclose(flow.attrs["initial_affine"], truth)
    chunkreg.warp_volume(m, tmp_path / "f.zarr", tmp_path / "w.zarr", order=3, **SYNC)
    warped = zarr.open_array(tmp_path / "w.zarr", path="0")[...]
    inner = (slice(32, -32),) * 2
    assert np.abs(warped - ref)[inner].mean() < 0.03


def test_an_interrupted_estimate_resumes_from_its_coarse_estimate(tmp_path):
    shape = (256, 256)
    truth = about_centre(shape, angles=4, shift=(1.0, 2.0))
    ref, mov = make_pair(shape, truth)
    args = (save(tmp_path / "r.zarr", ref, (64, 64)), save(tmp_path / "m.zarr", mov, (64, 64)),
            tmp_path / "a.zarr")  # fmt: skip
    first = chunkreg.estimate_affine(*args, **SYNC)
    group = zarr.open_group(tmp_path / "a.zarr", mode="a")
    del group.attrs["affine"]  # as if the run died during the refinement
    again = chunkreg.estimate_affine(*args, **SYNC)
    assert "coarse estimate: complete from an earlier run" in again.report.notes.values()
    assert_allclose(again.matrix, first.matrix)


def test_moving_of_another_shape_and_an_affine_only_warp(tmp_path):
    """The moving volume covers more than the reference: the affine maps into it, the warp
    has the reference's shape."""
    ref, big = make_pair((320, 320), about_centre((320, 320), angles=6, shift=(3.0, -2.0)))
    ref = ref[40:280, 30:290]  # reference voxel p is big-reference voxel p + (40, 30)
    truth = about_centre((320, 320), angles=6, shift=(3.0, -2.0))
    offset = np.eye(3)
    offset[:2, 2] = (40, 30)
    truth = truth @ offset
    r, m = save(tmp_path / "r.zarr", ref, (64, 64)), save(tmp_path / "m.zarr", big, (64, 64))
    result = chunkreg.estimate_affine(r, m, tmp_path / "a.zarr", **SYNC)
    assert result.moving_shape == (320, 320) and result.shape == (240, 260)
    assert corner_error(result.matrix, truth, ref.shape) < 0.3
    chunkreg.warp_volume(m, None, tmp_path / "w.zarr", affine=tmp_path / "a.zarr", reference=r,
                         order=3, **SYNC)  # fmt: skip
    warped = zarr.open_array(tmp_path / "w.zarr", path="0")[...]
    assert warped.shape == ref.shape
    assert np.abs(warped - ref).mean() < 0.02


def test_an_ome_zarr_input_s_own_coarse_level_is_used(tmp_path):
    from chunkreg.io import write_ome_multiscale_metadata
    from chunkreg.registration._downsample import block_mean

    shape = (256, 256)
    truth = about_centre(shape, angles=7, scale=1.02, shift=(2.0, 3.0))
    ref, mov = make_pair(shape, truth)
    paths = []
    for name, data in (("r", ref), ("m", mov)):
        group = zarr.open_group(tmp_path / f"{name}.ome.zarr", mode="w")
        group.create_array("0", data=data, chunks=(64, 64))
        group.create_array("1", data=block_mean(data, (2, 2), partial="mean"), chunks=(64, 64))
        write_ome_multiscale_metadata(group, paths=["0", "1"])
        paths.append(str(tmp_path / f"{name}.ome.zarr"))
    result = chunkreg.estimate_affine(*paths, tmp_path / "a.zarr", level=1, **SYNC)
    assert corner_error(result.matrix, truth, shape) < 0.3
    stages = [v for k, v in result.report.notes.items() if k.startswith("stage")]
    assert stages[0].startswith("coarse estimate (level 1)")  # no coarse images built


def test_a_15_degree_rotation_that_defeats_the_plain_start_is_found_from_a_rotated_one():
    """On this pair the translation-only start matches few blocks; the rotated starts (each
    with its own global phase correlation) recover the transform."""
    from chunkreg.registration._affine import level_matrix
    from chunkreg.registration._affine_kernels import estimate_in_memory
    from chunkreg.registration._downsample import block_mean

    shape = (320, 288)
    truth = about_centre(shape, angles=15, scale=0.95, shear=0.02, shift=(3.0, 7.0))
    ref, mov = make_pair(shape, truth, seed=6)
    matrix, stages = estimate_in_memory(block_mean(ref, (2,) * ref.ndim, partial="mean"),
                                        block_mean(mov, (2,) * mov.ndim, partial="mean"),
                                        block=(36, 36))  # fmt: skip
    assert corner_error(level_matrix(matrix, 1 / 2), truth, shape) < 1.0
    assert stages[0]["inliers"] == stages[0]["pairs"]


def test_inside_fraction_of_a_block():
    from chunkreg.registration._affine_kernels import inside_fraction

    shift = np.eye(3)
    shift[1, 2] = 4.0  # block voxel x shows moving voxel x + 4 along axis 1
    block = (slice(0, 8), slice(56, 64))
    assert inside_fraction(np.eye(3), block, (64, 64)) == 1.0
    assert inside_fraction(shift, block, (64, 64)) == 0.5  # columns 60..63 map to 64..67
