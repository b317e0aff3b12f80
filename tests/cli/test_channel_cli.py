"""``--channel`` on the commands and ``channel`` in the workflow TOMLs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import chunkreg
from chunkreg.cli import main
from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

RUN = ["--scheduler", "synchronous", "--no-progress"]
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(c, y, x) reference and moving images; channel 1 deformed by a known flow."""
    d = tmp_path_factory.mktemp("channel-cli")
    truth = smooth_displacement((64, 64), amplitude=2.0, seed=1)
    ref = np.stack([textured_image((64, 64), seed=s) for s in (4, 0)])
    mov = np.stack([apply_flow(r, -truth) for r in ref])
    paths = {}
    for name, data in (("ref", ref), ("mov", mov)):
        paths[name] = str(d / f"{name}.zarr")
        zarr.create_array(paths[name], data=data.astype(np.float32), chunks=(1, 32, 32),
                          dimension_names=("c", "y", "x"))  # fmt: skip
        paths[f"{name}1"] = str(d / f"{name}1.zarr")
        zarr.create_array(paths[f"{name}1"], data=data[1].astype(np.float32), chunks=(32, 32))
    return d, paths


def test_flow_and_warp_commands_take_channel(pair, tmp_path, capsys):
    _, p = pair
    flow = tmp_path / "flow.zarr"
    assert main(["flow", p["ref"], p["mov"], str(flow), "--channel", "1", "--dry-run"]) == 0
    assert "channel: 1" in capsys.readouterr().out
    args = ["--tile", "32", "--radius", "3", *RUN]
    assert main(["flow", p["ref"], p["mov"], str(flow), "--channel", "1", *args]) == 0
    assert main(["flow", p["ref1"], p["mov1"], str(tmp_path / "one.zarr"), *args]) == 0
    field = zarr.open_array(str(flow), path="flow")[...]
    assert_array_equal(field, zarr.open_array(str(tmp_path / "one.zarr"), path="flow")[...])
    warped = tmp_path / "warped.zarr"
    code = main(["warp", p["mov"], str(flow), str(warped), "--reference", p["ref"],
                 "--channel", "1", *RUN])  # fmt: skip
    assert code == 0
    out = zarr.open_array(str(warped), path="0")[...]
    mov = zarr.open_array(p["mov"])[...]
    for c in (0, 1):
        np.testing.assert_allclose(out[c], chunkreg.warp(mov[c], field), atol=1e-5)


def test_blocks_command_and_a_bad_channel(pair, tmp_path, capsys):
    _, p = pair
    out = tmp_path / "blocks.zarr"
    args = ["--block", "32", *RUN]
    assert main(["blocks", p["ref"], p["mov"], str(out), "--channel", "1", *args]) == 0
    assert main(["blocks", p["ref1"], p["mov1"], str(tmp_path / "one.zarr"), *args]) == 0
    a = zarr.open_group(str(out), mode="r")["measured_shifts"][...]
    b = zarr.open_group(str(tmp_path / "one.zarr"), mode="r")["measured_shifts"][...]
    assert_array_equal(a, b)
    capsys.readouterr()
    assert main(["blocks", p["ref"], p["mov"], str(tmp_path / "x.zarr"), "--channel", "3",
                 *args]) == 2  # fmt: skip
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def _script(name):
    spec = importlib.util.spec_from_file_location(f"wf_{name}", WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workflow_tomls_take_channel():
    volumes = _script("register_volumes")
    config = {"input": {"reference": "r.zarr", "moving": "m.zarr", "channel": 1},
              "registration": {"method": "ilk"}, "output": {"flow": "f.zarr"}}  # fmt: skip
    assert volumes._tables(config)["input"]["channel"] == 1
    assert volumes._pipeline_tables({**config, "pipeline": {"steps": ["affine"]}})
    with pytest.raises(InputError, match="channel"):
        volumes._tables({**config, "input": {**config["input"], "channel": "1"}})
    series = _script("correct_timeseries")
    config = {"input": {"stack": "s.zarr"}, "registration": {"channel": 2},
              "output": {"path": "o.zarr"}}  # fmt: skip
    assert series._tables(config)["registration"]["channel"] == 2
    mosaic = _script("stitch_mosaic")
    assert "channel" in mosaic._tables({"stitch": {"channel": 1}, "output": {"mosaic": "m.zarr"},
                                        "layout": {}, "tiles": {}})["stitch"]  # fmt: skip


def test_drift_and_stitch_commands_take_channel(tmp_path):
    from chunkreg.stitching import regular_grid, write_layout

    scene = np.stack([textured_image((80, 80), seed=s) for s in (2, 5)])
    movie = np.stack([np.roll(scene, (0, t, -t), axis=(0, 1, 2))[:, 8:72, 8:72] for t in range(4)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=movie.astype(np.float32),
                      chunks=(1, 1, 64, 64), dimension_names=("t", "c", "y", "x"))  # fmt: skip
    out = tmp_path / "drift.zarr"
    assert main(["drift", str(tmp_path / "movie.zarr"), str(out), "--channel", "1", *RUN]) == 0
    shifts = zarr.open_group(str(out), mode="r")["shifts"][...]
    assert_array_equal(np.round(shifts, 6), [[0, 0], [-1, 1], [-2, 2], [-3, 3]])
    assert zarr.open_group(str(out), mode="r")["corrected"].shape == (4, 2, 64, 64)
    layout = regular_grid((1, 2), (64, 40), overlap=0.3)
    group = zarr.open_group(str(tmp_path / "tiles.zarr"), mode="w")
    for name, (y, x) in zip(layout.names, layout.positions.astype(int), strict=True):
        group.create_array(name, data=scene[:, y : y + 64, x + 3 : x + 43])
    write_layout(layout, tmp_path / "layout.json")
    mosaic = tmp_path / "mosaic.zarr"
    assert main(["stitch", str(tmp_path / "layout.json"), str(mosaic), "--tiles",
                 str(tmp_path / "tiles.zarr"), "--channel", "1", *RUN]) == 0  # fmt: skip
    assert zarr.open_array(str(mosaic), path="0").shape[0] == 2
