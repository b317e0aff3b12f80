"""Ways to give tiles and layouts, bad input, resume and output compatibility."""

import json

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from stitching_helpers import relative_error

from chunkreg import stitch
from chunkreg.errors import IncompatibleOutputError, InputError
from chunkreg.stitching import Layout, read_layout, regular_grid, write_layout

RUN = {"scheduler": "synchronous", "progress": False}


@pytest.fixture
def small(make_mosaic):
    return make_mosaic((2, 3), (64, 64), 0.25, 1, seed=11)


def _layout_file(mosaic, path, *, with_paths=True):
    """Layout file next to the tiles group, naming each tile's array path."""
    paths = (
        tuple(f"{mosaic.group_path.name}/{n}" for n in mosaic.layout.names) if with_paths else None
    )
    lay = Layout(mosaic.layout.names, mosaic.layout.positions, paths, str(path.parent))
    write_layout(lay, path)
    return path


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_layout_file_with_paths(small, tmp_path, suffix):
    layout = _layout_file(small, tmp_path / f"layout{suffix}")
    result = stitch(None, layout, None, fuse=False, **RUN)
    assert relative_error(result.positions, small.truth) <= 0.5
    assert result.layout.paths == read_layout(layout).paths


def test_tiles_as_mapping_list_and_group(small, tmp_path):
    group = zarr.open_group(small.group_path, mode="r")
    names = small.layout.names
    by_group = stitch(small.group_path, small.layout, None, fuse=False, **RUN)
    by_map = stitch({n: group[n] for n in names}, small.layout, None, fuse=False, **RUN)
    by_list = stitch(
        [str(small.group_path / n) for n in names], small.layout, None, fuse=False, **RUN
    )
    assert_array_equal(by_group.positions, by_map.positions)
    assert_array_equal(by_group.positions, by_list.positions)


def test_grid_layout_file_takes_tile_shape_from_tiles(small, tmp_path):
    doc = {
        "grid": {"shape": [2, 3], "overlap": 0.25},
        "tiles": [{"name": n} for n in small.layout.names],
    }
    (tmp_path / "grid.json").write_text(json.dumps(doc))
    result = stitch(small.group_path, tmp_path / "grid.json", None, fuse=False, **RUN)
    assert_array_equal(result.nominal_positions, small.layout.positions)
    assert relative_error(result.positions, small.truth) <= 0.5


def test_missing_tile(small, tmp_path):
    layout = _layout_file(small, tmp_path / "layout.json")
    doc = json.loads(layout.read_text())
    doc["tiles"][2]["path"] = "tiles.zarr/nope"
    layout.write_text(json.dumps(doc))
    with pytest.raises(
        InputError, match=r"1 tile\(s\) named in the layout were not found: 'tile_002'"
    ):
        stitch(None, layout, tmp_path / "out.zarr", **RUN)
    assert not (tmp_path / "out.zarr").exists()
    bad = Layout(("tile_000", "ghost"), [[0, 0], [0, 50]])
    with pytest.raises(InputError, match="'ghost'"):
        stitch(small.group_path, bad, tmp_path / "out.zarr", **RUN)
    assert not (tmp_path / "out.zarr").exists()


def test_tiles_differing_in_ndim_or_dtype(small, tmp_path):
    group = zarr.open_group(small.group_path, mode="a")
    names = list(small.layout.names)
    group.create_array("flat", data=np.zeros(64, dtype=np.uint16))
    group.create_array("float", data=np.zeros((64, 64), dtype=np.float32))
    for odd, match in (("flat", "must have 2 dimensions"), ("float", "share one dtype")):
        lay = Layout([*names[:-1], odd], small.layout.positions)
        with pytest.raises(InputError, match=match):
            stitch(group, lay, tmp_path / "out.zarr", **RUN)
        assert not (tmp_path / "out.zarr").exists()
    with pytest.raises(InputError, match="6 tiles given for a layout of 2"):
        stitch(
            [group[n] for n in names], Layout(names[:2], [[0, 0], [0, 48]]), None, fuse=False, **RUN
        )


def test_no_overlaps(small, tmp_path):
    spread = regular_grid((2, 3), (200, 200), overlap=0.0, names=small.layout.names)
    with pytest.raises(InputError, match="no two of the 6 tiles overlap"):
        stitch(small.group_path, spread, tmp_path / "out.zarr", **RUN)
    assert not (tmp_path / "out.zarr").exists()
    # placing them as given is fine
    result = stitch(small.group_path, spread, tmp_path / "out.zarr", register=False, **RUN)
    assert zarr.open_group(tmp_path / "out.zarr", mode="r")["0"].shape == (264, 464)
    assert result.reports["fusion"].n_done > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"register": False, "fuse": False}, "nothing to do"),
        ({"output": None}, "output path"),
        ({"blend": "mean"}, "blend"),
        ({"downsample": 0}, "downsample"),
        ({"upsample_factor": 2.5}, "upsample_factor"),
        ({"order": 7}, "order"),
        ({"stage_error": -1}, "stage_error"),
        ({"fixed_tile": "nope"}, "fixed_tile"),
        ({"chunks": (0, 10)}, "chunks"),
    ],
)
def test_bad_options(small, tmp_path, kwargs, match):
    kwargs = {"output": tmp_path / "out.zarr", **kwargs}
    with pytest.raises(InputError, match=match):
        stitch(small.group_path, small.layout, **kwargs, **RUN)
    assert not (tmp_path / "out.zarr").exists()


def test_resume_and_incompatible_output(small, tmp_path):
    out = tmp_path / "out.zarr"
    first = stitch(small.group_path, small.layout, out, chunks=48, **RUN)
    data = zarr.open_group(out, mode="r")["0"][:]
    n = first.reports["fusion"].n_tasks
    assert first.reports["fusion"].n_done == n
    # a second identical run finds every chunk done
    again = stitch(small.group_path, small.layout, out, chunks=48, **RUN)
    assert again.reports["fusion"].n_skipped == n and again.reports["fusion"].n_done == 0
    # lose some chunks and their completion marks: only those are recomputed
    group = zarr.open_group(out, mode="a")
    group["0"][:48, :48] = 0
    record = group["_completion/fusion"]
    marks = record[:]
    marks[0] = 0
    record[:] = marks
    resumed = stitch(small.group_path, small.layout, out, chunks=48, **RUN)
    assert resumed.reports["fusion"].n_done == 1
    assert_array_equal(zarr.open_group(out, mode="r")["0"][:], data)
    with pytest.raises(IncompatibleOutputError, match="blend"):
        stitch(small.group_path, small.layout, out, chunks=48, blend="max", **RUN)
    stitch(small.group_path, small.layout, out, chunks=48, blend="max", overwrite=True, **RUN)
    meta = zarr.open_group(out, mode="r").attrs.asdict()
    assert meta["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    assert meta["stitch"]["tiles"] == list(small.layout.names)


def test_fixed_tile_and_results_table(small, tmp_path):
    result = stitch(small.group_path, small.layout, None, fuse=False, fixed_tile="tile_004", **RUN)
    assert_array_equal(result.positions[4], small.layout.positions[4])
    rows = result.links_table()
    assert len(rows) == len(result.pairs) == 7  # side-by-side pairs of a 2 x 3 grid
    assert set(rows[0]) == {
        "tile_a", "tile_b", "nominal_y", "nominal_x", "offset_y", "offset_x",
        "quality", "residual", "kept", "drop_reason",
    }  # fmt: skip
    true = small.truth[result.pairs[:, 1]] - small.truth[result.pairs[:, 0]]
    assert_array_equal(result.offsets, true)
    assert "7 links kept" in result.summary()


def test_fusion_blocks_of_chunks_match_single_chunks(small, tmp_path, monkeypatch):
    single = stitch(small.group_path, small.layout, tmp_path / "a.zarr", chunks=16, **RUN)
    monkeypatch.setattr("chunkreg.stitching._stitch._FUSE_TASK_ELEMENTS", 48 * 32)
    blocks = stitch(small.group_path, small.layout, tmp_path / "b.zarr", chunks=16, **RUN)
    a = zarr.open_group(tmp_path / "a.zarr", mode="r")["0"]
    b = zarr.open_group(tmp_path / "b.zarr", mode="r")["0"]
    assert a.chunks == b.chunks == (16, 16)
    assert_array_equal(a[:], b[:])
    # blocks of 3 x 2 whole chunks (48 x 32 px): fewer tasks, same bytes
    assert single.reports["fusion"].n_tasks == int(np.prod(np.ceil(np.array(a.shape) / 16)))
    assert blocks.reports["fusion"].n_tasks == int(np.prod(np.ceil(np.array(a.shape) / (48, 32))))
