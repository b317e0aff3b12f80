"""Tile geometry: a grid of chunk-aligned cores, each read with a halo (``depth``).

Pure value objects (no I/O, no dask). A :class:`TileGrid` is cheap for millions of tiles: it
stores only the array shape, tile shape and depth, and computes each :class:`Tile` on demand.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["Tile", "TileGrid"]


def _as_int_tuple(value, name: str) -> tuple[int, ...]:
    try:
        out = tuple(value)
    except TypeError:
        raise InputError(f"{name} must be a sequence of integers, got {value!r}.") from None
    for axis, v in enumerate(out):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InputError(f"{name} along axis {axis} must be an integer, got {v!r}.")
    return tuple(int(v) for v in out)


def _slices(start: Sequence[int], stop: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(start, stop, strict=True))


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes
    ----------
    index : tuple of int
        Position of the tile in the grid (one integer per axis).
    number : int
        Linear (C-order) number of the tile, ``0 <= number < len(grid)``.
    core : tuple of slice
        The region of the array this tile owns; the cores of a grid partition the array.
    read : tuple of slice
        The region to read: ``core`` grown by the grid's depth, clipped at the array edges.
    """

    index: tuple[int, ...]
    number: int
    core: tuple[slice, ...]
    read: tuple[slice, ...]

    def __post_init__(self) -> None:
        if len(self.core) != len(self.read) or len(self.core) != len(self.index):
            raise InputError("Tile index, core and read must have one entry per axis.")
        for axis, (c, r) in enumerate(zip(self.core, self.read, strict=True)):
            if not (r.start <= c.start < c.stop <= r.stop):
                raise InputError(
                    f"tile read region must contain its core along axis {axis}, got core "
                    f"{c.start}:{c.stop} and read {r.start}:{r.stop}."
                )

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.core)

    @property
    def core_shape(self) -> tuple[int, ...]:
        """Shape of the core region."""
        return tuple(s.stop - s.start for s in self.core)

    @property
    def read_shape(self) -> tuple[int, ...]:
        """Shape of the read region."""
        return tuple(s.stop - s.start for s in self.read)

    @property
    def core_in_read(self) -> tuple[slice, ...]:
        """Slices that select the core out of an array holding the read region."""
        return tuple(
            slice(c.start - r.start, c.stop - r.start)
            for c, r in zip(self.core, self.read, strict=True)
        )

    @property
    def halo(self) -> tuple[tuple[int, int], ...]:
        """Halo actually read on each side, ``((before, after), ...)`` per axis."""
        return tuple(
            (c.start - r.start, r.stop - c.stop) for c, r in zip(self.core, self.read, strict=True)
        )


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of tiles over an array, each read with a halo.

    Tiles have shape ``tile_shape`` (the last tile along an axis is cut short by the array edge);
    each is read with ``depth`` extra elements on both sides, clipped at the array edges (no
    padding beyond the data). If ``chunks`` is given, the tile shape must be a whole multiple of
    it along every axis that has more than one tile, so every core is aligned to the chunks and
    a task writing its core owns whole chunks.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array to tile.
    tile_shape : tuple of int
        Tile (core) shape, >= 1 per axis. Values larger than ``shape`` mean one tile along
        that axis.
    depth : tuple of int
        Halo per axis, >= 0.
    chunks : tuple of int, optional
        Chunk shape the cores must align to.

    Examples
    --------
    >>> grid = TileGrid(shape=(100, 70), tile_shape=(64, 32), depth=(8, 8), chunks=(32, 32))
    >>> grid.grid_shape, len(grid)
    ((2, 3), 6)
    >>> t = grid.tile((1, 2))
    >>> t.core, t.read
    ((slice(64, 100, None), slice(64, 70, None)), (slice(56, 100, None), slice(56, 70, None)))
    """

    shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    depth: tuple[int, ...]
    chunks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        shape = _as_int_tuple(self.shape, "shape")
        ndim = len(shape)
        tile = self._per_axis(self.tile_shape, ndim, "tile")
        depth = self._per_axis(self.depth, ndim, "depth")
        chunks = None if self.chunks is None else self._per_axis(self.chunks, ndim, "chunks")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "tile_shape", tile)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "chunks", chunks)
        if ndim == 0:
            raise InputError("cannot tile a 0-dimensional array; give at least one axis.")
        for axis in range(ndim):
            if shape[axis] < 1:
                raise InputError(f"shape must be >= 1 along axis {axis}, got {shape[axis]}.")
            if tile[axis] < 1:
                raise InputError(f"tile must be >= 1 along axis {axis}, got {tile[axis]}.")
            if depth[axis] < 0:
                raise InputError(f"depth must be >= 0 along axis {axis}, got {depth[axis]}.")
            if chunks is None:
                continue
            c = chunks[axis]
            if c < 1:
                raise InputError(f"chunks must be >= 1 along axis {axis}, got {c}.")
            if tile[axis] < shape[axis] and tile[axis] < c:
                raise InputError(
                    f"tile must be at least one chunk along axis {axis}, got {tile[axis]} < "
                    f"chunk {c}; use a tile of {c} or a multiple of it."
                )
            if tile[axis] < shape[axis] and tile[axis] % c:
                raise InputError(
                    f"tile must be a multiple of the chunk size along axis {axis}, got "
                    f"{tile[axis]} for chunk {c}; use {(tile[axis] // c) * c or c} or "
                    f"{(tile[axis] // c + 1) * c}."
                )

    @staticmethod
    def _per_axis(value, ndim: int, name: str) -> tuple[int, ...]:
        out = _as_int_tuple(value, name)
        if len(out) != ndim:
            raise InputError(
                f"{name} needs one value per axis ({ndim}), got {len(out)}: {tuple(value)!r}."
            )
        return out

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(math.ceil(n / t) for n, t in zip(self.shape, self.tile_shape, strict=True))

    def __len__(self) -> int:
        return math.prod(self.grid_shape)

    # -- tiles ---------------------------------------------------------------------------------

    def _index(self, index) -> tuple[int, ...]:
        grid = self.grid_shape
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            n = int(index)
            if not -len(self) <= n < len(self):
                raise IndexError(f"tile number {n} out of range for a grid of {len(self)} tiles.")
            n %= len(self)
            out = []
            for size in reversed(grid):
                n, r = divmod(n, size)
                out.append(r)
            return tuple(reversed(out))
        idx = _as_int_tuple(index, "tile index")
        if len(idx) != self.ndim or any(not 0 <= i < g for i, g in zip(idx, grid, strict=True)):
            raise IndexError(f"tile index {idx} out of range for grid shape {grid}.")
        return idx

    def tile(self, index) -> Tile:
        """Return the tile with grid index ``index`` (tuple) or linear number (int)."""
        idx = self._index(index)
        number = 0
        for i, g in zip(idx, self.grid_shape, strict=True):
            number = number * g + i
        start = [i * t for i, t in zip(idx, self.tile_shape, strict=True)]
        stop = [min(a + t, n) for a, t, n in zip(start, self.tile_shape, self.shape, strict=True)]
        rstart = [max(a - d, 0) for a, d in zip(start, self.depth, strict=True)]
        rstop = [min(b + d, n) for b, d, n in zip(stop, self.depth, self.shape, strict=True)]
        return Tile(idx, number, _slices(start, stop), _slices(rstart, rstop))

    def __getitem__(self, index) -> Tile:
        return self.tile(index)

    def __iter__(self) -> Iterator[Tile]:
        for idx in itertools.product(*(range(g) for g in self.grid_shape)):
            yield self.tile(idx)

    # -- costs ---------------------------------------------------------------------------------

    def _axis_reads(self, axis: int) -> Iterator[tuple[int, int]]:
        n, t, d = self.shape[axis], self.tile_shape[axis], self.depth[axis]
        for i in range(self.grid_shape[axis]):
            yield max(i * t - d, 0), min(min((i + 1) * t, n) + d, n)

    @property
    def max_read_shape(self) -> tuple[int, ...]:
        """Largest read region along each axis (bounds the memory of one tile)."""
        return tuple(max(b - a for a, b in self._axis_reads(axis)) for axis in range(self.ndim))

    @property
    def read_size(self) -> int:
        """Total number of elements read by all tiles (halos included)."""
        return math.prod(sum(b - a for a, b in self._axis_reads(axis)) for axis in range(self.ndim))

    @property
    def halo_factor(self) -> float:
        """Elements read (and computed on) per element of the array: 1 without a halo."""
        return self.read_size / math.prod(self.shape)

    def decoded_size(self, chunks: Sequence[int]) -> int:
        """Elements decoded when every tile reads its region from storage chunked ``chunks``.

        Storage decodes whole chunks, so a read region that touches a chunk costs the whole
        chunk (clipped at the array edge). Computed per axis, O(number of tiles per axis).
        """
        chunks = self._per_axis(chunks, self.ndim, "chunks")
        total = 1
        for axis, c in enumerate(chunks):
            n = self.shape[axis]
            axis_total = 0
            for a, b in self._axis_reads(axis):
                first, last = a // c, (b - 1) // c
                axis_total += min((last + 1) * c, n) - first * c
            total *= axis_total
        return total

    def read_amplification(self, chunks: Sequence[int]) -> float:
        """Elements decoded from storage chunked ``chunks`` per element of the array.

        1.0 means every stored chunk is decoded exactly once; halos and tiles that cut
        through chunks make it larger.
        """
        return self.decoded_size(chunks) / math.prod(self.shape)
