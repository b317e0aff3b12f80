"""Layouts: regular grids, files, overlapping pairs."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.errors import InputError
from chunkreg.stitching import Layout, overlapping_pairs, read_layout, regular_grid, write_layout


def test_regular_grid_orders():
    # 2 rows x 3 columns of 100 x 200 tiles, 10% overlap: steps 90 and 180
    row = regular_grid((2, 3), (100, 200), overlap=0.1)
    assert_allclose(
        row.positions, [[0, 0], [0, 180], [0, 360], [90, 0], [90, 180], [90, 360]], atol=1e-9
    )
    col = regular_grid((2, 3), (100, 200), overlap=0.1, order="column-major")
    assert_allclose(
        col.positions, [[0, 0], [90, 0], [0, 180], [90, 180], [0, 360], [90, 360]], atol=1e-9
    )
    snake = regular_grid((2, 3), (100, 200), overlap=(0.1, 0.5), snake=True)
    assert_allclose(
        snake.positions, [[0, 0], [0, 100], [0, 200], [90, 200], [90, 100], [90, 0]], atol=1e-9
    )
    snake_col = regular_grid((3, 2), (10, 10), overlap=0.0, order="column-major", snake=True)
    assert_allclose(snake_col.positions, [[0, 0], [10, 0], [20, 0], [20, 10], [10, 10], [0, 10]])
    assert row.names == ("0", "1", "2", "3", "4", "5")


def test_regular_grid_3d_planes_slowest():
    lay = regular_grid((2, 2, 2), (10, 20, 20), overlap=0.25, names=list("abcdefgh"))
    assert lay.ndim == 3 and lay.names[0] == "a"
    assert_allclose(lay.positions[:4, 0], 0)
    assert_allclose(lay.positions[4:, 0], 7.5)
    assert_allclose(lay.positions[:4, 1:], [[0, 0], [0, 15], [15, 0], [15, 15]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid_shape": (2,), "tile_shape": (10,)}, "2 or 3 entries"),
        ({"grid_shape": (2, 2), "tile_shape": (10, 10, 10)}, "as many axes"),
        ({"grid_shape": (2, 0), "tile_shape": (10, 10)}, ">= 1"),
        ({"grid_shape": (2, 2), "tile_shape": (10, 10), "overlap": 1.0}, "overlap"),
        ({"grid_shape": (2, 2), "tile_shape": (10, 10), "order": "spiral"}, "order"),
        ({"grid_shape": (2, 2), "tile_shape": (10, 10), "names": ["a"]}, "names has 1"),
    ],
)
def test_regular_grid_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        regular_grid(**kwargs)


def test_layout_validates():
    with pytest.raises(InputError, match="unique"):
        Layout(("a", "a"), [[0, 0], [1, 1]])
    with pytest.raises(InputError, match="finite"):
        Layout(("a", "b"), [[0, 0], [np.nan, 1]])
    with pytest.raises(InputError, match="2 tile names but 1"):
        Layout(("a", "b"), [[0, 0]])
    with pytest.raises(InputError, match="shape"):
        Layout(("a",), [[0, 0, 0, 0]])
    with pytest.raises(InputError, match="no tiles"):
        Layout((), np.zeros((0, 2)))
    lay = Layout(("a",), [[1, 2]])
    with pytest.raises(ValueError, match="read-only"):
        lay.positions[0, 0] = 5


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_write_read_round_trip(tmp_path, suffix):
    sub = tmp_path / "sub"
    sub.mkdir()
    lay = Layout(
        ("t0", "t1", "t2"),
        [[0.5, 0, 1], [0, 90.25, 2], [1e6, -3, 0]],
        paths=("tiles.zarr/t0", "tiles.zarr/t1", "/abs/t2.zarr"),
        base_dir=str(tmp_path),
    )
    write_layout(lay, sub / f"layout{suffix}")
    back = read_layout(sub / f"layout{suffix}")
    assert back.names == lay.names
    assert_array_equal(back.positions, lay.positions)
    # relative paths still point at the same files from the new location
    assert back.paths[2] == "/abs/t2.zarr"
    assert (sub / back.paths[0]).resolve() == (tmp_path / "tiles.zarr" / "t0").resolve()


def test_read_csv_without_paths(tmp_path):
    (tmp_path / "l.csv").write_text("name,y,x\na,0,0\nb,0,90.5\n")
    lay = read_layout(tmp_path / "l.csv")
    assert lay.paths is None
    assert_allclose(lay.positions, [[0, 0], [0, 90.5]])


def test_read_json_grid(tmp_path):
    doc = {
        "grid": {"shape": [2, 2], "overlap": 0.1, "order": "column-major", "snake": True},
        "tiles": ["p1", "p2", "p3", "p4"],
    }
    (tmp_path / "g.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="tile_shape"):
        read_layout(tmp_path / "g.json")
    lay = read_layout(tmp_path / "g.json", tile_shape=(100, 50))
    assert lay.names == ("p1", "p2", "p3", "p4")
    assert_allclose(lay.positions, [[0, 0], [90, 0], [90, 45], [0, 45]])


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("missing.json", None, "does not exist"),
        ("l.txt", "x", "must end in"),
        ("l.json", "{not json", "as JSON"),
        ("l.json", '{"tiles": 3}', "'tiles' list"),
        ("l.json", '{"tiles": [{"name": "a"}]}', "no 'position'"),
        ("l.json", '{"tiles": [{"name": "a", "position": [1]}]}', "2 or 3 numbers"),
        ("l.json", '{"tiles": [{"position": [1, 2]}]}', "'name' or 'path'"),
        ("l.csv", "", "no tile rows"),
        ("l.csv", "name,x\na,1\n", "lacks columns"),
        ("l.csv", "name,y,x\na,1,b\n", "non-numeric"),
    ],
)
def test_read_layout_errors(tmp_path, name, text, match):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=match):
        read_layout(tmp_path / name)


def _brute_pairs(pos, shp):
    out = []
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            lo = np.maximum(pos[i], pos[j])
            hi = np.minimum(pos[i] + shp[i], pos[j] + shp[j])
            if (hi - lo > 0).all():
                out.append((i, j))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 3).flatmap(
        lambda ndim: st.tuples(
            st.lists(
                st.tuples(
                    st.lists(st.integers(0, 60), min_size=ndim, max_size=ndim),
                    st.lists(st.integers(1, 30), min_size=ndim, max_size=ndim),
                ),
                min_size=1,
                max_size=25,
            )
        )
    )
)
def test_overlapping_pairs_matches_brute_force(data):
    (tiles,) = data
    pos = np.array([t[0] for t in tiles], dtype=float)
    shp = np.array([t[1] for t in tiles], dtype=float)
    assert_array_equal(overlapping_pairs(pos, shp), _brute_pairs(pos, shp))


def test_overlapping_pairs_adjacent_grid():
    lay = regular_grid((3, 3, 2), (20, 30, 30), overlap=0.2)
    all_pairs = overlapping_pairs(lay.positions, (20, 30, 30))
    adjacent = overlapping_pairs(lay.positions, (20, 30, 30), adjacent=True)
    # face neighbours of a 3 x 3 x 2 grid: 2*3*2 + 3*2*2 + 3*3*1 = 33
    assert len(adjacent) == 33
    # with all pairs, every two tiles whose grid indices differ by at most 1 overlap
    assert len(all_pairs) == sum(
        1
        for i in range(18)
        for j in range(i + 1, 18)
        if (
            np.abs(np.subtract(np.unravel_index(i, (3, 3, 2)), np.unravel_index(j, (3, 3, 2)))) <= 1
        ).all()
    )
    steps = np.abs(lay.positions[adjacent[:, 1]] - lay.positions[adjacent[:, 0]])
    assert ((steps > 0).sum(axis=1) == 1).all()


def test_overlapping_pairs_large_grid_is_fast_and_exact():
    lay = regular_grid((100, 100), (64, 64), overlap=0.1)
    pairs = overlapping_pairs(lay.positions, (64, 64))
    assert len(pairs) == 2 * 100 * 99 + 2 * 99 * 99  # side and diagonal neighbours
    assert len(overlapping_pairs(lay.positions, (64, 64), adjacent=True)) == 2 * 100 * 99
