"""Seam-free stitching of tile results in two write-once passes (the zarr side).

The geometry lives in :class:`chunkreg.tiling.PieceLayout`: neighbouring tiles' results are
blended with smooth weights across a band of ``2 * band`` elements centred on every border
between two cores, and each tile's result over its blend region is cut into pieces, each one
chunk that the tile alone writes. So

1. each tile task writes its result over its blend region to the scratch arrays
   (:meth:`Scratch.write`);
2. a blend task per tile reads, from the tiles whose blend region overlaps its core, just the
   pieces that overlap it, sums them with their weights and writes its core of the output once
   (:func:`blend_region`, :func:`blend_tile`).

Both passes own their outputs whole, so each is write-once, resumable and idempotent. A
task's reads (and writes) go to zarr together, in one event-loop call
(:mod:`chunkreg.io._batch`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import zarr

from ..errors import InputError
from ..io import ArrayRef
from ..io._batch import chunk_cache, read_many, write_many
from ..io._pyramid import group_ref
from ..tiling import PieceLayout, TileGrid, blend_profiles
from ..tiling._pieces import every, overlapping
from ..tiling._seams import seam_sums

__all__ = [
    "BLEND_KIND",
    "QC_STEP",
    "QC_SUBSAMPLE_FROM",
    "BlendJob",
    "BlendTask",
    "Scratch",
    "blend_tile",
    "create_scratch",
    "describe_tile",
    "group_ref",
]

#: Shape of the blending ramps across tile borders (of the flow).
BLEND_KIND = "cosine"
#: The quality control of tiles whose core has this many voxels or more is measured on every
#: ``QC_STEP``-th voxel along each axis (an eighth of the work in 3-D, still >= 32768 samples).
QC_SUBSAMPLE_FROM = 2**18
QC_STEP = 2
_QC = "qc"


@dataclass(frozen=True)
class Scratch:
    """Where the tile results of one stage live before blending.

    ``group`` holds one array per combination of piece classes (``p`` + one letter per axis,
    see :class:`~chunkreg.tiling.PieceLayout`), whose chunks are the pieces, and, with ``qc``,
    an array ``qc`` of each tile's NCC before and after registration (measured by the tile
    task, reported by the blend task).

    Each voxel holds ``components`` values (default one per axis: a flow) of ``dtype``;
    ``kind`` is the shape of the blending ramps. With ``nan_is_missing`` (the default) a NaN
    read back means a tile never wrote its piece, which is refused; without it NaN is a value
    like any other (results of a user's function).
    """

    group: ArrayRef  # the scratch group: store and path
    grid: TileGrid  # the level's tiles (depth = the halo read)
    band: tuple[int, ...]
    qc: bool = False
    components: int | None = None
    dtype: str = "float32"
    kind: str = BLEND_KIND
    nan_is_missing: bool = True
    cut: bool = True
    #: the scratch arrays opened by :func:`create_scratch` (name -> zarr.Array), carried to
    #: the tasks so they need not open them again; None: opened where used
    arrays: dict | None = field(default=None, compare=False, repr=False)
    #: set once every piece is written (a blend stage): names the run whose tasks keep the
    #: pieces they read in their process's chunk cache (a piece is read by every tile whose
    #: core its region overlaps); "": read from the store every time
    token: str = field(default="", compare=False, repr=False)

    @property
    def layout(self) -> PieceLayout:
        """The pieces' geometry."""
        return PieceLayout(self.grid, self.band, self.cut)

    @property
    def band_grid(self) -> TileGrid:
        """The tiles with ``depth = band``: their read regions are the blend regions."""
        return self.layout.band_grid

    @property
    def n_components(self) -> int:
        """Values per voxel."""
        return self.grid.ndim if self.components is None else int(self.components)

    def classes(self, axis: int) -> dict[str, tuple[int, int]]:
        """``{class: (piece edge, pieces along the axis)}`` of one axis."""
        return self.layout.classes(axis)

    def segments(self, axis: int, i: int) -> list[tuple[int, int, str, int]]:
        """See :meth:`chunkreg.tiling.PieceLayout.segments`."""
        return self.layout.segments(axis, i)

    @property
    def nbytes(self) -> int:
        """Bytes of all the pieces once every tile has written them (uncompressed chunks)."""
        return self.layout.nbytes(self.n_components, np.dtype(self.dtype).itemsize)

    def _pieces(self, index) -> Iterator[tuple[str, tuple[slice, ...], tuple[slice, ...]]]:
        """(array name, chunk slices, level slices) of each piece of tile ``index``."""
        return self.layout.pieces(index)

    def _open(self, name: str, cache: dict, mode: str = "r") -> zarr.Array:
        if name not in cache:
            if self.arrays is not None and name in self.arrays:  # opened by create_scratch
                cache[name] = self.arrays[name]
            else:
                ref = self.group
                cache[name] = zarr.open_array(ref.store, path=f"{ref.path}/{name}", mode=mode)
        return cache[name]

    def write(self, index, values: np.ndarray) -> int:
        """Write one tile's blend-region result, each piece as one whole chunk (once).

        ``values`` has shape ``(components, *blend region shape)``; the pieces are written
        together (one event-loop call).
        """
        blend = self.band_grid.tile(index)
        arrays: dict[str, zarr.Array] = {}
        dtype = np.dtype(self.dtype)
        writes = []
        written = 0
        for name, chunk, where in self._pieces(blend.index):
            local = tuple(
                slice(w.start - r.start, w.stop - r.start)
                for w, r in zip(where, blend.read, strict=True)
            )
            piece = values[(slice(None), *local)]
            edges = tuple(c.stop - c.start for c in chunk)
            if piece.shape[1:] == edges:
                block = np.asarray(piece, dtype=dtype)  # zarr copies it into the chunk
            else:  # a piece cut short by the volume's edge: fill the chunk, write it whole
                block = np.full((values.shape[0], *edges), np.nan, dtype=dtype)
                block[(slice(None), *tuple(slice(0, n) for n in piece.shape[1:]))] = piece
            writes.append((self._open(name, arrays, "r+"), (slice(None), *chunk), block))
            written += block.nbytes
        write_many(writes)
        return written

    def read(
        self, index, region, arrays: dict | None = None
    ) -> Iterator[tuple[tuple[slice, ...], np.ndarray, tuple]]:
        """The parts of tile ``index``'s result that overlap ``region`` (level slices).

        Yields ``(destination, values, local)``: slices of ``region``, the values there
        ``(components, ...)``, and the same place as slices of the tile's blend region.
        ``arrays`` caches the opened scratch arrays between calls.
        """
        yield from self.read_tiles([index], region, arrays)[0]

    def read_tiles(
        self, indices, region, arrays: dict | None = None
    ) -> list[list[tuple[tuple[slice, ...], np.ndarray, tuple]]]:
        """:meth:`read` of several tiles at once: every piece they need is read together (one
        event-loop call). Returns one list of ``(destination, values, local)`` per tile."""
        arrays = {} if arrays is None else arrays
        wanted = []  # (tile position, blend tile, destination, local)
        requests = []
        for k, index in enumerate(indices):
            blend = self.band_grid.tile(index)
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
                requests.append((self._open(name, arrays), (slice(None), *src)))
                destination = tuple(
                    slice(i.start - s.start, i.stop - s.start)
                    for i, s in zip(inter, region, strict=True)
                )
                local = tuple(
                    slice(i.start - r.start, i.stop - r.start)
                    for i, r in zip(inter, blend.read, strict=True)
                )
                wanted.append((k, blend, destination, local))
        if self.token:
            read = chunk_cache(self.token).read(self.token, requests, "scratch")
        else:
            read = read_many(requests, "scratch")
        out: list[list] = [[] for _ in indices]
        for (k, blend, destination, local), values in zip(wanted, read, strict=True):
            if self.nan_is_missing and not np.all(np.isfinite(values)):
                raise InputError(
                    f"the scratch result of tile {blend.index} is missing (NaN); its tile task "
                    "did not complete. Run the same command again to finish it."
                )
            out[k].append((destination, values, local))
        return out

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


def create_scratch(
    group: zarr.Group,
    name: str,
    grid: TileGrid,
    band,
    *,
    qc: bool = False,
    components: int | None = None,
    dtype="float32",
    kind: str = BLEND_KIND,
    nan_is_missing: bool = True,
    cut: bool = True,
) -> Scratch:
    """Create (or reopen) the scratch arrays of one stage in ``group[name]``.

    The arrays opened here travel with the returned :class:`Scratch` to its tasks.
    ``components``, ``dtype``, ``kind``, ``nan_is_missing`` and ``cut``: see :class:`Scratch`
    and :class:`~chunkreg.tiling.PieceLayout`.
    """
    band = tuple(int(b) for b in band)
    sub = group.require_group(name)
    dtype = np.dtype(dtype)
    geometry = Scratch(group_ref(group, name), grid, band, qc, components, dtype.name, kind,
                       nan_is_missing, cut)  # fmt: skip
    n = geometry.n_components
    arrays = {}
    for array, shape, chunks in geometry.layout.arrays():
        if array not in sub:
            sub.create_array(
                array,
                shape=(n, *shape),
                dtype=dtype,
                chunks=(n, *chunks),
                fill_value=np.nan,
                compressors=None,  # temporary, and flows compress poorly: save the time
            )
        arrays[array] = sub[array]
    if qc and _QC not in sub:
        sub.create_array(
            _QC, shape=(len(grid), 3), dtype=np.float64, chunks=(1, 3), fill_value=np.nan
        )
    return dataclasses.replace(geometry, arrays=arrays)


@functools.lru_cache(maxsize=4096)
def _profiles(grid: TileGrid, index: tuple[int, ...], kind: str) -> tuple[np.ndarray, ...]:
    """:func:`~chunkreg.tiling.blend_profiles`, remembered: a blend task needs its neighbours'
    profiles, and its neighbours need the same ones (read-only: never modify them)."""
    profiles = blend_profiles(grid, index, kind=kind)
    for p in profiles:
        p.flags.writeable = False
    return profiles


def blend_region(
    scratch: Scratch, region, *, spread: bool = False, spread_step: int = 1
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The blended result over ``region`` (slices of the level), from the scratch pieces.

    With ``spread``, also return how much the tiles that overlap there disagree: per voxel the
    norm of the per-component range (max - min) of their values, NaN where only one tile has a
    value. Blending hides disagreement from the seam metric (a step becomes a ramp), so this is
    what shows tiles that found different motion. With ``spread_step`` > 1 it is measured on
    every ``spread_step``-th voxel along each axis of ``region`` (from its first voxel) only, and
    has the shape of that subsampled grid.
    """
    bgrid = scratch.band_grid
    n = scratch.n_components
    dtype = np.dtype(scratch.dtype)
    shape = tuple(s.stop - s.start for s in region)
    out = np.zeros((n, *shape), dtype=dtype)
    if spread:
        sub_shape = tuple(-(-k // spread_step) for k in shape)
        lo = np.full((n, *sub_shape), np.inf, dtype=dtype)
        hi = np.full((n, *sub_shape), -np.inf, dtype=dtype)
        count = np.zeros(sub_shape, dtype=np.int8)
    indices = overlapping(bgrid, region)
    parts_of = scratch.read_tiles(indices, region)  # every piece read together
    for index, tile_parts in zip(indices, parts_of, strict=True):
        profiles = _profiles(bgrid, index, scratch.kind)
        for destination, values, local in tile_parts:
            dst = (slice(None), *destination)
            parts = [profile[sl] for profile, sl in zip(profiles, local, strict=True)]
            if all((p == 1).all() for p in parts):  # no other tile reaches here: copy it
                out[dst] += values
                continue
            weights = np.ones((), dtype=dtype)
            for p in parts:
                weights = np.multiply.outer(weights, p.astype(dtype))
            out[dst] += values * weights
            if spread:
                pairs = [every(d, spread_step) for d in destination]
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
        band = spread[tuple(every(c, step)[0] for c in core_local)]
        overlapped = np.isfinite(band)
        # the median: near the volume's faces, where content left the volume, every tile's flow
        # is poor and they disagree by voxels; that must not hide how the bulk agrees
        result["disagreement"] = float(np.median(band[overlapped])) if overlapped.any() else np.nan
    return result
