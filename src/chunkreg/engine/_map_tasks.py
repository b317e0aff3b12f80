"""The tasks of :func:`chunkreg.map_tiles`: run a user's function on one tile, or blend one.

A tile task reads every input's tile plus halo (all reads together, one event-loop call), calls
the function, checks what it returned, and writes either its core to the output (crop) or its
blend region to the scratch pieces (blend); a blend task stitches one core from the pieces.
Each writes only what it owns, so it may run twice and writes the same bytes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..io._batch import chunk_cache, read_many, write_many
from ..tiling import Tile, TileGrid
from ._blend import Scratch, blend_region, describe_tile

__all__ = [
    "MapJob",
    "MapTask",
    "blend_map_tile",
    "cast_result",
    "map_tile",
    "probe_tile",
    "store_result",
]


@dataclass(frozen=True)
class MapJob:
    """What the tasks of one run share (picklable; the opened arrays travel with it)."""

    func: Callable[..., Any]
    inputs: tuple[zarr.Array, ...]
    grid: TileGrid  # depth: the halo read
    pass_tile: bool  # call func(..., tile=tile)
    lead: tuple[int, ...] | None = None  # the result's leading (component) shape; None: probe
    dtype: str | None = None  # the output's dtype
    output: zarr.Array | None = None  # crop: the output array; blend: it too (blend stage)
    scratch: Scratch | None = None  # blend: where the tiles' results wait
    token: str = ""  # the run's: keys this process's cache of the inputs' chunks


@dataclass(frozen=True)
class MapTask:
    job: MapJob
    number: int

    def __str__(self) -> str:
        return describe_tile(self.job.grid.tile(self.number))


def cast_result(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` as ``dtype``: floats into integers are rounded and clipped to its range."""
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if dtype.kind in "iu" and values.dtype.kind == "f":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return np.ascontiguousarray(values, dtype=dtype)


def _call(job: MapJob, tile: Tile) -> tuple[np.ndarray, int, float]:
    """Read the tile's regions of every input, run the function; (result, bytes read, s)."""
    requests = [(array, tile.read) for array in job.inputs]
    if any(job.grid.depth):  # neighbours share chunks of their halos: decode them once
        regions = chunk_cache(job.token).read(job.token, requests, "input")
    else:
        regions = read_many(requests, "input")
    start = time.perf_counter()
    result = job.func(*regions, tile=tile) if job.pass_tile else job.func(*regions)
    seconds = time.perf_counter() - start
    result = np.asarray(result)
    shape = tile.read_shape
    ndim = len(shape)
    if result.ndim < ndim or result.shape[result.ndim - ndim :] != shape:
        raise ValueError(
            f"the function returned shape {result.shape} for a region of shape {shape}; it "
            "must return the same region, optionally with leading component axes "
            f"(*components, {', '.join(map(str, shape))})."
        )
    lead = result.shape[: result.ndim - ndim]
    if job.lead is not None and lead != job.lead:
        raise ValueError(
            f"the function returned leading axes {lead} here but {job.lead} on the first tile; "
            "it must return the same components for every tile."
        )
    return result, sum(r.nbytes for r in regions), seconds


def probe_tile(task: MapTask) -> dict:
    """Run the function on one tile to learn its result's leading shape and dtype; the result
    comes back too, for the client to store (:func:`store_result`) once the output exists."""
    result, nbytes, seconds = _call(task.job, task.job.grid.tile(task.number))
    lead = result.shape[: result.ndim - task.job.grid.ndim]
    return {"lead": lead, "dtype": result.dtype.str, "result": result, "bytes_read": nbytes,
            "seconds": seconds}  # fmt: skip


def store_result(job: MapJob, tile: Tile, result: np.ndarray) -> int:
    """Write a tile's result: its core to the output (crop) or its blend region to the
    scratch pieces (blend). Returns the bytes written."""
    lead = result.shape[: result.ndim - tile.ndim]
    if job.scratch is None:
        core = cast_result(result[(Ellipsis, *tile.core_in_read)], job.dtype)
        where = (*(slice(None) for _ in lead), *tile.core)
        write_many([(job.output, where, core)])
        return core.nbytes
    scratch = job.scratch
    blend = scratch.band_grid.tile(tile.number)
    local = tuple(
        slice(b.start - r.start, b.stop - r.start)
        for b, r in zip(blend.read, tile.read, strict=True)
    )
    values = result[(Ellipsis, *local)].reshape((math.prod(lead), *blend.read_shape))
    return scratch.write(tile.index, values)


def map_tile(task: MapTask) -> dict:
    """Compute one tile and write its core (crop) or its scratch pieces (blend)."""
    job = task.job
    tile = job.grid.tile(task.number)
    result, nbytes, seconds = _call(job, tile)
    written = store_result(job, tile, result)
    return {"bytes_read": nbytes, "bytes_written": written, "seconds": seconds}


@dataclass(frozen=True)
class BlendMapTask:
    job: MapJob
    number: int

    def __str__(self) -> str:
        return "blend of " + describe_tile(self.job.grid.tile(self.number))


def blend_map_tile(task: BlendMapTask) -> dict:
    """Blend one tile's core from the scratch pieces and write it to the output."""
    job = task.job
    tile = job.grid.tile(task.number)
    blended = blend_region(job.scratch, tile.core)
    core = cast_result(blended.reshape((*job.lead, *tile.core_shape)), job.dtype)
    where = (*(slice(None) for _ in job.lead), *tile.core)
    write_many([(job.output, where, core)])
    return {"bytes_read": blended.nbytes, "bytes_written": core.nbytes}
