"""Building the image pyramid of both inputs in zarr, region by region on the cluster.

Level ``L`` of each input is computed from level ``L - 1`` (the input itself for ``L = 1``) by
tasks that each own a chunk-aligned region of the new level: they read the region's doubled
footprint plus the blur's halo, blur and halve it (:func:`downsample_region`) and write it once.
The result equals the same step applied to the whole level.

Image outputs (warped volumes, corrected series, mosaics, converted TIFFs) get a display pyramid
the same way (:func:`build_output_pyramid`): block means, only along the spatial axes that are
fine enough (anisotropy-aware), each level listed in the OME-Zarr metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from .._validation import check_finite
from ..errors import InputError
from ..execution import RunReport, run_tasks
from ..io import ArrayRef, CompletionRecord, Space, create_array, read_region, write_space
from ..io._space import NON_SPATIAL
from ..tiling import TileGrid
from ._intensity import IDENTITY, Intensity
from ._multiscale import block_mean, downsample_region, downsample_source, level_step
from ._planning import pyramid_tile
from ._stitch import group_ref

__all__ = [
    "PyramidTasks",
    "build_output_pyramid",
    "create_pyramid_level",
    "downsample_tile",
    "pyramid_factors",
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


class PyramidTasks(Sequence):
    """The downsampling tasks of one level: every region of the reference, then the moving.

    ``intensities`` (by input name) turn the finer level's stored values into kernel
    intensities; a level is built from those, so the pyramid holds what the kernels see.
    """

    def __init__(
        self, sources: dict, targets: dict, grid: TileGrid, intensities: dict | None = None
    ) -> None:
        self.sources, self.targets, self.grid = sources, targets, grid
        self.intensities = intensities or {}

    def __len__(self) -> int:
        return len(INPUTS) * len(self.grid)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        name = INPUTS[index // len(self.grid)]
        return _Downsample(
            name, self.sources[name], self.targets[name], self.grid, index % len(self.grid),
            self.intensities.get(name, IDENTITY),
        )  # fmt: skip


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


# -- pyramids of image outputs -----------------------------------------------------------------

#: A spatial axis is halved only while the result keeps at least this many voxels.
PYRAMID_MIN_SIZE = 64
#: An axis is halved only while its voxel is finer than this times the finest voxel (so strongly
#: anisotropic axes, e.g. z of 4 x 4 x 50 nm EM, wait until the others have caught up).
ANISOTROPY_LIMIT = 2.0


def pyramid_factors(shape, space: Space, levels: bool | int = True) -> list[tuple[int, ...]]:
    """How many level-0 voxels per axis one voxel of each pyramid level averages.

    Each level halves the spatial axes whose voxel size is below :data:`ANISOTROPY_LIMIT` times
    the finest one; ``t`` and ``c`` are never downsampled, nor spatial axes too short to halve
    at level 0 (under twice :data:`PYRAMID_MIN_SIZE`). Levels stop when halving an axis again
    would leave fewer than :data:`PYRAMID_MIN_SIZE` voxels, or after ``levels`` levels.

    Parameters
    ----------
    shape : sequence of int
        Shape of level 0.
    space : Space
        Its physical space (the voxel sizes decide which axes are fine).
    levels : bool or int
        ``True``: as many levels as the rules give; ``False`` or 0: level 0 only; an int: at most
        that many levels beyond 0.

    Returns
    -------
    list of tuple of int
        One entry per level, level 0's all ones.
    """
    if levels is True:
        limit = math.inf
    elif levels is False or levels is None:
        limit = 0
    elif isinstance(levels, int) and levels >= 0:
        limit = levels
    else:
        raise InputError(f"pyramid must be True, False or a number of levels >= 0, got {levels!r}.")
    # spatial axes long enough to be halved at all (a thin slab's few z planes are left alone)
    active = [
        i
        for i, a in enumerate(space.axes)
        if a not in NON_SPATIAL and shape[i] // 2 >= PYRAMID_MIN_SIZE
    ]
    factors = [(1,) * len(shape)]
    while len(factors) - 1 < limit and active:
        f = factors[-1]
        if any(math.ceil(shape[i] / f[i]) // 2 < PYRAMID_MIN_SIZE for i in active):
            break  # the smallest axis has reached the minimum size
        size = {i: space.scale[i] * f[i] for i in active}
        finest = min(size.values())
        step = [1] * len(shape)
        for i in active:
            if size[i] < ANISOTROPY_LIMIT * finest * (1 - 1e-9):
                step[i] = 2
        if all(s == 1 for s in step):
            break
        factors.append(tuple(a * b for a, b in zip(f, step, strict=True)))
    return factors


def level_path(base: str, level: int) -> str:
    """Path of pyramid level ``level`` of the image at ``base`` ("0" -> "1"; "img" -> "img_1")."""
    if level == 0:
        return base
    return str(level) if base == "0" else f"{base}_{level}"


@dataclass(frozen=True)
class _MeanDownsample:
    source: ArrayRef  # the finer level
    target: ArrayRef  # the level being built
    grid: TileGrid  # regions of the target
    step: tuple[int, ...]  # finer voxels per target voxel, per axis
    number: int

    def __str__(self) -> str:
        region = ", ".join(f"{s.start}:{s.stop}" for s in self.grid.tile(self.number).core)
        return f"pyramid region [{region}] of {self.target.path}"


class _LevelTasks(Sequence):
    """The block-mean tasks of one output pyramid level, one per region of the level."""

    def __init__(self, source: ArrayRef, target: ArrayRef, grid: TileGrid, step) -> None:
        self.source, self.target, self.grid, self.step = source, target, grid, tuple(step)

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return _MeanDownsample(self.source, self.target, self.grid, self.step, index)


def mean_downsample_tile(task: _MeanDownsample) -> dict:
    """Compute and write one region of an output pyramid level (runs on a worker)."""
    t0 = time.perf_counter()
    core = task.grid.tile(task.number).core
    fine = task.source.open()
    src = tuple(
        slice(c.start * s, min(c.stop * s, n))
        for c, s, n in zip(core, task.step, fine.shape, strict=True)
    )
    raw = read_region(fine, src, "finer level")
    values = block_mean(raw, task.step, fine.dtype)
    task.target.open(mode="r+")[core] = values
    return {"bytes_read": raw.nbytes, "bytes_written": values.nbytes,
            "pyramid_seconds": time.perf_counter() - t0}  # fmt: skip


def build_output_pyramid(
    group: zarr.Group,
    base: str,
    space: Space,
    *,
    client,
    levels: bool | int = True,
    name: str | None = None,
    progress: bool = True,
) -> RunReport:
    """Add the pyramid levels of image ``group[base]``, region by region, and record them.

    Level ``L`` is the block mean of level ``L - 1`` over the steps :func:`pyramid_factors`
    gives, computed by tasks that each own a chunk-aligned region of level ``L`` and write it
    once; a completion record per level lets a killed run resume. When every level is done the
    group's OME-Zarr metadata lists them all, each with its scale and translation (a mean of
    ``f`` voxels lies ``(f - 1) / 2`` voxels further on).

    Parameters
    ----------
    group : zarr.Group
        The output group; ``group[base]`` is complete.
    base : str
        Path of level 0.
    space : Space
        Physical space of level 0.
    client : distributed.Client or SYNCHRONOUS
        From :func:`chunkreg.execution.open_client`.
    levels : bool or int
        As for :func:`pyramid_factors`.
    name : str, optional
        Image name in the metadata.
    progress : bool
        Draw a progress line.

    Returns
    -------
    RunReport
        Of all levels' tasks; not ``ok`` if some failed (the metadata then lists level 0 only).
    """
    t0 = time.perf_counter()
    top = group[base]
    factors = pyramid_factors(top.shape, space, levels)
    report = RunReport(label="pyramid regions", n_tasks=0)
    paths = [base]
    for level in range(1, len(factors)):
        step = tuple(b // a for a, b in zip(factors[level - 1], factors[level], strict=True))
        fine = group[paths[-1]]
        shape = tuple(math.ceil(n / s) for n, s in zip(fine.shape, step, strict=True))
        chunks = tuple(min(c, n) for c, n in zip(top.chunks, shape, strict=True))
        path = level_path(base, level)
        if path not in group:
            create_array(group, name=path, shape=shape, dtype=top.dtype, chunks=chunks,
                         fill_value=top.fill_value, dimension_names=space.axes,
                         attributes={"description": f"pyramid level {level} of {base!r}: the "
                                     f"mean of {list(factors[level])} voxels of level 0",
                                     "level": level})  # fmt: skip
        grid = TileGrid(shape, pyramid_tile(shape, chunks), (0,) * len(shape), chunks)
        tasks = _LevelTasks(group_ref(group, paths[-1]), group_ref(group, path), grid, step)
        record = CompletionRecord(group, f"pyramid_{path}", len(tasks))
        part = run_tasks(mean_downsample_tile, tasks, client=client, record=record,
                         label=f"pyramid {level}", progress=progress, describe=str)  # fmt: skip
        _add_counts(report, part)
        if not part.ok:
            report.wall_time = time.perf_counter() - t0
            return report
        paths.append(path)
    write_space(group, paths, space, factors=factors, name=name)
    report.notes["pyramid levels"] = len(paths)
    report.wall_time = time.perf_counter() - t0
    return report


def _add_counts(report: RunReport, part: RunReport) -> None:
    """Count one level's tasks in the pyramid's report."""
    report.n_tasks += part.n_tasks
    report.n_done += part.n_done
    report.n_skipped += part.n_skipped
    report.n_failed += part.n_failed
    report.failures += part.failures
    report.wall_time += part.wall_time
    report.bytes_read += part.bytes_read
    report.bytes_written += part.bytes_written
    report.task_seconds += part.task_seconds
    report.notes.update(part.notes)
