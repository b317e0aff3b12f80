"""Building the image pyramid of both inputs in zarr, region by region on the cluster.

Level ``L`` of each input is computed from level ``L - 1`` (the input itself for ``L = 1``) by
tasks that each own a chunk-aligned region of the new level: they read the region's doubled
footprint plus the blur's halo, blur and halve it (:func:`downsample_region`) and write it once.
The result equals the same step applied to the whole level.

Image outputs (warped volumes, corrected series, mosaics, converted TIFFs) get a display pyramid
the same way, on the engine (:func:`chunkreg.engine.build_output_pyramid`, re-exported here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import zarr

from .._validation import check_finite
from ..engine import IndexedTasks
from ..engine._pyramid import build_output_pyramid
from ..io import ArrayRef, read_region
from ..io._pyramid import group_ref, pyramid_factors, pyramid_tile
from ..registration._multiscale import downsample_region, downsample_source, level_step
from ..tiling import TileGrid
from ._intensity import IDENTITY, Intensity

__all__ = [
    "build_output_pyramid",
    "create_pyramid_level",
    "downsample_tile",
    "pyramid_factors",
    "pyramid_tasks",
]

PYRAMID_GROUP = "pyramid"
INPUTS = ("reference", "moving")


def pyramid_path(name: str, level: int) -> str:
    """Path of a built pyramid level inside the output group."""
    return f"{PYRAMID_GROUP}/{name}/{level}"


@dataclass(frozen=True)
class _Downsample:
    name: str
    source: ArrayRef  # the finer level
    target: ArrayRef  # the level being built
    grid: TileGrid  # regions of the target
    number: int
    intensity: Intensity = IDENTITY  # the finer level's values to kernel intensities

    def __str__(self) -> str:
        tile = self.grid.tile(self.number)
        region = ", ".join(f"{s.start}:{s.stop}" for s in tile.core)
        return f"{self.name} pyramid region [{region}] of {self.target.path}"


def _level_task(sources: dict, targets: dict, grid: TileGrid, intensities: dict, index: int):
    name = INPUTS[index // len(grid)]
    return _Downsample(name, sources[name], targets[name], grid, index % len(grid),
                       intensities.get(name, IDENTITY))  # fmt: skip


def pyramid_tasks(
    sources: dict, targets: dict, grid: TileGrid, intensities: dict | None = None
) -> IndexedTasks:
    """The downsampling tasks of one level: every region of the reference, then the moving.

    ``intensities`` (by input name) turn the finer level's stored values into kernel
    intensities; a level is built from those, so the pyramid holds what the kernels see.
    """
    make = partial(_level_task, sources, targets, grid, intensities or {})
    return IndexedTasks(len(INPUTS) * len(grid), make)


def downsample_tile(task: _Downsample) -> dict:
    """Compute and write one region of a pyramid level (runs on a worker)."""
    t0 = time.perf_counter()
    tile = task.grid.tile(task.number)
    fine = task.source.open()
    step = level_step(fine.shape, task.grid.shape)
    src = downsample_source(tile.core, fine.shape, step)
    raw = read_region(fine, src, task.name)
    region = task.intensity(raw)
    check_finite(region, f"{task.name} in {task}")
    values = downsample_region(region, [s.start for s in src], tile.core, fine.shape, step)
    task.target.open(mode="r+")[tile.core] = values
    return {
        "bytes_read": raw.nbytes,
        "bytes_written": values.nbytes,
        "pyramid_seconds": time.perf_counter() - t0,
    }


def create_pyramid_level(
    group: zarr.Group, level: int, shape, chunks
) -> tuple[dict[str, ArrayRef], TileGrid]:
    """Create (or reopen) level ``level`` of both inputs' pyramid; return refs and regions."""
    refs = {}
    for name in INPUTS:
        path = pyramid_path(name, level)
        if path not in group:
            group.create_array(
                path,
                shape=tuple(shape),
                dtype=np.float32,
                chunks=tuple(chunks),
                fill_value=np.nan,
                attributes={
                    "description": f"{name} at pyramid level {level}: Gaussian blur (sigma "
                    "2/3) then the mean of each 2-voxel block along each axis the level halves "
                    "(all of them unless the voxels are anisotropic), applied level by level",
                    "level": level,
                },
            )
        refs[name] = group_ref(group, path)
    grid = TileGrid(tuple(shape), pyramid_tile(shape, chunks), (0,) * len(shape), tuple(chunks))
    return refs, grid
