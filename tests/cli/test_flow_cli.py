"""``chunkreg flow``: plan, run on a separately started scheduler, resume after SIGKILL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from chunkreg.cli import main
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import compute_flow

BIN = os.path.dirname(sys.executable)
TIMEOUT = 120  # seconds any subprocess may take


def _pair(directory: Path, shape, chunks, seed=0):
    ref = textured_image(shape, seed=seed)
    mov = apply_flow(ref, -smooth_displacement(shape, amplitude=1.5, seed=seed + 1))
    paths = []
    for name, data in (("ref", ref), ("mov", mov)):
        path = directory / f"{name}.zarr"
        zarr.create_array(str(path), data=data, chunks=chunks)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("cli-small"), (96, 80), (32, 40))


def _flow_files(out: Path) -> dict:
    """Bytes of every chunk and metadata file of the flow array."""
    root = out / "flow"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _recorded(group: Path, record: str = "tiles") -> int:
    """Tasks recorded complete in a group (0 while it does not exist yet)."""
    try:
        return int(zarr.open_array(str(group), path=f"_completion/{record}", mode="r")[:].sum())
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started with start_new_session=True and everything it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue


def _spawn(args, log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _run_cli(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chunkreg", "flow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; yields the address."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask-cluster")
    dask = shutil.which("dask", path=BIN)
    sched_file = tmp / "scheduler.json"
    procs = [
        _spawn(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)],
            tmp / "scheduler.log", tmp,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while not sched_file.exists():
            assert procs[0].poll() is None, (tmp / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            procs.append(
                _spawn(
                    [dask, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                     "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                     "--memory-limit", "2GiB", "--name", f"w{i}"],
                    tmp / f"worker{i}.log", tmp,
                )
            )  # fmt: skip
        with Client(scheduler_file=str(sched_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
            address = client.scheduler.address
        yield address
    finally:
        for proc in reversed(procs):
            _stop_group(proc)


def test_dry_run_prints_the_plan_and_writes_nothing(small_pair, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    code = main(["flow", *small_pair, str(out), "--tile", "64,40", "--radius", "3", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0
    assert "tiles: 4 = 2 x 2 of (64, 40)" in text
    assert "halo (depth): (10, 10) (auto: 2*radius+2+motion with motion 2 px (residual))" in text
    assert "levels: 2 (coarse-to-fine" in text
    assert "  level 1 (48 x 40, images from pyramid): whole level in memory" in text
    assert (
        "  level 0 (96 x 80, images from input): 4 tiles = 2 x 2 of (64, 40), halo (10, 10)" in text
    )
    assert re.search(r"read amplification vs the input chunk grid: \d+\.\d\dx", text)
    assert re.search(r"estimated memory: \d+\.\d MiB per task, \d+ MiB per one-thread worker", text)
    assert "dry run: nothing written." in text
    assert not out.exists()
    # --levels 1: the single-level plan
    code = main(["flow", *small_pair, str(out), "--tile", "64,40", "--radius", "3", "--dry-run",
                 "--levels", "1"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "levels: 1 (single level" in text
    assert "halo (depth): (12, 12) (auto: 2*radius+2+motion with motion 4 px)" in text
    # a small in-memory budget for the coarsest level: more levels
    code = main(["flow", *small_pair, str(out), "--tile", "64,40", "--dry-run",
                 "--coarse-memory", "100KiB"])  # fmt: skip
    assert code == 0 and "levels: 3 (coarse-to-fine" in capsys.readouterr().out
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile", "16,40"], "tile must be at least one chunk along axis 0, got 16 < chunk 32"),
        (["--attachment", "3"], "--attachment does not apply to --method ilk"),
        (["--method", "tvl1", "--radius", "3", "--gaussian"], "--radius, --gaussian do not apply"),
        (["--overlap", "-2"], "overlap must be >= 0 along axis 0"),
        (["--levels", "9"], "levels=9 makes the coarsest level"),
        (["--coarse-memory", "much"], "coarse_memory must be bytes such as"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(small_pair, tmp_path, capsys, extra, message):
    out = tmp_path / "out.zarr"
    assert main(["flow", *small_pair, str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_input_exit_2(tmp_path, capsys):
    code = main(["flow", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), str(tmp_path / "o")])
    assert code == 2
    assert f"reference: '{tmp_path / 'a.zarr'}' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_failed_tiles_exit_1_with_the_failures_listed(tmp_path, capsys):
    ref, mov = _pair(tmp_path, (64, 80), (32, 40))
    data = zarr.open_array(mov, mode="r+")
    data[40, 50] = np.inf
    args = ["flow", ref, mov, str(tmp_path / "o.zarr"), "--tile", "32,40", "--radius", "2"]
    code = main([*args, "--levels", "1", "--scheduler", "synchronous", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "tasks: 2 done, 0 skipped (already complete), 2 failed, of 8" in captured.out
    assert "blend: not run because of the failures above" in captured.out
    assert "contains NaN or infinite values" in captured.out
    assert "run the same command again to retry them" in captured.err


def test_tvl1_parameters_reach_the_kernel(small_pair, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    args = ["--method", "tvl1", "--num-iter", "3", "--num-warp", "2", "--tightness", "0.5"]
    args += ["--levels", "1"]
    args += ["--tile", "64,40", "--scheduler", "synchronous", "--no-progress"]
    code = main(["flow", *small_pair, str(out), *args])
    captured = capsys.readouterr()
    assert code == 0, captured
    params = zarr.open_array(str(out), path="flow", mode="r").attrs["params"]
    assert params["num_iter"] == 3 and params["num_warp"] == 2 and params["tightness"] == 0.5
    assert "tasks: 8 done" in captured.out and "stage 1: tiles: 4 done" in captured.out


@pytest.mark.cluster
def test_flow_on_a_separately_started_scheduler(small_pair, tmp_path, dask_scheduler):
    out = tmp_path / "out.zarr"
    args = [*small_pair, str(out), "--tile", "64,40", "--radius", "3"]
    result = _run_cli([*args, "--scheduler", dask_scheduler, "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tasks: 11 done, 0 skipped (already complete), 0 failed, of 11" in result.stdout
    assert "seam metric: " in result.stdout
    expected = tmp_path / "expected.zarr"
    compute_flow(*small_pair, expected, tile=(64, 40), radius=3, scheduler="synchronous",
                 progress=False)  # fmt: skip
    assert _flow_files(out) == _flow_files(expected)


@pytest.mark.cluster
def test_resume_after_sigkill_is_byte_identical(tmp_path):
    ref, mov = _pair(tmp_path, (128, 160), (32, 32), seed=7)
    out = tmp_path / "out.zarr"
    args = [ref, mov, str(out), "--tile", "32", "--radius", "2", "--workers", "1", "--no-progress"]
    n_tiles = 4 * 5
    record = out / "_scratch" / "0"  # the level-0 tiles (pyramid and level 1 come first)
    proc = _spawn(
        [sys.executable, "-m", "chunkreg", "flow", *args], tmp_path / "first.log", tmp_path
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        done = 0
        while done == 0:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no tile completed in time"
            done = _recorded(record, "pieces")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its local cluster and its workers
        proc.wait(timeout=TIMEOUT)
    finally:
        _stop_group(proc)
    assert proc.returncode == -signal.SIGKILL
    recorded = _recorded(record, "pieces")
    assert 0 < recorded < n_tiles, "the run was not interrupted part-way"

    result = _run_cli(args, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # pyramid (2 tasks) and level 1 (1) were complete; so were `recorded` tiles of level 0
    assert f"level 0 tiles: {n_tiles - recorded} done, {recorded} skipped" in result.stdout
    assert f"level 0 blend: {n_tiles} done, 0 skipped" in result.stdout
    expected = tmp_path / "expected.zarr"
    compute_flow(ref, mov, expected, tile=32, radius=2, scheduler="synchronous", progress=False)
    assert _flow_files(out) == _flow_files(expected)
    flow = zarr.open_array(str(out), path="flow", mode="r")[:]
    assert_array_equal(flow, zarr.open_array(str(expected), path="flow", mode="r")[:])
    assert not record.exists()  # scratch deleted once blended
