"""Planning a flow run: validation, halo rule, default tiles and estimates (nothing written)."""

import math

import numpy as np
import pytest
import zarr

from chunkreg.errors import InputError
from chunkreg.volume import default_tile, flow_depth, plan_flow
from chunkreg.volume._methods import kernel_memory_factor, resolve_method

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
    plan = plan_flow(pair3d.reference, pair3d.moving, tile=(32, 32, 16), radius=2)
    assert plan.shape == (48, 40, 36) and plan.ndim == 3
    assert plan.chunks == (1, 16, 16, 16)
    assert plan.grid.depth == (2 * 2 + 2 + 4,) * 3
    assert plan.grid.grid_shape == (2, 2, 3)
    assert plan.params == {"radius": 2, "num_warp": 10, "gaussian": False, "prefilter": False}
    text = plan.describe()
    for expected in (
        "method ilk",
        "tiles: 12 = 2 x 2 x 3 of (32, 32, 16)",
        "halo (depth): (10, 10, 10) (auto: 2*radius+2+motion with motion 4 px)",
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
    assert sig["reference"].endswith("reference.zarr") and sig["reference"].startswith("/")


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
