"""Lose no data: outputs never overlap inputs, --overwrite deletes only chunkreg's own outputs,
side files are not replaced silently, TOML values are type-checked, one run at a time holds an
output (a lease), and a resume with changed input content is refused.

Every refusal asserts its message and that inputs and prior outputs are byte for byte unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import (
    SYNC,
    TIMEOUT,
    content,
    finish_cli,
    listing,
    make_mosaic,
    run_cli,
    spawn_cli,
    tree_hash,
    wait_for,
)

import chunkreg
from chunkreg.errors import InputChangedError, InputError, OutputInUseError
from chunkreg.io import fingerprint, output_scope, read_lease
from chunkreg.io._fingerprint import describe_change
from chunkreg.io._lease import LEASE_GROUP, STALE_AFTER_S
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
FLOW = ["--tile", "32", "--radius", "2"]


# -- outputs that overlap an input ------------------------------------------------------------


def _prepare(case: str, folder: Path) -> None:
    """Extra inputs some overlap cases need."""
    if case == "drift-inside":
        chunkreg.register_timeseries(folder / "movie.zarr", folder / "out.zarr",
                                     scheduler="synchronous", progress=False)  # fmt: skip
    if case == "symlink":
        os.symlink(folder / "mov.zarr", folder / "link.zarr")


OVERLAPS = {
    # name: (arguments, message fragment); paths relative to the case's folder
    "warp-onto-moving": (["warp", "mov.zarr", "flow.zarr", "mov.zarr"],
                         "output 'mov.zarr' is the same location as the input moving"),
    "warp-onto-flow": (["warp", "mov.zarr", "flow.zarr", "flow.zarr"],
                       "output 'flow.zarr' is the same location as the input flow"),
    "warp-onto-reference": (["warp", "mov.zarr", "flow.zarr", "ref.zarr", "--reference", "ref.zarr"],
                            "output 'ref.zarr' is the same location as the input reference"),
    "flow-onto-moving": (["flow", "ref.zarr", "mov.zarr", "mov.zarr", *FLOW],
                         "output 'mov.zarr' is the same location as the input moving"),
    "flow-onto-reference": (["flow", "ref.zarr", "mov.zarr", "ref.zarr", *FLOW],
                            "output 'ref.zarr' is the same location as the input reference"),
    "flow-inside-moving": (["flow", "ref.zarr", "mov.zarr", "mov.zarr/flow", *FLOW],
                           "output 'mov.zarr/flow' lies inside the input moving"),
    "flow-around-inputs": (["flow", "ref.zarr", "mov.zarr", ".", *FLOW],
                           "output '.' contains the input reference"),
    "flow-dotdot": (["flow", "ref.zarr", "mov.zarr", "ref.zarr/../mov.zarr", *FLOW],
                    "output 'ref.zarr/../mov.zarr' is the same location as the input moving"),
    "symlink": (["flow", "ref.zarr", "mov.zarr", "link.zarr", *FLOW],
                "output 'link.zarr' is the same location as the input moving"),
    "blocks-onto-moving": (["blocks", "ref.zarr", "mov.zarr", "mov.zarr", "--block", "32"],
                           "output 'mov.zarr' is the same location as the input moving"),
    "drift-onto-stack": (["drift", "movie.zarr", "movie.zarr"],
                         "output 'movie.zarr' is the same location as the input stack"),
    "drift-inside": (["drift", "out.zarr/corrected", "out.zarr"],
                     "output 'out.zarr' contains the input stack"),
}  # fmt: skip


@pytest.mark.parametrize("overwrite", [False, True], ids=["resume", "overwrite"])
@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_output_overlapping_an_input_is_refused(case, overwrite, volumes, movie, capsys):
    folder = volumes
    _prepare(case, folder)
    args, message = OVERLAPS[case]
    before = tree_hash(folder)
    code, _, err = run_cli(capsys, *args, *SYNC, *(["--overwrite"] if overwrite else []))
    assert code == 2, err
    assert message in err
    assert "also with --overwrite" in err
    assert tree_hash(folder) == before  # inputs and earlier outputs untouched


@pytest.mark.parametrize("inside", [False, True], ids=["group", "inside-group"])
def test_stitch_output_overlapping_the_tiles_is_refused(mosaic, capsys, inside):
    tiles, layout = mosaic
    out = tiles / "fused" if inside else tiles
    before = tree_hash(tiles.parent)
    code, _, err = run_cli(capsys, "stitch", layout, out, "--tiles", tiles, "--overwrite", *SYNC)
    assert code == 2, err
    if inside:  # the positions table beside it would land in the tile group too: found first
        assert f"side file {str(out) + '.positions.json'!r} lies inside the input tiles" in err
    else:
        assert f"output {str(out)!r} is the same location as the input tiles[0]" in err
    assert tree_hash(tiles.parent) == before


def test_side_file_overlapping_the_layout_is_refused(mosaic, tmp_path, capsys):
    tiles, layout = mosaic
    positions = tmp_path / "fused.positions.csv"  # the layout is also a side file's path
    positions.write_bytes(layout.read_bytes())
    before = tree_hash(tmp_path)
    code, _, err = run_cli(capsys, "stitch", positions, tmp_path / "fused.zarr", "--tiles", tiles,
                           "--overwrite", *SYNC)  # fmt: skip
    assert code == 2, err
    assert f"side file {str(positions)!r} is the same location as the input layout" in err
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize("api", ["shifts_to_flow", "register_timeseries", "tiles_to_zarr"])
def test_python_api_refuses_overlap(api, volumes, movie):
    folder = volumes
    if api == "shifts_to_flow":
        chunkreg.blockwise_shifts(folder / "ref.zarr", folder / "mov.zarr", folder / "b.zarr",
                                  block=32, scheduler="synchronous", progress=False)  # fmt: skip
        call = lambda: chunkreg.shifts_to_flow(folder / "b.zarr", folder / "b.zarr/f",  # noqa: E731
                                               scheduler="synchronous", progress=False)  # fmt: skip
        message = "lies inside the input blocks"
    elif api == "register_timeseries":
        call = lambda: chunkreg.register_timeseries(movie, movie, overwrite=True,  # noqa: E731
                                                    scheduler="synchronous", progress=False)  # fmt: skip
        message = "is the same location as the input stack"
    else:
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(folder / "t.tif", np.zeros((8, 8), np.uint16))
        call = lambda: chunkreg.io.tiles_to_zarr([folder / "t.tif"], folder, overwrite=True)  # noqa: E731
        message = "contains the input tiles[0]"
    before = tree_hash(folder)
    with pytest.raises(InputError, match=re.escape(message)):
        call()
    assert tree_hash(folder) == before


# -- --overwrite deletes only what chunkreg wrote ---------------------------------------------


def _foreign_output(kind: str, out: Path, folder: Path) -> None:
    if kind == "plain-group":
        zarr.open_group(str(out), mode="w").create_array("data", shape=(4,), dtype="u1")
    elif kind == "array":
        zarr.create_array(str(out), shape=(4,), dtype="u1")
    elif kind == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    elif kind == "file":
        out.write_text("my file")
    elif kind == "chunkreg-with-foreign-file":
        chunkreg.compute_flow(folder / "ref.zarr", folder / "mov.zarr", out, tile=32, radius=2,
                              scheduler="synchronous", progress=False)  # fmt: skip
        (out / "notes.txt").write_text("my notes")


FOREIGN = {
    "plain-group": "exists but was not written by chunkreg; refusing to delete it",
    "array": "exists and is a zarr array, not a chunkreg output group",
    "folder": "exists and is not a zarr store; refusing to touch it",
    "file": "exists and is a file, not a zarr store",
    "chunkreg-with-foreign-file": "holds entries chunkreg did not write (notes.txt)",
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_overwrite_refuses_what_chunkreg_did_not_write(kind, volumes, capsys):
    out = volumes / "out.zarr"
    _foreign_output(kind, out, volumes)
    before = tree_hash(volumes)
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, "--overwrite", *SYNC)
    assert code == 2, err
    assert FOREIGN[kind] in err
    assert tree_hash(volumes) == before


@pytest.mark.parametrize("kind", ["plain-group", "array", "folder", "file"])
def test_without_overwrite_what_chunkreg_did_not_write_is_refused_too(kind, volumes, capsys):
    out = volumes / "out.zarr"
    _foreign_output(kind, out, volumes)
    before = tree_hash(volumes)
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)
    assert code == 2, err
    message = {"plain-group": "exists but was not written by chunkreg; refusing to touch it"}
    assert message.get(kind, FOREIGN[kind]) in err
    assert tree_hash(volumes) == before


def test_overwrite_replaces_a_chunkreg_output(volumes, capsys):
    out = volumes / "out.zarr"
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)
    assert code == 0, err
    first = tree_hash(out / "flow")
    inputs = tree_hash(volumes / "ref.zarr", volumes / "mov.zarr")
    code, out_text, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW,
                                  "--overwrite", *SYNC)  # fmt: skip
    assert code == 0, err
    assert "skipped" in out_text and ", 0 skipped" in out_text  # nothing resumed: a fresh run
    assert tree_hash(out / "flow") == first  # the same bytes again
    assert tree_hash(volumes / "ref.zarr", volumes / "mov.zarr") == inputs
    assert not (out / LEASE_GROUP).exists()


# -- side files -------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True], ids=["refused", "overwrite"])
@pytest.mark.parametrize("side", ["positions.json", "positions.csv", "links.csv"])
def test_stitch_side_files_are_not_replaced_silently(side, overwrite, mosaic, tmp_path, capsys):
    tiles, layout = mosaic
    target = tmp_path / f"fused.{side}"
    target.write_text("someone else's table\n")
    before = tree_hash(tmp_path)
    args = ["stitch", layout, tmp_path / "fused.zarr", "--tiles", tiles, *SYNC]
    code, _, err = run_cli(capsys, *args, *(["--overwrite"] if overwrite else []))
    if overwrite:
        assert code == 0, err
        assert target.read_text() != "someone else's table\n"
        return
    assert code == 2, err
    assert f"{str(target)!r} exists and was not written by the run of output" in err
    assert tree_hash(tmp_path) == before
    assert not (tmp_path / "fused.zarr").exists()


def test_rerunning_stitch_rewrites_its_own_side_files(mosaic, tmp_path, capsys):
    tiles, layout = mosaic
    args = ["stitch", layout, tmp_path / "fused.zarr", "--tiles", tiles, *SYNC]
    assert run_cli(capsys, *args)[0] == 0
    first = tree_hash(tmp_path / "fused.links.csv", tmp_path / "fused.positions.json")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert tree_hash(tmp_path / "fused.links.csv", tmp_path / "fused.positions.json") == first


@pytest.mark.parametrize("side", ["out_shifts.csv", "plot.png"])
def test_drift_side_files_are_not_replaced_silently(side, movie, tmp_path, capsys):
    target = tmp_path / side
    target.write_text("keep me")
    before = tree_hash(tmp_path)
    args = ["drift", movie, tmp_path / "out.zarr", *SYNC]
    if side == "plot.png":
        args += ["--plot", target]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert f"{str(target)!r} exists and was not written by the run of output" in err
    assert tree_hash(tmp_path) == before
    assert not (tmp_path / "out.zarr").exists()


def test_drift_rerun_keeps_its_shifts_table(movie, tmp_path, capsys):
    args = ["drift", movie, tmp_path / "out.zarr", *SYNC]
    assert run_cli(capsys, *args)[0] == 0
    table = tree_hash(tmp_path / "out_shifts.csv")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert tree_hash(tmp_path / "out_shifts.csv") == table


# -- TOML configs: every value type-checked ---------------------------------------------------


def to_toml(config: dict) -> str:
    """Write a parsed config back as TOML (JSON spells our strings, numbers and lists alike)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]

    def table(name: str, values: dict) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict))
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for name, values in config.items():
        if isinstance(values, dict):
            table(name, values)
    return "\n".join(lines) + "\n"


def _load(name: str) -> dict:
    import tomllib

    return tomllib.loads((WORKFLOWS / f"{name}.example.toml").read_text())


TOML_CASES = {
    # id: (script, table, key, value, message)
    "overwrite-string": ("register_volumes", "output", "overwrite", "false",
                         "config [output] overwrite must be true or false, got the string 'false'."),
    "workers-string": ("register_volumes", "cluster", "workers", "two",
                       "config [cluster] workers must be an integer, got the string 'two'."),
    "client-reserved": ("register_volumes", "ilk", "client", "tcp://x:1",
                        "config [ilk] client is set by the script itself ([cluster])"),
    "tile-in-kernel": ("register_volumes", "tvl1", "tile", 32,
                       "config [tvl1] tile is set by the script itself ([registration] tile)"),
    "unknown-kernel-key": ("register_volumes", "ilk", "radiuss", 3,
                           "config table [ilk] has unknown keys ['radiuss']"),
    "radius-float": ("register_volumes", "ilk", "radius", 2.5,
                     "config [ilk] radius must be an integer, got the number 2.5."),
    "tile-mixed-list": ("register_volumes", "registration", "tile", [32, "a"],
                        "config [registration] tile must be an integer or a list of integers"),
    "method-unknown": ("register_volumes", "registration", "method", "lk",
                       "config [registration] method must be one of 'ilk', 'tvl1', 'dis', 'blockwise'"),
    "order-float": ("register_volumes", "output", "order", 1.5,
                    "config [output] order must be an integer, got the number 1.5."),
    "roi-int": ("correct_timeseries", "registration", "roi", 5,
                "config [registration] roi must be a list of lists of integers, got the integer 5."),
    "reference-word": ("correct_timeseries", "registration", "reference", "last",
                       "config [registration] reference must be one of 'first', 'mean', 'previous' "
                       "or an integer, got the string 'last'."),
    "piecewise-enabled-string": ("correct_timeseries", "piecewise", "enabled", "yes",
                                 "config [piecewise] enabled must be true or false"),
    "stack-reserved": ("correct_timeseries", "registration", "stack", "x.zarr",
                       "config [registration] stack is set by the script itself ([input] stack)"),
    "blend-number": ("stitch_mosaic", "stitch", "blend", 3,
                     "config [stitch] blend must be a string, got the integer 3."),
    "snake-string": ("stitch_mosaic", "layout", "snake", "no",
                     "config [layout] snake must be true or false, got the string 'no'."),
    "stitch-overwrite-int": ("stitch_mosaic", "output", "overwrite", 1,
                             "config [output] overwrite must be true or false, got the integer 1."),
    "chunks-string": ("convert_tiff", "convert", "chunks", "auto",
                      "config [convert] chunks must be a list of integers, got the string 'auto'."),
    "unknown-table": ("register_volumes", "regstration", None, None,
                      "config has unknown tables ['[regstration]']"),
    "table-not-table": ("stitch_mosaic", "output", None, 5,
                        "config [output] must be a table, got the integer 5."),
}  # fmt: skip


def _script(name: str):
    """Import ``workflows/NAME.py`` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"workflow_{name}", WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bad_config(case: str, folder: Path) -> tuple[str, Path, str]:
    script, table, key, value, message = TOML_CASES[case]
    config = copy.deepcopy(_load(script))
    if key is None:
        config[table] = {} if value is None else value
    else:
        config.setdefault(table, {})[key] = value
    path = folder / "config.toml"
    path.write_text(to_toml(config))
    return script, path, message


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_toml_values_are_type_checked(case, tmp_path, capsys):
    script, path, message = _bad_config(case, tmp_path)
    module = _script(script)
    code = module.script_main(module.run, "test", [str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert listing(tmp_path) == {"config.toml"}  # nothing written


def test_a_bad_toml_value_stops_the_script_process_with_exit_2(tmp_path):
    _, path, message = _bad_config("overwrite-string", tmp_path)
    result = subprocess.run(
        [sys.executable, str(WORKFLOWS / "register_volumes.py"), str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {message}\n"
    assert listing(tmp_path) == {"config.toml"}


def test_a_parameter_without_a_type_is_a_programming_error():
    from chunkreg._scripts import options

    def workflow(data, *, tile=None, radius: int = 3):
        """A workflow whose ``tile`` says nothing about its type."""

    with pytest.raises(TypeError, match=r"parameters \['tile'\] of workflow have no annotation"):
        options({"t": {"radius": 2}}, "t", workflow, skip=("data",))
    assert options({"t": {"radius": 2, "tile": [8]}}, "t", workflow, skip=("data",),
                   types={"tile": list[int]}) == {"radius": 2, "tile": [8]}  # fmt: skip


# -- leases: one run at a time ----------------------------------------------------------------


def _lease_of(pid: int, host: str | None = None, heartbeat: float | None = None) -> dict:
    import psutil

    now = time.time()
    return {
        "host": host or socket.gethostname(),
        "pid": pid,
        "pid_start": psutil.Process(pid).create_time() if host is None else now,
        "started": now - 60,
        "heartbeat": now if heartbeat is None else heartbeat,
        "command": "chunkreg flow (test)",
        "token": "0" * 32,
    }


def _write_lease(out: Path, record: dict) -> None:
    (out / LEASE_GROUP).mkdir(parents=True, exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {"chunkreg_lease": record}}
    (out / LEASE_GROUP / "zarr.json").write_text(json.dumps(doc))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


LIVE = {
    "same-host-live-pid": lambda p: _lease_of(p.pid),
    "other-host-fresh": lambda p: _lease_of(p.pid, host="elsewhere.example"),
}
EXPIRED = {
    "same-host-dead-pid": lambda p: {**_lease_of(p.pid), "pid": 2**22 + 17},
    "same-host-reused-pid": lambda p: {**_lease_of(p.pid), "pid_start": 1.0},
    "other-host-stale": lambda p: _lease_of(
        p.pid, host="elsewhere.example", heartbeat=time.time() - STALE_AFTER_S - 5
    ),
    "this-process-orphan": lambda p: {**_lease_of(os.getpid())},
}


@pytest.mark.parametrize("state", sorted(LIVE))
def test_a_live_lease_refuses_a_second_run(state, volumes, sleeper, capsys):
    out = volumes / "out.zarr"
    assert run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)[0] == 0
    _write_lease(out, LIVE[state](sleeper))
    before = tree_hash(volumes)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *extra, *SYNC)
        assert code == 2, err
        assert "is being written by another chunkreg run (host" in err
        assert "command: chunkreg flow (test)" in err
        assert tree_hash(volumes) == before


@pytest.mark.parametrize("state", sorted(EXPIRED))
def test_an_expired_lease_is_taken_over_and_the_run_repaired(state, volumes, sleeper, capsys):
    out, expected = volumes / "out.zarr", volumes / "expected.zarr"
    assert run_cli(capsys, "flow", "ref.zarr", "mov.zarr", expected, *FLOW, *SYNC)[0] == 0
    assert run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)[0] == 0
    # a crash part-way: the last blend tasks and the QC were never recorded
    zarr.open_array(str(out), path="_completion/tiles", mode="r+")[2:] = 0
    _write_lease(out, EXPIRED[state](sleeper))
    code, text, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)
    assert code == 0, err
    assert "level 0 blend: 2 done, 2 skipped" in text or "blend: 2 done, 2 skipped" in text
    assert read_lease(out) is None  # released at the end
    for path in ("flow", "qc"):
        assert content(out / path) and content(out / path) == content(expected / path)


def test_the_lease_heartbeat_advances_and_is_released(volumes, monkeypatch):
    monkeypatch.setattr("chunkreg.io._lease.HEARTBEAT_S", 0.05)
    from chunkreg.io import open_output_group

    out = volumes / "out.zarr"
    with output_scope():
        open_output_group(out, signature={"a": 1})
        first = read_lease(out)
        assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
        wait_for(lambda: read_lease(out)["heartbeat"] > first["heartbeat"])
        refused = pytest.raises(OutputInUseError, match="is being written by another chunkreg run")
        with refused, output_scope():  # this process, another scope: a concurrent writer
            open_output_group(out, signature={"a": 1})
    assert read_lease(out) is None


def _rolled_pair(folder: Path, seed: int) -> tuple[np.ndarray, list]:
    """A reference and its copy rolled by one pixel; the flow command for them (9 tiles)."""
    ref = textured_image((96, 96), seed=seed)
    zarr.create_array(str(folder / "ref.zarr"), data=ref, chunks=(32, 32))
    zarr.create_array(str(folder / "mov.zarr"), data=np.roll(ref, 1, 1), chunks=(32, 32))
    args = ["flow", "ref.zarr", "mov.zarr", "out.zarr", "--tile", "32", "--radius", "3",
            "--levels", "1", *SYNC]  # fmt: skip
    return ref, args


def test_two_concurrent_runs_one_refuses(tmp_path):
    _, args = _rolled_pair(tmp_path, seed=4)
    first = spawn_cli(args, tmp_path, tmp_path / "first.log")
    try:
        wait_for(lambda: read_lease(tmp_path / "out.zarr") is not None, first)
        os.kill(first.pid, signal.SIGSTOP)  # holds its lease as long as the second run needs
        second = finish_cli(args, tmp_path)
        os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is being written by another chunkreg run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.wait(timeout=TIMEOUT) == 0, (tmp_path / "first.log").read_text()
    finally:
        first.kill()
        first.wait()
    expected = tmp_path / "expected.zarr"
    chunkreg.compute_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr", expected, tile=32,
                          radius=3, levels=1, scheduler="synchronous", progress=False)  # fmt: skip
    assert content(tmp_path / "out.zarr" / "flow") == content(expected / "flow")


# -- content-aware resume ---------------------------------------------------------------------


@pytest.mark.parametrize("change", ["other-data", "touched", "chunk-deleted"])
def test_resume_with_changed_input_is_refused(change, volumes, capsys):
    out = volumes / "out.zarr"
    assert run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC)[0] == 0
    zarr.open_array(str(out), path="_completion/tiles", mode="r+")[1:] = 0  # interrupted
    moving = volumes / "mov.zarr"
    if change == "other-data":
        zarr.open_array(str(moving), mode="r+")[:] = np.flipud(zarr.open_array(str(moving))[:])
    elif change == "touched":
        chunk = moving / "c" / "0" / "0"
        os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    else:
        (moving / "c" / "1" / "1").unlink()
    # a lost chunk is refused by the chunk check first; past it, the fingerprint sees the change
    extra = ("--allow-sparse",) if change == "chunk-deleted" else ()
    before = tree_hash(volumes)
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, *SYNC, *extra)
    assert code == 2, err
    assert f"the input moving ({moving}) changed since this output was started" in err
    assert "Pass overwrite=True (--overwrite) to start afresh" in err
    assert tree_hash(volumes) == before
    code, _, err = run_cli(
        capsys, "flow", "ref.zarr", "mov.zarr", out, *FLOW, "--overwrite", *SYNC, *extra
    )
    assert code == 0, err


def test_fingerprint_of_a_store_without_local_files():
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(store, shape=(8, 8), chunks=(4, 4), dtype="f4")
    array[:] = 1.0
    first = fingerprint(array)
    assert first["kind"] == "keys" and first["files"] == 5  # metadata and 4 chunks
    assert describe_change(first, fingerprint(array)) is None
    array[:4, :4] = 2.0
    assert describe_change(first, fingerprint(array)) == "sampled chunk contents differ"
    array[4:, 4:] = 0.0  # the fill value: the chunk is no longer stored
    assert "5 files" in describe_change(first, fingerprint(array))


def test_fingerprint_of_an_unlistable_store_is_recorded_as_such():
    class NoListing(zarr.storage.MemoryStore):
        async def list_prefix(self, prefix):  # a store that cannot list its keys
            raise NotImplementedError("no listing here")
            yield  # pragma: no cover

    array = zarr.create_array(NoListing(), shape=(4,), chunks=(4,), dtype="u1")
    result = fingerprint(array)
    assert result["kind"] == "unlisted" and "no listing here" in result["reason"]
    assert describe_change(result, fingerprint(array)) is None  # nothing to compare: accepted


def test_changed_input_between_kill_and_rerun_is_refused(tmp_path):
    ref, args = _rolled_pair(tmp_path, seed=9)
    proc = spawn_cli(args, tmp_path, tmp_path / "run.log")
    out = tmp_path / "out.zarr"
    try:  # killed once the output and its run record exist
        wait_for(lambda: (out / "zarr.json").exists() and read_lease(out) is not None, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    zarr.open_array(str(tmp_path / "mov.zarr"), mode="r+")[:] = np.roll(ref, 2, 1)  # same shape
    before = tree_hash(tmp_path / "out.zarr")
    result = finish_cli(args, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "the input moving" in result.stderr
        and "changed since this output was started" in result.stderr
    )
    assert tree_hash(tmp_path / "out.zarr") == before  # the crashed run's lease stays, expired
    with pytest.raises(InputChangedError):
        chunkreg.compute_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr", tmp_path / "out.zarr",
                              tile=32, radius=3, levels=1, scheduler="synchronous",
                              progress=False)  # fmt: skip


# -- security ---------------------------------------------------------------------------------


@pytest.mark.cluster
def test_embedded_dashboard_listens_on_localhost_only():
    from urllib.parse import urlparse

    from chunkreg.execution import open_client

    with open_client(n_workers=1, memory_limit=None) as client:
        link = urlparse(client.dashboard_link)
        assert link.hostname == "127.0.0.1"
        server = client.cluster.scheduler.http_server
        hosts = {sock.getsockname()[0] for sock in server._sockets.values()}
        assert hosts == {"127.0.0.1"}


# -- SIGKILL at random points, then a rerun: byte-identical to an uninterrupted run -----------


def _recorded(out: Path) -> int:
    """Tasks recorded complete in every completion record of ``out`` (its stages, scratch)."""
    total = 0
    for folder, _, files in os.walk(out):  # os.walk: folders may vanish while it looks
        if Path(folder).parent.name == "_completion" and "zarr.json" in files:
            with contextlib.suppress(FileNotFoundError, KeyError, ValueError):  # being (re)moved
                total += int(zarr.open_array(folder, mode="r")[:].sum())
    return total


def _kill_when(args, cwd: Path, out: Path, reached) -> bool:
    """Start the CLI and SIGKILL it (and its children) once ``reached(out, start)``.

    Returns False if the run ended first (the point lay beyond its end).
    """
    proc = spawn_cli(args, cwd, cwd / f"{out.name}.log")
    start = time.monotonic()
    try:
        deadline = start + TIMEOUT
        while not reached(out, start):
            if proc.poll() is not None:
                assert proc.returncode == 0, (cwd / f"{out.name}.log").read_text()
                return False
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode == -signal.SIGKILL


def _without_run_record(tree: dict[str, str]) -> dict[str, str]:
    # the root's attributes name the output's own side files (paths differ between outputs)
    return {k: v for k, v in tree.items() if k != "zarr.json"}


def _flow_case(tmp_path: Path):
    ref = textured_image((96, 96), seed=21)
    mov = apply_flow(ref, -smooth_displacement((96, 96), amplitude=1.5, seed=22))
    zarr.create_array(str(tmp_path / "ref.zarr"), data=ref, chunks=(16, 16))
    zarr.create_array(str(tmp_path / "mov.zarr"), data=mov, chunks=(16, 16))

    def args(out):
        return ["flow", "ref.zarr", "mov.zarr", out, "--tile", "32", "--radius", "2", *SYNC]

    def compare(out):
        return {
            f"{p}/{k}": h for p in ("flow", "coarse", "qc") for k, h in content(out / p).items()
        }

    return args, "records", compare


def _drift_case(tmp_path: Path):
    scene = textured_image((64, 72), seed=23)
    frames = np.stack([scene[t % 8 : t % 8 + 48, t : t + 48] for t in range(16)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames.astype(np.float32),
                      chunks=(1, 48, 48))  # fmt: skip

    def args(out):
        return ["drift", "movie.zarr", out, "--batch", "1", "--upsample", "4", *SYNC]

    def compare(out):
        table = out.with_name(out.name.removesuffix(".zarr") + "_shifts.csv").read_bytes()
        return _without_run_record(content(out)), table

    return args, "records", compare


def _stitch_case(tmp_path: Path):
    tiles, layout = make_mosaic(tmp_path, grid=(2, 3), tile=(64, 64), seed=24)

    def args(out):
        return ["stitch", layout, out, "--tiles", tiles, "--chunks", "8", *SYNC]

    def compare(out):
        stem = out.name.removesuffix(".zarr")
        side = [out.with_name(f"{stem}.{s}").read_bytes() for s in ("positions.json", "links.csv")]
        return content(out / "0"), side

    return args, "time", compare


def _differences(got, want) -> list:
    """Keys (or positions) where two comparisons differ, for the failure message."""
    if isinstance(got, dict):
        return [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)][:10]
    if isinstance(got, (list, tuple)):
        pairs = enumerate(zip(got, want, strict=True))
        return [(i, _differences(a, b)) for i, (a, b) in pairs if a != b]
    return ["differs"]


KILL_CASES = {"flow": _flow_case, "drift": _drift_case, "stitch": _stitch_case}


@pytest.mark.slow
@pytest.mark.parametrize("workflow", sorted(KILL_CASES))
def test_sigkill_at_three_random_points_then_rerun_is_byte_identical(workflow, tmp_path):
    """Kill points are drawn (seeded, one per third of the run) from the tasks an uninterrupted
    run records (flow, drift), or from its wall time (stitch, whose fusion is one short task);
    a point the run finished before is halved until the run is interrupted."""
    args, kind, compare = KILL_CASES[workflow](tmp_path)
    expected = tmp_path / "expected.zarr"
    start = time.monotonic()
    done = finish_cli(args(expected), tmp_path)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    rng = np.random.default_rng(sorted(KILL_CASES).index(workflow))
    # one point drawn in each third of the run (early, middle, late)
    if kind == "records":
        total = _recorded(expected)
        edges = np.linspace(0, 0.8 * total, 4)
        points = [int(k) for k in rng.uniform(edges[:-1], edges[1:])]
    else:
        total = wall
        edges = np.linspace(0.3, 0.95, 4) * wall
        points = [float(d) for d in rng.uniform(edges[:-1], edges[1:])]
    for i, point in enumerate(points):
        for attempt in range(6):
            out = tmp_path / f"killed{i}-{attempt}.zarr"
            if kind == "records":
                reached = lambda o, t0, k=point: read_lease(o) is not None and _recorded(o) >= k  # noqa: E731
            else:
                reached = lambda o, t0, d=point: time.monotonic() - t0 >= d  # noqa: E731
            if _kill_when(args(out), tmp_path, out, reached):
                break
            point = point // 2 if kind == "records" else point / 2
        else:
            pytest.fail(f"{workflow}: every run ended before its kill point")
        rerun = finish_cli(args(out), tmp_path)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        got, want = compare(out), compare(expected)
        assert got == want, f"kill at {point} of {total}: {_differences(got, want)}"
        assert read_lease(out) is None


# -- bad input leaves nothing behind; failed tasks are never recorded complete ------------------


def test_a_bad_scheduler_address_leaves_no_output(volumes, capsys):
    before = listing(volumes)
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", "new/out.zarr", *FLOW,
                           "--scheduler", "garbage", "--no-progress")  # fmt: skip
    assert code == 2, err
    assert "'garbage' is not a Dask scheduler address" in err
    assert listing(volumes) == before  # the output (and its new parent folder) removed again


def test_an_unwritable_output_folder_is_a_clear_error(volumes, capsys, monkeypatch):
    def refuse(self, record):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr("chunkreg.io._lease._Slot.create", refuse)
    before = tree_hash(volumes)
    code, _, err = run_cli(capsys, "flow", "ref.zarr", "mov.zarr", "out.zarr", *FLOW, *SYNC)
    assert code == 2, err
    assert f"cannot write the output '{volumes / 'out.zarr'}': Permission denied" in err
    assert "Traceback" not in err
    assert tree_hash(volumes) == before


def test_failed_blend_tasks_are_not_recorded_and_a_rerun_repairs_them(volumes, monkeypatch):
    from chunkreg.volume import _flow

    options = {"tile": 32, "radius": 2, "scheduler": "synchronous", "progress": False}
    ref, mov = volumes / "ref.zarr", volumes / "mov.zarr"
    chunkreg.compute_flow(ref, mov, volumes / "expected.zarr", **options)
    blend = _flow.blend_tile

    def flaky(task):
        if task.number in (1, 2):
            raise OSError("disk full (injected)")
        return blend(task)

    monkeypatch.setattr(_flow, "blend_tile", flaky)
    first = chunkreg.compute_flow(ref, mov, volumes / "out.zarr", **options)
    assert first.n_failed == 2 and "disk full (injected)" in first.failures[0].error
    done = zarr.open_array(str(volumes / "out.zarr"), path="_completion/tiles", mode="r")[:]
    np.testing.assert_array_equal(done, [1, 0, 0, 1])
    monkeypatch.setattr(_flow, "blend_tile", blend)
    again = chunkreg.compute_flow(ref, mov, volumes / "out.zarr", **options)
    assert again.ok and "blend: 2 done, 2 skipped" in again.notes["stage 4"]
    for path in ("flow", "qc"):
        assert content(volumes / "out.zarr" / path) == content(volumes / "expected.zarr" / path)


def test_an_in_memory_output_is_leased_and_fingerprinted_too(volumes):
    ref = zarr.open_array(str(volumes / "ref.zarr"), mode="r")
    mov = zarr.create_array(zarr.storage.MemoryStore(), data=zarr.open_array(
        str(volumes / "mov.zarr"), mode="r")[:], chunks=(32, 32))  # fmt: skip
    out = zarr.storage.MemoryStore()
    options = {"tile": 32, "radius": 2, "scheduler": "synchronous", "progress": False}
    with output_scope():
        chunkreg.io.open_output_group(out, signature={"x": 1})
        with pytest.raises(OutputInUseError), output_scope():
            chunkreg.compute_flow(ref, mov, out, **options)
    assert chunkreg.compute_flow(ref, mov, out, overwrite=True, **options).ok
    assert read_lease(out) is None
    mov[0, 0] = 7.0
    with pytest.raises(InputChangedError, match=r"the input moving \(MemoryStore@0x"):
        chunkreg.compute_flow(ref, mov, out, **options)


def test_a_live_lease_refuses_a_second_affine_estimate(volumes, sleeper):
    """estimate_affine holds the output's lease too (it has no tiles, but two runs must not
    write one output)."""
    from chunkreg import estimate_affine
    from chunkreg.errors import OutputInUseError

    out = volumes / "affine.zarr"
    first = estimate_affine(
        volumes / "ref.zarr",
        volumes / "mov.zarr",
        out,
        level=0,
        scheduler="synchronous",
        progress=False,
    )
    assert read_lease(out) is None  # released at the end
    _write_lease(out, LIVE["same-host-live-pid"](sleeper))
    before = tree_hash(volumes)
    with pytest.raises(OutputInUseError, match="is being written by another chunkreg run"):
        estimate_affine(
            volumes / "ref.zarr",
            volumes / "mov.zarr",
            out,
            level=0,
            scheduler="synchronous",
            progress=False,
        )
    assert tree_hash(volumes) == before
    assert np.isfinite(first.matrix).all()
