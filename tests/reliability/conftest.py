"""Shared data and helpers of the reliability suite: small inputs, tree hashes, the CLI.

Every case of the suite checks that what it must not touch is byte for byte unchanged:
:func:`tree_hash` hashes every file below a path before and after.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkreg.cli import main
from chunkreg.stitching import Layout, regular_grid, write_layout
from chunkreg.testing import apply_flow, smooth_displacement, textured_image

TIMEOUT = 120  # seconds any subprocess may take
SYNC = ["--scheduler", "synchronous", "--no-progress"]


def tree_hash(*paths: Path) -> dict[str, str]:
    """SHA-1 of every file below ``paths`` (files themselves too), by path."""
    hashes = {}
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            hashes[str(path)] = hashlib.sha1(path.read_bytes()).hexdigest()
    return hashes


def content(root: Path) -> dict[str, str]:
    """SHA-1 of every file below ``root``, by path relative to it (to compare two outputs)."""
    root = Path(root)
    return {str(Path(p).relative_to(root)): h for p, h in tree_hash(root).items()}


def listing(folder: Path) -> set[str]:
    """Every path below ``folder``, relative to it."""
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``chunkreg ARGS`` in this process; returns exit code, stdout and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def spawn_cli(args, cwd: Path, log: Path) -> subprocess.Popen:
    """``python -m chunkreg ARGS`` in a new session (so a kill reaches its children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chunkreg", *map(str, args)],
        cwd=cwd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def finish_cli(args, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m chunkreg ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "chunkreg", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, "the process ended too early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def volumes(tmp_path):
    """``ref.zarr``, ``mov.zarr`` (64 x 64, 1.5 px of smooth motion) and a ``flow.zarr`` array."""
    shape = (64, 64)
    ref = textured_image(shape, seed=0)
    mov = apply_flow(ref, -smooth_displacement(shape, amplitude=1.5, seed=1))
    zarr.create_array(str(tmp_path / "ref.zarr"), data=ref, chunks=(32, 32))
    zarr.create_array(str(tmp_path / "mov.zarr"), data=mov, chunks=(32, 32))
    flow = np.zeros((2, *shape), np.float32)
    flow[1] = 1.0
    zarr.create_array(str(tmp_path / "flow.zarr"), data=flow, chunks=(1, 32, 32))
    return tmp_path


@pytest.fixture
def movie(tmp_path):
    """``movie.zarr``: 6 frames of 48 x 48, drifting by whole pixels."""
    scene = textured_image((64, 64), seed=3)
    frames = np.stack([scene[t : t + 48, 2 * t : 2 * t + 48] for t in range(6)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames.astype(np.float32),
                      chunks=(1, 48, 48))  # fmt: skip
    return tmp_path / "movie.zarr"


def make_mosaic(folder: Path, grid=(2, 2), tile=(48, 48), seed=5) -> tuple[Path, Path]:
    """A group of tiles cut from one image at a regular grid, and its layout file."""
    layout = regular_grid(grid, tile, overlap=0.25)
    extent = layout.positions.max(axis=0) + np.asarray(tile)
    source = 1000 + 10000 * textured_image(tuple(int(v) for v in extent), seed=seed)
    group = zarr.open_group(str(folder / "tiles.zarr"), mode="w")
    for name, pos in zip(layout.names, layout.positions, strict=True):
        box = tuple(slice(int(p), int(p) + n) for p, n in zip(pos, tile, strict=True))
        group.create_array(name, data=source[box].astype(np.uint16), chunks=(16, 16))
    path = folder / "layout.csv"
    write_layout(Layout(layout.names, layout.positions), path)
    return folder / "tiles.zarr", path


@pytest.fixture
def mosaic(tmp_path):
    """``(tiles.zarr, layout.csv)``: 2 x 2 tiles of 48 x 48 overlapping by 12 pixels."""
    return make_mosaic(tmp_path)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Relative output paths of a case land in its own folder."""
    monkeypatch.chdir(tmp_path)
