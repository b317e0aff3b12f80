"""``chunkreg register`` and the register_volumes pipeline: affine, flow, warp, resumed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

from chunkreg.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "volume"))
from affine_cases import about_centre, corner_error, make_pair

ROOT = Path(__file__).parents[2]


def _pair(tmp_path):
    shape = (192, 192)
    truth = about_centre(shape, angles=9, scale=1.02, shift=(2.0, -3.0))
    ref, mov = make_pair(shape, truth, seed=2)
    for name, data in (("ref", ref), ("mov", mov)):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), data=data, chunks=(64, 64))
    return shape, truth, ref, mov


def test_register_command_runs_affine_flow_warp_and_resumes(tmp_path, capsys):
    shape, truth, ref, mov = _pair(tmp_path)
    args = [str(tmp_path / "ref.zarr"), str(tmp_path / "mov.zarr"), str(tmp_path / "out"),
            "--scheduler", "synchronous", "--no-progress", "--tile", "128", "--order", "3"]  # fmt: skip
    assert main(["register", *args]) == 0
    text = capsys.readouterr().out
    for step in ("== affine ==", "== flow ==", "== warp ==", "QC: inliers"):
        assert step in text
    from chunkreg.volume import load_affine

    assert corner_error(load_affine(tmp_path / "out" / "affine.zarr").matrix, truth, shape) < 0.3
    warped = zarr.open_array(str(tmp_path / "out" / "registered.zarr"), path="0")[...]
    inner = (slice(32, -32),) * 2
    assert np.abs(warped - ref)[inner].mean() < 0.2 * np.abs(mov - ref)[inner].mean()
    assert main(["register", *args]) == 0  # resumed: nothing left to compute
    again = capsys.readouterr().out
    assert "earlier run" in again and "0 done" in again


def test_register_command_shards_and_no_pyramid(tmp_path, capsys):
    """``--shards`` reaches the flow and the registered volume; ``--no-pyramid`` the warp."""
    _pair(tmp_path)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "ref.zarr"), str(tmp_path / "mov.zarr"), str(out),
                 "--steps", "flow,warp", "--shards", "128", "--tile", "128", "--no-pyramid",
                 "--scheduler", "synchronous", "--no-progress"]) == 0  # fmt: skip
    assert zarr.open_array(str(out / "flow.zarr"), path="flow").shards == (2, 128, 128)
    registered = zarr.open_group(str(out / "registered.zarr"), mode="r")
    assert registered["0"].shards == (128, 128)
    assert sorted(registered.array_keys()) == ["0"]  # level 0 only: no pyramid levels


def test_workflow_script_pipeline_with_blocks(tmp_path):
    _, _, ref, mov = _pair(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[input]
reference = "{tmp_path / "ref.zarr"}"
moving = "{tmp_path / "mov.zarr"}"
[pipeline]
steps = ["affine", "blocks", "warp"]
[affine]
model = "similarity"
[blockwise]
block = [64, 64]
overlap = 16
[output]
affine = "{tmp_path / "a.zarr"}"
blocks = "{tmp_path / "b.zarr"}"
flow = "{tmp_path / "f.zarr"}"
registered = "{tmp_path / "w.zarr"}"
order = 3
[cluster]
kind = "synchronous"
"""
    )
    done = subprocess.run([sys.executable, str(ROOT / "workflows" / "register_volumes.py"),
                           str(config)], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "== blocks ==" in done.stdout and "reliable blocks" in done.stdout
    flow = zarr.open_array(str(tmp_path / "f.zarr"), path="flow")
    assert "initial_affine" in flow.attrs
    warped = zarr.open_array(str(tmp_path / "w.zarr"), path="0")[...]
    inner = (slice(32, -32),) * 2
    assert np.abs(warped - ref)[inner].mean() < 0.2 * np.abs(mov - ref)[inner].mean()


def test_warp_command_applies_a_stored_affine_alone(tmp_path, capsys):
    _, _, ref, mov = _pair(tmp_path)
    common = ["--scheduler", "synchronous", "--no-progress"]
    args = [str(tmp_path / "ref.zarr"), str(tmp_path / "mov.zarr"), str(tmp_path / "out")]
    assert main(["register", *args, "--steps", "affine", *common]) == 0
    affine = str(tmp_path / "out" / "affine.zarr")
    warp = [str(tmp_path / "mov.zarr"), "none", str(tmp_path / "w.zarr"), "--affine", affine]
    assert main(["warp", *warp, "--dry-run"]) == 0
    assert "x -> A x" in capsys.readouterr().out
    assert main(["warp", *warp, "--order", "3", "--reference", str(tmp_path / "ref.zarr"),
                 *common]) == 0  # fmt: skip
    warped = zarr.open_array(str(tmp_path / "w.zarr"), path="0")[...]
    inner = (slice(32, -32),) * 2
    assert np.abs(warped - ref)[inner].mean() < 0.1 * np.abs(mov - ref)[inner].mean()
    assert main(["warp", str(tmp_path / "mov.zarr"), "none", str(tmp_path / "x.zarr"),
                 *common]) == 2  # fmt: skip
    assert "give a displacement field" in capsys.readouterr().err
