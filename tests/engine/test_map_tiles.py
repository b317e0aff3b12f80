"""chunkreg.map_tiles: a user's function over zarr arrays tile by tile, cropped or blended."""

from __future__ import annotations

import contextlib
import math
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

import chunkreg
from chunkreg.errors import IncompatibleOutputError, InputError

from . import map_cases
from .map_cases import store

SYNC = {"scheduler": "synchronous", "progress": False}
FOLDER = settings(max_examples=12, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@st.composite
def layouts(draw, max_ndim=3):
    """(shape, chunks, tile, depth): tiles are whole multiples of the chunks."""
    ndim = draw(st.integers(1, max_ndim))
    edge = {1: 60, 2: 30, 3: 14}[ndim]
    shape = tuple(draw(st.integers(3, edge)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(2, 6)) for _ in range(ndim))
    tile = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    depth = tuple(draw(st.integers(0, 5)) for _ in range(ndim))
    assume(math.prod(-(-n // t) for n, t in zip(shape, tile, strict=True)) <= 40)  # suite time
    return shape, chunks, tile, depth


def _out(tmp_path: Path) -> Path:
    """A fresh output path under ``tmp_path`` (hypothesis reuses the folder)."""
    k = len(list(tmp_path.glob("out*.zarr")))
    return tmp_path / f"out{k}.zarr"


def _result(out: Path) -> np.ndarray:
    return zarr.open_array(str(out), path="0", mode="r")[:]


@FOLDER
@given(layouts(), st.data())
def test_a_local_filter_with_enough_depth_equals_the_whole_array_result(tmp_path, layout, data):
    """Cropped mode is exact: a maximum filter of radius r per axis, with depth >= r."""
    shape, chunks, tile, depth = layout
    radius = tuple(data.draw(st.integers(0, d)) for d in depth)
    size = tuple(2 * r + 1 for r in radius)
    image = np.random.default_rng(1).integers(0, 1000, shape).astype(np.int32)
    source = store(tmp_path / "in.zarr", image, chunks)
    out = _out(tmp_path)
    report = chunkreg.map_tiles(partial(ndimage.maximum_filter, size=size, mode="reflect"),
                                source, out, tile=tile, depth=depth, **SYNC)  # fmt: skip
    assert report.ok and report.n_done == report.n_tasks
    got = _result(out)
    assert got.dtype == np.int32
    assert_array_equal(got, ndimage.maximum_filter(image, size=size, mode="reflect"))


@FOLDER
@given(layouts())
def test_linear_blend_is_a_partition_of_unity(tmp_path, layout):
    """Blending the input itself gives the input back, whatever the tiles and bands."""
    shape, chunks, tile, depth = layout
    image = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    source = store(tmp_path / "in.zarr", image, chunks)
    out = _out(tmp_path)
    report = chunkreg.map_tiles(map_cases.identity, source, out, tile=tile, depth=depth,
                                blend="linear", **SYNC)  # fmt: skip
    n_tiles = math.prod(-(-n // t) for n, t in zip(shape, tile, strict=True))
    assert report.ok and report.n_done == report.n_tasks == 2 * n_tiles  # tiles, then blends
    assert_allclose(_result(out), image, rtol=0, atol=2e-6)
    assert "_scratch" not in zarr.open_group(str(out), mode="r")  # deleted once blended


@FOLDER
@given(layouts(max_ndim=2), st.integers(1, 2))
def test_linear_blend_of_a_filter_with_twice_its_support_matches(tmp_path, layout, radius):
    shape, chunks, tile, _ = layout
    depth = 2 * radius  # every blended value lies depth - depth // 2 = radius from the edge
    image = np.random.default_rng(3).random(shape)
    source = store(tmp_path / "in.zarr", image, chunks)
    out = _out(tmp_path)
    func = partial(ndimage.uniform_filter, size=2 * radius + 1, mode="nearest")
    chunkreg.map_tiles(func, source, out, tile=tile, depth=depth, blend="linear", **SYNC)
    got = _result(out)
    assert got.dtype == np.float64  # blended in float64 for float64 results
    assert_allclose(got, func(image), rtol=0, atol=1e-12)


def test_several_inputs_and_component_outputs(tmp_path):
    """Two inputs in, a gradient of both (components first) out, in the first input's space."""
    rng = np.random.default_rng(4)
    a, b = rng.random((40, 52)), rng.random((40, 52))
    first = store(tmp_path / "a.zarr", a, (8, 13))
    store(tmp_path / "b.zarr", b, (10, 4))  # other chunks: only the first's shape the output

    def gradients(x, y):
        return np.stack([*np.gradient(x), *np.gradient(y)]).astype(np.float32)

    report = chunkreg.map_tiles(gradients, [first, tmp_path / "b.zarr"], tmp_path / "g.zarr",
                                tile=(16, 26), depth=1, **SYNC)  # fmt: skip
    assert report.ok and report.notes["result"] == "(4, 40, 52) float32"
    result = zarr.open_array(str(tmp_path / "g.zarr"), path="0", mode="r")
    assert result.chunks == (1, 16, 26) and result.dtype == np.float32
    assert_array_equal(result[:], gradients(a, b))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    axes = [ax["name"] for ax in group.attrs["ome"]["multiscales"][0]["axes"]]
    assert axes == ["c", "y", "x"]


def test_the_tile_keyword_and_a_dtype(tmp_path):
    image = np.zeros((30, 20), np.float32)
    store(tmp_path / "in.zarr", image, (5, 5))
    seen = []

    def number(region, *, tile):
        seen.append(tile)
        assert region.shape == tile.read_shape
        return np.full(region.shape, tile.number + 0.6)

    chunkreg.map_tiles(number, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=10, depth=3,
                       dtype="uint8", **SYNC)  # fmt: skip
    expected = np.repeat(np.repeat(np.arange(6).reshape(3, 2), 10, 0), 10, 1) + 1  # rounded
    got = _result(tmp_path / "out.zarr")
    assert got.dtype == np.uint8
    assert_array_equal(got, expected)
    assert {t.number for t in seen} == set(range(6))
    assert seen[-1].core == (slice(20, 30), slice(10, 20))  # the probe ran tile 0 first


def test_a_failing_tile_is_reported_the_others_written_and_a_rerun_completes(tmp_path):
    image = np.random.default_rng(5).random((24, 24)).astype(np.float32)
    store(tmp_path / "in.zarr", image, (8, 8))
    out = tmp_path / "out.zarr"
    map_cases.FAILING.clear()
    map_cases.FAILING.add(4)
    try:
        report = chunkreg.map_tiles(map_cases.fail_on, tmp_path / "in.zarr", out, tile=8,
                                    depth=2, **SYNC)  # fmt: skip
    finally:
        map_cases.FAILING.clear()
    assert not report.ok and report.n_failed == 1 and report.n_done == 8
    (failure,) = report.failures
    assert failure.index == 4 and "tile (1, 1) core [8:16, 8:16]" in failure.description
    assert "RuntimeError: tile 4 is broken" in failure.error
    got = _result(out)
    assert np.isnan(got[8:16, 8:16]).all()  # never written: the fill value
    keep = np.ones(got.shape, bool)
    keep[8:16, 8:16] = False
    assert_array_equal(got[keep], image[keep])
    again = chunkreg.map_tiles(map_cases.fail_on, tmp_path / "in.zarr", out, tile=8, depth=2,
                               **SYNC)  # fmt: skip
    assert again.ok and (again.n_done, again.n_skipped) == (1, 8)
    assert_array_equal(_result(out), image)


def test_a_function_failing_everywhere_writes_no_result(tmp_path):
    store(tmp_path / "in.zarr", np.ones((16, 16)), (8, 8))

    def broken(a):
        raise ValueError("no")

    report = chunkreg.map_tiles(broken, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=8,
                                **SYNC)  # fmt: skip
    assert report.n_failed == 3 and "ValueError: no" in report.failures[0].error
    assert "0" not in zarr.open_group(str(tmp_path / "out.zarr"), mode="r")


def test_a_wrong_result_shape_fails_the_tile_with_a_clear_error(tmp_path):
    store(tmp_path / "in.zarr", np.ones((16, 16)), (8, 8))

    def cropped(a, tile):
        return a[tile.core_in_read] if tile.number else a  # tile 0 (the probe) is right

    report = chunkreg.map_tiles(cropped, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=8,
                                depth=2, **SYNC)  # fmt: skip
    assert report.n_failed == 3
    assert "returned shape (8, 8) for a region of shape" in report.failures[0].error


def test_resume_skips_done_tiles_and_another_function_is_refused(tmp_path):
    image = np.arange(64.0).reshape(8, 8)
    store(tmp_path / "in.zarr", image, (4, 4))
    out = tmp_path / "out.zarr"
    chunkreg.map_tiles(np.sqrt, tmp_path / "in.zarr", out, tile=4, **SYNC)
    again = chunkreg.map_tiles(np.sqrt, tmp_path / "in.zarr", out, tile=4, **SYNC)
    assert (again.n_done, again.n_skipped) == (0, 4)
    for other in (np.exp, partial(np.round, decimals=1)):
        with pytest.raises(IncompatibleOutputError, match="different run"):
            chunkreg.map_tiles(other, tmp_path / "in.zarr", out, tile=4, **SYNC)
    with pytest.raises(IncompatibleOutputError, match="different run"):
        chunkreg.map_tiles(np.sqrt, tmp_path / "in.zarr", out, tile=4, depth=1, **SYNC)
    assert_array_equal(_result(out), np.sqrt(image))
    chunkreg.map_tiles(np.exp, tmp_path / "in.zarr", out, tile=4, overwrite=True, **SYNC)
    assert_array_equal(_result(out), np.exp(image))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 6}, "tile must be a multiple of the chunk size along axis 0"),
        ({"tile": 8, "depth": -1}, "depth"),
        ({"tile": 8, "depth": {5: 1}}, "depth has axes [5] outside 0..1"),
        ({"tile": 8, "blend": "cosine"}, "blend must be None or 'linear'"),
        ({"tile": 8, "inputs": ["in.zarr", "other.zarr"]}, "the same shape"),
        ({"tile": 8, "inputs": np.ones((4, 4))}, "is a numpy array"),
        ({"tile": 8, "inputs": "missing.zarr"}, "does not exist"),
        ({"tile": 8, "func": "not callable"}, "func must be callable"),
        ({"tile": 8, "output": "in.zarr/inside"}, "lies inside the input 0 "),
    ],
)
def test_bad_arguments_are_refused_with_nothing_written(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    store(tmp_path / "in.zarr", np.ones((16, 16)), (4, 4))
    store(tmp_path / "other.zarr", np.ones((16, 17)), (4, 4))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = {"func": np.sqrt, "inputs": "in.zarr", "output": "out.zarr", **kwargs}
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        chunkreg.map_tiles(args.pop("func"), args.pop("inputs"), args.pop("output"), **args,
                           **SYNC)  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_plan_describes_and_signs_the_run(tmp_path):
    store(tmp_path / "in.zarr", np.ones((20, 20)), (5, 5))
    plan = chunkreg.plan_map_tiles(partial(ndimage.gaussian_filter, sigma=1), tmp_path / "in.zarr",
                                   tile=10, depth={1: 4}, blend="linear")  # fmt: skip
    text = plan.describe()
    assert "tiles: 4 in a grid of (2, 2), tile (10, 10), depth (0, 4)" in text
    assert "linear blend across [0, 4]" in text
    sig = plan.signature()
    assert sig["func"]["name"] == "scipy.ndimage._filters.gaussian_filter"
    other = chunkreg.plan_map_tiles(partial(ndimage.gaussian_filter, sigma=2),
                                    tmp_path / "in.zarr", tile=10, depth={1: 4}, blend="linear")  # fmt: skip
    assert other.signature()["func"]["pickle_sha1"] != sig["func"]["pickle_sha1"]
    report = chunkreg.run_map_tiles(plan, tmp_path / "out.zarr", **SYNC)
    assert report.ok and report.n_done == 8  # tiles, then blends


# -- SIGKILL of the whole run, and of one worker ----------------------------------------------

SCRIPT = """
import sys, time
import numpy as np
from scipy import ndimage
import chunkreg

def smooth(a, tile):
    time.sleep(0.03)  # slow enough to be killed in the middle
    return ndimage.gaussian_filter(a, 1.5) + tile.number  # tiles disagree: blending matters

report = chunkreg.map_tiles(smooth, sys.argv[1], sys.argv[2], tile=8, depth=6, blend="linear",
                            scheduler="synchronous", progress=False)
assert report.ok, report.summary()
"""


def _tree(root: Path) -> dict:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _recorded(out: Path) -> int:
    total = 0
    for record in list(out.rglob("_completion/*/zarr.json")):
        with contextlib.suppress(Exception):  # being written or removed
            total += int(zarr.open_array(str(record.parent), mode="r")[:].sum())
    return total


@pytest.mark.slow
def test_sigkill_then_rerun_is_byte_identical(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    image = np.random.default_rng(6).random((40, 48)).astype(np.float32)
    store(tmp_path / "in.zarr", image, (8, 8))
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(out, reached=None):
        proc = subprocess.Popen([sys.executable, "run.py", "in.zarr", out], cwd=tmp_path,
                                env=env, start_new_session=True)  # fmt: skip
        try:
            if reached is None:
                return proc.wait(timeout=120)
            deadline = time.monotonic() + 120
            while not reached(tmp_path / out):
                if proc.poll() is not None:
                    return proc.returncode
                assert time.monotonic() < deadline
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    assert run("expected.zarr") == 0
    expected = _tree(tmp_path / "expected.zarr")
    assert "_scratch" not in str(expected)
    points = {  # of 30 tiles, then 30 blends, each writing one output chunk
        "tiles": lambda out: _recorded(out) >= 5,
        "blend": lambda out: len(list((out / "0" / "c").rglob("*"))) >= 12,
    }
    for stage, reached in points.items():
        out = f"killed-{stage}.zarr"
        assert run(out, reached) == -signal.SIGKILL, f"the run ended before the kill ({stage})"
        assert run(out) == 0
        assert _tree(tmp_path / out) == expected, stage


@pytest.mark.cluster
def test_a_killed_worker_is_survived(tmp_path):
    """The first attempt of a tile kills its worker process: distributed reruns the tile."""
    from chunkreg.execution import open_client

    image = np.random.default_rng(7).random((32, 32)).astype(np.float32)
    store(tmp_path / "in.zarr", image, (8, 8))
    func = partial(map_cases.kill_worker_once, marker=str(tmp_path / "killed"))
    with open_client(n_workers=2, memory_limit=None) as client:
        report = chunkreg.map_tiles(func, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=8,
                                    depth=1, client=client, progress=False)  # fmt: skip
    assert (tmp_path / "killed").exists()  # a worker really died
    assert report.ok and report.n_done == 16
    assert_array_equal(_result(tmp_path / "out.zarr"), image * 2)
