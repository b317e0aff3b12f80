"""Cluster tasks: each reads its own regions from zarr, runs a kernel, returns or writes.

Task descriptions are small picklable dataclasses holding :class:`chunkreg.io.ArrayRef`
handles, never pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..io import ArrayRef, read_region
from ._fuse import TilePiece, covered_range, fuse_block, interpolation_depth
from ._pairwise import PairRegions, register_pair

__all__ = ["FuseTask", "PairTask", "fuse_task", "pair_task"]


@dataclass(frozen=True)
class PairTask:
    """A batch of tile pairs to register."""

    indices: tuple[int, ...]
    refs: tuple[tuple[ArrayRef, ArrayRef], ...]
    regions: tuple[PairRegions, ...]
    stage_error: tuple[float, ...]
    upsample_factor: int
    downsample: int

    def describe(self) -> str:
        return f"pairs {self.indices[0]}..{self.indices[-1]}"


def pair_task(task: PairTask) -> dict:
    """Register each pair of the batch; return offsets and qualities."""
    start = time.perf_counter()
    opened: dict[ArrayRef, object] = {}
    offsets, qualities, nbytes = [], [], 0
    for (ref_a, ref_b), reg in zip(task.refs, task.regions, strict=True):
        a = read_region(_open(opened, ref_a), reg.slices_a, "tile")
        b = read_region(_open(opened, ref_b), reg.slices_b, "tile")
        nbytes += a.nbytes + b.nbytes
        offset, quality = register_pair(
            a,
            b,
            reg,
            task.stage_error,
            upsample_factor=task.upsample_factor,
            downsample=task.downsample,
        )
        offsets.append(offset)
        qualities.append(quality)
    return {
        "indices": task.indices,
        "offsets": np.array(offsets),
        "qualities": np.array(qualities),
        "bytes_read": nbytes,
        "seconds": time.perf_counter() - start,
    }


@dataclass(frozen=True)
class FuseTask:
    """One chunk-aligned output block and the tiles that touch it."""

    output: ArrayRef
    start: tuple[int, ...]
    shape: tuple[int, ...]
    tiles: tuple[ArrayRef, ...]
    positions: tuple[tuple[float, ...], ...]
    tile_shapes: tuple[tuple[int, ...], ...]
    blend: str
    blend_width: tuple[float, ...] | None
    order: int

    def describe(self) -> str:
        stop = [a + n for a, n in zip(self.start, self.shape, strict=True)]
        return "block " + ", ".join(f"{a}:{b}" for a, b in zip(self.start, stop, strict=True))


def fuse_task(task: FuseTask) -> dict:
    """Read the parts of the tiles covering the block, fuse them, write the block once."""
    t0 = time.perf_counter()
    lo = np.asarray(task.start)
    hi = lo + np.asarray(task.shape)
    depth = interpolation_depth(task.order)
    pieces, nbytes = [], 0
    output = task.output.open(mode="r+")
    for ref, pos, tshape in zip(task.tiles, task.positions, task.tile_shapes, strict=True):
        pos = np.asarray(pos, dtype=np.float64)
        start, stop = covered_range(pos, tshape, lo, hi)
        if (stop <= start).any():
            continue
        first = np.maximum(np.floor(start - pos).astype(np.int64) - depth, 0)
        last = np.minimum(np.ceil(stop - 1 - pos).astype(np.int64) + 1 + depth, tshape)
        region = tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))
        data = read_region(ref.open(), region, "tile")
        nbytes += data.nbytes
        pieces.append(TilePiece(data, tuple(int(v) for v in first), pos, tuple(tshape)))
    block = fuse_block(
        task.start,
        task.shape,
        pieces,
        dtype=output.dtype,
        blend=task.blend,
        blend_width=task.blend_width,
        order=task.order,
        fill_value=output.fill_value,
    )
    output[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))] = block
    return {
        "bytes_read": nbytes,
        "bytes_written": block.nbytes,
        "seconds": time.perf_counter() - t0,
    }


def _open(cache: dict, ref: ArrayRef):
    key = (ref.store if isinstance(ref.store, str) else id(ref.store), ref.path, ref.index)
    if key not in cache:
        cache[key] = ref.open()
    return cache[key]
