import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.errors import InputError
from chunkreg.tiling import TileGrid, blend_profiles, blend_weights, ramp

from .strategies import tile_grids

PROPERTY = settings(max_examples=50, deadline=None)


@PROPERTY
@given(tile_grids(max_ndim=3, max_size=24, aligned=False), st.sampled_from(["linear", "cosine"]))
def test_weights_are_a_partition_of_unity(grid, kind):
    total = np.zeros(grid.shape)
    for tile in grid:
        w = blend_weights(grid, tile.number, kind=kind, dtype=np.float64)
        assert w.shape == tile.read_shape
        assert (w > 0).all() and (w <= 1 + 1e-12).all()
        total[tile.read] += w
    assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@PROPERTY
@given(tile_grids(max_ndim=3, max_size=24, aligned=False), st.sampled_from(["linear", "cosine"]))
def test_weight_is_one_where_no_other_tile_reads(grid, kind):
    cover = np.zeros(grid.shape, dtype=np.int32)
    for tile in grid:
        cover[tile.read] += 1
    for tile in grid:
        w = blend_weights(grid, tile.number, kind=kind, dtype=np.float64)
        alone = cover[tile.read] == 1
        assert_allclose(w[alone], 1.0, rtol=0, atol=1e-12)


@PROPERTY
@given(tile_grids(max_ndim=3, max_size=24, aligned=False), st.sampled_from(["linear", "cosine"]))
def test_weights_are_the_outer_product_of_the_profiles(grid, kind):
    for tile in grid:
        profiles = blend_profiles(grid, tile.number, kind=kind)
        assert tuple(p.size for p in profiles) == tile.read_shape
        outer = np.ones(())
        for p in profiles:
            outer = np.multiply.outer(outer, p)
        assert_array_equal(blend_weights(grid, tile.number, kind=kind, dtype=np.float64), outer)


@PROPERTY
@given(tile_grids(max_ndim=2, max_size=40, aligned=False), st.integers(0, 2**32 - 1))
def test_blending_identical_tiles_reproduces_the_image(grid, seed):
    """Blending tiles that agree (any kernel without tile effects) changes nothing."""
    x = np.random.default_rng(seed).standard_normal(grid.shape)
    out = np.zeros(grid.shape)
    for tile in grid:
        out[tile.read] += blend_weights(grid, tile.number, dtype=np.float64) * x[tile.read]
    assert_allclose(out, x, rtol=1e-10, atol=1e-10)


def test_ramps():
    assert_allclose(ramp(4, "linear"), [0.125, 0.375, 0.625, 0.875])
    for kind in ("linear", "cosine"):
        r = ramp(7, kind)
        assert_allclose(r + r[::-1], 1.0)
        assert (np.diff(r) > 0).all() and r[0] > 0 and r[-1] < 1
    assert_allclose(ramp(2, "cosine"), np.sin(np.pi / 2 * np.array([0.25, 0.75])) ** 2)


def test_example_profile_and_edges():
    grid = TileGrid(shape=(8,), tile_shape=(4,), depth=(2,))
    assert_array_equal(
        blend_weights(grid, 0, kind="linear"), np.float32([1, 1, 0.875, 0.625, 0.375, 0.125])
    )
    assert_array_equal(
        blend_weights(grid, 1, kind="linear"), np.float32([0.125, 0.375, 0.625, 0.875, 1, 1])
    )
    # 2-D weights are the outer product of the per-axis profiles
    grid2 = TileGrid(shape=(8, 8), tile_shape=(4, 4), depth=(2, 2))
    w = blend_weights(grid2, (0, 1), kind="linear")
    assert_allclose(
        w, np.outer(blend_weights(grid, 0, kind="linear"), blend_weights(grid, 1, kind="linear"))
    )
    # no halo: weights are 1 on the core, i.e. cropping
    crop = TileGrid(shape=(8, 8), tile_shape=(4, 4), depth=(0, 0))
    assert_array_equal(blend_weights(crop, 3), np.ones((4, 4), np.float32))


def test_bad_arguments():
    grid = TileGrid(shape=(8,), tile_shape=(4,), depth=(2,))
    with pytest.raises(InputError, match="kind must be one of"):
        blend_weights(grid, 0, kind="gaussian")
    with pytest.raises(InputError, match="kind must be one of"):
        ramp(3, "step")
    with pytest.raises(InputError, match="integer >= 1"):
        ramp(0)
    with pytest.raises(IndexError):
        blend_weights(grid, 2)


@PROPERTY
@given(tile_grids(max_ndim=3, max_size=24, aligned=False), st.booleans(), st.data())
def test_scratch_size_is_the_pieces_every_tile_writes(grid, cut, data):
    """One size model: the engine's Scratch and the layout (whose ``nbytes`` the flow plan's
    scratch estimate is) agree with the chunks the tiles write, counted piece by piece."""
    from chunkreg.engine import Scratch
    from chunkreg.io import ArrayRef
    from chunkreg.tiling._pieces import PieceLayout

    band = tuple(data.draw(st.integers(0, d)) for d in grid.depth)
    layout = PieceLayout(grid, band, cut)
    written = sum(
        math.prod(c.stop - c.start for c in chunk)
        for tile in layout.band_grid
        for _, chunk, _ in layout.pieces(tile.index)
    )
    scratch = Scratch(ArrayRef(None, ""), grid, band, components=3, dtype="float64", cut=cut)
    assert scratch.nbytes == layout.nbytes(3, 8) == 3 * 8 * written
