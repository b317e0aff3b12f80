"""``chunkreg stitch`` on the command line, including a run on a local cluster."""

import csv
import json

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from stitching_helpers import relative_error

from chunkreg.cli import main
from chunkreg.cli.stitch import sidecar_paths
from chunkreg.stitching import Layout, read_layout, write_layout


@pytest.fixture
def setup(make_mosaic, tmp_path):
    mosaic = make_mosaic((2, 3), (64, 64), 0.25, 1, seed=21)
    paths = tuple(f"{mosaic.group_path.name}/{n}" for n in mosaic.layout.names)
    layout = tmp_path / "layout.csv"
    write_layout(Layout(mosaic.layout.names, mosaic.layout.positions, paths, str(tmp_path)), layout)
    return mosaic, layout


def test_register_only_then_fuse_only(setup, tmp_path, capsys):
    mosaic, layout = setup
    out = tmp_path / "mosaic.zarr"
    rc = main(["stitch", str(layout), str(out), "--register-only", "--scheduler", "synchronous", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert not out.exists()
    side = sidecar_paths(out)
    assert side["positions_json"].name == "mosaic.positions.json"
    solved = read_layout(side["positions_json"])
    assert relative_error(solved.positions, mosaic.truth) <= 0.5
    assert_array_equal(read_layout(side["positions_csv"]).positions, solved.positions)
    with open(side["links_csv"]) as fh:
        links = list(csv.DictReader(fh))
    assert len(links) == 7 and all(row["kept"] == "True" for row in links)
    assert float(links[0]["quality"]) > 0.9
    assert "7 links kept" in capsys.readouterr().out
    # the positions file is a layout: fuse at those positions
    rc = main(["stitch", str(side["positions_json"]), str(out), "--fuse-only", "--blend", "max", "--scheduler", "synchronous", "--no-progress"])  # fmt: skip
    assert rc == 0
    group = zarr.open_group(out, mode="r")
    assert group["0"].dtype == np.uint16
    assert group.attrs["chunkreg"]["signature"]["blend"] == "max"


def test_errors_exit_2_and_write_nothing(setup, tmp_path, capsys):
    _, layout = setup
    doc = {"tiles": [{"name": "a", "path": "missing.zarr", "position": [0, 0]}]}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    out = tmp_path / "out.zarr"
    assert main(["stitch", str(tmp_path / "bad.json"), str(out), "--scheduler", "synchronous"]) == 2
    assert "not found: 'a'" in capsys.readouterr().err
    assert not out.exists() and not sidecar_paths(out)["positions_json"].exists()
    with pytest.raises(SystemExit):
        main(["stitch", str(layout), str(out), "--register-only", "--fuse-only"])


@pytest.mark.cluster
def test_on_local_cluster(setup, tmp_path):
    mosaic, layout = setup
    out = tmp_path / "mosaic.zarr"
    rc = main(["stitch", str(layout), str(out), "--workers", "2", "--chunks", "48", "--subpixel", "--no-progress"])  # fmt: skip
    assert rc == 0
    solved = read_layout(sidecar_paths(out)["positions_json"])
    assert relative_error(solved.positions, mosaic.truth) <= 0.2
    group = zarr.open_group(out, mode="r")
    record = group["_completion/fusion"][:]
    assert record.all() and len(record) == int(np.prod(np.ceil(np.array(group["0"].shape) / 48)))


def test_a_failed_pair_is_reported_fusion_waits_and_a_rerun_completes(setup, tmp_path,
                                                                       monkeypatch, capsys):  # fmt: skip
    from chunkreg.stitching import _stitch as stitch_module

    _, layout = setup
    out = tmp_path / "mosaic.zarr"
    real = stitch_module.pair_task

    def flaky(task):
        if 0 in task.indices:
            raise OSError("tile unreadable (injected)")
        return real(task)

    monkeypatch.setattr(stitch_module, "pair_task", flaky)
    args = ["stitch", str(layout), str(out), "--scheduler", "synchronous", "--no-progress"]
    assert main(args) == 1  # failed work: exit 1, as for every workflow
    assert "tile unreadable (injected)" in capsys.readouterr().out
    assert not (out / "0").exists() and not sidecar_paths(out)["positions_json"].exists()
    monkeypatch.setattr(stitch_module, "pair_task", real)
    assert main(args) == 0
    clean = tmp_path / "clean.zarr"
    assert main(["stitch", str(layout), str(clean), "--scheduler", "synchronous", "--no-progress"]) == 0  # fmt: skip
    assert_array_equal(zarr.open_group(out, mode="r")["0"][...],
                       zarr.open_group(clean, mode="r")["0"][...])  # fmt: skip
