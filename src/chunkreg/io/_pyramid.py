"""The layout of an image output's display pyramid: which levels, their arrays and regions.

Level ``L`` is the block mean of level ``L - 1`` over the steps :func:`pyramid_factors` gives
(anisotropy-aware: only the spatial axes that are fine enough are halved). This module decides
the levels, creates their arrays, cuts each into chunk-aligned regions and writes one region
(:func:`mean_downsample_tile`); running the regions (on a cluster, with resume) is the
engine's job, :func:`chunkreg.engine.build_output_pyramid`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import zarr

from ..errors import InputError
from ..registration._downsample import block_mean
from ..tiling import TileGrid
from ._arrays import ArrayRef, create_array
from ._chunks import read_region
from ._completion import CompletionRecord
from ._space import NON_SPATIAL, Space, write_space

__all__ = [
    "ANISOTROPY_LIMIT",
    "PYRAMID_MIN_SIZE",
    "OutputLevel",
    "group_ref",
    "level_path",
    "mean_downsample_tile",
    "output_levels",
    "pyramid_factors",
    "pyramid_tile",
    "write_output_pyramid",
]

#: A spatial axis is halved only while the result keeps at least this many voxels.
PYRAMID_MIN_SIZE = 64
#: An axis is halved only while its voxel is finer than this times the finest voxel (so strongly
#: anisotropic axes, e.g. z of 4 x 4 x 50 nm EM, wait until the others have caught up).
ANISOTROPY_LIMIT = 2.0
#: Edge of the region one pyramid task computes, by number of axes.
_PYRAMID_EDGE = {2: 1024, 3: 128}


def group_ref(group: zarr.Group, path: str) -> ArrayRef:
    """A picklable reference to member ``path`` of ``group`` (absolute for local stores)."""
    full = f"{group.path}/{path}".strip("/")
    root = getattr(group.store, "root", None)
    if root is not None:
        return ArrayRef(os.path.abspath(root), full)
    return ArrayRef(group.store, full)


def pyramid_tile(shape, chunks) -> tuple[int, ...]:
    """Region of a pyramid level one downsampling task computes (a multiple of its chunks)."""
    target = _PYRAMID_EDGE.get(len(shape), 128)
    return tuple(
        n if n <= max(c, target) else max(c, target // c * c)
        for n, c in zip(shape, chunks, strict=True)
    )


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
class MeanDownsample:
    """One region of an output pyramid level: the block mean of the finer level under it."""

    source: ArrayRef  # the finer level
    target: ArrayRef  # the level being built
    grid: TileGrid  # regions of the target
    step: tuple[int, ...]  # finer voxels per target voxel, per axis
    number: int

    def __str__(self) -> str:
        region = ", ".join(f"{s.start}:{s.stop}" for s in self.grid.tile(self.number).core)
        return f"pyramid region [{region}] of {self.target.path}"


def mean_downsample_tile(task: MeanDownsample) -> dict:
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


@dataclass(frozen=True)
class OutputLevel:
    """One level of an output pyramid, its array created: ``make(i)`` is region ``i``'s task."""

    level: int
    path: str
    grid: TileGrid
    make: Callable[[int], MeanDownsample]

    @property
    def record_name(self) -> str:
        """Name of the level's completion record in the output group."""
        return f"pyramid_{self.path}"


def output_levels(
    group: zarr.Group, base: str, factors: list[tuple[int, ...]], space: Space
) -> Iterator[OutputLevel]:
    """The levels beyond 0 of image ``group[base]``, each created when it is reached.

    The caller computes each level's regions before asking for the next (level ``L`` is read
    to build ``L + 1``).
    """
    top = group[base]
    finer = base
    for level in range(1, len(factors)):
        step = tuple(b // a for a, b in zip(factors[level - 1], factors[level], strict=True))
        fine = group[finer]
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
        make = partial(MeanDownsample, group_ref(group, finer), group_ref(group, path), grid, step)
        yield OutputLevel(level, path, grid, make)
        finer = path


def write_output_pyramid(
    group: zarr.Group, base: str, space: Space, *, levels: bool | int = True, name=None
) -> int:
    """Build the pyramid levels of ``group[base]`` here, in this process, region by region.

    For conversions that run in-process (:func:`tiff_to_zarr`); workflows on a cluster build
    theirs with :func:`chunkreg.engine.build_output_pyramid`, which writes the same levels,
    records and metadata. Returns the number of levels, 0 included.
    """
    factors = pyramid_factors(group[base].shape, space, levels)
    paths = [base]
    for out in output_levels(group, base, factors, space):
        record = CompletionRecord(group, out.record_name, len(out.grid))
        todo = [i for i, done in enumerate(record.done_mask()) if not done]
        for i in todo:
            mean_downsample_tile(out.make(i))
        record.mark_done_many(todo)
        paths.append(out.path)
    write_space(group, paths, space, factors=factors, name=name)
    return len(paths)
