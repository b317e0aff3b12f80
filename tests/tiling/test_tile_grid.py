import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError
from chunkreg.tiling import Tile, TileGrid

from .strategies import tile_grids

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(tile_grids())
def test_cores_partition_the_array(grid):
    count = np.zeros(grid.shape, dtype=np.int32)
    for tile in grid:
        count[tile.core] += 1
    assert_array_equal(count, 1)


@PROPERTY
@given(tile_grids())
def test_reads_in_bounds_and_halo_clipped_only_at_edges(grid):
    for tile in grid:
        for axis, (c, r) in enumerate(zip(tile.core, tile.read, strict=True)):
            assert 0 <= r.start <= c.start < c.stop <= r.stop <= grid.shape[axis]
            before, after = tile.halo[axis]
            d = grid.depth[axis]
            assert before == min(d, c.start)
            assert after == min(d, grid.shape[axis] - c.stop)


@PROPERTY
@given(tile_grids())
def test_cores_aligned_to_chunks(grid):
    for tile in grid:
        for axis, c in enumerate(tile.core):
            assert c.start % grid.chunks[axis] == 0
            assert c.stop % grid.chunks[axis] == 0 or c.stop == grid.shape[axis]


@PROPERTY
@given(tile_grids(aligned=False), st.integers(0, 2**32 - 1))
def test_stitch_of_tiles_is_identity(grid, seed):
    x = np.random.default_rng(seed).standard_normal(grid.shape)
    out = np.full(grid.shape, np.nan)
    for tile in grid:
        block = x[tile.read].copy()  # what a task reads
        out[tile.core] = block[tile.core_in_read]
    assert_array_equal(out, x)


@PROPERTY
@given(tile_grids(aligned=False))
def test_numbering_is_c_order_and_round_trips(grid):
    tiles = list(grid)
    assert len(tiles) == len(grid) == math.prod(grid.grid_shape)
    assert [t.number for t in tiles] == list(range(len(grid)))
    assert [t.index for t in tiles] == list(np.ndindex(*grid.grid_shape))
    for t in tiles:
        assert grid.tile(t.number) == t == grid[t.index]


@PROPERTY
@given(tile_grids(), st.data())
def test_read_and_decoded_sizes_match_brute_force(grid, data):
    read = sum(math.prod(t.read_shape) for t in grid)
    assert grid.max_read_shape == tuple(
        max(t.read_shape[a] for t in grid) for a in range(grid.ndim)
    )
    assert grid.read_size == read
    assert grid.halo_factor == pytest.approx(read / math.prod(grid.shape))
    chunks = tuple(data.draw(st.integers(1, n + 2)) for n in grid.shape)
    decoded = 0
    for t in grid:
        size = 1
        for axis, r in enumerate(t.read):
            c, n = chunks[axis], grid.shape[axis]
            first, last = r.start // c, (r.stop - 1) // c
            size *= min((last + 1) * c, n) - first * c
        decoded += size
    assert grid.decoded_size(chunks) == decoded
    assert grid.read_amplification(chunks) >= grid.halo_factor >= 1.0


def test_example_geometry():
    grid = TileGrid(shape=(100, 70), tile_shape=(64, 32), depth=(8, 4), chunks=(32, 32))
    assert grid.grid_shape == (2, 3)
    t = grid.tile((1, 2))
    assert t.number == 5
    assert t.core == (slice(64, 100), slice(64, 70))
    assert t.read == (slice(56, 100), slice(60, 70))
    assert t.core_in_read == (slice(8, 44), slice(4, 10))
    assert t.halo == ((8, 0), (4, 0))
    assert t.core_shape == (36, 6) and t.read_shape == (44, 10)


def test_huge_grid_is_lazy():
    grid = TileGrid(shape=(10**6, 10**6, 10**5), tile_shape=(128,) * 3, depth=(16,) * 3)
    assert len(grid) == 7813 * 7813 * 782
    last = grid.tile(len(grid) - 1)
    assert last.index == (7812, 7812, 781)
    assert last.core == (slice(999936, 10**6), slice(999936, 10**6), slice(99968, 10**5))
    assert grid.tile(-1) == last
    assert grid.read_amplification((64,) * 3) > grid.halo_factor


def test_tile_larger_than_array_is_one_tile_whatever_the_chunks():
    grid = TileGrid(shape=(30, 50), tile_shape=(100, 50), depth=(5, 5), chunks=(16, 16))
    assert grid.grid_shape == (1, 1)
    (t,) = list(grid)
    assert t.core == t.read == (slice(0, 30), slice(0, 50))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_shape": (48, 64)}, "multiple of the chunk size along axis 0, got 48 for chunk 32"),
        ({"tile_shape": (64, 16)}, "at least one chunk along axis 1, got 16 < chunk 32"),
        ({"tile_shape": (0, 64)}, "tile must be >= 1 along axis 0"),
        ({"depth": (-1, 0)}, "depth must be >= 0 along axis 0"),
        ({"depth": (1, 2, 3)}, r"depth needs one value per axis \(2\)"),
        ({"tile_shape": (64, 32.0)}, "tile along axis 1 must be an integer"),
        ({"shape": (100, 0)}, "shape must be >= 1 along axis 1"),
        ({"chunks": (0, 32)}, "chunks must be >= 1 along axis 0"),
    ],
)
def test_invalid_grids(kwargs, match):
    args = {"shape": (100, 100), "tile_shape": (64, 64), "depth": (0, 0), "chunks": (32, 32)}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        TileGrid(**args)


def test_zero_dimensional_refused():
    with pytest.raises(InputError, match="0-dimensional"):
        TileGrid(shape=(), tile_shape=(), depth=())


def test_bad_tile_index():
    grid = TileGrid(shape=(10, 10), tile_shape=(5, 5), depth=(0, 0))
    with pytest.raises(IndexError, match="out of range"):
        grid.tile(4)
    with pytest.raises(IndexError, match="out of range"):
        grid.tile((2, 0))


def test_tile_checks_itself():
    with pytest.raises(InputError, match="must contain its core along axis 0"):
        Tile((0,), 0, (slice(0, 10),), (slice(2, 10),))


def test_grid_is_frozen_and_hashable():
    grid = TileGrid(shape=[10, 10], tile_shape=[5, 5], depth=[1, 1])
    assert grid.shape == (10, 10)  # normalised to tuples
    assert hash(grid) == hash(TileGrid((10, 10), (5, 5), (1, 1)))
    with pytest.raises(AttributeError):
        grid.depth = (2, 2)
