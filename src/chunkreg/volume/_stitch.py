"""Seam-free stitching of tile results in two write-once passes.

Neighbouring tiles' flows are blended with smooth weights across a band of ``2 * band`` voxels
centred on every border between two cores (:func:`chunkreg.tiling.blend_weights` of the grid
with ``depth = band``, ``band = depth // 2``), so the values blended are at least
``depth - band`` voxels away from the edge of the region their tile read.

A task cannot blend alone: the chunks around its core need its neighbours' results. So

1. each tile task writes its result over its *blend region* (core grown by ``band``) to a
   scratch array, into a block of its own (one zarr shard per tile, small inner chunks so
   that reading a neighbour's band decodes little more than the band);
2. a blend task per tile reads, from the scratch blocks of the tiles whose blend region
   overlaps its core, just the overlapping parts, sums them with their weights and writes its
   core of the flow once.

Both passes own their outputs whole, so each is write-once, resumable and idempotent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
import zarr

from ..errors import InputError
from ..io import ArrayRef
from ..registration import normalized_cross_correlation
from ..tiling import TileGrid, blend_weights
from ._planning import BLEND_KIND
from ._qc import seam_sums

__all__ = ["BlendJob", "BlendTask", "Scratch", "blend_tile", "create_scratch", "group_ref"]

#: Smallest inner chunk edge of the scratch array.
_MIN_INNER = 32


@dataclass(frozen=True)
class Scratch:
    """Where the tile results of one level live before blending: one block per tile."""

    array: ArrayRef
    grid: TileGrid  # the level's tiles (depth = the halo read)
    band: tuple[int, ...]
    block: tuple[int, ...]  # block (shard) edge per axis

    @property
    def band_grid(self) -> TileGrid:
        """The tiles with ``depth = band``: their read regions are the blend regions."""
        return dataclasses.replace(self.grid, depth=self.band, chunks=None)

    def block_slices(self, index) -> tuple[slice, ...]:
        """Where tile ``index`` (grid index) keeps its blend region in the scratch array."""
        return (
            slice(None),
            *tuple(slice(i * p, i * p + p) for i, p in zip(index, self.block, strict=True)),
        )

    def write(self, index, values: np.ndarray) -> int:
        """Write one tile's blend-region result into its block (the whole shard, once)."""
        block = np.full((values.shape[0], *self.block), np.nan, dtype=np.float32)
        block[(slice(None), *tuple(slice(0, n) for n in values.shape[1:]))] = values
        self.array.open(mode="r+")[self.block_slices(index)] = block
        return block.nbytes


def group_ref(group: zarr.Group, path: str) -> ArrayRef:
    """A picklable reference to member ``path`` of ``group`` (absolute for local stores)."""
    full = f"{group.path}/{path}".strip("/")
    root = getattr(group.store, "root", None)
    if root is not None:
        return ArrayRef(os.path.abspath(root), full)
    return ArrayRef(group.store, full)


def _geometry(grid: TileGrid, band) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Block edge and inner chunk edge per axis."""
    block, inner = [], []
    for n, t, b in zip(grid.shape, grid.tile_shape, band, strict=True):
        extent = min(t, n) + 2 * b
        e = min(max(b, _MIN_INNER), extent)
        block.append(math.ceil(extent / e) * e)
        inner.append(e)
    return tuple(block), tuple(inner)


def create_scratch(group: zarr.Group, name: str, grid: TileGrid, band) -> Scratch:
    """Create (or reopen) the scratch array of one level inside ``group``."""
    band = tuple(int(b) for b in band)
    block, inner = _geometry(grid, band)
    shape = (grid.ndim, *tuple(g * p for g, p in zip(grid.grid_shape, block, strict=True)))
    if name in group:
        group[name]
    else:
        group.create_array(
            name,
            shape=shape,
            dtype=np.float32,
            chunks=(grid.ndim, *inner),
            shards=(grid.ndim, *block),
            fill_value=np.nan,
            compressors=None,  # temporary, and flows compress poorly: save the time
        )
    return Scratch(group_ref(group, name), grid, band, block)


def _overlapping(band_grid: TileGrid, region) -> list[tuple[int, ...]]:
    """Grid indices of the tiles whose blend region intersects ``region``."""
    ranges = []
    for axis, s in enumerate(region):
        t, b, n = band_grid.tile_shape[axis], band_grid.depth[axis], band_grid.shape[axis]
        lo = max((s.start - b) // t, 0)
        hi = min((s.stop - 1 + b) // t, band_grid.grid_shape[axis] - 1)
        keep = [
            i
            for i in range(lo, hi + 1)
            if max(i * t - b, 0) < s.stop and min((i + 1) * t + b, n) > s.start
        ]
        ranges.append(keep)
    return list(itertools.product(*ranges))


def blend_region(
    scratch: Scratch, region, *, spread: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The blended flow over ``region`` (slices of the level), from the scratch blocks.

    With ``spread``, also return how much the tiles that overlap there disagree: per voxel the
    norm of the per-component range (max - min) of their values, NaN where only one tile has a
    value. Blending hides disagreement from the seam metric (a step becomes a ramp), so this is
    what shows tiles that found different motion.
    """
    array = scratch.array.open()
    bgrid = scratch.band_grid
    ndim = bgrid.ndim
    shape = tuple(s.stop - s.start for s in region)
    out = np.zeros((ndim, *shape), dtype=np.float32)
    if spread:
        lo = np.full((ndim, *shape), np.inf, dtype=np.float32)
        hi = np.full((ndim, *shape), -np.inf, dtype=np.float32)
        count = np.zeros(shape, dtype=np.int8)
    for index in _overlapping(bgrid, region):
        tile = bgrid.tile(index)
        inter = [
            slice(max(r.start, s.start), min(r.stop, s.stop))
            for r, s in zip(tile.read, region, strict=True)
        ]
        local = tuple(
            slice(i.start - r.start, i.stop - r.start)
            for i, r in zip(inter, tile.read, strict=True)
        )
        block = scratch.block_slices(index)
        src = (
            slice(None),
            *tuple(
                slice(b.start + sl.start, b.start + sl.stop)
                for b, sl in zip(block[1:], local, strict=True)
            ),
        )
        values = array[src]
        if not np.all(np.isfinite(values)):
            raise InputError(
                f"the scratch result of tile {index} is missing (NaN); its tile task did not "
                "complete. Run the same command again to finish it."
            )
        weights = blend_weights(bgrid, index, kind=BLEND_KIND)[local]
        dst = (
            slice(None),
            *tuple(
                slice(i.start - r.start, i.stop - r.start)
                for i, r in zip(inter, region, strict=True)
            ),
        )
        out[dst] += values * weights
        if spread:
            np.minimum(lo[dst], values, out=lo[dst])
            np.maximum(hi[dst], values, out=hi[dst])
            count[dst[1:]] += 1
    if not spread:
        return out
    diff = np.sqrt(((hi - lo) ** 2).sum(axis=0)) if ndim else np.zeros(shape)
    return out, np.where(count > 1, diff, np.nan).astype(np.float32)


@dataclass(frozen=True)
class BlendJob:
    """What the blend tasks of one level share."""

    scratch: Scratch
    output: ArrayRef  # the level's flow array
    reference: ArrayRef | None = None  # set for level 0: quality control
    moving: ArrayRef | None = None


@dataclass(frozen=True)
class BlendTask:
    job: BlendJob
    number: int

    def __str__(self) -> str:
        tile = self.job.scratch.grid.tile(self.number)
        region = ", ".join(f"{s.start}:{s.stop}" for s in tile.core)
        return f"blend of tile {tile.index} core [{region}]"


def blend_tile(task: BlendTask) -> dict:
    """Blend one tile's core from the scratch blocks and write it (runs on a worker).

    With quality control (level 0) it also returns the NCC between reference and moving over
    the core before and after warping the moving image by the flow; the tile's partial seam
    sums (:func:`chunkreg.volume.seam_sums` over its core plus one voxel below and two above,
    which it blends too); and the median disagreement (voxels) between the overlapping tiles'
    flows in the blend bands of its core.
    """
    job = task.job
    grid = job.scratch.grid
    tile = grid.tile(task.number)
    qc = job.reference is not None
    if qc:
        region = tuple(
            slice(max(c.start - 1, 0), min(c.stop + 2, n))
            for c, n in zip(tile.core, grid.shape, strict=True)
        )
    else:
        region = tile.core
    if qc:
        flow, spread = blend_region(job.scratch, region, spread=True)
    else:
        flow = blend_region(job.scratch, region)
    core_local = tuple(
        slice(c.start - r.start, c.stop - r.start) for c, r in zip(tile.core, region, strict=True)
    )
    core = np.ascontiguousarray(flow[(slice(None), *core_local)])
    job.output.open(mode="r+")[(slice(None), *tile.core)] = core
    result = {"bytes_written": core.nbytes, "bytes_read": flow.nbytes}
    if qc:
        from ._warp_volume import sample_bounds, sample_region  # it imports this package's flow

        ref = np.asarray(job.reference.open()[tile.core], dtype=np.float32)
        mov_array = job.moving.open()
        before = np.asarray(mov_array[tile.core], dtype=np.float32)
        bounds = sample_bounds(core, tile.core, mov_array.shape, 1)
        moved = mov_array[bounds]
        after = sample_region(
            moved, [b.start for b in bounds], core, [c.start for c in tile.core], order=1
        )
        result["ncc_before"] = normalized_cross_correlation(ref, before)
        result["ncc_after"] = normalized_cross_correlation(ref, after)
        result["seam"] = seam_sums(
            flow,
            grid.tile_shape,
            origin=[r.start for r in region],
            core=tile.core,
            shape=grid.shape,
        )
        band = spread[core_local]
        overlapped = np.isfinite(band)
        # the median: near the volume's faces, where content left the volume, every tile's flow
        # is poor and they disagree by voxels; that must not hide how the bulk agrees
        result["disagreement"] = float(np.median(band[overlapped])) if overlapped.any() else np.nan
        result["bytes_read"] += ref.nbytes + before.nbytes + moved.nbytes
    return result
