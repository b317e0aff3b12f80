"""DIS in tiles: the halo rule against DIS's real support, the refinement of a tile from the
coarser level's flow (no pre-warp), the initial flow at the patch centres, and a tiled
coarse-to-fine run against the same run in one tile."""

import numpy as np
import pytest
import zarr

from chunkreg.registration._multiscale import initial_flow, initial_flow_points
from chunkreg.registration._optical_flow_dis import (
    _contrast,
    patch_centres,
    refine_flow_dis,
    resolve_params,
)
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow, flow_depth
from chunkreg.volume._levels import REFINE_MOTION
from chunkreg.volume._qc import seam_metric


def _truth(displacement):
    truth = displacement.copy()
    for _ in range(8):
        truth = np.stack([apply_flow(c, truth, order=1) for c in displacement])
    return truth


@pytest.fixture(scope="module")
def volume():
    """A 3-D pair moved by up to 3 voxels and an initial flow 20 % short of the truth."""
    shape = (96, 40, 40)
    ref = textured_image(shape, seed=3).astype(np.float32)
    d = smooth_displacement(shape, amplitude=3.0, seed=4, periods=0.5)
    mov = apply_flow(ref, -d).astype(np.float32)
    truth = _truth(d).astype(np.float32)
    return ref, mov, truth, (0.8 * truth).astype(np.float32)


def _epe(flow, truth, border=4):
    inner = (slice(None),) + (slice(border, -border),) * (flow.ndim - 1)
    return float(np.sqrt(((flow - truth)[inner] ** 2).sum(axis=0)).mean())


def test_refinement_moves_towards_the_truth(volume):
    """One DIS level from a flow 20 % short: the error falls by more than half."""
    ref, mov, truth, init = volume
    flow = refine_flow_dis(ref, mov, init, resolve_params({}, 3))
    assert _epe(flow, truth) < 0.4 * _epe(init, truth)


def test_moving_region_of_its_own(volume):
    """The moving image as a region starting elsewhere (offset) gives the flow of the whole
    moving image wherever the region holds what the samples need."""
    ref, mov, _, init = volume
    params = resolve_params({}, 3)
    whole = refine_flow_dis(ref, mov, init, params)
    part = refine_flow_dis(ref, mov[5:, 3:], init, params, moving_offset=(5, 3, 0))
    inner = (slice(None), slice(30, -10), slice(25, -10), slice(10, -10))
    np.testing.assert_allclose(part[inner], whole[inner], atol=1e-4)


@pytest.mark.parametrize("start", [31, 40])
def test_depth_rule_covers_the_support(volume, start):
    """A region cut at ``start`` (any phase of the patch grid) agrees with the whole volume
    to < 0.01 voxel from ``flow_depth`` voxels of the cut on, and not much nearer: the rule is
    fitted, not just safe."""
    ref, mov, _, init = volume
    params = resolve_params({}, 3)
    contrast = _contrast(ref)
    whole = refine_flow_dis(ref, mov, init, params, contrast=contrast)
    cut = refine_flow_dis(ref[start:], mov, init[:, start:], params, contrast=contrast,
                          moving_offset=(-start, 0, 0), grid_start=(start, 0, 0))  # fmt: skip
    diff = np.abs(cut - whole[:, start:]).max(axis=(0, 2, 3))  # per distance from the cut
    depth = flow_depth("dis", ndim=3, motion=REFINE_MOTION)
    assert depth == 20
    assert diff[depth:].max() < 0.01
    assert diff[: depth // 2].max() > 0.05  # the halo is needed: the edge is far off


def test_patch_grid_on_the_volume_lattice(volume):
    """With ``grid_start`` the patches of a region sit where the whole volume's sit: the
    flow of a region matches far from its cut exactly (to rounding); a grid laid from the
    region's first voxel does not."""
    ref, mov, _, init = volume
    params = resolve_params({}, 3)
    contrast = _contrast(ref)
    whole = refine_flow_dis(ref, mov, init, params, contrast=contrast)
    args = (ref[40:], mov, init[:, 40:], params)
    kw = {"contrast": contrast, "moving_offset": (-40, 0, 0)}
    aligned = refine_flow_dis(*args, grid_start=(40, 0, 0), **kw)
    shifted = refine_flow_dis(*args, **kw)  # 40 is not a multiple of the stride (6)
    far = (slice(None), slice(30, None))
    assert np.abs(aligned - whole[:, 40:])[far].max() < 1e-4
    assert np.abs(shifted - whole[:, 40:])[far].max() > 1e-3


def test_no_block_seams(volume):
    """Patches that tile the volume (3-D presets: stride = size) give a smooth flow: the
    seam metric at a 32-voxel grid reads about 1 at every phase of the patch grid."""
    ref, mov, _, init = volume
    params = resolve_params({}, 3)
    for g in (0, 2, 3):
        flow = refine_flow_dis(ref, mov, init, params, grid_start=(g, g, g))
        assert abs(seam_metric(flow, (32, 32, 32)) - 1) < 0.05


def test_initial_flow_at_points_equals_dense():
    """The initial flow at the patch centres is the dense one's values there."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(3, 30, 25, 20)).astype(np.float32)
    fine_shape = (60, 50, 39)

    def read(region):
        return coarse[(slice(None), *region)]

    region = (slice(10, 55), slice(0, 32), slice(17, 39))
    dense = initial_flow(read, region, fine_shape, coarse.shape[1:])
    params = resolve_params({}, 3)
    points = patch_centres([r.stop - r.start for r in region], params, [r.start for r in region])
    sparse = initial_flow_points(read, region, points, fine_shape, coarse.shape[1:])
    np.testing.assert_allclose(sparse, dense[(slice(None), *np.ix_(*points))], atol=1e-5)
    # centres of patches on the volume's multiples of the stride (6), clipped to the region
    for p, r in zip(points, region, strict=True):
        assert ((p[1:-1] + r.start - 3) % 6 == 0).all()
        assert p[0] >= 0 and p[-1] <= r.stop - r.start - 1


def test_tiled_refinement_agrees_with_one_tile(tmp_path):
    """compute_flow(method="dis"), two levels, 3-D: level 0 in two tiles against the same run
    in a single tile: they agree to < 0.01 voxel (99.9th percentile; the tiles measure their
    own contrast), and both find the truth."""
    shape = (64, 64, 64)
    ref = textured_image(shape, seed=5).astype(np.float32)
    d = smooth_displacement(shape, amplitude=3.0, seed=6, periods=0.5)
    mov = apply_flow(ref, -d).astype(np.float32)
    truth = _truth(d)
    paths = []
    for name, data in (("ref", ref), ("mov", mov)):
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), data=data, chunks=(32, 32, 32))
        paths.append(str(path))
    flows = {}
    for name, tile in (("tiled", (32, 64, 64)), ("one", 64)):
        out = tmp_path / f"{name}.zarr"
        report = compute_flow(*paths, out, method="dis", tile=tile, levels=2,
                              scheduler="synchronous", progress=False)  # fmt: skip
        report.raise_if_failed()
        flows[name] = zarr.open_array(str(out), path="flow", mode="r")[:]
    diff = np.abs(flows["tiled"] - flows["one"]).max(axis=0)
    assert np.quantile(diff, 0.999) < 0.01
    for flow in flows.values():
        assert _epe(flow, truth, border=8) < 0.15
