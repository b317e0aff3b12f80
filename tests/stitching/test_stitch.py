"""End-to-end stitching against mosaics with known tile positions."""

import csv

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from stitching_helpers import relative_error

from chunkreg import stitch
from chunkreg.registration import normalized_cross_correlation


def _fused_vs_source(mosaic, result, subpixel):
    """The fused mosaic and the source resampled onto it, plus coverage and seam masks."""
    fused = zarr.open_group(result.output, mode="r")["0"][:].astype(np.float64)
    ndim = fused.ndim
    # output pixel k sits at layout coordinate origin + k; the placement may differ from the
    # truth by a common translation, measured as the mean difference (exact up to the error)
    placed = result.positions if subpixel else np.round(result.positions)
    gauge = (mosaic.truth - placed).mean(axis=0)
    coords = np.indices(fused.shape, dtype=np.float64)
    coords += (result.origin + gauge).reshape((ndim,) + (1,) * ndim)
    from scipy import ndimage

    expected = ndimage.map_coordinates(mosaic.source, coords, order=3, mode="nearest")
    covered = np.zeros(fused.shape, dtype=bool)
    border = np.zeros(fused.shape, dtype=bool)
    shape = np.asarray(mosaic.tiles[0].shape)
    for pos in placed - result.origin:
        lo = np.ceil(pos - 1e-6).astype(int)
        hi = np.floor(pos + shape - 1 + 1e-6).astype(int) + 1
        covered[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
        # pixels within 2 px of this tile's border, where a misplacement would show as a seam
        ring = np.zeros(fused.shape, dtype=bool)
        ring[tuple(slice(max(a - 2, 0), b + 2) for a, b in zip(lo, hi, strict=True))] = True
        ring[tuple(slice(a + 2, b - 2) for a, b in zip(lo, hi, strict=True))] = False
        border |= ring
    # leave out the mosaic's outer edge (no neighbour there)
    edge = np.ones(fused.shape, dtype=bool)
    edge[(slice(4, -4),) * ndim] = False
    return fused, expected, covered, border & covered & ~edge


def _check_fusion(mosaic, result, noise_rms, subpixel=False):
    fused, expected, covered, border = _fused_vs_source(mosaic, result, subpixel)
    assert normalized_cross_correlation(fused, expected, mask=covered) > 0.99
    err = fused - expected
    rms_border = np.sqrt(np.mean(err[border] ** 2))
    rms_interior = np.sqrt(np.mean(err[covered & ~border] ** 2))
    # no seams: errors along tile borders are like those inside, i.e. at the noise level
    assert rms_border < 1.5 * rms_interior + 0.5 * noise_rms, (rms_border, rms_interior)
    assert rms_interior < 2 * noise_rms


def test_2d_integer_grid(make_mosaic, tmp_path):
    mosaic = make_mosaic((6, 6), (96, 96), 0.125, 1.2, seed=1)
    result = stitch(
        mosaic.group_path,
        mosaic.layout,
        tmp_path / "out.zarr",
        scheduler="synchronous",
        progress=False,
        chunks=128,
    )
    assert relative_error(result.positions, mosaic.truth) <= 0.5
    assert result.kept.sum() >= 60  # at least the 60 edge-sharing pairs
    assert fused_dtype(result) == np.uint16
    _check_fusion(mosaic, result, noise_rms=50)


def fused_dtype(result):
    return zarr.open_group(result.output, mode="r")["0"].dtype


def test_2d_subpixel_grid(make_mosaic, tmp_path):
    mosaic = make_mosaic((6, 6), (96, 96), 0.125, 1.2, subpixel=True, seed=2)
    result = stitch(
        mosaic.group_path,
        mosaic.layout,
        tmp_path / "out.zarr",
        subpixel=True,
        scheduler="synchronous",
        progress=False,
        chunks=128,
    )
    assert relative_error(result.positions, mosaic.truth) <= 0.2
    _check_fusion(mosaic, result, noise_rms=50, subpixel=True)


@pytest.mark.parametrize("subpixel", [False, True])
def test_3d_grid(make_mosaic, tmp_path, subpixel):
    mosaic = make_mosaic((2, 2, 2), (40, 48, 48), 0.25, 1.2, subpixel=subpixel, seed=3)
    result = stitch(
        mosaic.group_path,
        mosaic.layout,
        tmp_path / "out.zarr",
        subpixel=subpixel,
        scheduler="synchronous",
        progress=False,
        chunks=32,
    )
    assert relative_error(result.positions, mosaic.truth) <= (0.2 if subpixel else 0.5)
    _check_fusion(mosaic, result, noise_rms=50, subpixel=subpixel)


def test_seam_check_catches_misplacement(make_mosaic, tmp_path):
    # negative control: fused at the nominal positions, the jittered tiles leave seams
    mosaic = make_mosaic((3, 3), (96, 96), 0.125, 1.2, seed=1)
    result = stitch(
        mosaic.group_path,
        mosaic.layout,
        tmp_path / "out.zarr",
        register=False,
        scheduler="synchronous",
        progress=False,
        chunks=128,
    )
    assert len(result.pairs) == 0
    assert_array_equal(result.positions, mosaic.layout.positions)
    with pytest.raises(AssertionError):
        _check_fusion(mosaic, result, noise_rms=50)


def test_blank_and_corrupted_tiles_are_dropped(make_mosaic, tmp_path):
    mosaic = make_mosaic((4, 4), (96, 96), 0.125, 1.2, seed=4)
    group = zarr.open_group(mosaic.group_path, mode="a")
    blank, corrupt = mosaic.layout.names[5], mosaic.layout.names[10]
    group[blank][:] = 3000
    other = make_mosaic((1, 1), (96, 96), 0.1, 0, seed=99, name="other.zarr").tiles[0]
    group[corrupt][:] = other
    with pytest.warns(UserWarning, match=r"2 tile\(s\) have no reliable link") as record:
        result = stitch(
            group, mosaic.layout, None, fuse=False, scheduler="synchronous", progress=False
        )
    assert record[0].filename == __file__  # the warning points at the caller
    assert set(result.unlinked) == {blank, corrupt}
    good = [k for k, n in enumerate(result.names) if n not in (blank, corrupt)]
    assert relative_error(result.positions[good], mosaic.truth[good]) <= 0.5
    # every link touching the bad tiles is reported as dropped, and only those
    bad = {result.names.index(blank), result.names.index(corrupt)}
    touching = np.array([bool(bad & {i, j}) for i, j in result.pairs])
    assert_array_equal(~result.kept, touching)
    assert set(result.drop_reason[touching]) <= {"quality", "no estimate"}
    assert {row["tile_a"] for row in result.dropped_links} | {
        row["tile_b"] for row in result.dropped_links
    } >= {blank, corrupt}
    # the unlinked tiles sit at their nominal offsets from their placed neighbours
    gauge = (result.positions[good] - mosaic.layout.positions[good]).mean(axis=0)
    for name in (blank, corrupt):
        k = result.names.index(name)
        assert np.abs(result.positions[k] - mosaic.layout.positions[k] - gauge).max() < 1.0


def _mist_layout(root):
    with open(root / "ground_truth_positions.csv") as fh:
        rows = list(csv.DictReader(fh))
    truth = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows])
    mist = np.array([[float(r["mist_y_px"]), float(r["mist_x_px"])] for r in rows])
    files = [root / "tiles" / r["file"] for r in rows]
    return files, truth, mist


def test_nist_mist_real_data(tmp_path, shared_data):
    """25 real phase-contrast tiles; ground truth from pixel-identical overlaps (SOURCE.md).

    The overlaps are exact crops of one image, so every pairwise offset is an integer that
    the NCC recognises with certainty: the tolerance is exact placement (0.5 px, i.e. the
    same pixel), whereas MIST's own result is off by up to about 3 px on tiles p05 and p10.
    """
    import tifffile

    from chunkreg.stitching import regular_grid

    files, truth, mist = _mist_layout(shared_data("nist-mist-phase-contrast-5x5"))
    group = zarr.open_group(tmp_path / "mist.zarr", mode="w")
    tiles = []
    for f in files:
        tile = tifffile.imread(f)
        tiles.append(tile)
        group.create_array(f.stem, data=tile)
    # nominal grid: SOURCE.md says ~10 rows and 15-20 columns overlap; p = col * 5 + row + 1
    layout = regular_grid(
        (5, 5), tiles[0].shape, overlap=0.06, order="column-major", names=[f.stem for f in files]
    )
    result = stitch(
        group, layout, tmp_path / "out.zarr", blend="first", scheduler="synchronous", progress=False
    )
    assert relative_error(result.positions, truth) <= 0.5
    assert relative_error(mist, truth) > 2.5  # MIST's reference result, for comparison
    # every tile appears unchanged in the fused mosaic at its ground-truth position
    fused = zarr.open_group(tmp_path / "out.zarr", mode="r")["0"][:]
    assert fused.dtype == np.uint16
    shift = np.round(result.positions - truth).astype(int)[0] - result.origin
    for tile, pos in zip(tiles, truth.astype(int) + shift, strict=True):
        assert_array_equal(
            fused[pos[0] : pos[0] + tile.shape[0], pos[1] : pos[1] + tile.shape[1]], tile
        )


@pytest.mark.parametrize("blend", ["linear", "cosine", "max", "first"])
def test_blend_modes_reproduce_identical_overlaps(make_mosaic, tmp_path, blend):
    # noise-free tiles share identical overlaps: any blend must give back the source
    mosaic = make_mosaic((2, 2), (64, 64), 0.2, 1, seed=5, noise=0.0, dtype=np.float32)
    result = stitch(
        mosaic.group_path,
        mosaic.layout,
        tmp_path / "out.zarr",
        blend=blend,
        scheduler="synchronous",
        progress=False,
        chunks=40,
    )
    fused, expected, covered, _ = _fused_vs_source(mosaic, result, False)
    assert_allclose(fused[covered], expected[covered], rtol=1e-5)
    assert (fused[~covered] == 0).all()
