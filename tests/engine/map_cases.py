"""Functions and data the map_tiles tests share (module level, so they pickle by reference)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import zarr

#: Tile numbers :func:`fail_on` raises on; tests set and clear it.
FAILING: set[int] = set()


def store(path: Path, data: np.ndarray, chunks) -> zarr.Array:
    """Write ``data`` as a zarr array at ``path`` chunked ``chunks``."""
    return zarr.create_array(str(path), data=data, chunks=chunks, overwrite=True)


def identity(a):
    return a


def fail_on(a, tile):
    """The input, except on the tiles in :data:`FAILING`, which raise."""
    if tile.number in FAILING:
        raise RuntimeError(f"tile {tile.number} is broken")
    return a


def kill_worker_once(a, marker):
    """Kill the worker process running it the first time (``marker`` does not exist yet)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return a * 2
