"""End-to-end stitching against mosaics with known tile positions."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from stitching_helpers import relative_error

from chunkreg import stitch
from chunkreg.registration import normalized_cross_correlation
from chunkreg.stitching import Layout


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
