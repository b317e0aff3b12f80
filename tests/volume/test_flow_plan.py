"""Planning a flow run: validation, halo rule, default tiles and estimates (nothing written)."""

import math

import numpy as np
import pytest
import zarr

from chunkreg.errors import InputError
from chunkreg.registration._methods import kernel_memory_factor, resolve_method
from chunkreg.volume import default_tile, flow_depth, plan_flow

from .kernels import box_flow


def test_flow_depth_formula():
    assert flow_depth("ilk") == 2 * 7 + 2 + 4
    assert flow_depth("ilk", radius=3, motion=10) == 2 * 3 + 2 + 10
    assert flow_depth("ilk", radius=3, gaussian=True, motion=0) == 2 * 7 + 2
    assert flow_depth("ilk", radius=3, prefilter=True, num_warp=6, motion=0) == 8 + 6
    assert flow_depth("tvl1") == 2 * math.ceil(math.sqrt(5 * 10)) + 2 + 4
    assert flow_depth("tvl1", num_warp=2, num_iter=8, motion=1.5) == 2 * 4 + 2 + 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: flow_depth("ilk", motion=-1), "motion must be a number >= 0"),
        (lambda: flow_depth("farneback"), "method must be one of"),
        (lambda: flow_depth(box_flow), "needs a known method"),
        (lambda: flow_depth("ilk", attachment=3), r"unknown parameter\(s\) \['attachment'\]"),
        (lambda: flow_depth("ilk", radius=0), "radius must be >= 1"),
        (lambda: flow_depth("ilk", radius=2.5), "radius must be an integer"),
        (lambda: flow_depth("ilk", gaussian=1), "gaussian must be True or False"),
        (lambda: flow_depth("tvl1", tightness=0), "tightness must be > 0"),
        (lambda: flow_depth("tvl1", tol=float("nan")), "tol must be finite"),
    ],
)
def test_bad_method_parameters(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_resolve_method_fills_scikit_image_defaults():
    assert resolve_method("ilk", {"radius": 3}) == {
        "radius": 3,
        "num_warp": 10,
        "gaussian": False,
        "prefilter": False,
        "tol": 1e-4,
    }
    tvl1 = resolve_method("tvl1", {})
    assert tvl1["attachment"] == 15 and tvl1["num_iter"] == 10 and tvl1["tol"] == 1e-4
    assert resolve_method(box_flow, {"anything": 1}) == {"anything": 1}


@pytest.mark.parametrize("ndim", [2, 3])
def test_default_tile_is_chunk_multiple_within_budget(ndim):
    shape, chunks, depth = (4000,) * ndim, (64,) * ndim, (20,) * ndim
    tile = default_tile(shape, chunks, depth, method="ilk")
    assert all(t % c == 0 for t, c in zip(tile, chunks, strict=True))
    factor = kernel_memory_factor("ilk", ndim)
    assert factor * math.prod(t + 2 * d for t, d in zip(tile, depth, strict=True)) <= 2**30
    if ndim == 3:
        assert tile == (128, 192, 192)
    else:
        assert tile == (1024, 1024)
    # A small budget shrinks the tile; never below one chunk.
    tiny = default_tile(shape, chunks, depth, method="ilk", memory_budget=1)
    assert tiny == chunks


def test_default_tile_covers_small_axes_whole():
    tile = default_tile((100, 5000, 30), (32, 64, 64), (20, 20, 20))
    assert tile[0] == 100 and tile[2] == 30 and tile[1] % 64 == 0 and tile[1] >= 128
    assert default_tile((100, 50), (32, 64), (4, 4)) == (100, 50)


def test_plan_describes_geometry_and_costs(pair3d):
    plan = plan_flow(pair3d.reference, pair3d.moving, tile=(32, 32, 16), radius=2, levels=1)
    assert plan.shape == (48, 40, 36) and plan.ndim == 3
    assert plan.chunks == (1, 16, 16, 16)
    assert plan.grid.depth == (2 * 2 + 2 + 4,) * 3
    assert plan.grid.grid_shape == (2, 2, 3)
    assert plan.params == {
        "radius": 2,
        "num_warp": 10,
        "gaussian": False,
        "prefilter": False,
        "tol": 1e-4,
    }
    text = plan.describe()
    for expected in (
        "method ilk",
        "tiles: 12 = 2 x 2 x 3 of (32, 32, 16)",
        "halo (depth): (10, 10, 10) (auto: 2*radius+2+motion with motion 4 px)",
        "levels: 1 (single level",
        "stitching: cosine blend of neighbouring tiles across (10, 10, 10) voxels",
        f"read amplification vs the input chunk grid: {plan.read_amplification:.2f}x",
        "MiB per task",
    ):
        assert expected in text
    assert plan.read_amplification >= plan.grid.halo_factor > 1
    assert plan.grid.max_read_shape == (42, 40, 30)  # clipped at the edges
    read = 42 * 40 * 30
    assert plan.task_memory >= kernel_memory_factor("ilk", 3) * read
    sig = plan.signature()
    assert sig["tile"] == [32, 32, 16] and sig["depth"] == [10, 10, 10]
    assert [lv["mode"] for lv in sig["levels"]] == ["tiled"]
    assert sig["reference"].endswith("reference.zarr") and sig["reference"].startswith("/")
    # disk: the flow, and the scratch pieces (per axis, each tile's band / middle / band pieces
    # padded to their chunk edges 10 / 22 / 10 (axis 0, 1) and 10 / 6 / 10 (axis 2): 84, 62
    # and 62 voxels of chunks per axis)
    assert plan.disk_bytes == {"flow": 3 * 48 * 40 * 36 * 4, "coarse": 0,
                               "scratch": 3 * 4 * 84 * 62 * 62}  # fmt: skip
    assert "disk (uncompressed): flow 810.0 KiB, pyramid and coarse levels 0.0 KiB, plus up to " \
        "3.7 MiB of scratch" in text  # fmt: skip


def test_plan_given_overlap_and_chunks(pair2d):
    plan = plan_flow(
        pair2d.reference, pair2d.moving, tile=(80, 96), overlap=(5, 7), chunks=(20, 48)
    )
    assert plan.grid.depth == (5, 7) and plan.depth_rule == "given"
    assert plan.chunks == (1, 20, 48)


def test_plan_reads_ome_zarr_multiscale_level(tmp_path, pair2d):
    from chunkreg.io import write_ome_multiscale_metadata

    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.create_array("0", data=pair2d.ref, chunks=(40, 48))
    group.create_array("1", data=pair2d.ref[::2, ::2], chunks=(40, 48))
    write_ome_multiscale_metadata(group, paths=["0", "1"])
    plan = plan_flow(str(tmp_path / "ome.zarr"), str(tmp_path / "ome.zarr"), level=1)
    assert plan.shape == (96, 80)
    assert plan.reference.path == "1"


def _write(path, shape, dtype="float32", chunks=None):
    zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks or shape)
    return str(path)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("shape", r"same shape, got \(192, 160\) and \(190, 160\)"),
        ("ndim1", "must be 2-D or 3-D, got 1-D"),
        ("ndim4", "must be 2-D or 3-D, got 4-D"),
        ("complex", "real numeric dtype, got complex64"),
        ("missing", "does not exist"),
        ("not-zarr", "is not a zarr array or group"),
        ("numpy", "is a numpy array"),
        ("tile-small", "tile must be at least one chunk along axis 1, got 24 < chunk 48"),
        ("tile-odd", "tile must be a multiple of the chunk size along axis 0, got 60 for chunk 40"),
        ("overlap", "overlap must be 'auto' or pixels per axis"),
        ("overlap-neg", "overlap must be >= 0 along axis 0"),
        ("param", r"unknown parameter\(s\) \['tightness'\] for method 'ilk'"),
        ("method", "method must be one of"),
        ("auto-custom", "needs a known method"),
    ],
)
def test_bad_input_is_refused(tmp_path, pair2d, case, match):
    ref, mov, kwargs = pair2d.reference, pair2d.moving, {}
    if case == "shape":
        mov = _write(tmp_path / "m.zarr", (190, 160))
    elif case == "ndim1":
        ref = mov = _write(tmp_path / "m.zarr", (100,))
    elif case == "ndim4":
        ref = mov = _write(tmp_path / "m.zarr", (2, 3, 4, 5))
    elif case == "complex":
        mov = _write(tmp_path / "m.zarr", (192, 160), dtype="complex64")
    elif case == "missing":
        mov = str(tmp_path / "nope.zarr")
    elif case == "not-zarr":
        (tmp_path / "plain").mkdir()
        mov = str(tmp_path / "plain")
    elif case == "numpy":
        mov = np.zeros((192, 160))
    elif case == "tile-small":
        kwargs = {"tile": (80, 24)}
    elif case == "tile-odd":
        kwargs = {"tile": (60, 96)}
    elif case == "overlap":
        kwargs = {"overlap": "big"}
    elif case == "overlap-neg":
        kwargs = {"overlap": (-1, 2)}
    elif case == "param":
        kwargs = {"tightness": 0.5}
    elif case == "method":
        kwargs = {"method": "farneback"}
    elif case == "auto-custom":
        kwargs = {"method": box_flow}
    with pytest.raises(InputError, match=match):
        plan_flow(ref, mov, **kwargs)


def test_plan_levels_auto(pair2d):
    """auto: one level for a one-tile volume, else the fewest whose coarsest fits the budget."""
    ref, mov = pair2d.reference, pair2d.moving
    one = plan_flow(ref, mov, tile=(192, 160))
    assert len(one.levels) == 1 and one.levels[0].mode == "tiled"
    two = plan_flow(ref, mov, tile=(80, 96), radius=3)
    assert [(lp.level, lp.mode, lp.shape) for lp in two.levels] == [
        (0, "refine", (192, 160)),
        (1, "whole", (96, 80)),
    ]
    assert two.grid.depth == (2 * 3 + 2 + 2,) * 2  # auto: for 2 voxels of residual motion
    assert two.levels[0].band == (5, 5)
    assert "motion 2 px (residual)" in two.depth_rule
    # a budget too small for level 1 (iLK 2-D: 80 bytes per voxel) adds levels
    small = plan_flow(ref, mov, tile=(80, 96), radius=3, coarse_memory="400kB")
    assert [lp.shape for lp in small.levels] == [(192, 160), (96, 80), (48, 40)]
    assert [lp.mode for lp in small.levels] == ["refine", "refine", "whole"]
    assert small.levels[1].grid.grid_shape == (2, 1)  # the same tile, in level-1 voxels
    assert small.levels[1].chunks == (40, 48)
    text = small.describe()
    for line in (
        "levels: 3 (coarse-to-fine",
        "level 2 (48 x 40, images from pyramid): whole level in memory",
        "level 1 (96 x 80, images from pyramid): 2 tiles = 2 x 1 of (80, 96), halo (10, 10), "
        "blend band (5, 5), refining the upsampled flow of the level above",
        "level 0 (192 x 160, images from input): 6 tiles",
    ):
        assert line in text
    # an explicit number of levels whose coarsest does not fit is tiled there
    tiled = plan_flow(ref, mov, tile=(80, 96), radius=3, levels=2, coarse_memory=1000)
    assert [lp.mode for lp in tiled.levels] == ["refine", "tiled"]
    assert tiled.levels[1].grid.depth == (2 * 3 + 2 + 4,) * 2
    assert tiled.signature()["levels"] != two.signature()["levels"]


def test_plan_reuses_the_inputs_multiscale_levels(tmp_path, pair2d):
    """OME-Zarr inputs whose levels halve each other provide the pyramid."""
    from chunkreg.io import write_ome_multiscale_metadata

    paths = []
    for name, data in (("ref", pair2d.ref), ("mov", pair2d.mov)):
        group = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="w")
        group.create_array("0", data=data, chunks=(40, 48))
        group.create_array("1", data=data[::2, ::2], chunks=(40, 48))
        group.create_array("2", data=data[::5, ::5], chunks=(40, 48))  # not a halving
        write_ome_multiscale_metadata(group, paths=["0", "1", "2"])
        paths.append(str(tmp_path / f"{name}.zarr"))
    plan = plan_flow(*paths, tile=(80, 96), radius=3, levels=3)
    assert plan.levels[1].reference.path == "1" and plan.levels[1].moving.path == "1"
    assert plan.levels[2].reference is None  # built from level 1
    assert "level 1 (96 x 80, images from input's multiscale level)" in plan.describe()
    assert plan.signature()["levels"][1]["reference"].endswith("ref.zarr/1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": 0}, "levels must be 'auto' or an integer >= 1, got 0"),
        ({"levels": "many"}, "levels must be 'auto' or an integer >= 1, got 'many'"),
        ({"levels": 2.5}, "levels must be 'auto' or an integer >= 1"),
        ({"levels": 6}, r"levels=6 makes the coarsest level \(6, 5\), smaller than 8 voxels"),
        ({"coarse_memory": "lots"}, "coarse_memory must be bytes such as"),
        ({"coarse_memory": 0}, "coarse_memory must be a positive number of bytes"),
    ],
)
def test_bad_levels_are_refused(pair2d, kwargs, match):
    with pytest.raises(InputError, match=match):
        plan_flow(pair2d.reference, pair2d.moving, tile=(80, 96), **kwargs)


@pytest.mark.parametrize(("mode", "memory"), [("tile", "tiled"), ("refine", "refine")])
def test_the_tile_chooser_and_the_plan_share_one_cost_model(mode, memory):
    from chunkreg.tiling import TileGrid
    from chunkreg.volume._levels import refine_memory, tiled_memory

    shape, chunks, depth = (4000,) * 3, (64,) * 3, (20,) * 3
    estimate = {
        "tiled": lambda g: tiled_memory("ilk", g, 2),
        "refine": lambda g: refine_memory("ilk", g),
    }
    tile = default_tile(shape, chunks, depth, method="ilk", mode=mode, input_itemsize=2)
    assert estimate[memory](TileGrid(shape, tile, depth, chunks)) <= 2**30  # what the plan reports
    # a chooser counting the kernel alone picks a tile whose task the plan finds too large
    kernel_only = default_tile(shape, chunks, depth, method="ilk")
    assert estimate[memory](TileGrid(shape, kernel_only, depth, chunks)) > 2**30
    assert math.prod(tile) < math.prod(kernel_only)


def test_the_halo_is_called_depth_and_overlap_still_names_it(pair3d):
    paths = (pair3d.reference, pair3d.moving)
    by_depth = plan_flow(*paths, tile=(32, 32, 16), depth=(3, 4, 5), radius=2, levels=1)
    by_overlap = plan_flow(*paths, tile=(32, 32, 16), overlap=(3, 4, 5), radius=2, levels=1)
    assert by_depth.grid.depth == by_overlap.grid.depth == (3, 4, 5)
    assert by_depth.signature() == by_overlap.signature()
    with pytest.raises(InputError, match=r"depth .* not both"):
        plan_flow(*paths, depth=2, overlap=2)
    with pytest.raises(InputError, match="depth must be >= 0 along axis 0"):
        plan_flow(*paths, depth=-1)
