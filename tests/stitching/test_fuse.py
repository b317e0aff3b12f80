"""The fusion kernel on hand-made tiles."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from chunkreg.errors import InputError
from chunkreg.stitching import TilePiece, fuse_block
from chunkreg.testing import textured_image


def _piece(data, position, start=None):
    start = (0,) * data.ndim if start is None else start
    return TilePiece(data, start, np.asarray(position, dtype=float), data.shape)


def test_linear_and_cosine_weights_cross_fade():
    a = _piece(np.full((1, 8), 10.0), (0, 0))
    b = _piece(np.full((1, 8), 20.0), (0, 4))
    lin = fuse_block((0, 0), (1, 12), [a, b], dtype=np.float64)
    # overlap x = 4..7: a's weights 3.5, 2.5, 1.5, 0.5 against b's 0.5 .. 3.5 (tent, width 4)
    wa = np.array([3.5, 2.5, 1.5, 0.5])
    assert_allclose(lin[0, 4:8], (10 * wa + 20 * wa[::-1]) / 4)
    assert_allclose(lin[0, :4], 10)
    assert_allclose(lin[0, 8:], 20)
    cos = fuse_block((0, 0), (1, 12), [a, b], dtype=np.float64, blend="cosine")
    ca = 0.5 - 0.5 * np.cos(np.pi * wa / 4)
    assert_allclose(cos[0, 4:8], (10 * ca + 20 * ca[::-1]) / (ca + ca[::-1]))
    narrow = fuse_block((0, 0), (1, 12), [a, b], dtype=np.float64, blend_width=0.5)
    assert_allclose(narrow[0, 4:8], [15, 15, 15, 15])  # both at full weight: the mean


def test_max_and_first():
    a = _piece(np.array([[1.0, 5.0, 2.0, 7.0]]), (0, 0))
    b = _piece(np.array([[3.0, 1.0, 9.0, 0.0]]), (0, 2))
    assert_array_equal(fuse_block((0, 0), (1, 6), [a, b], dtype=np.float32, blend="max"),
                       [[1, 5, 3, 7, 9, 0]])  # fmt: skip
    assert_array_equal(fuse_block((0, 0), (1, 6), [a, b], dtype=np.float32, blend="first"),
                       [[1, 5, 2, 7, 9, 0]])  # fmt: skip
    assert_array_equal(fuse_block((0, 0), (1, 6), [b, a], dtype=np.float32, blend="first"),
                       [[1, 5, 3, 1, 9, 0]])  # fmt: skip


def test_uncovered_pixels_get_fill_value_and_block_offset():
    a = _piece(np.arange(16.0).reshape(4, 4), (10, 20))
    out = fuse_block((8, 18), (8, 4), [a], dtype=np.float32, fill_value=-1)
    expected = np.full((8, 4), -1.0)
    expected[2:6, 2:4] = np.arange(16.0).reshape(4, 4)[:, :2]
    assert_array_equal(out, expected)


def test_piece_with_offset_start():
    # the piece holds only rows 2..5 of a 10-row tile
    tile = np.arange(40.0).reshape(10, 4)
    piece = TilePiece(tile[2:6], (2, 0), np.array([100.0, 0.0]), tile.shape)
    out = fuse_block((102, 0), (4, 4), [piece], dtype=np.float64)
    assert_allclose(out, tile[2:6], rtol=1e-14)


def test_integer_dtype_rounds_and_clips():
    a = _piece(np.full((2, 4), 100.0), (0, 0))
    b = _piece(np.full((2, 4), 101.0), (0, 2))
    out = fuse_block((0, 0), (2, 6), [a, b], dtype=np.uint8, blend_width=100)
    assert out.dtype == np.uint8
    assert_array_equal(out[:, 2:4], [[100, 101], [100, 101]])  # 100.25 -> 100, 100.75 -> 101
    hot = _piece(np.full((2, 2), 300.0), (0, 0))
    cold = _piece(np.full((2, 2), -5.0), (0, 2))
    assert_array_equal(fuse_block((0, 0), (2, 4), [hot, cold], dtype=np.uint8),
                       [[255, 255, 0, 0]] * 2)  # fmt: skip


@pytest.mark.parametrize("frac", [(0.3, 0.0), (0.25, -0.4), (-0.5, 0.5)])
def test_subpixel_placement_matches_ndimage_shift(frac):
    tile = textured_image((40, 40), seed=1, dtype=np.float64)
    frac = np.asarray(frac)
    position = np.array([5.0, 7.0]) + frac
    out = fuse_block((0, 0), (60, 60), [_piece(tile, position)], dtype=np.float64, order=3)
    # output pixel X shows the tile at X - position: ndimage.shift by frac on the tile grid
    expected = ndimage.shift(tile, frac, order=3, mode="nearest")
    lo = np.ceil(position).astype(int)
    hi = np.floor(position + 39).astype(int) + 1
    inner = out[lo[0] : hi[0], lo[1] : hi[1]]
    e = expected[lo[0] - 5 : hi[0] - 5, lo[1] - 7 : hi[1] - 7]
    # compare away from the tile border, where the two boundary treatments differ
    assert_allclose(inner[3:-3, 3:-3], e[3:-3, 3:-3], atol=1e-6)
    covered = np.zeros(out.shape, dtype=bool)
    covered[lo[0] : hi[0], lo[1] : hi[1]] = True
    assert (out[~covered] == 0).all()


def test_3d_block():
    vol = textured_image((10, 12, 14), seed=2)
    a = _piece(vol[:, :, :8], (0, 0, 0))
    b = _piece(vol[:, :, 5:], (0, 0, 5))
    out = fuse_block((0, 0, 0), vol.shape, [a, b], dtype=np.float32)
    assert_allclose(out, vol, rtol=1e-6)


def test_bad_blend():
    with pytest.raises(InputError, match="blend"):
        fuse_block((0, 0), (2, 2), [], dtype=np.float32, blend="average")
