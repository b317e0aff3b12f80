"""Seam-free stitching of tile results in two write-once passes.

Neighbouring tiles' flows are blended with smooth weights across a band of ``2 * band`` voxels
centred on every border between two cores (:func:`chunkreg.tiling.blend_weights` of the grid
with ``depth = band``, ``band = depth // 2``), so the values blended are at least
``depth - band`` voxels away from the edge of the region their tile read.

A task cannot blend alone: the chunks around its core need its neighbours' results. So

1. each tile task writes its result over its *blend region* (core grown by ``band``) to
   scratch arrays, cut into pieces along the bands: per axis the band shared with the tile
   before, the middle that no other tile reads, and the band shared with the tile after (up to
   ``3**ndim`` pieces), each piece one uncompressed zarr chunk that the tile alone writes;
2. a blend task per tile reads, from the tiles whose blend region overlaps its core, just the
   pieces that overlap it, sums them with their weights and writes its core of the flow once.

Cutting along the bands makes each piece a single chunk read or written whole: a neighbour
reads exactly the band it blends, with no inner chunks to decode around it. Both passes own
their outputs whole, so each is write-once, resumable and idempotent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import zarr

from ..errors import InputError
from ..io import ArrayRef
from ..tiling import TileGrid, blend_profiles
from ._planning import BLEND_KIND, QC_STEP, QC_SUBSAMPLE_FROM
from ._qc import seam_sums

__all__ = [
    "BlendJob",
    "BlendTask",
    "Scratch",
    "blend_tile",
    "create_scratch",
    "describe_tile",
    "group_ref",
]

# piece classes along one axis: a band shared by two tiles, the middle of a tile, or (where
# the bands are too wide to cut, 2 * band > tile, or absent) the tile's whole blend region
_BAND, _MIDDLE, _WHOLE = "b", "m", "w"
_QC = "qc"


@dataclass(frozen=True)
class Scratch:
    """Where the tile results of one level live before blending.

    ``group`` holds one array per combination of piece classes (``p`` + one letter per axis),
    whose chunks are the pieces, and, with ``qc``, an array ``qc`` of each tile's NCC before
    and after registration (measured by the tile task, reported by the blend task).
    """

    group: ArrayRef  # the scratch group: store and path
    grid: TileGrid  # the level's tiles (depth = the halo read)
    band: tuple[int, ...]
    qc: bool = False

    @property
    def band_grid(self) -> TileGrid:
        """The tiles with ``depth = band``: their read regions are the blend regions."""
        return dataclasses.replace(self.grid, depth=self.band, chunks=None)

    def _cut(self, axis: int) -> bool:
        b, t = self.band[axis], self.grid.tile_shape[axis]
        return 0 < 2 * b <= t

    def classes(self, axis: int) -> dict[str, tuple[int, int]]:
        """``{class: (piece edge, pieces along the axis)}`` of one axis."""
        b, t = self.band[axis], self.grid.tile_shape[axis]
        n, g = self.grid.shape[axis], self.grid.grid_shape[axis]
        if not self._cut(axis):
            return {_WHOLE: (min(t + 2 * b, n), g)}
        out = {_BAND: (2 * b, 2 * g)}
        if t > 2 * b:
            out[_MIDDLE] = (t - 2 * b, g)
        return out

    def segments(self, axis: int, i: int) -> list[tuple[int, int, str, int]]:
        """``(start, stop, class, slot)`` of the pieces of tile ``i``'s blend region along an
        axis, in level coordinates; they cover the blend region without overlapping."""
        b, t, n = self.band[axis], self.grid.tile_shape[axis], self.grid.shape[axis]
        c0, c1 = i * t, min((i + 1) * t, n)
        r0, r1 = max(c0 - b, 0), min(c1 + b, n)
        if not self._cut(axis):
            return [(r0, r1, _WHOLE, i)]
        a = min(max(c0 + b, r0), r1)
        z = min(max(c1 - b, a), r1)
        parts = [(r0, a, _BAND, 2 * i), (a, z, _MIDDLE, i), (z, r1, _BAND, 2 * i + 1)]
        return [p for p in parts if p[1] > p[0]]

    @property
    def nbytes(self) -> int:
        """Bytes of all the pieces once every tile has written them (uncompressed chunks)."""
        total = 4 * self.grid.ndim
        for axis in range(self.grid.ndim):
            edges = self.classes(axis)
            total *= sum(
                edges[c][0]
                for i in range(self.grid.grid_shape[axis])
                for _, _, c, _ in self.segments(axis, i)
            )
        return total

    def _open(self, name: str, cache: dict, mode: str = "r") -> zarr.Array:
        if name not in cache:
            ref = self.group
            cache[name] = zarr.open_array(ref.store, path=f"{ref.path}/{name}", mode=mode)
        return cache[name]

    def _pieces(self, index) -> Iterator[tuple[str, tuple[slice, ...], tuple[slice, ...]]]:
        """(array name, chunk slices, level slices) of each piece of tile ``index``."""
        per_axis = [self.segments(axis, i) for axis, i in enumerate(index)]
        for combo in itertools.product(*per_axis):
            name = "p" + "".join(c for _, _, c, _ in combo)
            edges = [self.classes(axis)[c][0] for axis, (_, _, c, _) in enumerate(combo)]
            chunk = tuple(
                slice(slot * e, slot * e + e)
                for (_, _, _, slot), e in zip(combo, edges, strict=True)
            )
            yield name, chunk, tuple(slice(s0, s1) for s0, s1, _, _ in combo)

    def write(self, index, values: np.ndarray) -> int:
        """Write one tile's blend-region result, each piece as one whole chunk (once)."""
        blend = self.band_grid.tile(index)
        arrays: dict[str, zarr.Array] = {}
        written = 0
        for name, chunk, where in self._pieces(blend.index):
            local = tuple(
                slice(w.start - r.start, w.stop - r.start)
                for w, r in zip(where, blend.read, strict=True)
            )
            piece = values[(slice(None), *local)]
            edges = tuple(c.stop - c.start for c in chunk)
            if piece.shape[1:] == edges:
                block = np.asarray(piece, dtype=np.float32)  # zarr copies it into the chunk
            else:  # a piece cut short by the volume's edge: fill the chunk, write it whole
                block = np.full((values.shape[0], *edges), np.nan, dtype=np.float32)
                block[(slice(None), *tuple(slice(0, n) for n in piece.shape[1:]))] = piece
            self._open(name, arrays, "r+")[(slice(None), *chunk)] = block
            written += block.nbytes
        return written

    def read(
        self, index, region, arrays: dict | None = None
    ) -> Iterator[tuple[tuple[slice, ...], np.ndarray, tuple]]:
        """The parts of tile ``index``'s result that overlap ``region`` (level slices).

        Yields ``(destination, values, local)``: slices of ``region``, the values there
        ``(ndim, ...)``, and the same place as slices of the tile's blend region. ``arrays``
        caches the opened scratch arrays between calls.
        """
        blend = self.band_grid.tile(index)
        arrays = {} if arrays is None else arrays
        for name, chunk, where in self._pieces(blend.index):
            inter = [
                slice(max(w.start, s.start), min(w.stop, s.stop))
                for w, s in zip(where, region, strict=True)
            ]
            if any(i.stop <= i.start for i in inter):
                continue
            src = tuple(
                slice(c.start + i.start - w.start, c.start + i.stop - w.start)
                for c, i, w in zip(chunk, inter, where, strict=True)
            )
            values = self._open(name, arrays)[(slice(None), *src)]
            if not np.all(np.isfinite(values)):
                raise InputError(
                    f"the scratch result of tile {blend.index} is missing (NaN); its tile task "
                    "did not complete. Run the same command again to finish it."
                )
            destination = tuple(
                slice(i.start - s.start, i.stop - s.start)
                for i, s in zip(inter, region, strict=True)
            )
            local = tuple(
                slice(i.start - r.start, i.stop - r.start)
                for i, r in zip(inter, blend.read, strict=True)
            )
            yield destination, values, local

    def write_qc(
        self, number: int, ncc_before: float, ncc_after: float, textureless: bool = False
    ) -> None:
        """Record tile ``number``'s NCC before and after registration, and whether it had no
        usable texture (given zero flow), in its own chunk."""
        array = self._open(_QC, {}, "r+")
        array[number] = np.array([ncc_before, ncc_after, float(textureless)], dtype=np.float64)

    def read_qc(self, number: int) -> tuple[float, float, float]:
        """Tile ``number``'s NCC before and after, and its no-texture flag (1.0 or 0.0), as its
        tile task measured them."""
        before, after, flat = self._open(_QC, {})[number]
        return float(before), float(after), float(flat)


def describe_tile(tile) -> str:
    """``tile (i, j) core [a:b, c:d]``: how failures and progress name a tile."""
    region = ", ".join(f"{s.start}:{s.stop}" for s in tile.core)
    return f"tile {tile.index} core [{region}]"


def group_ref(group: zarr.Group, path: str) -> ArrayRef:
    """A picklable reference to member ``path`` of ``group`` (absolute for local stores)."""
    full = f"{group.path}/{path}".strip("/")
    root = getattr(group.store, "root", None)
    if root is not None:
        return ArrayRef(os.path.abspath(root), full)
    return ArrayRef(group.store, full)


def create_scratch(
    group: zarr.Group, name: str, grid: TileGrid, band, *, qc: bool = False
) -> Scratch:
    """Create (or reopen) the scratch arrays of one level in ``group[name]``."""
    band = tuple(int(b) for b in band)
    sub = group.require_group(name)
    scratch = Scratch(group_ref(group, name), grid, band, qc)
    ndim = grid.ndim
    per_axis = [scratch.classes(axis) for axis in range(ndim)]
    for combo in itertools.product(*(c.items() for c in per_axis)):
        array = "p" + "".join(c for c, _ in combo)
        if array not in sub:
            sub.create_array(
                array,
                shape=(ndim, *tuple(e * k for _, (e, k) in combo)),
                dtype=np.float32,
                chunks=(ndim, *tuple(e for _, (e, _) in combo)),
                fill_value=np.nan,
                compressors=None,  # temporary, and flows compress poorly: save the time
            )
    if qc and _QC not in sub:
        sub.create_array(
            _QC, shape=(len(grid), 3), dtype=np.float64, chunks=(1, 3), fill_value=np.nan
        )
    return scratch


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


def _every(sl: slice, step: int) -> tuple[slice, slice]:
    """The voxels of ``sl`` at multiples of ``step``: their slice in the subsampled grid, and
    the slice that picks them from an array over ``sl``."""
    first = -(-sl.start // step)
    return slice(first, -(-sl.stop // step)), slice(first * step - sl.start, None, step)


def blend_region(
    scratch: Scratch, region, *, spread: bool = False, spread_step: int = 1
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The blended flow over ``region`` (slices of the level), from the scratch pieces.

    With ``spread``, also return how much the tiles that overlap there disagree: per voxel the
    norm of the per-component range (max - min) of their values, NaN where only one tile has a
    value. Blending hides disagreement from the seam metric (a step becomes a ramp), so this is
    what shows tiles that found different motion. With ``spread_step`` > 1 it is measured on
    every ``spread_step``-th voxel along each axis of ``region`` (from its first voxel) only, and
    has the shape of that subsampled grid.
    """
    bgrid = scratch.band_grid
    ndim = bgrid.ndim
    shape = tuple(s.stop - s.start for s in region)
    out = np.zeros((ndim, *shape), dtype=np.float32)
    if spread:
        sub_shape = tuple(-(-n // spread_step) for n in shape)
        lo = np.full((ndim, *sub_shape), np.inf, dtype=np.float32)
        hi = np.full((ndim, *sub_shape), -np.inf, dtype=np.float32)
        count = np.zeros(sub_shape, dtype=np.int8)
    arrays: dict[str, zarr.Array] = {}
    for index in _overlapping(bgrid, region):
        profiles = blend_profiles(bgrid, index, kind=BLEND_KIND)
        for destination, values, local in scratch.read(index, region, arrays):
            dst = (slice(None), *destination)
            parts = [profile[sl] for profile, sl in zip(profiles, local, strict=True)]
            if all((p == 1).all() for p in parts):  # no other tile reaches here: copy it
                out[dst] += values
                continue
            weights = np.ones((), dtype=np.float32)
            for p in parts:
                weights = np.multiply.outer(weights, p.astype(np.float32))
            out[dst] += values * weights
            if spread:
                pairs = [_every(d, spread_step) for d in destination]
                at = tuple(p[0] for p in pairs)
                picked = values[(slice(None), *tuple(p[1] for p in pairs))]
                np.minimum(lo[(slice(None), *at)], picked, out=lo[(slice(None), *at)])
                np.maximum(hi[(slice(None), *at)], picked, out=hi[(slice(None), *at)])
                count[at] += 1
    if not spread:
        return out
    several = count > 1
    diff = np.full(count.shape, np.nan, dtype=np.float32)
    diff[several] = np.sqrt(((hi[:, several] - lo[:, several]) ** 2).sum(axis=0))
    return out, diff


@dataclass(frozen=True)
class BlendJob:
    """What the blend tasks of one level share."""

    scratch: Scratch
    output: ArrayRef  # the level's flow array


@dataclass(frozen=True)
class BlendTask:
    job: BlendJob
    number: int

    def __str__(self) -> str:
        return "blend of " + describe_tile(self.job.scratch.grid.tile(self.number))


def blend_tile(task: BlendTask) -> dict:
    """Blend one tile's core from the scratch pieces and write it (runs on a worker).

    With quality control (level 0) it also returns the NCC between reference and moving over
    the core before and after registration (measured by the tile task); the tile's partial seam
    sums (:func:`chunkreg.volume.seam_sums` over its core plus one voxel below and two above,
    which it blends too); and the median disagreement (voxels) between the overlapping tiles'
    flows in the blend bands of its core.
    """
    job = task.job
    scratch = job.scratch
    grid = scratch.grid
    tile = grid.tile(task.number)
    qc = scratch.qc
    if qc:
        region = tuple(
            slice(max(c.start - 1, 0), min(c.stop + 2, n))
            for c, n in zip(tile.core, grid.shape, strict=True)
        )
        size = math.prod(c.stop - c.start for c in tile.core)
        step = QC_STEP if size >= QC_SUBSAMPLE_FROM else 1
        flow, spread = blend_region(scratch, region, spread=True, spread_step=step)
    else:
        region = tile.core
        flow = blend_region(scratch, region)
    core_local = tuple(
        slice(c.start - r.start, c.stop - r.start) for c, r in zip(tile.core, region, strict=True)
    )
    core = np.ascontiguousarray(flow[(slice(None), *core_local)])
    job.output.open(mode="r+")[(slice(None), *tile.core)] = core
    result = {"bytes_written": core.nbytes, "bytes_read": flow.nbytes}
    if qc:
        result["ncc_before"], result["ncc_after"], result["textureless"] = scratch.read_qc(
            task.number
        )
        result["seam"] = seam_sums(
            flow,
            grid.tile_shape,
            origin=[r.start for r in region],
            core=tile.core,
            shape=grid.shape,
        )
        band = spread[tuple(_every(c, step)[0] for c in core_local)]
        overlapped = np.isfinite(band)
        # the median: near the volume's faces, where content left the volume, every tile's flow
        # is poor and they disagree by voxels; that must not hide how the bulk agrees
        result["disagreement"] = float(np.median(band[overlapped])) if overlapped.any() else np.nan
    return result
